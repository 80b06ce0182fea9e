"""Redfish session authentication (DSP0266 §13.3) as an httpx auth flow.

Log in once by POSTing the credentials to the Sessions collection, then send the returned
`X-Auth-Token` on every request; when the service answers 401 (session expired or deleted),
log in again and retry that request once. Cheaper for a BMC than checking a password on every
poll, and the only method some services allow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator

import httpx

SESSIONS_URI = "/redfish/v1/SessionService/Sessions"


class RedfishSessionAuth(httpx.Auth):
    """Holds one Redfish session; `session_uri` is its resource (DELETE it to log out).

    Concurrent requests share the session: a lock makes one of them log in (again) while the
    others wait, so an expired session is replaced by one new session, not one per request.
    """

    def __init__(self, username: str, password: str, sessions_uri: str = SESSIONS_URI) -> None:
        self._credentials = {"UserName": username, "Password": password}
        self._sessions_uri = sessions_uri
        self._lock = asyncio.Lock()
        self.token: str | None = None
        self.session_uri: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token is None:
            self._accept((yield self._login_request(request)))
        used = self._authorise(request)
        response = yield request
        if response.status_code == 401:
            if self.token == used:
                self._accept((yield self._login_request(request)))
            self._authorise(request)
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        async with self._lock:
            if self.token is None:
                self._accept((yield self._login_request(request)))
        used = self._authorise(request)
        response = yield request
        if response.status_code == 401:
            async with self._lock:
                if self.token == used:  # nobody renewed it while we waited
                    self._accept((yield self._login_request(request)))
            self._authorise(request)
            yield request

    def _authorise(self, request: httpx.Request) -> str | None:
        request.headers["X-Auth-Token"] = self.token or ""
        return self.token

    def _login_request(self, request: httpx.Request) -> httpx.Request:
        return httpx.Request("POST", request.url.join(self._sessions_uri), json=self._credentials)

    def _accept(self, response: httpx.Response) -> None:
        token = response.headers.get("X-Auth-Token")
        if response.status_code not in (200, 201) or not token:
            # The request then goes out without a valid token: its 401 is the error the caller
            # sees, logged once by the client like any other device failure.
            self.token = self.session_uri = None
            return
        self.token = token
        location = response.headers.get("Location")
        self.session_uri = httpx.URL(location).path if location else None

"""Scheduler hook over HTTP: POST the JSON request to a configured URL (httpx).

Each request carries an ``Idempotency-Key`` header (``idempotency_key``: a shift's pair id and
revision, a deferral's ``request_id``), so retries (on a
timeout, a connection error or a 5xx / 429) cannot make the scheduler act twice. A 4xx other than
409/429 is a refusal and is not retried. A scheduler that cannot be reached is logged once at
WARNING (then DEBUG until it answers again) and yields an undelivered :class:`Ack`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import httpx

from wattwheel.adapters.scheduler.requests import (
    Ack,
    SchedulerRequest,
    decode_webhook_reply,
    encode_request,
    idempotency_key,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = {429, 502, 503, 504}


class WebhookSchedulerHook:
    """A :class:`~wattwheel.adapters.scheduler.hook.SchedulerHook` that POSTs to ``url``."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"scheduler webhook url = {url!r}: must start with http(s)://")
        if retries < 0 or timeout_s <= 0:
            raise ValueError("scheduler webhook: retries must be >= 0 and timeout_s > 0")
        self.url = url
        self._retries = retries
        self._backoff_s = backoff_s
        self._client = httpx.AsyncClient(
            timeout=timeout_s, headers=dict(headers or {}), transport=transport
        )
        self._failing = False

    async def _post_once(self, key: str, body: bytes) -> Ack:
        """One attempt: a final Ack; raises ``httpx.HTTPError`` when worth retrying."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        response = await self._client.post(self.url, content=body, headers=headers)
        if response.status_code in _RETRY_STATUS or response.status_code >= 500:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}", request=response.request, response=response
            )
        return decode_webhook_reply(key, response.status_code, response.content)

    async def request(self, request: SchedulerRequest) -> Ack:
        """POST ``request``; retry transient faults with exponential backoff; never raises."""
        body = encode_request(request)
        key = idempotency_key(request)
        error: Exception | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                ack = await self._post_once(key, body)
            except httpx.HTTPError as exc:
                error = exc
                continue
            self._recovered()
            return ack
        self._fault(error)
        return Ack(key, delivered=False, accepted=None, detail=f"{type(error).__name__}: {error}")

    def _fault(self, error: Exception | None) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        log.log(
            level,
            "scheduler webhook %s unreachable after %d attempt(s): %r",
            self.url,
            self._retries + 1,
            error,
        )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("scheduler webhook %s answers again", self.url)
            self._failing = False

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

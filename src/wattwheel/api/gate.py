"""The request gate: ASGI middleware that authenticates a request and bounds its body BEFORE any
route reads or parses it.

A request is judged on its method, path and headers alone:

- a write (any method other than GET, HEAD, OPTIONS) anywhere needs an operator token in the
  ``Authorization`` header: no token or an unknown one is 401, a viewer's is 403;
- a read under ``/api/v1`` (the OpenAPI document and its docs page included) or of ``/metrics``
  needs a viewer or operator token unless anonymous reads are on. Only a *viewer* token may come
  as ``?access_token=``; an operator token in a URL is refused (URLs end up in logs and history);
- the dashboard shell (``/``, ``/static/...``) is open: it holds no data and asks for a token;
- a body longer than ``max_body_bytes`` is 413: at once from ``Content-Length``, and otherwise
  (chunked) as soon as the bytes received pass the limit. The route then gets the body replayed
  from memory, so it never sees more than the limit.

So an anonymous 24 MB body costs one header lookup and a 401; its bytes are never read.
The route dependencies (:mod:`.auth`) stay in place: they declare each route's role in the
OpenAPI document and check it again behind the gate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import JSONResponse

from wattwheel.api.auth import AuthConfig, Principal, lookup_token

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Every request body the API accepts is a small JSON object (an override with a reason of at
#: most 500 characters); 64 KiB leaves room for any client's padding and nothing more.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(Exception):
    """The body passed ``max_body_bytes``."""


class RequestGate:
    """See the module docstring. ``api_prefix``: reads under it need a token (``/metrics`` too)."""

    def __init__(
        self,
        app: ASGIApp,
        auth: AuthConfig,
        api_prefix: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
        self.app = app
        self.auth = auth
        self.api_prefix = api_prefix.rstrip("/")
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _error(400, "Content-Length is not a non-negative integer")(scope, receive, send)
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large()(scope, receive, send)
            return
        try:
            body = await _read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            await self._too_large()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> JSONResponse:
        return _error(413, f"request body larger than {self.max_body_bytes} bytes")

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        """The 401/403 response for this request, or None when it may go on."""
        method, path = scope["method"], scope["path"]
        if method not in READ_METHODS:
            return self._operator_refusal(scope)
        if not self._needs_reader(path):
            return None
        return self._viewer_refusal(scope)

    def _needs_reader(self, path: str) -> bool:
        prefix = self.api_prefix
        return path == "/metrics" or path == prefix or path.startswith(prefix + "/")

    def _operator_refusal(self, scope: Scope) -> JSONResponse | None:
        presented = _header_token(scope)
        if presented is None:
            return _unauthorized("an operator bearer token is required to change anything")
        who = lookup_token(self.auth.tokens, presented)
        if who is None:
            return _unauthorized("unknown token")
        if who.role != "operator":
            return _error(403, f"{who.name} is a {who.role}, not an operator")
        return None

    def _viewer_refusal(self, scope: Scope) -> JSONResponse | None:
        presented = _header_token(scope)
        from_url = presented is None
        if from_url:
            presented = _query_token(scope)
        if presented is None:
            return None if self.auth.anonymous_read else _unauthorized("a bearer token is required")
        who: Principal | None = lookup_token(self.auth.tokens, presented)
        if who is None:
            return _unauthorized("unknown token")
        if from_url and who.role == "operator":
            return _unauthorized(
                "operator tokens are not accepted in URLs (they end up in logs): "
                "send them in the Authorization header"
            )
        return None


def _error(code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)


def _unauthorized(detail: str) -> JSONResponse:
    return _error(401, detail, {"WWW-Authenticate": "Bearer"})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", ())}


def _header_token(scope: Scope) -> str | None:
    raw = _headers(scope).get(b"authorization", b"").decode("latin-1")
    scheme, _, value = raw.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _query_token(scope: Scope) -> str | None:
    query = scope.get("query_string", b"").decode("latin-1")
    values = parse_qs(query).get("access_token")
    return values[-1] if values else None


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent; -1 when malformed."""
    raw = _headers(scope).get(b"content-length")
    if raw is None:
        return None
    text = raw.decode("latin-1").strip()
    return int(text) if text.isdigit() else -1


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as a server would

    return replay

"""The request gate authenticates and bounds a request before its body is read: an anonymous or
oversized body is refused without one byte of it being received (checked on the raw ASGI
``receive`` channel, and against a real uvicorn server with a client that stops sending)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from api_support import OPERATOR, TOKENS, VIEWER, Api, ServerThread, auth
from fastapi.testclient import TestClient

from wattwheel.adapters.store import MemoryStore
from wattwheel.api import create_app
from wattwheel.api.gate import DEFAULT_MAX_BODY_BYTES
from wattwheel.runtime.state import LiveState, Overrides

PIN = b'{"scope":"domain","target":"row-a","cap_kw":40,"reason":"gate test"}'
BIG = 24 * 1024 * 1024


def _call(
    api: Api, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, dict[str, Any], int]:
    """Run one request through the app's raw ASGI interface; (status, JSON body, body messages
    the app pulled from ``receive``)."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {
                "type": "http.request",
                "body": chunks[pulled - 1],
                "more_body": pulled < len(chunks),
            }
        await asyncio.sleep(3600)  # a client that sends nothing more
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asyncio.wait_for(api.app(scope, receive, send), 10))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), json.loads(body or b"{}"), pulled


def test_anonymous_big_body_is_refused_unread(api: Api) -> None:
    headers = {"content-type": "application/json", "content-length": str(BIG)}
    status, body, pulled = _call(api, "POST", "/api/v1/overrides/cap", headers, [b"x" * 65536])
    assert status == 401 and "operator bearer token" in body["detail"]
    assert pulled == 0
    # a viewer is refused as early (403), before its body too
    headers |= auth(VIEWER)
    status, body, pulled = _call(api, "POST", "/api/v1/overrides/cap", headers, [b"x" * 65536])
    assert (status, pulled) == (403, 0) and "vera is a viewer" in body["detail"]


def test_operator_oversized_body_is_413_before_reading(api: Api) -> None:
    headers = {"content-type": "application/json", "content-length": str(BIG), **auth(OPERATOR)}
    status, body, pulled = _call(api, "POST", "/api/v1/overrides/cap", headers, [b"x" * 65536])
    assert (status, pulled) == (413, 0)
    assert str(DEFAULT_MAX_BODY_BYTES) in body["detail"]
    assert api.overrides.active(api.now[0]) == []


def test_chunked_body_stops_at_the_limit(api: Api) -> None:
    # No Content-Length (chunked): reading stops at the first chunk past the limit.
    chunk = b" " * 16384
    chunks = [chunk] * (BIG // len(chunk))
    headers = {"content-type": "application/json", **auth(OPERATOR)}
    status, _, pulled = _call(api, "POST", "/api/v1/overrides/cap", headers, chunks)
    assert status == 413
    assert pulled == DEFAULT_MAX_BODY_BYTES // len(chunk) + 1


def test_small_bodies_pass_whole(api: Api) -> None:
    # The replayed body reaches the route intact, chunked or not.
    headers = {"content-type": "application/json", **auth(OPERATOR)}
    status, body, _ = _call(api, "POST", "/api/v1/overrides/cap", headers, [PIN[:10], PIN[10:]])
    assert status == 201 and body["cap_kw"] == 40.0
    headers["content-length"] = "abc"
    assert _call(api, "POST", "/api/v1/overrides/cap", headers, [PIN])[0] == 400


def test_limit_is_configurable() -> None:
    app = create_app(LiveState(["row-a"]), MemoryStore(), Overrides(), TOKENS, max_body_bytes=16)
    with TestClient(app) as c:
        r = c.post("/api/v1/overrides/cap", content=PIN, headers=auth(OPERATOR))
        assert r.status_code == 413


def _headers_then_wait(port: int, request_head: bytes) -> tuple[bytes, float]:
    """Send only the head (and 64 KiB) of a request that announces 24 MB; return the response
    and how long it took. The server must answer without waiting for the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        t0 = time.perf_counter()
        sock.sendall(request_head + b"x" * 65536)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
        return data, time.perf_counter() - t0


def test_real_server_answers_big_bodies_without_reading_them() -> None:
    state = LiveState(["row-a"])
    app = create_app(state, MemoryStore(), Overrides(), TOKENS)
    with ServerThread(app) as server:
        for extra, code in (
            (b"", b"401"),
            (f"Authorization: Bearer {OPERATOR}\r\n".encode(), b"413"),
        ):
            head = (
                b"POST /api/v1/overrides/cap HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + extra
                + f"Content-Length: {BIG}\r\n\r\n".encode()
            )
            response, took_s = _headers_then_wait(server.port, head)
            assert response.split(b" ")[1] == code, response[:200]
            assert took_s < 5.0

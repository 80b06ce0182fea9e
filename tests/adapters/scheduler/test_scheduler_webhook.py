"""The webhook hook against a real local HTTP server (stdlib http.server on a free port)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wattwheel.adapters.scheduler import ShiftRequest
from wattwheel.adapters.scheduler.requests import decode_request
from wattwheel.adapters.scheduler.webhook import WebhookSchedulerHook

REQUEST = ShiftRequest(
    site="dc1",
    domain="row-a",
    power_w=12_000.0,
    start_at_s=1_767_225_900.0,
    duration_s=600.0,
    issued_at_s=1_767_225_600.0,
    to_domain="row-b",
    request_id="r-42",
)


@dataclass
class Scheduler:
    """What the fake scheduler answers (a queue of replies) and what it received."""

    replies: list[tuple[int, bytes, float]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    state = Scheduler()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((dict(self.headers), body))
            status, payload, delay_s = state.replies.pop(0) if state.replies else (200, b"", 0.0)
            time.sleep(delay_s)
            # After a client timeout the socket is gone: that is the point of the slow case.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/wattwheel"
    yield state
    server.shutdown()
    server.server_close()


async def test_posts_the_json_body_with_an_idempotency_key(scheduler: Scheduler) -> None:
    scheduler.replies.append((200, b'{"accepted": true, "detail": "moved to row-b"}', 0.0))
    hook = WebhookSchedulerHook(scheduler.url, headers={"Authorization": "Bearer s3cret"})
    try:
        ack = await hook.request(REQUEST)
    finally:
        await hook.close()
    # A shift's key is its pair id at its revision (the issue time in ms by default).
    key = f"r-42@{round(REQUEST.issued_at_s * 1000)}"
    assert (ack.request_id, ack.delivered, ack.accepted, ack.detail) == (
        key,
        True,
        True,
        "moved to row-b",
    )
    headers, body = scheduler.received[0]
    assert headers["Idempotency-Key"] == key
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert decode_request(body) == replace(REQUEST, revision=round(REQUEST.issued_at_s * 1000))


async def test_retries_a_5xx_with_the_same_key(scheduler: Scheduler) -> None:
    scheduler.replies += [(503, b"", 0.0), (502, b"", 0.0), (200, b"", 0.0)]
    hook = WebhookSchedulerHook(scheduler.url, retries=3, backoff_s=0.01)
    try:
        ack = await hook.request(REQUEST)
    finally:
        await hook.close()
    assert ack.delivered and ack.accepted
    keys = [headers["Idempotency-Key"] for headers, _ in scheduler.received]
    assert keys == [f"r-42@{round(REQUEST.issued_at_s * 1000)}"] * 3


async def test_a_refusal_is_not_retried(scheduler: Scheduler) -> None:
    scheduler.replies.append((422, b'{"detail": "unknown domain row-a"}', 0.0))
    hook = WebhookSchedulerHook(scheduler.url, retries=3, backoff_s=0.01)
    try:
        ack = await hook.request(REQUEST)
    finally:
        await hook.close()
    assert (ack.delivered, ack.accepted, ack.detail) == (False, False, "unknown domain row-a")
    assert len(scheduler.received) == 1


async def test_slow_scheduler_times_out_and_is_logged_once(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler.replies += [(200, b"", 0.5)] * 4
    hook = WebhookSchedulerHook(scheduler.url, timeout_s=0.1, retries=1, backoff_s=0.01)
    caplog.set_level(logging.DEBUG, logger="wattwheel.adapters.scheduler.webhook")
    try:
        first = await hook.request(REQUEST)
        second = await hook.request(REQUEST)
    finally:
        await hook.close()
    assert not first.delivered and not second.delivered and first.accepted is None
    assert "Timeout" in first.detail
    levels = [r.levelno for r in caplog.records if r.name.endswith("scheduler.webhook")]
    assert levels == [logging.WARNING, logging.DEBUG]


async def test_nobody_listening_gives_an_undelivered_ack() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook = WebhookSchedulerHook(f"http://127.0.0.1:{port}/", retries=1, backoff_s=0.01)
    try:
        ack = await hook.request(REQUEST)
    finally:
        await hook.close()
    assert not ack.delivered and "ConnectError" in ack.detail


def test_bad_url_is_named() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        WebhookSchedulerHook("ftp://x")

"""The SSE stream on a real uvicorn server: a snapshot first, then an event per state update."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
from api_support import TOKENS, VIEWER, ServerThread, snapshot

from wattwheel.adapters.store import MemoryStore
from wattwheel.api import create_app
from wattwheel.runtime.state import LiveState, Overrides


def _messages(lines: httpx.Response) -> Iterator[tuple[str, Any]]:
    event, data = None, None
    for line in lines.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and event is not None:
            yield event, data
            event, data = None, None


def test_stream_yields_snapshot_then_updates() -> None:
    state = LiveState(["row-a"])
    state.update_domains([snapshot("row-a", 100.0, 321.0)])
    app = create_app(state, MemoryStore(), Overrides(), TOKENS, keepalive_s=0.2)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/api/v1/stream").status_code == 401
        with client.stream("GET", "/api/v1/stream", params={"access_token": VIEWER}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            messages = _messages(resp)
            kind, first = next(messages)
            assert kind == "snapshot" and first["domains"][0]["demand_kw"] == 321.0

            def produce() -> None:
                deadline = time.monotonic() + 5
                while state.n_subscribers == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                state.update_domains([snapshot("row-a", 101.0, 333.0)])

            threading.Thread(target=produce).start()
            kind, update = next(messages)
            assert kind == "domains"
            assert update["domains"][0] == {
                **update["domains"][0],
                "demand_kw": 333.0,
                "timestamp_s": 101.0,
            }
        deadline = time.monotonic() + 5
        while state.n_subscribers and time.monotonic() < deadline:  # unsubscribed on close
            time.sleep(0.05)
        assert state.n_subscribers == 0

"""API fixture: a LiveState with two domains fed a few ticks, an in-memory store, tokens, and a
TestClient on the app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import DOMAINS, TOKENS, Api, feed
from fastapi.testclient import TestClient

from wattwheel.adapters.store import MemoryStore
from wattwheel.api import create_app
from wattwheel.runtime.state import LiveState, Overrides


@pytest.fixture
def api() -> Iterator[Api]:
    state, store, overrides = LiveState(DOMAINS), MemoryStore(), Overrides()
    now = [1_700_000_000.0]
    for k in range(5):
        feed(state, store, now[0] - 5 + k, k)
    app = create_app(state, store, overrides, TOKENS, clock=lambda: now[0], site_name="demo")
    with TestClient(app) as client:
        yield Api(state, store, overrides, app, client, now)

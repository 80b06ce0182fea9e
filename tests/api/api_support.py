"""Helpers for the API tests: tokens, a fake producer of live state, the Api bundle, and a real
uvicorn server on a free port (for SSE and the browser test)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from wattwheel.adapters.store import MemoryStore
from wattwheel.api import parse_tokens
from wattwheel.control.base import Decision
from wattwheel.runtime.state import (
    DomainSnapshot,
    ForecastBand,
    LiveState,
    Overrides,
    RackSnapshot,
    decision_records,
)

VIEWER = "viewer-token-123"
OPERATOR = "operator-token-456"
TOKENS = parse_tokens(f"vera:viewer:{VIEWER},olga:operator:{OPERATOR}")
DOMAINS = ("row-a", "row-b")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def snapshot(domain: str, t: float, demand_kw: float) -> DomainSnapshot:
    bands = tuple(
        ForecastBand(h, demand_kw * 0.9, demand_kw * (1 + h / 6000), demand_kw * 1.2)
        for h in (300.0, 600.0, 900.0)
    )
    return DomainSnapshot(
        domain, t, demand_kw, 500.0, 0.62, -12.0, 40.0, 0.8, "off", 0.0, 3.5, bands
    )


def feed(state: LiveState, store: MemoryStore | None, t: float, k: int) -> None:
    """One fake tick: domains, racks, a decision per domain (into state and store)."""
    demand = [420.0 + 60.0 * np.sin(k / 7.0), 300.0 + 30.0 * np.cos(k / 5.0)]
    state.update_domains(snapshot(d, t, demand[i]) for i, d in enumerate(DOMAINS))
    state.update_racks(
        RackSnapshot(f"{d}-r{j}", d, demand[i] / 4, 130.0 if j == 0 else None, t)
        for i, d in enumerate(DOMAINS)
        for j in range(4)
    )
    idle = Decision.idle(2)
    dec = Decision(
        np.array([5.0, -2.0]),
        np.array([3.5, 0.0]),
        np.array([False, False]),
        idle.reserve_kw,
        idle.shift_out_kw,
        idle.shift_in_kw,
        idle.defer_kw,
        idle.repay_kw,
        np.array([0.8, 0.8]),
        reasons=(f"tick {k}: discharge 5 kW over primary", f"tick {k}: recharge"),
    )
    rows = decision_records(dec, DOMAINS, t, "predictive")
    state.record_decisions(rows)
    state.record_tick(0.004 + 0.001 * (k % 5))
    state.count_telemetry(8)
    if store is not None:
        store.write_decisions(rows)


@dataclass
class Api:
    state: LiveState
    store: MemoryStore
    overrides: Overrides
    app: FastAPI
    client: TestClient
    now: list[float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` in a thread on a free port."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

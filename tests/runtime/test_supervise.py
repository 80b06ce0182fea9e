"""Supervised background tasks: a crash is logged, counted, shown and restarted with backoff."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from wattwheel.runtime.clock import FakeClock, SystemClock
from wattwheel.runtime.supervise import Backoff, Supervisor
from wattwheel.runtime.workers import LoopThread


async def test_a_crashing_task_is_restarted_with_a_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    crashes: list[tuple[str, str, bool]] = []
    sup = Supervisor(clock, lambda *a: crashes.append(a), Backoff(first_s=1.0, max_s=4.0))
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise ValueError(f"poison #{runs}")
        await asyncio.Event().wait()  # then healthy, until cancelled

    caplog.set_level(logging.WARNING)
    task = sup.spawn("ingester:mqtt", flaky)
    waits = []
    for _ in range(4):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # The task is waiting out its backoff: find how long by advancing step by step.
        waited = 0.0
        while clock.n_sleepers and runs == len(waits) + 1:
            clock.advance(0.5)
            waited += 0.5
            await asyncio.sleep(0)
        waits.append(waited)
    await asyncio.sleep(0)
    assert waits == [1.0, 2.0, 4.0, 4.0]  # doubling, capped at max_s
    [health] = sup.health()
    assert health.name == "ingester:mqtt" and health.state == "running"
    assert health.restarts == 4 and health.last_error == "ValueError: poison #4"
    assert [c[2] for c in crashes] == [True, False, False, False]
    assert sum("crashed" in r.getMessage() for r in caplog.records) == 4
    assert sup.snapshot()[0]["restarts"] == 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_that_returns_is_restarted_unless_it_may_finish() -> None:
    clock = FakeClock()
    sup = Supervisor(clock, backoff=Backoff(first_s=1.0))
    calls = {"warm": 0, "poller": 0}

    async def warm() -> None:
        calls["warm"] += 1

    async def poller() -> None:
        calls["poller"] += 1

    done = sup.spawn("warm:redfish", warm, forever=False)
    looping = sup.spawn("poller:snmp", poller)
    await done
    for _ in range(3):
        await asyncio.sleep(0)
        clock.advance(10.0)
    assert calls["warm"] == 1 and calls["poller"] >= 3
    health = {h.name: h for h in sup.health()}
    assert health["warm:redfish"].state == "done" and health["warm:redfish"].restarts == 0
    assert health["poller:snmp"].restarts >= 2
    assert "returned" in str(health["poller:snmp"].last_error)
    looping.cancel()
    await asyncio.gather(looping, return_exceptions=True)


def test_a_loop_thread_runs_its_coroutine_and_stops_it_with_its_finally() -> None:
    events: list[str] = []

    async def main() -> None:
        events.append("started")
        try:
            await SystemClock().sleep(60)
        finally:
            await asyncio.sleep(0)  # the finally may await (closing clients)
            events.append("cleaned up")

    async def where() -> str:
        return threading.current_thread().name

    thread = LoopThread("test-control")
    thread.start()
    assert thread.submit(where()).result(5) == "test-control"
    thread.submit(main())
    deadline = time.monotonic() + 5
    while "started" not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert thread.alive
    thread.stop(timeout_s=5)
    assert not thread.alive and events == ["started", "cleaned up"]

"""LiveState (read model + SSE fan-out) and Overrides (who/when/why, expiry)."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest

from wattwheel.control.base import Decision
from wattwheel.runtime.state import (
    DomainSnapshot,
    EventRecord,
    LiveState,
    Overrides,
    decision_records,
    jsonable,
)


def _snap(domain: str, t: float, demand: float = 100.0) -> DomainSnapshot:
    return DomainSnapshot(domain, t, demand, 120.0, 0.5, 0.0)


def test_update_keeps_latest_and_bounded_history() -> None:
    state = LiveState(["a", "b"], history_len=3)
    for t in range(5):
        state.update_domains([_snap("a", float(t), 100.0 + t)])
    assert [s.domain_id for s in state.domains()] == ["a"]
    assert state.domain("a") is not None and state.domain("a").demand_kw == 104.0  # type: ignore[union-attr]
    assert [s.timestamp_s for s in state.history("a")] == [2.0, 3.0, 4.0]
    assert state.last_tick_s == 4.0


def test_decision_records_split_per_domain_with_reasons() -> None:
    d = Decision.idle(2)
    d = Decision(
        np.array([5.0, -2.0]),
        d.cap_kw,
        np.array([False, True]),
        d.reserve_kw,
        d.shift_out_kw,
        d.shift_in_kw,
        d.defer_kw,
        d.repay_kw,
        d.soc_target,
        reasons=("discharge: over primary",),
    )
    rows = decision_records(d, ["a", "b"], 10.0, "reactive")
    assert [(r.domain_id, r.kes_kw, r.reserve_on, r.reason) for r in rows] == [
        ("a", 5.0, False, "discharge: over primary"),
        ("b", -2.0, True, ""),
    ]
    with pytest.raises(ValueError, match="expected 3"):
        decision_records(d, ["a", "b", "c"], 10.0, "reactive")


def test_latency_histogram_is_cumulative() -> None:
    state = LiveState()
    for s in (0.0005, 0.003, 0.003, 0.2, 9.0):
        state.record_tick(s)
    stats = state.latency()
    assert stats.count == 5
    assert stats.bucket_counts[0] == 1  # <= 1 ms
    assert stats.bucket_counts[2] == 3  # <= 5 ms
    assert stats.bucket_counts[-1] == 4  # <= 2.5 s; the 9 s tick only in +Inf
    assert stats.max_s == 9.0


async def test_subscriber_receives_updates_from_another_thread() -> None:
    state = LiveState(["a"])
    sub = state.subscribe()
    writer = threading.Thread(target=lambda: state.update_domains([_snap("a", 1.0)]))
    writer.start()
    writer.join()
    kind, payload = await asyncio.wait_for(sub.queue.get(), 2.0)
    assert kind == "domains" and payload["domains"][0]["demand_kw"] == 100.0
    state.unsubscribe(sub)
    state.record_event(EventRecord(2.0, "mode", "x"))
    assert sub.queue.empty()


async def test_slow_subscriber_drops_oldest() -> None:
    state = LiveState(["a"])
    sub = state.subscribe(maxsize=2)
    for t in range(4):
        state.update_domains([_snap("a", float(t))])
    assert sub.dropped == 2
    _, first = sub.queue.get_nowait()
    assert first["domains"][0]["timestamp_s"] == 2.0


def test_jsonable_replaces_nan() -> None:
    assert jsonable(_snap("a", 1.0))["soc_target"] is None
    assert jsonable({"x": [math.inf, 1.0]}) == {"x": [None, 1.0]}


def test_overrides_arrays_expiry_and_clear() -> None:
    ov = Overrides()
    ov.pin_cap("a", "domain", 50.0, "alice", "breaker work", now_s=0.0, ttl_s=60.0)
    ov.pin_cap("r1", "rack", 4.0, "alice", "hot aisle", now_s=0.0)
    ov.set_reserve("b", "forbid", "bob", "genset test", now_s=0.0)
    assert np.allclose(ov.pinned_cap_kw(["a", "b"], 30.0), [50.0, np.nan], equal_nan=True)
    assert ov.reserve_override(["a", "b"], 30.0).tolist() == [0, -1]
    assert ov.rack_caps_kw(30.0) == {"r1": 4.0}
    assert np.isnan(ov.pinned_cap_kw(["a", "b"], 61.0)).all()  # expired
    assert not ov.maintenance(0.0)
    m = ov.set_maintenance("carol", "UPS swap", now_s=0.0)
    assert ov.maintenance(100.0) and m.actor == "carol" and m.reason == "UPS swap"
    assert ov.clear("maintenance", "site") == m
    assert ov.clear("maintenance", "site") is None
    assert not ov.maintenance(100.0)


def test_overrides_reject_bad_values() -> None:
    ov = Overrides()
    with pytest.raises(ValueError, match="cap_kw"):
        ov.pin_cap("a", "domain", -1.0, "x", "y", 0.0)
    with pytest.raises(ValueError, match="ttl_s"):
        ov.set_maintenance("x", "y", 0.0, ttl_s=0.0)
    with pytest.raises(ValueError, match="force"):
        ov.set_reserve("a", "maybe", "x", "y", 0.0)  # type: ignore[arg-type]

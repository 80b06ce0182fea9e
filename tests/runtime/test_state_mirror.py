"""The live state mirrored into a replica (serve's API process): the replica ends equal to the
original, a reader that falls behind is resynchronised from a dump (no write lost or applied
twice), and the writer never waits for a reader."""

from __future__ import annotations

import pickle

import pytest

from wattwheel.runtime import state_mirror
from wattwheel.runtime.state import (
    DecisionRecord,
    DomainSnapshot,
    EventRecord,
    LiveState,
    RackSnapshot,
    jsonable,
)
from wattwheel.runtime.state_mirror import (
    MirroredLiveState,
    StateMirror,
    apply_messages,
    apply_write,
)

DOMAINS = ("d1", "d2")


def _tick(state: LiveState, t: float) -> None:
    state.update_domains([DomainSnapshot(d, t, 100.0 + t, 120.0, 0.5, 1.0) for d in DOMAINS])
    state.update_racks([RackSnapshot("r1", "d1", 50.0 + t, None, t)])
    state.record_decisions(
        [
            DecisionRecord(t, d, "reactive", 1.0, 0.0, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, "x")
            for d in DOMAINS
        ]
    )
    state.record_tick(0.001 * (1 + t % 7))
    state.count_telemetry(3)
    if t % 5 == 0:
        state.record_event(EventRecord(t, "device.fault", f"fault {t}"))
        state.count_error("device")
    if t % 11 == 0:
        state.set_mode("reactive-fallback" if t % 22 else "normal")
        state.set_degraded("device_map", None if t % 22 else "moved")
        state.count_tick_failure()


def _view(state: LiveState) -> object:
    return jsonable(state.dump())  # NaN -> None: NaN never equals itself


def _drain(mirror: StateMirror, source: LiveState, replica: LiveState) -> list[tuple[str, object]]:
    # Through pickle, as the channel carries it.
    batch = pickle.loads(pickle.dumps(mirror.take(source, 0.0)))
    return apply_messages(replica, batch)


def test_a_replica_fed_from_the_mirror_equals_the_original() -> None:
    mirror = StateMirror()
    source = MirroredLiveState(DOMAINS, mirror)
    replica = LiveState(DOMAINS)
    _tick(source, 0.0)  # before any reader: not queued, the dump carries it
    mirror.start()
    for t in range(1, 40):
        _tick(source, float(t))
        if t % 3 == 0:
            _drain(mirror, source, replica)
    _drain(mirror, source, replica)
    assert _view(replica) == _view(source)
    assert replica.latency() == source.latency()
    assert replica.tick_latencies_after(5) == source.tick_latencies_after(5)


def test_a_reader_that_falls_behind_gets_a_dump_and_nothing_twice() -> None:
    mirror = StateMirror(max_items=20)
    source = MirroredLiveState(DOMAINS, mirror)
    replica = LiveState(DOMAINS)
    mirror.start()
    _drain(mirror, source, replica)
    mirror.put("reply", (1, True, {"id": 1}))
    for t in range(60):  # far more writes than the bound: the queue overflows
        _tick(source, float(t))
    assert mirror.overflows >= 1
    rest = _drain(mirror, source, replica)
    assert rest == [("reply", (1, True, {"id": 1}))]  # other messages are never dropped
    assert _view(replica) == _view(source)
    assert replica.telemetry_ingested == 60 * 3


def test_without_a_reader_writes_are_not_queued() -> None:
    mirror = StateMirror(max_items=5)
    source = MirroredLiveState(DOMAINS, mirror)
    for t in range(50):
        _tick(source, float(t))
    assert mirror.take(source, 0.0) == []
    assert source.telemetry_ingested == 150


def test_a_replica_accepts_only_state_writes() -> None:
    replica = LiveState(DOMAINS)
    apply_write(replica, "count_error", ("store", 2))
    assert replica.error_counts() == {"store": 2}
    try:
        apply_write(replica, "subscribe", ())
    except ValueError as exc:
        assert "subscribe" in str(exc)
    else:
        raise AssertionError("a non-write was applied")


def test_a_lingering_reader_takes_the_writes_that_follow_the_first_in_one_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = MirroredLiveState(["d"], StateMirror())
    source.mirror.start()
    source.mirror.take(source, 0.0)  # the dump
    lingered: list[float] = []

    def linger(seconds: float) -> None:  # the rest of the tick writes meanwhile
        lingered.append(seconds)
        source.record_tick(0.02)

    monkeypatch.setattr(state_mirror.time, "sleep", linger)
    source.record_tick(0.01)
    batch = source.mirror.take(source, 10.0, 0.05)
    assert lingered == [0.05]
    assert [(m[0], m[1][0]) for m in batch] == [("write", "record_tick")] * 2
    assert source.mirror.take(source, 0.0, 0.05) == [] and lingered == [0.05]

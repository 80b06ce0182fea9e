"""BufferedStore: writes survive an outage (fake and a real PostgreSQL stopped and restarted),
in order, with backoff; the bound refuses writes and counts them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from services_pg import PgServer, fresh_pg_database
from wattwheel.adapters.store import (
    BufferedStore,
    DurableTelemetrySink,
    MemoryStore,
    SqlStore,
    StoreRefused,
    StoreUnavailable,
    open_store,
)
from wattwheel.adapters.store.spill import OFFSET_NAME, SPILL_NAME, SpillInUse, encode_batch
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord


def _batch(start: int, n: int) -> list[PowerSample]:
    return [
        PowerSample("test", f"r{i % 3}", None, float(i), float(i)) for i in range(start, start + n)
    ]


def _crash(store: BufferedStore) -> None:
    """What a kill -9 leaves: no flush, no close; the kernel releases the spill's lock."""
    assert store.spill is not None
    store.spill.close()


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_outage_buffers_then_flushes_in_order(caplog: pytest.LogCaptureFixture) -> None:
    inner, clock = MemoryStore(), _Clock()
    store = BufferedStore(inner, retry_initial_s=1.0, retry_max_s=4.0, clock=clock)
    assert store.write_telemetry(_batch(0, 10))
    inner.available = False
    with caplog.at_level(logging.WARNING, logger="wattwheel.adapters.store.buffer"):
        assert store.write_telemetry(_batch(10, 10))
        clock.t = 0.5  # inside the backoff: no new attempt
        assert store.write_event(EventRecord(0.5, "mode", "x"))
        clock.t = 1.5
        assert store.write_telemetry(_batch(20, 10))
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # logged once per outage
    assert not store.healthy and store.pending_items == 21
    with pytest.raises(StoreUnavailable):
        store.decisions()
    inner.available = True
    assert not store.flush(force=False)  # backoff doubled to 2 s after the second failure
    assert store.flush()
    assert store.healthy and store.pending_items == 0 and store.dropped == 0
    got = sorted(s.timestamp_s for _, s in inner.telemetry(limit=100))
    assert got == [float(i) for i in range(30)]
    ids = [i for i, _ in inner.telemetry(limit=100)]
    assert ids == sorted(ids, reverse=True)


def test_bound_refuses_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    inner = MemoryStore()
    inner.available = False
    store = BufferedStore(inner, max_items=25)
    with caplog.at_level(logging.WARNING, logger="wattwheel.adapters.store.buffer"):
        assert store.write_telemetry(_batch(0, 20))
        assert not store.write_telemetry(_batch(20, 10))
        assert not store.write_telemetry(_batch(30, 10))
        assert store.write_telemetry(_batch(40, 5))
    assert store.dropped == 20 and store.pending_items == 25
    assert sum("buffer full" in r.message for r in caplog.records) == 1
    inner.available = True
    assert store.flush()
    assert inner.counts()["telemetry"] == 25


def test_postgres_down_then_back_loses_no_sample(pg_server: PgServer) -> None:
    url = fresh_pg_database(pg_server)
    store = BufferedStore(SqlStore.open(url), retry_initial_s=0.0)
    acked: list[PowerSample] = []
    try:
        for k in range(3):
            b = _batch(k * 1000, 1000)
            assert store.write_telemetry(b)
            acked += b
        pg_server.stop()
        for k in range(3, 6):
            b = _batch(k * 1000, 1000)
            assert store.write_telemetry(b)  # acknowledged while the server is down
            acked += b
        assert not store.healthy and store.pending_items == 3000
        with pytest.raises(StoreUnavailable):  # reads say so; the API falls back to memory
            store.decisions()
        pg_server.start()
        assert store.flush()
        assert store.healthy and store.pending_items == 0
        stored = [s for _, s in store.telemetry(limit=100_000)]
        assert sorted(stored, key=lambda s: s.timestamp_s) == acked
    finally:
        store.close()


def test_spill_survives_a_restart_of_the_process(tmp_path: Path) -> None:
    inner = MemoryStore()
    inner.available = False
    first = BufferedStore(inner, spill_dir=tmp_path, retry_initial_s=0.0)
    acked = _batch(0, 50) + _batch(50, 50)
    assert first.write_telemetry(acked[:50]) and first.write_telemetry(acked[50:])
    assert first.pending_items == 0 and first.spilled_items == 100  # on disk, not in memory
    _crash(first)  # the process "dies" with the database still down
    with (tmp_path / SPILL_NAME).open("a") as f:
        f.write('[[1.0,"x","r0",null,"ser')  # an append cut short by the crash: never acked
    inner.available = True
    second = BufferedStore(inner, spill_dir=tmp_path)
    assert second.spilled_items == 100
    assert second.flush()
    got = sorted((s for _, s in inner.telemetry(limit=1000)), key=lambda s: s.timestamp_s)
    assert got == acked
    assert second.spilled_items == 0 and not (tmp_path / SPILL_NAME).exists()
    assert second.write_telemetry(_batch(100, 5))  # healthy again: straight to the database
    assert inner.counts()["telemetry"] == 105


def test_spill_partial_replay_keeps_the_rest(tmp_path: Path) -> None:
    class FailsAfter(MemoryStore):
        def __init__(self, ok: int) -> None:
            super().__init__()
            self.ok = ok

        def write_telemetry(self, samples: Sequence[PowerSample]) -> None:
            if self.ok <= 0:
                raise StoreUnavailable("down again")
            self.ok -= 1
            super().write_telemetry(samples)

    inner = FailsAfter(ok=0)
    store = BufferedStore(inner, spill_dir=tmp_path, retry_initial_s=0.0)
    store.replay_group_items = 10  # one batch per replayed write
    for k in range(4):
        assert store.write_telemetry(_batch(10 * k, 10))
    inner.ok = 2  # the database takes two batches, then fails again
    assert not store.flush()
    assert inner.counts()["telemetry"] == 20 and store.spilled_items == 20
    inner.ok = 10
    assert store.flush()
    assert sorted(s.timestamp_s for _, s in inner.telemetry(limit=100)) == [
        float(i) for i in range(40)
    ]


def test_spill_bound_refuses(tmp_path: Path) -> None:
    inner = MemoryStore()
    inner.available = False
    store = BufferedStore(inner, spill_dir=tmp_path, max_spill_bytes=1000)
    assert store.write_telemetry(_batch(0, 20))
    assert not store.write_telemetry(_batch(20, 20))
    assert store.dropped == 20 and store.spilled_items == 20


# ---- durable mode: every kind of write, crash during replay, alarms, the ingester's sink ----


def _decision(t: float, soc: float = 0.5) -> DecisionRecord:
    return DecisionRecord(t, "A", "hpmc", 1.0, 2.0, False, 0.0, 0.0, 0.0, 0.0, 0.0, soc, "why")


def _forecast(t: float) -> Forecast:
    values = np.arange(12, dtype=float).reshape(2, 2, 3)
    return Forecast(t, ("A", "B"), (60.0, 300.0), (0.05, 0.5, 0.95), values, values[:, :, 1])


def test_every_kind_of_write_is_spilled_and_replayed_after_a_crash(tmp_path: Path) -> None:
    inner = MemoryStore()
    inner.available = False
    first = BufferedStore(inner, spill_dir=tmp_path, retry_initial_s=0.0)
    assert first.durable
    decisions = [_decision(1.0), _decision(2.0, soc=float("nan"))]
    event = EventRecord(3.0, "override.reserve", "forbid", "A", "ops", {"action": "forbid"})
    assert first.write_telemetry(_batch(0, 5))
    assert first.write_decisions(decisions)
    assert first.write_event(event)
    assert first.write_forecast(_forecast(4.0))
    assert first.spilled_items == 5 + 2 + 1 + 4 and first.pending_items == 0
    _crash(first)  # killed: nothing was flushed, nothing was closed
    inner.available = True
    second = BufferedStore(inner, spill_dir=tmp_path)
    assert second.spilled_items == 12
    assert second.flush()
    assert inner.counts() == {"telemetry": 5, "forecasts": 4, "decisions": 2, "events": 1}
    got = [d for _, d in inner.decisions()][::-1]
    assert got[0] == decisions[0] and np.isnan(got[1].soc_target)
    assert [e for _, e in inner.events()] == [event]
    assert sorted(r.point for _, r in inner.forecasts()) == [1.0, 4.0, 7.0, 10.0]
    assert not (tmp_path / SPILL_NAME).exists() and not (tmp_path / OFFSET_NAME).exists()


def test_a_crash_during_replay_repeats_at_most_one_write(tmp_path: Path) -> None:
    class DiesAfter(MemoryStore):
        """Raises SystemExit (the process dies) after ``ok`` telemetry writes."""

        def __init__(self) -> None:
            super().__init__()
            self.ok = 0

        def write_telemetry(self, samples: Sequence[PowerSample]) -> None:
            if self.ok <= 0:
                raise StoreUnavailable("down")
            self.ok -= 1
            super().write_telemetry(samples)

    inner = DiesAfter()
    first = BufferedStore(inner, spill_dir=tmp_path, retry_initial_s=0.0)
    first.replay_group_items = 10  # one batch per replayed write
    for k in range(5):
        assert first.write_telemetry(_batch(10 * k, 10))
    inner.ok = 3  # three batches reach the database, then it fails again mid-replay
    assert not first.flush()
    _crash(first)  # and the process dies
    inner.ok = 100
    second = BufferedStore(inner, spill_dir=tmp_path)
    assert second.spilled_items == 20  # the offset says which lines were replayed
    assert second.flush()
    stamps = sorted(s.timestamp_s for _, s in inner.telemetry(limit=1000))
    assert stamps == [float(i) for i in range(50)]  # none lost, none repeated


def test_spill_growth_is_logged_at_each_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = MemoryStore()
    inner.available = False
    line = len(encode_batch(_batch(100, 10)).encode())
    store = BufferedStore(inner, spill_dir=tmp_path, max_spill_bytes=10 * line)
    with caplog.at_level(logging.WARNING, logger="wattwheel.adapters.store.buffer"):
        for k in range(12):
            store.write_telemetry(_batch(100 + 10 * k, 10))  # same encoded length
    growth = [r.getMessage() for r in caplog.records if "% full" in r.getMessage()]
    assert [m.split(" is ")[1].split(" %")[0] for m in growth] == ["50", "80", "100"]
    assert store.dropped == 20 and store.spill_bytes == 10 * line
    assert store.max_spill_bytes == 10 * line


def test_postgres_outage_then_crash_loses_no_acknowledged_write(
    pg_server: PgServer, tmp_path: Path
) -> None:
    url = fresh_pg_database(pg_server)
    first = open_store(url, spill_dir=tmp_path / "spill")
    acked = _batch(0, 100)
    assert first.write_telemetry(acked)
    pg_server.stop()
    try:
        for k in range(1, 4):
            b = _batch(100 * k, 100)
            assert first.write_telemetry(b)
            acked += b
        assert first.write_event(EventRecord(9.0, "override.reserve", "forbid", "A", "ops"))
        assert not first.healthy and first.spilled_items == 301
    finally:
        pg_server.start()
    _crash(first)  # kill -9: no flush, no close
    first.inner.close()  # (its connections just go away)
    second = open_store(url, spill_dir=tmp_path / "spill")  # replays at open
    try:
        assert second.spilled_items == 0
        stored = sorted((s for _, s in second.telemetry(limit=10_000)), key=lambda s: s.timestamp_s)
        assert stored == acked
        assert [e.kind for _, e in second.events()] == ["override.reserve"]
    finally:
        second.close()


async def test_durable_sink_acknowledges_only_durable_batches(tmp_path: Path) -> None:
    inner = MemoryStore()
    seen: list[PowerSample] = []

    async def then(samples: list[PowerSample]) -> None:
        seen.extend(samples)

    with pytest.raises(ValueError, match="spill"):
        DurableTelemetrySink(BufferedStore(inner))  # memory mode would ack what a crash loses
    line = len(encode_batch(_batch(10, 10)).encode())  # room for one batch
    store = BufferedStore(inner, spill_dir=tmp_path, max_spill_bytes=line)
    sink = DurableTelemetrySink(store, then)
    await sink(_batch(0, 10))  # healthy: committed
    inner.available = False
    await sink(_batch(10, 10))  # down: spilled (fsync'ed)
    with pytest.raises(StoreRefused):
        await sink(_batch(20, 10))  # spill full: the caller must not acknowledge
    assert [s.timestamp_s for s in seen] == [float(i) for i in range(20)]
    assert sink.stored_samples == 20


def test_one_process_per_spill_directory(tmp_path: Path) -> None:
    first = BufferedStore(MemoryStore(), spill_dir=tmp_path)
    with pytest.raises(SpillInUse, match="--spill-dir"):
        BufferedStore(MemoryStore(), spill_dir=tmp_path)
    first.close()
    BufferedStore(MemoryStore(), spill_dir=tmp_path).close()  # released


def test_replay_merges_small_batches_into_few_writes(tmp_path: Path) -> None:
    class Counting(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def write_telemetry(self, samples: Sequence[PowerSample]) -> None:
            self.calls += 1
            super().write_telemetry(samples)

    inner = Counting()
    inner.available = False
    store = BufferedStore(inner, spill_dir=tmp_path, retry_initial_s=1e9)
    for k in range(250):
        assert store.write_telemetry(_batch(k, 1))  # 250 one-sample batches spilled
    assert store.write_event(EventRecord(1.0, "mode", "x"))  # an event between them
    for k in range(250, 300):
        assert store.write_telemetry(_batch(k, 1))
    inner.available = True
    inner.calls = 0
    store.replay_group_items = 100
    assert store.flush()
    assert inner.calls == 3 + 1  # 250 -> 100 + 100 + 50, then 50 after the event
    stamps = [s.timestamp_s for _, s in inner.telemetry(limit=1000)][::-1]
    assert stamps == [float(i) for i in range(300)]  # in order
    assert inner.counts()["events"] == 1

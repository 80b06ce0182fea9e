"""BufferedStore: writes survive an outage (fake and a real PostgreSQL stopped and restarted),
in order, with backoff; the bound refuses writes and counts them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from services_pg import PgServer, fresh_pg_database
from wattwheel.adapters.store import BufferedStore, MemoryStore, SqlStore, StoreUnavailable
from wattwheel.adapters.store.spill import SPILL_NAME
from wattwheel.domain.telemetry import PowerSample
from wattwheel.runtime.state import EventRecord


def _batch(start: int, n: int) -> list[PowerSample]:
    return [
        PowerSample("test", f"r{i % 3}", None, float(i), float(i)) for i in range(start, start + n)
    ]


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
    del first  # the process "dies" with the database still down
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

"""SqlStore on a SQLite file and on a real PostgreSQL server: migrations, round trips,
paging, retention."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import inspect

from wattwheel.adapters.store import RetentionPolicy, SqlStore, forecast_rows, make_engine
from wattwheel.adapters.store.migrate import current_revision, head_revision, upgrade
from wattwheel.adapters.store.schema import Base
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    s = SqlStore.open(db_url)
    yield s
    s.close()


def _samples(n: int, t0: float = 1000.0) -> list[PowerSample]:
    return [
        PowerSample(
            "mqtt",
            f"r{i % 7}",
            f"s{i}" if i % 2 else None,
            t0 + i,
            100.0 + i,
            "server" if i % 2 else "rack",
        )
        for i in range(n)
    ]


def _decision(t: float, domain: str, reason: str) -> DecisionRecord:
    return DecisionRecord(
        t,
        domain,
        "predictive",
        12.5,
        3.0,
        True,
        40.0,
        1.0,
        0.0,
        2.0,
        0.5,
        math.nan,
        reason,
        "normal",
    )


def test_migrations_reach_head_and_match_models(store: SqlStore) -> None:
    assert current_revision(store.engine) == head_revision() == "v0003"
    upgrade(store.engine)  # idempotent
    insp = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        migrated = {c["name"] for c in insp.get_columns(table.name)}
        assert migrated == {c.name for c in table.columns}, table.name
        assert {i["name"] for i in insp.get_indexes(table.name)} == {i.name for i in table.indexes}


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    s = SqlStore.open(f"sqlite:///{tmp_path}/w.db")
    try:
        assert s.journal_mode() == "wal"
    finally:
        s.close()


def test_telemetry_round_trip(store: SqlStore) -> None:
    batch = _samples(2500)
    store.write_telemetry(batch)
    store.write_telemetry([])
    assert store.counts()["telemetry"] == 2500
    got = [s for _, s in store.telemetry(limit=10_000)]
    assert sorted(got, key=lambda s: s.timestamp_s) == batch
    r3 = store.telemetry(rack_id="r3", since_s=2000.0, limit=10_000)
    assert {s.rack_id for _, s in r3} == {"r3"}
    assert all(s.timestamp_s >= 2000.0 for _, s in r3)
    assert len(r3) == sum(1 for s in batch if s.rack_id == "r3" and s.timestamp_s >= 2000.0)


def test_forecast_round_trip(store: SqlStore) -> None:
    values = np.array([[[90.0, 100.0, 120.0], [80.0, 101.0, 130.0]]])
    fc = Forecast(500.0, ("dom-a",), (300.0, 600.0), (0.05, 0.5, 0.95), values, values[:, :, 1])
    store.write_forecast(fc)
    got = [r for _, r in store.forecasts(series_id="dom-a")]
    assert sorted(got, key=lambda r: r.horizon_s) == forecast_rows(fc)
    assert store.forecasts(series_id="other") == []


def test_decisions_audit_log_pages_newest_first(store: SqlStore) -> None:
    for t in range(5):
        store.write_decisions([_decision(float(t), "a", f"tick {t}"), _decision(float(t), "b", "")])
    page1 = store.decisions(domain_id="a", limit=2)
    assert [r.reason for _, r in page1] == ["tick 4", "tick 3"]
    page2 = store.decisions(domain_id="a", before_id=page1[-1][0], limit=2)
    assert [r.reason for _, r in page2] == ["tick 2", "tick 1"]
    first = page1[0][1]
    assert first.reserve_on is True and first.kes_kw == 12.5 and math.isnan(first.soc_target)
    assert len(store.decisions(since_s=3.0, limit=100)) == 4


def test_events_round_trip_and_kind_prefix(store: SqlStore) -> None:
    store.write_event(
        EventRecord(
            1.0,
            "override.pin_cap",
            "pinned r1 at 4 kW",
            None,
            "alice",
            {"cap_kw": 4.0, "target": "r1"},
        )
    )
    store.write_event(EventRecord(2.0, "mode", "reactive-fallback", "a", "runtime"))
    store.write_event(EventRecord(3.0, "override_x", "not an override.* kind"))
    got = store.events(kind="override.")
    assert len(got) == 1
    ev = got[0][1]
    assert (ev.actor, ev.data, ev.kind) == (
        "alice",
        {"cap_kw": 4.0, "target": "r1"},
        "override.pin_cap",
    )
    assert [e.kind for _, e in store.events()] == ["override_x", "mode", "override.pin_cap"]


def test_retention_deletes_only_old_rows(store: SqlStore) -> None:
    store.write_telemetry(_samples(100, t0=0.0))  # t = 0..99
    store.write_decisions([_decision(10.0, "a", "old"), _decision(95.0, "a", "new")])
    store.write_event(EventRecord(5.0, "mode", "old"))
    deleted = store.apply_retention(older_than_s=50.0, now_s=100.0)  # cutoff t < 50
    assert deleted == {"telemetry": 50, "forecasts": 0, "decisions": 1, "events": 1}
    assert min(s.timestamp_s for _, s in store.telemetry(limit=1000)) == 50.0
    assert [r.reason for _, r in store.decisions()] == ["new"]
    with pytest.raises(ValueError, match="unknown table"):
        store.apply_retention(10.0, 100.0, tables=["nope"])
    with pytest.raises(ValueError, match="older_than_s"):
        store.apply_retention(0.0, 100.0)


def test_retention_policy_keeps_the_audit_longer(store: SqlStore) -> None:
    day = 86400.0
    store.write_telemetry(_samples(3, t0=0.0))
    store.write_decisions([_decision(0.0, "a", "old but audited")])
    store.write_event(EventRecord(0.0, "mode", "old"))
    deleted = RetentionPolicy().apply(store, now_s=10 * day)
    assert deleted == {"telemetry": 3, "forecasts": 0, "decisions": 0, "events": 0}
    assert RetentionPolicy().apply(store, now_s=400 * day)["decisions"] == 1


def test_migration_chain_from_v0001(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    upgrade(engine, "v0001")  # a database created by the first release
    assert "ix_telemetry_rack_time" in {i["name"] for i in inspect(engine).get_indexes("telemetry")}
    store = SqlStore(engine)  # opening it upgrades to head
    assert current_revision(engine) == head_revision()
    assert "ix_telemetry_rack_time" not in {
        i["name"] for i in inspect(engine).get_indexes("telemetry")
    }
    store.close()

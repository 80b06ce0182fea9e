"""The SQLAlchemy :class:`Store`: SQLite (WAL) by default, PostgreSQL by URL.

Telemetry goes in as one multi-row batch per call: ``executemany`` on SQLite and ``COPY ... FROM
STDIN`` through psycopg on PostgreSQL (an order of magnitude faster than row inserts). Any error
that means "the database is not reachable" becomes :class:`StoreUnavailable`; other errors (a
bug, a constraint) propagate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from sqlalchemy import Select, create_engine, delete, event, func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from wattwheel.adapters.store.base import (
    TABLES,
    ForecastRow,
    StoreUnavailable,
    check_retention,
    check_tables,
    forecast_rows,
)
from wattwheel.adapters.store.migrate import upgrade
from wattwheel.adapters.store.schema import (
    DecisionRowModel,
    EventRowModel,
    ForecastRowModel,
    TelemetryRow,
)
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///wattwheel.db"
_TELEMETRY_COLS = ("timestamp_s", "source", "rack_id", "server_id", "kind", "power_w")
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
    ConnectionError,
)
try:  # raw COPY errors are psycopg's own, not wrapped by SQLAlchemy
    import psycopg

    _UNAVAILABLE = (*_UNAVAILABLE, psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # pragma: no cover - psycopg is only needed for PostgreSQL
    pass

_MODELS: dict[str, Any] = {
    "telemetry": (TelemetryRow, TelemetryRow.timestamp_s),
    "forecasts": (ForecastRowModel, ForecastRowModel.issued_at_s),
    "decisions": (DecisionRowModel, DecisionRowModel.timestamp_s),
    "events": (EventRowModel, EventRowModel.timestamp_s),
}


def make_engine(url: str = DEFAULT_URL, connect_timeout_s: float = 3.0) -> Engine:
    """An engine with the settings this store relies on.

    SQLite: WAL journal (readers never block the writer), ``synchronous=NORMAL`` (durable at
    checkpoints, safe with WAL), a busy timeout instead of immediate "database is locked".
    PostgreSQL: a short connect timeout (a down server must not stall the loop) and pre-ping so
    connections that died with a restart are replaced.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5.0})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql"):
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, round(connect_timeout_s))},
        )
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql+psycopg://"
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA busy_timeout=5000",
        "PRAGMA foreign_keys=ON",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA cache_size=-65536",  # 64 MiB page cache: index inserts stay in memory
    ):
        cur.execute(pragma)
    cur.close()


class SqlStore:
    """A :class:`Store` on any SQLAlchemy engine; runs the migrations when ``migrate`` is set."""

    def __init__(self, engine: Engine, migrate: bool = True) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if migrate:
            with self._guard():
                upgrade(engine)

    @classmethod
    def open(cls, url: str = DEFAULT_URL, migrate: bool = True) -> SqlStore:
        return cls(make_engine(url), migrate=migrate)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self.dialect} database unavailable: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._guard(), self.engine.begin() as conn:
            yield conn

    # ---- writes ----

    def write_telemetry(self, samples: Sequence[PowerSample]) -> None:
        if not samples:
            return
        rows = [
            (s.timestamp_s, s.source, s.rack_id, s.server_id, s.kind, float(s.power_w))
            for s in samples
        ]
        with self._tx() as conn:
            if self.dialect == "postgresql":
                _copy_rows(conn, "telemetry", _TELEMETRY_COLS, rows)
            else:
                marks = ",".join("?" * len(_TELEMETRY_COLS))
                conn.exec_driver_sql(
                    f"INSERT INTO telemetry ({','.join(_TELEMETRY_COLS)}) VALUES ({marks})", rows
                )

    def write_forecast(self, forecast: Forecast) -> None:
        rows = [
            {
                "issued_at_s": r.issued_at_s,
                "series_id": r.series_id,
                "horizon_s": r.horizon_s,
                "point": r.point,
                "quantiles_json": json.dumps(r.quantiles),
                "values_json": json.dumps(r.values),
            }
            for r in forecast_rows(forecast)
        ]
        if rows:
            with self._tx() as conn:
                conn.execute(insert(ForecastRowModel), rows)

    def write_decisions(self, records: Sequence[DecisionRecord]) -> None:
        if records:
            with self._tx() as conn:
                conn.execute(insert(DecisionRowModel), [_nan_to_none(asdict(r)) for r in records])

    def write_event(self, event: EventRecord) -> None:
        row = asdict(event)
        row["data_json"] = json.dumps(_nan_to_none(row.pop("data")), default=str)
        with self._tx() as conn:
            conn.execute(insert(EventRowModel), [row])

    # ---- queries ----

    def _select(self, stmt: Select[Any], limit: int) -> list[Any]:
        with self._guard(), self.engine.connect() as conn:
            # Core rows (attribute access by column name); no ORM session or identity map needed
            return list(conn.execute(stmt.limit(max(0, limit))).all())

    def telemetry(
        self, rack_id: str | None = None, since_s: float | None = None, limit: int = 1000
    ) -> list[tuple[int, PowerSample]]:
        stmt = select(TelemetryRow).order_by(TelemetryRow.id.desc())
        if rack_id is not None:
            stmt = stmt.where(TelemetryRow.rack_id == rack_id)
        if since_s is not None:
            stmt = stmt.where(TelemetryRow.timestamp_s >= since_s)
        return [
            (r.id, PowerSample(r.source, r.rack_id, r.server_id, r.timestamp_s, r.power_w, r.kind))
            for r in self._select(stmt, limit)
        ]

    def forecasts(
        self, series_id: str | None = None, since_s: float | None = None, limit: int = 100
    ) -> list[tuple[int, ForecastRow]]:
        m = ForecastRowModel
        stmt = select(m).order_by(m.id.desc())
        if series_id is not None:
            stmt = stmt.where(m.series_id == series_id)
        if since_s is not None:
            stmt = stmt.where(m.issued_at_s >= since_s)
        return [
            (
                r.id,
                ForecastRow(
                    r.issued_at_s,
                    r.series_id,
                    r.horizon_s,
                    r.point,
                    tuple(json.loads(r.quantiles_json)),
                    tuple(json.loads(r.values_json)),
                ),
            )
            for r in self._select(stmt, limit)
        ]

    def decisions(
        self,
        domain_id: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, DecisionRecord]]:
        m = DecisionRowModel
        stmt = select(m).order_by(m.id.desc())
        if domain_id is not None:
            stmt = stmt.where(m.domain_id == domain_id)
        if before_id is not None:
            stmt = stmt.where(m.id < before_id)
        if since_s is not None:
            stmt = stmt.where(m.timestamp_s >= since_s)
        return [(r.id, _decision(r)) for r in self._select(stmt, limit)]

    def events(
        self,
        kind: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, EventRecord]]:
        m = EventRowModel
        stmt = select(m).order_by(m.id.desc())
        if kind is not None:
            stmt = stmt.where(m.kind.startswith(kind, autoescape=True))
        if before_id is not None:
            stmt = stmt.where(m.id < before_id)
        if since_s is not None:
            stmt = stmt.where(m.timestamp_s >= since_s)
        return [
            (
                r.id,
                EventRecord(
                    r.timestamp_s, r.kind, r.message, r.domain_id, r.actor, json.loads(r.data_json)
                ),
            )
            for r in self._select(stmt, limit)
        ]

    # ---- maintenance ----

    def apply_retention(
        self, older_than_s: float, now_s: float, tables: Sequence[str] = TABLES
    ) -> dict[str, int]:
        check_retention(older_than_s)
        check_tables(tables)
        cutoff = now_s - older_than_s
        deleted: dict[str, int] = {}
        with self._tx() as conn:
            for table in tables:
                model, stamp = _MODELS[table]
                deleted[table] = conn.execute(delete(model).where(stamp < cutoff)).rowcount
        return deleted

    def counts(self) -> dict[str, int]:
        with self._guard(), self.engine.connect() as conn:
            return {
                t: int(conn.execute(select(func.count()).select_from(_MODELS[t][0])).scalar_one())
                for t in TABLES
            }

    def journal_mode(self) -> str | None:
        """SQLite's journal mode (``wal`` expected); None on other databases."""
        if self.dialect != "sqlite":
            return None
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def _copy_rows(
    conn: Connection, table: str, cols: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """PostgreSQL ``COPY table (cols) FROM STDIN`` inside the connection's transaction."""
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _nan_to_none(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def _decision(r: Any) -> DecisionRecord:
    return DecisionRecord(
        timestamp_s=r.timestamp_s,
        domain_id=r.domain_id,
        policy=r.policy,
        kes_kw=r.kes_kw,
        cap_kw=r.cap_kw,
        reserve_on=r.reserve_on,
        reserve_kw=r.reserve_kw,
        shift_out_kw=r.shift_out_kw,
        shift_in_kw=r.shift_in_kw,
        defer_kw=r.defer_kw,
        repay_kw=r.repay_kw,
        soc_target=float("nan") if r.soc_target is None else r.soc_target,
        reason=r.reason,
        mode=r.mode,
    )

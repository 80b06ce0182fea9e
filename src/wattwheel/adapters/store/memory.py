"""In-memory :class:`Store` for tests, the simulator and demos; can pretend to be down."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from wattwheel.adapters.store.base import (
    TABLES,
    ForecastRow,
    StoreUnavailable,
    check_retention,
    check_tables,
    forecast_rows,
)
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord

T = TypeVar("T")


class MemoryStore:
    """Keeps every row in lists. Set ``available = False`` to simulate a database outage."""

    def __init__(self) -> None:
        self.available = True
        self._lock = threading.Lock()
        self._rows: dict[str, list[tuple[int, object]]] = {t: [] for t in TABLES}
        self._next_id = 1

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store marked unavailable")

    def _append(self, table: str, rows: Sequence[object]) -> None:
        self._check()
        with self._lock:
            for row in rows:
                self._rows[table].append((self._next_id, row))
                self._next_id += 1

    def write_telemetry(self, samples: Sequence[PowerSample]) -> None:
        self._append("telemetry", samples)

    def write_forecast(self, forecast: Forecast) -> None:
        self._append("forecasts", forecast_rows(forecast))

    def write_decisions(self, records: Sequence[DecisionRecord]) -> None:
        self._append("decisions", records)

    def write_event(self, event: EventRecord) -> None:
        self._append("events", [event])

    def _query(
        self,
        table: str,
        keep: Callable[[object], bool],
        before_id: int | None,
        limit: int,
    ) -> list[tuple[int, object]]:
        self._check()
        with self._lock:
            rows = list(self._rows[table])
        out = [
            (i, r) for i, r in reversed(rows) if (before_id is None or i < before_id) and keep(r)
        ]
        return out[:limit]

    def telemetry(
        self, rack_id: str | None = None, since_s: float | None = None, limit: int = 1000
    ) -> list[tuple[int, PowerSample]]:
        def keep(r: object) -> bool:
            assert isinstance(r, PowerSample)
            return (rack_id is None or r.rack_id == rack_id) and (
                since_s is None or r.timestamp_s >= since_s
            )

        return [
            (i, r)
            for i, r in self._query("telemetry", keep, None, limit)
            if isinstance(r, PowerSample)
        ]

    def forecasts(
        self, series_id: str | None = None, since_s: float | None = None, limit: int = 100
    ) -> list[tuple[int, ForecastRow]]:
        def keep(r: object) -> bool:
            assert isinstance(r, ForecastRow)
            return (series_id is None or r.series_id == series_id) and (
                since_s is None or r.issued_at_s >= since_s
            )

        return [
            (i, r)
            for i, r in self._query("forecasts", keep, None, limit)
            if isinstance(r, ForecastRow)
        ]

    def decisions(
        self,
        domain_id: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, DecisionRecord]]:
        def keep(r: object) -> bool:
            assert isinstance(r, DecisionRecord)
            return (domain_id is None or r.domain_id == domain_id) and (
                since_s is None or r.timestamp_s >= since_s
            )

        return [
            (i, r)
            for i, r in self._query("decisions", keep, before_id, limit)
            if isinstance(r, DecisionRecord)
        ]

    def events(
        self,
        kind: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, EventRecord]]:
        def keep(r: object) -> bool:
            assert isinstance(r, EventRecord)
            return (kind is None or r.kind.startswith(kind)) and (
                since_s is None or r.timestamp_s >= since_s
            )

        return [
            (i, r)
            for i, r in self._query("events", keep, before_id, limit)
            if isinstance(r, EventRecord)
        ]

    def apply_retention(
        self, older_than_s: float, now_s: float, tables: Sequence[str] = TABLES
    ) -> dict[str, int]:
        check_retention(older_than_s)
        check_tables(tables)
        self._check()
        cutoff = now_s - older_than_s
        deleted: dict[str, int] = {}
        with self._lock:
            for t in tables:
                kept = [(i, r) for i, r in self._rows[t] if _stamp(r) >= cutoff]
                deleted[t] = len(self._rows[t]) - len(kept)
                self._rows[t] = kept
        return deleted

    def counts(self) -> dict[str, int]:
        self._check()
        with self._lock:
            return {t: len(rows) for t, rows in self._rows.items()}

    def close(self) -> None:
        pass


def _stamp(row: object) -> float:
    if isinstance(row, ForecastRow):
        return row.issued_at_s
    stamp = getattr(row, "timestamp_s", None)
    return float(stamp) if stamp is not None else 0.0

"""The storage contract: one small Protocol for everything the runtime writes and the API reads.

Rows are the runtime's own value types (:class:`PowerSample`, :class:`DecisionRecord`,
:class:`EventRecord`) plus :class:`ForecastRow`, one per series and horizon of a
:class:`Forecast`. Queries return ``(id, row)`` pairs, newest first, so the API can page with
``before_id``. A store that cannot reach its database raises :class:`StoreUnavailable`; the
:class:`~wattwheel.adapters.store.buffer.BufferedStore` turns that into buffering and retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord

#: Table names, as used by :meth:`Store.apply_retention` and :meth:`Store.counts`.
TABLES: tuple[str, ...] = ("telemetry", "forecasts", "decisions", "events")


class StoreUnavailable(Exception):
    """The database cannot be reached right now (down, restarting, timed out): retry later."""


@dataclass(frozen=True)
class ForecastRow:
    """One series and horizon of a forecast, in the forecast's units (W for rack power).

    Attributes:
        issued_at_s: epoch seconds when the forecast was made.
        series_id: a rack or domain id.
        horizon_s: seconds after ``issued_at_s`` the values are for.
        point: the point forecast.
        quantiles: levels in (0, 1), increasing; ``values`` holds one value per level.
    """

    issued_at_s: float
    series_id: str
    horizon_s: float
    point: float
    quantiles: tuple[float, ...]
    values: tuple[float, ...]


def forecast_rows(forecast: Forecast) -> list[ForecastRow]:
    """Flatten a :class:`Forecast` into one row per (series, horizon)."""
    return [
        ForecastRow(
            issued_at_s=float(forecast.issued_at_s),
            series_id=sid,
            horizon_s=float(h),
            point=float(forecast.point[i, j]),
            quantiles=tuple(float(q) for q in forecast.quantiles),
            values=tuple(float(v) for v in forecast.values[i, j, :]),
        )
        for i, sid in enumerate(forecast.series_ids)
        for j, h in enumerate(forecast.horizons_s)
    ]


class Store(Protocol):
    """Persistent telemetry, forecasts, the decision audit log and events."""

    # Writes return nothing useful from a plain store; BufferedStore returns whether the write
    # was acknowledged (True) or refused because its buffer is full (False).

    def write_telemetry(self, samples: Sequence[PowerSample]) -> object:
        """Insert a batch of samples in one transaction (all or nothing)."""
        ...

    def write_forecast(self, forecast: Forecast) -> object: ...

    def write_decisions(self, records: Sequence[DecisionRecord]) -> object:
        """Append to the audit log (one row per domain and tick, with its reason)."""
        ...

    def write_event(self, event: EventRecord) -> object: ...

    def telemetry(
        self,
        rack_id: str | None = None,
        since_s: float | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, PowerSample]]:
        """Newest first."""
        ...

    def forecasts(
        self, series_id: str | None = None, since_s: float | None = None, limit: int = 100
    ) -> list[tuple[int, ForecastRow]]:
        """Newest first."""
        ...

    def decisions(
        self,
        domain_id: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, DecisionRecord]]:
        """The audit log, newest first; page with ``before_id`` (the last id of a page)."""
        ...

    def events(
        self,
        kind: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, EventRecord]]:
        """Newest first; ``kind`` matches a prefix (``override`` matches ``override.pin_cap``)."""
        ...

    def apply_retention(
        self, older_than_s: float, now_s: float, tables: Sequence[str] = TABLES
    ) -> dict[str, int]:
        """Delete rows stamped before ``now_s - older_than_s``; rows deleted per table."""
        ...

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each table keeps rows (seconds). The audit trail outlives raw telemetry."""

    telemetry_s: float = 7 * 86400.0
    forecasts_s: float = 30 * 86400.0
    decisions_s: float = 365 * 86400.0
    events_s: float = 365 * 86400.0

    def apply(self, store: Store, now_s: float) -> dict[str, int]:
        """Delete what each table no longer keeps; rows deleted per table."""
        ages = {
            "telemetry": self.telemetry_s,
            "forecasts": self.forecasts_s,
            "decisions": self.decisions_s,
            "events": self.events_s,
        }
        deleted: dict[str, int] = {}
        for table, age_s in ages.items():
            deleted.update(store.apply_retention(age_s, now_s, tables=[table]))
        return deleted


def check_tables(tables: Sequence[str]) -> None:
    """Raise ValueError naming any table that does not exist."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; known: {list(TABLES)}")


def check_retention(older_than_s: float) -> None:
    if not older_than_s > 0:
        raise ValueError(f"older_than_s must be > 0 seconds, got {older_than_s!r}")

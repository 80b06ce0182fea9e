"""Writes that survive a database outage and, with a spill directory, a crash of the process.

Two modes:

- **Durable** (``spill_dir`` set; what ``wattwheel serve`` uses): a write returns True only once
  it is durable: committed to the database, or, while the database is unavailable (or older
  writes still wait), appended to the spill journal and fsync'ed (see :mod:`.spill`). A new
  BufferedStore on the same directory replays the journal into the database, in order. The
  journal is bounded by ``max_spill_bytes``: a write that would exceed it is refused (False;
  an MQTT ingester then leaves the message unacknowledged with the broker). WARNINGs mark the
  spill passing 50 %, 80 % and 100 % of its bound; ``spill_bytes``/``max_spill_bytes`` are
  exported as metrics for the "spill growing" alert.
- **Memory** (no ``spill_dir``: tests, ``memory://``): pending writes wait in a bounded FIFO
  (``max_items``). True then means "queued; stored once the database is back if this process
  lives": NOT durable across a crash (``durable`` is False).

Either way writes reach the database in the order they were accepted, and every write that
returned True is eventually stored (at least once) unless the process dies in memory mode.
Refused items are counted in ``dropped``; a WARNING is logged once per outage.

Blocking: calls do database and disk I/O; call them from a worker thread
(``asyncio.to_thread``) so a slow database never delays a tick. Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from wattwheel.adapters.store.base import TABLES, ForecastRow, Store, StoreUnavailable
from wattwheel.adapters.store.spill import Entry, SpillFile
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord

log = logging.getLogger(__name__)

#: Fractions of ``max_spill_bytes`` at which a WARNING says the spill is growing.
SPILL_WARN_FRACTIONS: tuple[float, ...] = (0.5, 0.8, 1.0)


class BufferedStore:
    """Wraps a :class:`Store`; writes never raise on an outage, reads do (StoreUnavailable).

    Args:
        inner: the real store.
        max_items: most items held in memory while the database is down (memory mode).
        retry_initial_s / retry_max_s: backoff between flush attempts (doubles per failure).
        clock: monotonic seconds (injected for tests).
        spill_dir: the spill journal's directory (None: memory mode, not durable).
        max_spill_bytes: bound of the spill journal.
    """

    def __init__(
        self,
        inner: Store,
        max_items: int = 1_000_000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        spill_dir: Path | None = None,
        max_spill_bytes: int = 512 * 1024 * 1024,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.inner = inner
        self.max_items = max_items
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._lock = threading.RLock()
        self._pending: deque[Entry] = deque()
        self.pending_items = 0
        self.dropped = 0
        self.written_items = 0
        self.healthy = True
        self._backoff_s = retry_initial_s
        self._next_try = 0.0
        self._warned_full = False
        self._spill_warned = 0.0
        #: most items per database write when the spill is replayed (small batches merged)
        self.replay_group_items = 10_000
        self.spill = SpillFile(spill_dir, max_spill_bytes) if spill_dir is not None else None
        if self.spill is not None and self.spill.items:
            log.warning(
                "store spill %s holds %d items from an earlier run: replaying them",
                self.spill.path,
                self.spill.items,
            )

    @property
    def durable(self) -> bool:
        """True when an acknowledged write survives a crash of this process (spill on)."""
        return self.spill is not None

    @property
    def spilled_items(self) -> int:
        """Items (samples, rows, events) waiting in the spill journal."""
        return self.spill.items if self.spill is not None else 0

    @property
    def spill_bytes(self) -> int:
        """Bytes of the spill journal not replayed yet."""
        return self.spill.pending_bytes if self.spill is not None else 0

    @property
    def max_spill_bytes(self) -> int:
        return self.spill.max_bytes if self.spill is not None else 0

    # ---- writes ----

    def write_telemetry(self, samples: Sequence[PowerSample]) -> bool:
        """Accept a batch. True: durable (committed or spilled) in durable mode, queued in
        memory mode; False: refused (bound reached), counted in ``dropped``."""
        if not samples:
            return True
        return self._write(Entry("write_telemetry", list(samples), len(samples)))

    def write_forecast(self, forecast: Forecast) -> bool:
        n = len(forecast.series_ids) * len(forecast.horizons_s)
        return self._write(Entry("write_forecast", forecast, n))

    def write_decisions(self, records: Sequence[DecisionRecord]) -> bool:
        if not records:
            return True
        return self._write(Entry("write_decisions", list(records), len(records)))

    def write_event(self, event: EventRecord) -> bool:
        return self._write(Entry("write_event", event, 1))

    def _write(self, entry: Entry) -> bool:
        with self._lock:
            if self.healthy and not self._backlog():
                try:
                    self._apply(entry)
                    return True
                except StoreUnavailable as exc:
                    self._failed(exc)
            if not self._hold(entry):
                self._refuse(entry.n_items)
                return False
            self.flush(force=False)
            return True

    def _backlog(self) -> bool:
        return bool(self._pending) or self.spilled_items > 0

    def _apply(self, entry: Entry) -> None:
        getattr(self.inner, entry.method)(entry.payload)
        self.written_items += entry.n_items

    def _hold(self, entry: Entry) -> bool:
        """Keep a write for later: fsync'ed to the spill, else in memory. False when full."""
        if self.spill is not None:
            if not self.spill.append_entry(entry):
                self._warn_spill(1.0)
                return False
            self._warn_spill(self.spill.size_bytes / self.spill.max_bytes)
            return True
        if self.pending_items + entry.n_items > self.max_items:
            return False
        self._pending.append(entry)
        self.pending_items += entry.n_items
        return True

    def _warn_spill(self, used: float) -> None:
        """WARNING once per threshold crossed (per outage): the "spill growing" alarm's log."""
        assert self.spill is not None
        passed = [f for f in SPILL_WARN_FRACTIONS if used >= f > self._spill_warned]
        if passed:
            self._spill_warned = passed[-1]
            log.warning(
                "store spill %s is %.0f %% full (%d of %d bytes, %d items): the database has "
                "been unavailable for a while; at 100 %% writes are refused",
                self.spill.path,
                100 * min(used, 1.0),
                self.spill.size_bytes,
                self.spill.max_bytes,
                self.spill.items,
            )

    def _refuse(self, n_items: int) -> None:
        self.dropped += n_items
        if not self._warned_full:
            log.warning(
                "store buffer full (%d items pending in memory, %d spilled): refusing writes; "
                "%d items dropped so far",
                self.pending_items,
                self.spilled_items,
                self.dropped,
            )
            self._warned_full = True

    def flush(self, force: bool = True) -> bool:
        """Write everything pending, oldest first. True when nothing is left pending.

        ``force`` ignores the retry backoff (use it at start-up, at shutdown or from a periodic
        task).
        """
        with self._lock:
            if not self._backlog():
                return True
            if not force and self._clock() < self._next_try:
                return False
            try:
                while self._pending:
                    self._apply(self._pending[0])
                    self.pending_items -= self._pending.popleft().n_items
                if self.spill is not None:
                    self.spill.replay(self._apply, self.replay_group_items)
            except StoreUnavailable as exc:
                self._failed(exc)
                return False
            self._recovered()
            return True

    def _failed(self, exc: StoreUnavailable) -> None:
        if self.healthy:
            log.warning("store unavailable, buffering writes and retrying: %s", exc)
        else:
            log.debug("store still unavailable (%d items pending): %s", self.pending_items, exc)
        self.healthy = False
        self._next_try = self._clock() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._retry_max_s)

    def _recovered(self) -> None:
        if not self.healthy:
            log.warning("store available again; buffered writes flushed")
        self.healthy = True
        self._warned_full = False
        self._spill_warned = 0.0
        self._backoff_s = self._retry_initial_s
        self._next_try = 0.0

    # ---- reads and maintenance: straight through ----

    def telemetry(
        self, rack_id: str | None = None, since_s: float | None = None, limit: int = 1000
    ) -> list[tuple[int, PowerSample]]:
        return self.inner.telemetry(rack_id, since_s, limit)

    def forecasts(
        self, series_id: str | None = None, since_s: float | None = None, limit: int = 100
    ) -> list[tuple[int, ForecastRow]]:
        return self.inner.forecasts(series_id, since_s, limit)

    def decisions(
        self,
        domain_id: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, DecisionRecord]]:
        return self.inner.decisions(domain_id, before_id, since_s, limit)

    def events(
        self,
        kind: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, EventRecord]]:
        return self.inner.events(kind, before_id, since_s, limit)

    def apply_retention(
        self, older_than_s: float, now_s: float, tables: Sequence[str] = TABLES
    ) -> dict[str, int]:
        return self.inner.apply_retention(older_than_s, now_s, tables)

    def counts(self) -> dict[str, int]:
        return self.inner.counts()

    def close(self) -> None:
        """Try a last flush, then close the inner store. What could not be written stays in the
        spill for the next start (durable mode) or is lost and logged (memory mode)."""
        if not self.flush(force=True):
            if self.pending_items:
                log.error("closing store: %d items pending in memory are lost", self.pending_items)
            if self.spilled_items:
                log.warning(
                    "closing store: %d items stay in the spill %s for the next start",
                    self.spilled_items,
                    self.spill.path if self.spill is not None else "",
                )
        if self.spill is not None:
            self.spill.close()
        self.inner.close()

"""Writes that survive a database outage: a bounded FIFO of pending writes, retried with backoff.

Every write goes into the FIFO first and the FIFO is flushed in order, so rows reach the database
in the order they were acknowledged. When the database is unavailable the writes stay queued and
a later write (or :meth:`BufferedStore.flush`) retries once the backoff has passed. The bound
counts items (samples, decision rows, events): a write that would exceed it is refused (the call
returns False, the items are counted in ``dropped`` and a WARNING is logged once per outage) —
so every write that returned True is eventually stored.

With ``spill_dir`` set, telemetry that cannot be written at once goes to an fsync'ed file there
instead of memory (bounded by ``max_spill_bytes``), so it also survives a restart of the process:
a new BufferedStore on the same directory replays it (see :mod:`.spill`).

Blocking: calls do database I/O; the runtime should call them from a worker thread
(``asyncio.to_thread``) so a slow database never delays a tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattwheel.adapters.store.base import TABLES, ForecastRow, Store, StoreUnavailable
from wattwheel.adapters.store.spill import SpillFile
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Pending:
    method: str  # the Store method to call
    payload: Any
    n_items: int


class BufferedStore:
    """Wraps a :class:`Store`; writes never raise on an outage, reads do (StoreUnavailable).

    Args:
        inner: the real store.
        max_items: most items held while the database is down.
        retry_initial_s / retry_max_s: backoff between flush attempts (doubles per failure).
        clock: monotonic seconds (injected for tests).
        spill_dir: keep unwritten telemetry on disk here (None: memory only).
        max_spill_bytes: bound of the spill file.
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
        self._pending: deque[_Pending] = deque()
        self.pending_items = 0
        self.dropped = 0
        self.written_items = 0
        self.healthy = True
        self._backoff_s = retry_initial_s
        self._next_try = 0.0
        self._warned_full = False
        self.spill = SpillFile(spill_dir, max_spill_bytes) if spill_dir is not None else None

    # ---- writes: queue, then try to flush ----

    def _enqueue(self, method: str, payload: Any, n_items: int) -> bool:
        with self._lock:
            if self.pending_items + n_items > self.max_items:
                self._refuse(n_items)
                return False
            self._pending.append(_Pending(method, payload, n_items))
            self.pending_items += n_items
        self.flush(force=False)
        return True

    def write_telemetry(self, samples: Sequence[PowerSample]) -> bool:
        """Accept a batch; True means acknowledged (it will be stored), False means dropped."""
        if not samples:
            return True
        if self.spill is None:
            return self._enqueue("write_telemetry", list(samples), len(samples))
        return self._spill_or_write(samples)

    def _spill_or_write(self, samples: Sequence[PowerSample]) -> bool:
        assert self.spill is not None
        with self._lock:
            if self.healthy and not self._pending and not self.spill.items:
                try:
                    self.inner.write_telemetry(samples)
                    self.written_items += len(samples)
                    return True
                except StoreUnavailable as exc:
                    self._failed(exc)
            if not self.spill.append(samples):
                self._refuse(len(samples))
                return False
        self.flush(force=False)
        return True

    @property
    def spilled_items(self) -> int:
        """Telemetry samples waiting in the spill file."""
        return self.spill.items if self.spill is not None else 0

    def write_forecast(self, forecast: Forecast) -> bool:
        n = len(forecast.series_ids) * len(forecast.horizons_s)
        return self._enqueue("write_forecast", forecast, n)

    def write_decisions(self, records: Sequence[DecisionRecord]) -> bool:
        return self._enqueue("write_decisions", list(records), len(records)) if records else True

    def write_event(self, event: EventRecord) -> bool:
        return self._enqueue("write_event", event, 1)

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

        ``force`` ignores the retry backoff (use it at shutdown or from a periodic task).
        """
        with self._lock:
            if not self._pending and not self.spilled_items:
                return True
            if not force and self._clock() < self._next_try:
                return False
            try:
                self._flush_memory()
                self._flush_spill()
            except StoreUnavailable as exc:
                self._failed(exc)
                return False
            self._recovered()
            return True

    def _flush_memory(self) -> None:
        while self._pending:
            op = self._pending[0]
            getattr(self.inner, op.method)(op.payload)
            self._pending.popleft()
            self.pending_items -= op.n_items
            self.written_items += op.n_items

    def _flush_spill(self) -> None:
        if self.spill is None or not self.spill.items:
            return
        batches = self.spill.batches()
        done = 0
        try:
            for batch in batches:
                self.inner.write_telemetry(batch)
                done += 1
                self.written_items += len(batch)
        finally:
            self.spill.keep_last(len(batches) - done)

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
            log.info("store available again; buffered writes flushed")
        self.healthy = True
        self._warned_full = False
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
        """Try a last flush, then close the inner store (pending items are logged if lost)."""
        if not self.flush(force=True):
            log.error("closing store with %d items still pending", self.pending_items)
        self.inner.close()

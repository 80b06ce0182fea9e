"""Storage: telemetry, forecasts, the decision audit log and events.

``Store`` is the contract; :class:`SqlStore` implements it on SQLite (WAL, the default
``sqlite:///wattwheel.db``) or PostgreSQL (``postgresql+psycopg://...``) with alembic migrations
applied on open; :class:`MemoryStore` is the in-memory fake; :class:`BufferedStore` keeps writes
through a database outage (and, with a spill directory, a crash: see :mod:`.buffer`).
:class:`DurableTelemetrySink` is the sink an MQTT ingester acknowledges behind.
:func:`open_store` is what the runtime calls.
"""

from __future__ import annotations

from pathlib import Path

from wattwheel.adapters.store.base import (
    TABLES,
    ForecastRow,
    RetentionPolicy,
    Store,
    StoreUnavailable,
    forecast_rows,
)
from wattwheel.adapters.store.buffer import BufferedStore
from wattwheel.adapters.store.memory import MemoryStore
from wattwheel.adapters.store.sink import DurableTelemetrySink, StoreRefused
from wattwheel.adapters.store.sql import DEFAULT_URL, SqlStore, make_engine

__all__ = [
    "DEFAULT_MAX_SPILL_BYTES",
    "DEFAULT_SPILL_DIR",
    "DEFAULT_URL",
    "TABLES",
    "BufferedStore",
    "DurableTelemetrySink",
    "ForecastRow",
    "MemoryStore",
    "RetentionPolicy",
    "SqlStore",
    "Store",
    "StoreRefused",
    "StoreUnavailable",
    "forecast_rows",
    "make_engine",
    "open_store",
]


#: ``wattwheel serve``'s spill directory when none is given (relative to the working directory,
#: like the default SQLite file).
DEFAULT_SPILL_DIR = Path("wattwheel-spill")
#: ``wattwheel serve``'s spill bound when none is given.
DEFAULT_MAX_SPILL_BYTES = 512 * 1024 * 1024


def open_store(
    url: str | None = None,
    max_buffered_items: int = 1_000_000,
    spill_dir: Path | None = None,
    max_spill_bytes: int = DEFAULT_MAX_SPILL_BYTES,
) -> BufferedStore:
    """Open (and migrate) the database at ``url`` behind a write buffer.

    ``url``: ``sqlite:///PATH`` (default :data:`DEFAULT_URL`), ``postgresql+psycopg://...`` or
    ``memory://`` for the in-memory fake. ``spill_dir``: the spill journal (durable writes: an
    acknowledged write survives a crash during an outage; None keeps pending writes in memory).
    A journal left by an earlier run is replayed into the database here when it is reachable.
    Raises StoreUnavailable when the database cannot be reached at start-up (a configuration
    problem the operator must see).
    """
    url = url or DEFAULT_URL
    inner: Store = MemoryStore() if url == "memory://" else SqlStore.open(url)
    store = BufferedStore(
        inner, max_items=max_buffered_items, spill_dir=spill_dir, max_spill_bytes=max_spill_bytes
    )
    store.flush(force=True)
    return store

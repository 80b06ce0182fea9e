"""Storage: telemetry, forecasts, the decision audit log and events.

``Store`` is the contract; :class:`SqlStore` implements it on SQLite (WAL, the default
``sqlite:///wattwheel.db``) or PostgreSQL (``postgresql+psycopg://...``) with alembic migrations
applied on open; :class:`MemoryStore` is the in-memory fake; :class:`BufferedStore` keeps writes
through a database outage. :func:`open_store` is what the runtime calls.
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
from wattwheel.adapters.store.sql import DEFAULT_URL, SqlStore, make_engine

__all__ = [
    "DEFAULT_URL",
    "TABLES",
    "BufferedStore",
    "ForecastRow",
    "MemoryStore",
    "RetentionPolicy",
    "SqlStore",
    "Store",
    "StoreUnavailable",
    "forecast_rows",
    "make_engine",
    "open_store",
]


def open_store(
    url: str | None = None, max_buffered_items: int = 1_000_000, spill_dir: Path | None = None
) -> BufferedStore:
    """Open (and migrate) the database at ``url`` behind a write buffer.

    ``url``: ``sqlite:///PATH`` (default :data:`DEFAULT_URL`), ``postgresql+psycopg://...`` or
    ``memory://`` for the in-memory fake. ``spill_dir``: keep unwritten telemetry on disk there
    during an outage (it then survives a restart). Raises StoreUnavailable when the database
    cannot be reached at start-up (a configuration problem the operator must see).
    """
    url = url or DEFAULT_URL
    inner: Store = MemoryStore() if url == "memory://" else SqlStore.open(url)
    return BufferedStore(inner, max_items=max_buffered_items, spill_dir=spill_dir)

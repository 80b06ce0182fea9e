"""The model history of continuous learning: one row per model version with its metrics.

:class:`ModelHistory` is the contract (``serve``'s learner writes, the API reads); it is
implemented on the SQL database (table ``model_versions``, migration v0003) by
:class:`SqlModelHistory` and in memory by :class:`MemoryModelHistory`. :func:`model_history_for`
finds the one behind a store (a :class:`~wattwheel.adapters.store.buffer.BufferedStore` over a
:class:`~wattwheel.adapters.store.sql.SqlStore` shares its engine). Writes are rare (a few per
day) and go straight to the database: a learner whose write fails retries at its next cycle.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from wattwheel.adapters.store.base import StoreUnavailable
from wattwheel.adapters.store.schema import ModelVersionRow
from wattwheel.forecast.online import ModelRecord


@runtime_checkable
class ModelHistory(Protocol):
    """Model versions, newest first."""

    def write_model(self, record: ModelRecord, now_s: float) -> None:
        """Insert a version, or update it (status, metrics) if it is already there."""
        ...

    def models(self, limit: int = 100) -> list[ModelRecord]:
        """Newest first (by creation time)."""
        ...


class MemoryModelHistory:
    """The in-memory fake."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, ModelRecord] = {}
        self.available = True

    def write_model(self, record: ModelRecord, now_s: float) -> None:
        if not self.available:
            raise StoreUnavailable("memory model history marked unavailable")
        with self._lock:
            self._rows[record.version] = record

    def models(self, limit: int = 100) -> list[ModelRecord]:
        with self._lock:
            rows = sorted(self._rows.values(), key=lambda r: (r.created_at_s, r.version))
        return rows[::-1][: max(0, limit)]


class SqlModelHistory:
    """The ``model_versions`` table of a migrated database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write_model(self, record: ModelRecord, now_s: float) -> None:
        row = _row(record, now_s)
        try:
            with self.engine.begin() as conn:
                done = conn.execute(
                    update(ModelVersionRow)
                    .where(ModelVersionRow.version == record.version)
                    .values(**row)
                )
                if done.rowcount == 0:
                    conn.execute(insert(ModelVersionRow).values(**row))
        except OperationalError as exc:
            raise StoreUnavailable(f"model history not written: {exc}") from exc

    def models(self, limit: int = 100) -> list[ModelRecord]:
        stmt = (
            select(ModelVersionRow)
            .order_by(ModelVersionRow.created_at_s.desc(), ModelVersionRow.id.desc())
            .limit(max(0, limit))
        )
        try:
            with self.engine.connect() as conn:
                return [_record(r) for r in conn.execute(stmt).all()]
        except OperationalError as exc:
            raise StoreUnavailable(f"model history unavailable: {exc}") from exc


def model_history_for(store: object) -> ModelHistory | None:
    """The model history kept beside ``store``: its own, its SQL engine's, or None."""
    if isinstance(store, ModelHistory):
        return store
    engine = getattr(store, "engine", None)
    if isinstance(engine, Engine):
        return SqlModelHistory(engine)
    inner = getattr(store, "inner", None)
    return model_history_for(inner) if inner is not None else None


def _row(record: ModelRecord, now_s: float) -> dict[str, Any]:
    until = record.trained_until_s
    return {
        "version": record.version,
        "parent": record.parent,
        "created_at_s": record.created_at_s,
        "updated_at_s": now_s,
        "status": record.status,
        "trained_until_s": until if math.isfinite(until) else None,
        "model_dir": record.model_dir,
        "metrics_json": json.dumps(_finite(dict(record.metrics))),
    }


def _record(r: Any) -> ModelRecord:
    return ModelRecord(
        version=r.version,
        parent=r.parent,
        created_at_s=float(r.created_at_s),
        status=r.status,
        trained_until_s=-math.inf if r.trained_until_s is None else float(r.trained_until_s),
        model_dir=r.model_dir,
        metrics=json.loads(r.metrics_json),
    )


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }

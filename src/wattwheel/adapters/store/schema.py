"""SQLAlchemy 2 table models. Times are epoch seconds (double), power in W or kW as named.

The alembic migrations under ``migrations/versions`` create exactly these tables; a test checks
that the migrated schema and these models agree.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class TelemetryRow(Base):
    __tablename__ = "telemetry"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp_s: Mapped[float] = mapped_column(Float, nullable=False)
    source: Mapped[str] = mapped_column(String(200), nullable=False)
    rack_id: Mapped[str] = mapped_column(String(200), nullable=False)
    server_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    power_w: Mapped[float] = mapped_column(Float, nullable=False)
    # Only the time index (retention, time-window reads): a per-rack index would cost 4x the
    # ingestion rate (see migration v0002).
    __table_args__ = (Index("ix_telemetry_timestamp_s", "timestamp_s"),)


class ForecastRowModel(Base):
    __tablename__ = "forecasts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issued_at_s: Mapped[float] = mapped_column(Float, nullable=False, index=True)
    series_id: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    horizon_s: Mapped[float] = mapped_column(Float, nullable=False)
    point: Mapped[float] = mapped_column(Float, nullable=False)
    quantiles_json: Mapped[str] = mapped_column(Text, nullable=False)
    values_json: Mapped[str] = mapped_column(Text, nullable=False)


class DecisionRowModel(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp_s: Mapped[float] = mapped_column(Float, nullable=False, index=True)
    domain_id: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    policy: Mapped[str] = mapped_column(String(64), nullable=False)
    mode: Mapped[str] = mapped_column(String(32), nullable=False)
    kes_kw: Mapped[float] = mapped_column(Float, nullable=False)
    cap_kw: Mapped[float] = mapped_column(Float, nullable=False)
    reserve_on: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reserve_kw: Mapped[float] = mapped_column(Float, nullable=False)
    shift_out_kw: Mapped[float] = mapped_column(Float, nullable=False)
    shift_in_kw: Mapped[float] = mapped_column(Float, nullable=False)
    defer_kw: Mapped[float] = mapped_column(Float, nullable=False)
    repay_kw: Mapped[float] = mapped_column(Float, nullable=False)
    soc_target: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, nullable=False)


class EventRowModel(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp_s: Mapped[float] = mapped_column(Float, nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    domain_id: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, nullable=False)
    data_json: Mapped[str] = mapped_column(Text, nullable=False)


class ModelVersionRow(Base):
    """One forecasting model version of continuous learning, with its rolling-backtest metrics
    (``wattwheel.forecast.online.ModelRecord``); updated in place as its status changes."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    parent: Mapped[str | None] = mapped_column(String(64))
    created_at_s: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at_s: Mapped[float] = mapped_column(Float, nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    trained_until_s: Mapped[float | None] = mapped_column(Float)
    model_dir: Mapped[str] = mapped_column(Text, nullable=False)
    metrics_json: Mapped[str] = mapped_column(Text, nullable=False)
    __table_args__ = (Index("ix_model_versions_version", "version", unique=True),)

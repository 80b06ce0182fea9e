"""Initial schema: telemetry, forecasts, decisions (audit log), events.

Revision ID: v0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "telemetry",
        _id(),
        sa.Column("timestamp_s", sa.Float, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("rack_id", sa.String(200), nullable=False),
        sa.Column("server_id", sa.String(200)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("power_w", sa.Float, nullable=False),
    )
    op.create_index("ix_telemetry_timestamp_s", "telemetry", ["timestamp_s"])
    op.create_index("ix_telemetry_rack_time", "telemetry", ["rack_id", "timestamp_s"])
    op.create_table(
        "forecasts",
        _id(),
        sa.Column("issued_at_s", sa.Float, nullable=False),
        sa.Column("series_id", sa.String(200), nullable=False),
        sa.Column("horizon_s", sa.Float, nullable=False),
        sa.Column("point", sa.Float, nullable=False),
        sa.Column("quantiles_json", sa.Text, nullable=False),
        sa.Column("values_json", sa.Text, nullable=False),
    )
    op.create_index("ix_forecasts_issued_at_s", "forecasts", ["issued_at_s"])
    op.create_index("ix_forecasts_series_id", "forecasts", ["series_id"])
    op.create_table(
        "decisions",
        _id(),
        sa.Column("timestamp_s", sa.Float, nullable=False),
        sa.Column("domain_id", sa.String(200), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        *(sa.Column(name, sa.Float, nullable=False) for name in ("kes_kw", "cap_kw")),
        sa.Column("reserve_on", sa.Boolean, nullable=False),
        *(
            sa.Column(name, sa.Float, nullable=False)
            for name in ("reserve_kw", "shift_out_kw", "shift_in_kw", "defer_kw", "repay_kw")
        ),
        sa.Column("soc_target", sa.Float),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_decisions_timestamp_s", "decisions", ["timestamp_s"])
    op.create_index("ix_decisions_domain_id", "decisions", ["domain_id"])
    op.create_table(
        "events",
        _id(),
        sa.Column("timestamp_s", sa.Float, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("domain_id", sa.String(200)),
        sa.Column("actor", sa.String(200)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data_json", sa.Text, nullable=False),
    )
    op.create_index("ix_events_timestamp_s", "events", ["timestamp_s"])
    op.create_index("ix_events_kind", "events", ["kind"])


def downgrade() -> None:
    for table in ("events", "decisions", "forecasts", "telemetry"):
        op.drop_table(table)

"""The model history of continuous learning: one row per forecasting model version.

Revision ID: v0003
Revises: v0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0003"
down_revision: str | None = "v0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("parent", sa.String(64)),
        sa.Column("created_at_s", sa.Float, nullable=False),
        sa.Column("updated_at_s", sa.Float, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("trained_until_s", sa.Float),
        sa.Column("model_dir", sa.Text, nullable=False),
        sa.Column("metrics_json", sa.Text, nullable=False),
    )
    op.create_index("ix_model_versions_version", "model_versions", ["version"], unique=True)


def downgrade() -> None:
    op.drop_table("model_versions")

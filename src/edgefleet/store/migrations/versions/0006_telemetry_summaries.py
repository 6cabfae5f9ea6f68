"""telemetry_summaries: devices' drift summaries, one row per device, model version and
summary period, instead of merged into the 5-minute telemetry buckets

Revision ID: 0006_telemetry_summaries
Revises: 0005_drift
Create Date: 2026-12-06

Buckets written before this keep the summaries merged into them; the drift store still
reads those, so nothing stored is lost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_telemetry_summaries"
down_revision = "0005_drift"
branch_labels = None
depends_on = None

document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "telemetry_summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", document, nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.id"],
            name=op.f("fk_telemetry_summaries_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_summaries")),
        sa.UniqueConstraint(
            "device_pk",
            "model",
            "version",
            "period_end",
            name="uq_telemetry_summaries_device_model_version_period",
        ),
    )
    with op.batch_alter_table("telemetry_summaries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_telemetry_summaries_model_version_period_end",
            ["model", "version", "period_end"],
            unique=False,
        )
        batch_op.create_index("ix_telemetry_summaries_period_end", ["period_end"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("telemetry_summaries", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_summaries_period_end")
        batch_op.drop_index("ix_telemetry_summaries_model_version_period_end")
    op.drop_table("telemetry_summaries")

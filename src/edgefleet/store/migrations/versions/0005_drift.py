"""drift: monitors (every applied version), looks (one per model version and window)
and alarms

Revision ID: 0005_drift
Revises: 0004_checkin_changes
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_drift"
down_revision = "0004_checkin_changes"
branch_labels = None
depends_on = None

document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "drift_monitors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("spec", document, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_monitors")),
        sa.UniqueConstraint("model", "number", name="uq_drift_monitors_model_number"),
    )
    op.create_table(
        "drift_looks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", document, nullable=False),
        sa.ForeignKeyConstraint(
            ["monitor_id"],
            ["drift_monitors.id"],
            name=op.f("fk_drift_looks_monitor_id_drift_monitors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_looks")),
        sa.UniqueConstraint(
            "model", "version", "window_start", name="uq_drift_looks_model_version_window"
        ),
    )
    with op.batch_alter_table("drift_looks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_drift_looks_model_window_end", ["model", "window_end"], unique=False
        )
    op.create_table(
        "drift_alarms",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("segment", sa.String(length=512), nullable=False),
        sa.Column("feature", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", document, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_alarms")),
    )
    with op.batch_alter_table("drift_alarms", schema=None) as batch_op:
        batch_op.create_index("ix_drift_alarms_model_state", ["model", "state"], unique=False)
        batch_op.create_index(
            "ix_drift_alarms_state_opened_at", ["state", "opened_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("drift_alarms", schema=None) as batch_op:
        batch_op.drop_index("ix_drift_alarms_state_opened_at")
        batch_op.drop_index("ix_drift_alarms_model_state")
    op.drop_table("drift_alarms")
    with op.batch_alter_table("drift_looks", schema=None) as batch_op:
        batch_op.drop_index("ix_drift_looks_model_window_end")
    op.drop_table("drift_looks")
    op.drop_table("drift_monitors")

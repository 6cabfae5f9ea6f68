"""rollout_extended: how many times a rollout's current wave was extended for more
evidence (``on_inconclusive: extend``)

Revision ID: 0007_rollout_extended
Revises: 0006_telemetry_summaries
Create Date: 2026-12-06

Rollouts stored before this read as never extended.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_rollout_extended"
down_revision = "0006_telemetry_summaries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("extended", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("extended")

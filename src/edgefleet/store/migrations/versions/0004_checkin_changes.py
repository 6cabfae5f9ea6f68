"""checkin changes: a log of the device rows whose check-in answer changed (SQLite)

The server answers the devices' "nothing changed" check-ins from rows it holds in
memory (store/checkin.py ``CheckinCache``) and drops a row when this log names its
device. On SQLite, triggers fill the log for every writer, this server's or not (the
CLI beside it); one writer at a time means sequence order is commit order, so a reader
that has seen sequence N has seen every change up to N. On PostgreSQL, where a lower
sequence can commit after a higher one is visible, the table stays empty and the
server reads the row on every check-in.

Revision ID: 0004_checkin_changes
Revises: 0003_rollouts
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_checkin_changes"
down_revision = "0003_rollouts"
branch_labels = None
depends_on = None

#: The ``devices`` columns a check-in answer is made of (``store.checkin.CheckinRow``).
ANSWER_COLUMNS = (
    "device_id",
    "credential_id",
    "credential_hash",
    "desired_etag",
    "poll_interval_s",
)

TRIGGERS = {
    "checkin_changes_on_update": (
        f"CREATE TRIGGER checkin_changes_on_update AFTER UPDATE OF {', '.join(ANSWER_COLUMNS)} "
        "ON devices WHEN "
        + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in ANSWER_COLUMNS)
        + " BEGIN INSERT INTO checkin_changes (device_pk) VALUES (OLD.id); END"
    ),
    "checkin_changes_on_delete": (
        "CREATE TRIGGER checkin_changes_on_delete AFTER DELETE ON devices "
        "BEGIN INSERT INTO checkin_changes (device_pk) VALUES (OLD.id); END"
    ),
}


def upgrade() -> None:
    op.create_table(
        "checkin_changes",
        sa.Column("seq", sa.Integer(), nullable=False),
        # No foreign key: a deleted device's change must outlive its row.
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_checkin_changes")),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in TRIGGERS.values():
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("checkin_changes")

"""Alembic environment: runs migrations on the connection edgefleet hands it.

``edgefleet.store.migrate`` passes a live connection in ``config.attributes``; run from
the ``alembic`` command line instead, it connects to ``EDGEFLEET_DATABASE_URL`` (or the
SQLite file under ``EDGEFLEET_HOME``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from edgefleet.config import Settings
from edgefleet.store.database import make_engine
from edgefleet.store.tables import Base

#: Serialises concurrent migrations of one PostgreSQL database (arbitrary, fixed key).
MIGRATION_LOCK_KEY = 0x0EDF1EE7


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(Settings())
    with engine.connect() as fresh:
        _run(fresh)
        fresh.commit()

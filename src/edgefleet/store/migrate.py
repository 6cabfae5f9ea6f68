"""Bringing a database's schema to the revision this edgefleet expects.

``ensure_schema`` is called whenever the store is opened: it upgrades automatically
when ``EDGEFLEET_AUTO_MIGRATE`` is on (the default, and what the embedded SQLite mode
wants) and otherwise refuses to run against an out-of-date schema.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from edgefleet.store.database import describe_url, translate
from edgefleet.store.errors import SchemaOutOfDateError

SCRIPT_LOCATION = "edgefleet.store:migrations"


def alembic_config() -> Config:
    """An Alembic configuration pointing at edgefleet's migrations."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "edgefleet ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database).

    Raises:
        StoreUnavailableError: the database is locked or unreachable.
    """
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except DBAPIError as exc:
        raise translate(exc, describe_url(engine)) from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` in one transaction.

    Raises:
        StoreUnavailableError: the database is locked or unreachable.
    """
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except DBAPIError as exc:
        raise translate(exc, describe_url(engine)) from exc


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Make sure the schema is current, upgrading it if allowed.

    Raises:
        SchemaOutOfDateError: the schema is behind and auto-migration is off, or the
            database was written by a newer edgefleet.
        StoreUnavailableError: the database is locked or unreachable.
    """
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise SchemaOutOfDateError(
            f"the database {describe_url(engine)} is at schema revision {current}, which this "
            "edgefleet does not know; it was written by a newer version, upgrade edgefleet",
            details={"current": current, "head": head},
        )
    if not auto_migrate:
        raise SchemaOutOfDateError(
            f"the database {describe_url(engine)} is at schema revision {current or 'none'} but "
            f"this edgefleet needs {head}: run `edgefleet db upgrade`",
            details={"current": current, "head": head},
        )
    upgrade(engine)

"""Migrations on each backend: they build exactly the tables the code maps."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from edgefleet.config import Settings
from edgefleet.store.database import make_engine
from edgefleet.store.errors import SchemaOutOfDateError
from edgefleet.store.migrate import current_revision, ensure_schema, head_revision, upgrade
from edgefleet.store.tables import Base


def test_fresh_database_is_migrated_to_head(settings):
    engine = make_engine(settings)
    try:
        assert current_revision(engine) is None
        ensure_schema(engine, auto_migrate=True)
        assert current_revision(engine) == head_revision()
        ensure_schema(engine, auto_migrate=True)  # idempotent
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"tables.py and the migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_out_of_date_schema_is_refused_without_auto_migrate(settings):
    engine = make_engine(settings)
    try:
        with pytest.raises(SchemaOutOfDateError, match="run `edgefleet db upgrade`"):
            ensure_schema(engine, auto_migrate=False)
        upgrade(engine)
        ensure_schema(engine, auto_migrate=False)
    finally:
        engine.dispose()


def test_schema_from_a_newer_edgefleet_is_refused(settings):
    engine = make_engine(settings)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
        with pytest.raises(SchemaOutOfDateError, match="written by a newer version"):
            ensure_schema(engine, auto_migrate=True)
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    engine = make_engine(Settings(home=tmp_path, database_url_override=None))
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "edgefleet.db").exists()
    finally:
        engine.dispose()

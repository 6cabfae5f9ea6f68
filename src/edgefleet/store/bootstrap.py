"""Wiring: a ready registry service from settings.

Opening checks the schema (upgrading it when ``EDGEFLEET_AUTO_MIGRATE`` allows) so every
entry point starts from a usable database::

    with open_registry(Settings()) as registry:
        registry.register(Path("bundles/digits-1.0.0"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from edgefleet.config import Settings
from edgefleet.registry.artifacts import LocalArtifactStore
from edgefleet.registry.service import RegistryService
from edgefleet.store.database import describe_url, make_engine
from edgefleet.store.migrate import ensure_schema
from edgefleet.store.uow import SqlUnitOfWork


def registry_service(engine: Engine, artifacts: LocalArtifactStore) -> RegistryService:
    """A registry service over an engine whose schema is current."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    where = describe_url(engine)
    return RegistryService(lambda: SqlUnitOfWork(sessions, where), artifacts)


@contextmanager
def open_registry(settings: Settings) -> Iterator[RegistryService]:
    """The registry named by ``settings``; disposes of the engine on exit.

    Raises:
        ConfigError, MissingDependencyError: the database URL cannot be used.
        StoreUnavailableError: the database is locked or unreachable.
        SchemaOutOfDateError: the schema is behind and auto-migration is off.
    """
    engine = make_engine(settings)
    try:
        ensure_schema(engine, auto_migrate=settings.auto_migrate)
        yield registry_service(engine, LocalArtifactStore(settings.artifacts_dir))
    finally:
        engine.dispose()


@contextmanager
def open_store(settings: Settings) -> Iterator[Callable[[], SqlUnitOfWork]]:
    """A unit-of-work factory on the store named by ``settings`` (schema checked)."""
    engine = make_engine(settings)
    try:
        ensure_schema(engine, auto_migrate=settings.auto_migrate)
        sessions = sessionmaker(engine, expire_on_commit=False)
        where = describe_url(engine)
        yield lambda: SqlUnitOfWork(sessions, where)
    finally:
        engine.dispose()

"""The SQLAlchemy unit of work: one session, one transaction, explicit commit.

It carries a repository per aggregate: ``versions`` (registry), ``devices`` (fleet),
``access`` (keys, tokens, audit log), ``rollouts`` (rollouts, decision log, webhooks).

Leaving the ``with`` block without ``commit()`` rolls back. Driver errors raised inside
the block (a locked SQLite file, an unreachable PostgreSQL) leave it as
``StoreUnavailableError`` with a message naming the database.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.store.access import SqlAccessRepository
from edgefleet.store.database import translate
from edgefleet.store.devices import SqlDeviceRepository
from edgefleet.store.repository import SqlVersionRepository
from edgefleet.store.rollouts import GateTelemetryCache, SqlRolloutRepository


class SqlUnitOfWork:
    """A transaction over the registry tables."""

    versions: SqlVersionRepository
    devices: SqlDeviceRepository
    access: SqlAccessRepository
    rollouts: SqlRolloutRepository

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        where: str,
        gate_cache: GateTelemetryCache | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.where = where
        #: Shared by the units of work of one process (the server's), so the rollout
        #: controller's analyses decode a telemetry bucket only when it changed.
        self.gate_cache = gate_cache

    def __enter__(self) -> Self:
        self.session = self.session_factory()
        self.versions = SqlVersionRepository(self.session)
        self.devices = SqlDeviceRepository(self.session)
        self.access = SqlAccessRepository(self.session)
        self.rollouts = SqlRolloutRepository(self.session, self.gate_cache)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.session.rollback()
        except DBAPIError:
            pass  # the connection is already broken; the original error says why
        finally:
            self.session.close()
        if isinstance(exc, DBAPIError):
            raise translate(exc, self.where) from exc

    def commit(self) -> None:
        try:
            self.session.commit()
        except DBAPIError as exc:
            raise translate(exc, self.where) from exc

    def rollback(self) -> None:
        self.session.rollback()

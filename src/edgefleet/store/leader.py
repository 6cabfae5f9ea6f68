"""Which server process runs the rollout controller.

With PostgreSQL, several replicas may run; the one holding a session-level advisory
lock (on a connection it keeps open) is the leader, and if it dies its connection
closes and the lock passes on at another replica's next attempt. With SQLite there is
one process per database file, so it is always the leader.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("edgefleet.server")

#: Advisory lock key of the rollout controller (arbitrary, fixed).
CONTROLLER_LOCK_KEY = 0x0EDF_C0DE


class Leadership:
    def __init__(self, engine: Engine, key: int = CONTROLLER_LOCK_KEY) -> None:
        self.engine = engine
        self.key = key
        self._connection: Connection | None = None

    @property
    def held(self) -> bool:
        """Whether this process led at the last ``acquire`` (no database round trip)."""
        return self.engine.dialect.name != "postgresql" or self._connection is not None

    def acquire(self) -> bool:
        """Whether this process leads now (takes the lock if it is free)."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._connection is not None:
            try:
                self._connection.execute(select(1))
                return True
            except DBAPIError:
                log.warning("lost the controller lock's connection; trying to lead again")
                self._drop()
        try:
            connection = self.engine.connect()
        except DBAPIError:
            return False
        try:
            got = bool(connection.execute(select(func.pg_try_advisory_lock(self.key))).scalar())
            connection.commit()
        except DBAPIError:
            connection.close()
            return False
        if not got:
            connection.close()
            return False
        self._connection = connection
        log.info("this server now runs the rollout controller")
        return True

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.execute(select(func.pg_advisory_unlock(self.key)))
                self._connection.commit()
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.close()
            self._connection = None

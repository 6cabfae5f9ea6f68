"""Engines for the embedded SQLite file and for PostgreSQL, and their error messages.

SQLite runs in WAL mode (readers never block the writer) with foreign keys on and a
busy timeout; PostgreSQL gets a connect timeout and pre-ping. Driver errors are
translated into ``StoreUnavailableError`` with a message that says what to do.

SQLite has one writer at a time, and its busy timeout is no queue: a waiting writer
sleeps and retries (up to 100 ms a nap), so among many writer threads the lucky ones
take the lock again and again while others starve until the timeout says "database is
locked". Writers of one process therefore queue on a ``WriterGate`` first, and only
the one at its head asks SQLite for the lock; the busy timeout is left to writers of
other processes (the CLI beside a running server).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from edgefleet import stdjson
from edgefleet.config import Settings
from edgefleet.errors import ConfigError, MissingDependencyError
from edgefleet.store.errors import StoreError, StoreUnavailableError


def make_engine(settings: Settings, *, read_only: bool = False) -> Engine:
    """An engine for ``settings.database_url``.

    On SQLite, transactions begin with ``BEGIN IMMEDIATE`` (the write lock is taken up
    front, so a transaction that reads and then writes never fails on a stale snapshot
    when another writer committed in between); a ``read_only`` engine begins deferred,
    so readers never wait for writers (WAL).

    Raises:
        ConfigError: the URL is malformed or names an unsupported database.
        MissingDependencyError: the database's driver is not installed.
    """
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise ConfigError(
            f"EDGEFLEET_DATABASE_URL is not a database URL: {settings.database_url!r} "
            "(expected e.g. postgresql+psycopg://user@host:5432/db)"
        ) from exc
    backend = url.get_backend_name()
    try:
        if backend == "sqlite":
            return _sqlite_engine(url, settings, immediate=not read_only)
        if backend == "postgresql":
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            if read_only:
                # Autocommit and no pre-ping: a hot-path read is then one round trip
                # instead of four (ping, BEGIN, SELECT, ROLLBACK).
                return create_engine(
                    url,
                    json_serializer=stdjson.dumps,
                    isolation_level="AUTOCOMMIT",
                    pool_pre_ping=False,
                    pool_size=10,
                    connect_args={"connect_timeout": settings.db_connect_timeout_s},
                )
            return create_engine(
                url,
                json_serializer=stdjson.dumps,
                pool_pre_ping=True,
                connect_args={"connect_timeout": settings.db_connect_timeout_s},
            )
    except NoSuchModuleError as exc:
        raise ConfigError(f"unsupported database driver {url.drivername!r}") from exc
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_extra("postgres", exc.name or "psycopg") from exc
    raise ConfigError(
        f"unsupported database {backend!r} in EDGEFLEET_DATABASE_URL (use sqlite or postgresql)"
    )


class WriterGate:
    """The queue of one process's writers to one SQLite file (see the module).

    First come, first served: a leaving writer hands the gate to the longest waiting
    one, so a thread that writes again at once cannot barge ahead of the queue.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiting: deque[threading.Lock] = deque()

    def enter(self, timeout_s: float) -> None:
        """Wait to be the process's writer. Raises ``OperationalError`` ("database is
        locked", as SQLite says it when its own timeout runs out) after ``timeout_s``."""
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        started = time.monotonic()
        if turn.acquire(timeout=max(timeout_s, 0.0)):
            return  # handed over by the writer before
        with self._mutex:
            if turn in self._waiting:
                self._waiting.remove(turn)
                waited = time.monotonic() - started
                reason = f"database is locked (waited {waited:.1f} s behind this process's writers)"
                raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(reason))
        # Handed over just as the wait ran out: the gate is this writer's after all.

    def leave(self) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()  # still held: it passes on
            else:
                self._held = False


_GATES: dict[str, WriterGate] = {}
_GATES_LOCK = threading.Lock()


def writer_gate(database: str) -> WriterGate:
    """The process's gate for the SQLite file ``database`` (one per file)."""
    key = str(Path(database).resolve())
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = WriterGate()
        return gate


#: Key in a pooled connection's ``info``: it holds the writer gate.
_HOLDS_GATE = "edgefleet_holds_writer_gate"


def _sqlite_engine(url: URL, settings: Settings, *, immediate: bool) -> Engine:
    on_file = bool(url.database) and url.database != ":memory:"
    if on_file:
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    busy_ms = int(settings.db_busy_timeout_s * 1000)
    engine = create_engine(
        url, json_serializer=stdjson.dumps, connect_args={"timeout": settings.db_busy_timeout_s}
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin, so that DDL in
        # migrations is transactional and a failed unit of work rolls back whole.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    if not immediate:

        @event.listens_for(engine, "begin")
        def _begin_deferred(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")

        return engine

    gate = writer_gate(str(url.database)) if on_file else None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # The gate is held from the transaction's start until its connection is back
        # in the pool (after the commit or rollback); a connection that begins again
        # while checked out already holds it.
        info = connection.info
        if gate is not None and not info.get(_HOLDS_GATE):
            gate.enter(settings.db_busy_timeout_s)
            info[_HOLDS_GATE] = True
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    if gate is not None:

        @event.listens_for(engine, "checkin")
        def _checkin(_dbapi_connection: Any, record: Any) -> None:
            if record.info.pop(_HOLDS_GATE, False):
                gate.leave()

    return engine


def describe_url(engine_or_url: Engine | str) -> str:
    """The database URL without its password, for messages."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.render_as_string(hide_password=True)


def translate(exc: DBAPIError, where: str) -> StoreError:
    """A ``StoreError`` with an actionable message for a driver error."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    if isinstance(exc, OperationalError):
        if "locked" in detail.lower() or "busy" in detail.lower():
            return StoreUnavailableError(
                f"the database {where} is locked by another process ({detail}); "
                "nothing was changed, try again when it is free",
                details={"database": where, "reason": "locked"},
            )
        return StoreUnavailableError(
            f"cannot reach the database {where}: {detail} (check EDGEFLEET_DATABASE_URL and "
            "that the server is running); nothing was changed",
            details={"database": where, "reason": "unreachable"},
        )
    return StoreError(f"database error at {where}: {detail}", details={"database": where})

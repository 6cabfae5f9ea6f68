"""The check-in fast path: device authentication and desired-state ETags from one
indexed row, and batched last-seen updates.

A fleet of 100,000 devices polling every minute is ~1,700 check-ins a second, nearly all
answered "nothing changed" (304). ``CheckinReader.lookup`` reads the one ``devices`` row
whose unique ``credential_id`` the bearer token names, giving the device, its credential
hash and its desired ETag; a 304 needs nothing more. Last-seen times are collected in
memory by ``CheckinRecorder`` and written in one batch per second, not one UPDATE per
check-in (a crash loses at most that second of liveness, never state).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from edgefleet.fleet.domain import ReportedState
from edgefleet.fleet.errors import DeviceNotFoundError
from edgefleet.fleet.ports import CheckinRow
from edgefleet.fleet.versions import version_key
from edgefleet.store.database import describe_url, translate
from edgefleet.store.devices import record_checkins
from edgefleet.store.tables import CheckinChangeRow, DeviceRow

T = TypeVar("T")

_LOOKUP_COLUMNS = "id, device_id, credential_hash, desired_etag, poll_interval_s"
_CHANGES = CheckinChangeRow.__tablename__


class CheckinReader:
    """Reads for the device hot path."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.where = describe_url(engine)
        marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        # The hottest query of the system goes as plain SQL on a pooled DBAPI
        # connection: SQLAlchemy's statement building and result machinery cost more
        # than the indexed lookup itself (measured with benchmarks/checkin.py).
        self._lookup_sql = (
            f"SELECT {_LOOKUP_COLUMNS} FROM {DeviceRow.__tablename__} "
            f"WHERE credential_id = {marker}"
        )
        self._desired_sql = (
            f"SELECT desired, desired_etag FROM {DeviceRow.__tablename__} WHERE id = {marker}"
        )
        self._own = threading.local()
        self._owned: list[Any] = []
        self._owned_lock = threading.Lock()

    def lookup(self, credential_id: str, *, own_connection: bool = False) -> CheckinRow | None:
        """The device a credential id belongs to. Raises StoreUnavailableError.

        With ``own_connection`` the read goes on a connection this thread keeps for
        itself, out of the pool: the event loop's check-ins, where checking a pooled
        connection out and back in cost more than the indexed read. (Only the loop
        asks for one, so the pool's size still bounds the worker threads.)
        """
        dbapi = self.engine.dialect.loaded_dbapi
        fetch = self._fetch_own if own_connection else self._fetch
        # A connection the server dropped (restart, idle timeout) has been discarded:
        # one retry on a fresh one. A kept connection is retried on any driver error
        # (it is a read; the connection may be what failed).
        retried = dbapi.Error if own_connection else dbapi.OperationalError
        try:
            row = fetch(credential_id)
        except retried:
            try:
                row = fetch(credential_id)
            except dbapi.Error as exc:
                raise translate(_wrap(self._lookup_sql, exc), self.where) from exc
            except DBAPIError as exc:
                raise translate(exc, self.where) from exc
        except dbapi.Error as exc:
            raise translate(_wrap(self._lookup_sql, exc), self.where) from exc
        except DBAPIError as exc:
            raise translate(exc, self.where) from exc
        if row is None or row[2] is None:
            return None
        return CheckinRow(row[0], row[1], row[2], row[3], row[4])

    def _fetch(self, credential_id: str) -> Any:
        connection = self.engine.raw_connection()
        try:
            return self._read(connection, credential_id)
        except BaseException:
            connection.invalidate()
            raise
        finally:
            connection.close()  # back to the pool (or discarded, if invalidated)

    def _read(self, connection: Any, credential_id: str) -> Any:
        cursor = connection.cursor()
        cursor.execute(self._lookup_sql, (credential_id,))
        row = cursor.fetchone()
        cursor.close()
        return row

    def _fetch_own(self, credential_id: str) -> Any:
        return self._on_own(lambda connection: self._read(connection, credential_id))

    def _on_own(self, read: Callable[[Any], T]) -> T:
        """``read`` on the connection this thread keeps (made on first use)."""
        connection: Any = getattr(self._own, "connection", None)
        if connection is None:
            pooled = self.engine.raw_connection()
            # Made by the pool (so with its connect-time settings: SQLite's pragmas,
            # PostgreSQL's autocommit), then taken out of it for good.
            pooled.detach()
            connection = self._own.connection = pooled.dbapi_connection
            with self._owned_lock:
                self._owned.append(connection)
        try:
            return read(connection)
        except BaseException:
            self._own.connection = None
            self._discard(connection)
            raise

    # -- the change log (SQLite; see CheckinCache) -----------------------------------

    def change_log_kept(self) -> bool:
        """Whether this database logs check-in changes: SQLite with the triggers of
        migration 0004 (a schema made some other way has none)."""
        if self.engine.dialect.name != "sqlite":
            return False
        sql = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)"
        names = ("checkin_changes_on_update", "checkin_changes_on_delete")
        return bool(self._own_query(sql, names)[0][0] == len(names))

    def last_change(self) -> int:
        """The newest change's sequence number (0: none yet). Raises StoreUnavailableError."""
        rows = self._own_query(f"SELECT max(seq) FROM {_CHANGES}", ())
        return int(rows[0][0] or 0)

    def changes(self, after: int, limit: int) -> list[tuple[int, int]]:
        """(sequence, device pk) of up to ``limit`` changes after ``after``, oldest
        first. Raises StoreUnavailableError."""
        sql = f"SELECT seq, device_pk FROM {_CHANGES} WHERE seq > ? ORDER BY seq LIMIT ?"
        return [(int(seq), int(pk)) for seq, pk in self._own_query(sql, (after, limit))]

    def _own_query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        def run(connection: Any) -> list[Any]:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()

        dbapi = self.engine.dialect.loaded_dbapi
        try:
            try:
                return self._on_own(run)
            except dbapi.Error:
                return self._on_own(run)  # once more, on a fresh connection
        except dbapi.Error as exc:
            raise translate(_wrap(sql, exc), self.where) from exc

    def _discard(self, connection: Any) -> None:
        with self._owned_lock:
            if connection in self._owned:
                self._owned.remove(connection)
        with contextlib.suppress(Exception):
            connection.close()

    def close(self) -> None:
        """Close the connections threads kept for themselves."""
        with self._owned_lock:
            owned, self._owned = self._owned, []
        for connection in owned:
            with contextlib.suppress(Exception):
                connection.close()

    def desired(self, pk: int) -> tuple[dict[str, Any] | None, str]:
        """A device's desired state and its ETag (read together, so they agree), on the
        calling thread's own connection: the event loop's, which must never wait for a
        pooled connection the worker threads hold.

        Raises:
            DeviceNotFoundError: it was deleted meanwhile.
            StoreUnavailableError: the database cannot be read.
        """
        rows = self._own_query(self._desired_sql, (pk,))
        if not rows:
            raise DeviceNotFoundError("the device was deleted", details={"device_pk": pk})
        document, etag = rows[0]
        if isinstance(document, str | bytes):  # SQLite keeps JSON as text
            document = json.loads(document)
        return document, str(etag)


class CheckinCache:
    """Check-in rows held in memory, dropped when the change log names their device.

    Nearly every check-in of a settled fleet is a 304 whose answer is one ``devices``
    row: reading it from SQLite costs little, but the read hands the interpreter lock
    away and back two or three times, and while the rollout controller or a batch
    write computes in another thread each hand-back waits for that thread's time
    slice. At a thousand check-ins a second that waiting, not the read, is what the
    event loop runs short of. So the rows are kept here, and the cache reads the
    change log (table ``checkin_changes``, filled by SQLite triggers for every writer,
    this process's or another's) and drops the rows of the devices it names; the next
    check-in of such a device reads its row again. It reads the log before the next
    answer once this process wrote anything (``mark_stale``, called as a write
    connection goes back to its pool), and at least every ``refresh_s``.

    What this process changed is answered at once. A change by another process (the
    CLI beside the server) may be up to ``refresh_s`` late: a device whose desired
    state it changed may still be told "not modified" once (it asks again at its next
    poll), and a credential it revoked or deleted may, for that long, still get a 304
    (which carries nothing), the desired state it had, a small TUF target, or have a
    telemetry batch, events or a report taken (the device fast path's answers,
    server/hotpath.py). The regular routes read the database (``fresh`` lookups). A
    log pruned past what this cache has read, or more changes than ``MAX_CHANGES`` at
    once, empties the cache.

    For one thread (the event loop's); its own connection does the reads.
    """

    #: Changes read at most per refresh; more, and the cache starts over.
    MAX_CHANGES = 20_000
    #: Rows kept at most (a larger fleet reads the rest from the database).
    MAX_ROWS = 1_000_000

    def __init__(self, reader: CheckinReader, refresh_s: float) -> None:
        self.reader = reader
        self.refresh_s = refresh_s
        self._rows: dict[str, CheckinRow] = {}  # credential id -> row
        self._credentials: dict[int, str] = {}  # device pk -> credential id
        self._seq: int | None = None  # the last change read; None: not started
        self._refreshed = -float("inf")
        self._stale = True
        #: Answers from memory, reads of the database, and times the cache started over.
        self.hits = 0
        self.misses = 0
        self.restarts = 0

    def lookup(self, credential_id: str) -> CheckinRow | None:
        """The device a credential id belongs to, as of at most ``refresh_s`` ago.
        Raises StoreUnavailableError."""
        now = time.monotonic()
        if self._stale or now - self._refreshed >= self.refresh_s:
            self._stale = False  # before the read: a write meanwhile marks it again
            try:
                self._refresh()
            except BaseException:
                self._stale = True
                raise
            self._refreshed = now
        row = self._rows.get(credential_id)
        if row is not None:
            self.hits += 1
            return row
        self.misses += 1
        row = self.reader.lookup(credential_id, own_connection=True)
        if row is not None and len(self._rows) < self.MAX_ROWS:
            # Read after the last refresh: any change since is in the log, and the
            # next refresh drops this row for it.
            self._rows[credential_id] = row
            self._credentials[row.pk] = credential_id
        return row

    def mark_stale(self) -> None:
        """Read the change log before the next answer (any thread may call it)."""
        self._stale = True

    def _refresh(self) -> None:
        if self._seq is None:
            self._seq = self.reader.last_change()
            return
        changes = self.reader.changes(self._seq, self.MAX_CHANGES + 1)
        if not changes:
            return
        # Sequence numbers follow each other (one writer at a time, AUTOINCREMENT); a
        # gap after the last one read means the log was pruned past this cache.
        if changes[0][0] != self._seq + 1 or len(changes) > self.MAX_CHANGES:
            self.clear()
            self._seq = self.reader.last_change()
            self.restarts += 1
            return
        for _, pk in changes:
            credential_id = self._credentials.pop(pk, None)
            if credential_id is not None:
                self._rows.pop(credential_id, None)
        self._seq = changes[-1][0]

    def clear(self) -> None:
        self._rows.clear()
        self._credentials.clear()

    def __len__(self) -> int:
        return len(self._rows)


class LoopCheckinRows:
    """The check-in rows of the event loop's thread (``fleet.ports.CheckinRows``): from
    the check-in cache where it runs (SQLite), else read on the loop's own connection,
    which never waits for a pooled one the worker threads hold."""

    def __init__(self, reader: CheckinReader, cache: CheckinCache | None) -> None:
        self.reader = reader
        self.cache = cache

    def lookup(self, credential_id: str, *, fresh: bool = False) -> CheckinRow | None:
        """The device a credential id belongs to; ``fresh``: read the database, not
        the cache. Raises StoreUnavailableError."""
        if self.cache is not None and not fresh:
            return self.cache.lookup(credential_id)
        return self.reader.lookup(credential_id, own_connection=True)

    def desired(self, pk: int) -> tuple[dict[str, Any] | None, str]:
        """A device's desired state and its ETag; see ``CheckinReader.desired``."""
        return self.reader.desired(pk)


def prune_changes(engine: Engine, keep: int) -> int:
    """Delete all but the newest ``keep`` entries of the check-in change log; returns
    how many went. A cache that had not read the pruned ones starts over (above).
    Raises StoreUnavailableError."""
    newest = select(func.max(CheckinChangeRow.seq)).scalar_subquery()
    try:
        with engine.begin() as connection:
            result = connection.execute(
                delete(CheckinChangeRow).where(CheckinChangeRow.seq <= newest - keep)
            )
    except DBAPIError as exc:
        raise translate(exc, describe_url(engine)) from exc
    return int(result.rowcount or 0)


def _wrap(statement: str, exc: Exception) -> DBAPIError:
    """A driver exception as SQLAlchemy's ``DBAPIError`` (OperationalError, ...)."""
    wrapped = DBAPIError.instance(statement, None, exc, DBAPIError)
    return wrapped if isinstance(wrapped, DBAPIError) else DBAPIError(statement, None, exc)


class CheckinRecorder:
    """Collects check-ins in memory; ``flush`` writes them in one transaction."""

    def __init__(self, engine: Engine, offline_after_intervals: float) -> None:
        self.engine = engine
        self.multiple = offline_after_intervals
        self._seen: dict[int, tuple[datetime, int]] = {}
        self._lock = threading.Lock()

    def record(self, pk: int, at: datetime, poll_interval_s: int) -> None:
        with self._lock:
            self._seen[pk] = (at, poll_interval_s)

    def flush(self) -> int:
        """Write pending check-ins; returns how many devices were updated."""
        with self._lock:
            pending, self._seen = self._seen, {}
        if not pending:
            return 0
        try:
            with Session(self.engine) as session, session.begin():
                record_checkins(session, pending, self.multiple)
        except DBAPIError:
            # Keep them for the next flush (newer check-ins win).
            with self._lock:
                self._seen = pending | self._seen
            raise
        return len(pending)


class ReportWriter:
    """Stores reported states that carry no attribute changes: those of many devices in
    one transaction, one UPDATE statement run for each (``write_many``).

    Reports that change attributes (which must be merged into the stored ones) take the
    unit-of-work path instead; see ``FleetService.report``.
    """

    def __init__(self, engine: Engine, offline_after_intervals: float) -> None:
        self.engine = engine
        self.where = describe_url(engine)
        self.multiple = offline_after_intervals

    def write_many(self, reports: Sequence[tuple[CheckinRow, ReportedState, datetime]]) -> None:
        """Store each device's latest report of ``reports`` (in order: a later one of a
        device wins). Raises StoreUnavailableError, StoreError; then none is stored."""
        latest: dict[int, dict[str, Any]] = {}
        for row, reported, now in reports:
            latest[row.pk] = {
                "b_pk": row.pk,
                "reported": reported.model_dump(mode="json"),
                "reported_at": now,
                "reported_model": reported.model,
                "reported_version": reported.version,
                "reported_version_key": version_key(reported.version),
                "agent_state": reported.agent_state,
                "last_seen_at": now,
                "offline_deadline": now + timedelta(seconds=row.poll_interval_s * self.multiple),
            }
        if not latest:
            return
        try:
            with self.engine.begin() as connection:
                # In key order: two processes' batches never wait on each other crosswise.
                connection.execute(_REPORT, [latest[pk] for pk in sorted(latest)])
        except DBAPIError as exc:
            raise translate(exc, self.where) from exc


_REPORT = (
    update(DeviceRow)
    .where(DeviceRow.id == bindparam("b_pk"))
    .values(
        {
            column: bindparam(column)
            for column in (
                "reported",
                "reported_at",
                "reported_model",
                "reported_version",
                "reported_version_key",
                "agent_state",
                "last_seen_at",
                "offline_deadline",
            )
        }
    )
)

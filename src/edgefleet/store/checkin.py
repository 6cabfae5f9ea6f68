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
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from edgefleet.fleet.domain import ReportedState
from edgefleet.fleet.versions import version_key
from edgefleet.store.database import describe_url, translate
from edgefleet.store.devices import record_checkins
from edgefleet.store.tables import DeviceRow

_DESIRED = select(DeviceRow.desired, DeviceRow.desired_etag)
_LOOKUP_COLUMNS = "id, device_id, credential_hash, desired_etag, poll_interval_s"


@dataclass(frozen=True)
class CheckinRow:
    pk: int
    device_id: str
    credential_hash: str
    desired_etag: str
    poll_interval_s: int


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
            return self._read(connection, credential_id)
        except BaseException:
            self._own.connection = None
            self._discard(connection)
            raise

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
        """A device's desired state and its ETag (read together, so they agree)."""
        try:
            with self.engine.connect() as connection:
                row = connection.execute(_DESIRED.where(DeviceRow.id == pk)).one()
        except DBAPIError as exc:
            raise translate(exc, self.where) from exc
        return row.desired, row.desired_etag


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

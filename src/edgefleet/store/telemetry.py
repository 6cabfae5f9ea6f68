"""Telemetry ingestion: merged in memory, written in one transaction a second.

A fleet of 10,000 devices sending telemetry every 30 s is ~330 batches a second. Each
batch only adds counters and histograms to its device's current bucket (see
``fleet.telemetry``), so ``TelemetryWriter.add`` merges it into a pending bucket in
memory and answers at once; ``flush`` (every second, and before the server reads
telemetry itself) reads the stored buckets the pending ones extend, merges, and writes
them all with two bulk statements. A crash loses at most the last second of telemetry,
never device state; a failed write keeps everything pending for the next flush.

Drift summaries (``fleet.telemetry.summaries_of``: a period's feature histograms and
quantile summaries, ~25 KB of JSON for 100 features) are not merged into buckets: the
same flush inserts them, batched, into ``telemetry_summaries``, once each (a resent
one is ignored), so they are neither rewritten with every later sample of their
bucket nor remembered by the writer::

    writer = TelemetryWriter(engine)
    writer.add_samples(device_pk, batch.samples)   # buckets and summaries, in memory
    writer.flush()                                  # one transaction
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from edgefleet.fleet.domain import TelemetrySample
from edgefleet.fleet.telemetry import (
    BUCKET,
    BucketKey,
    PeriodSummary,
    frozen,
    merge_buckets,
    summaries_of,
    to_buckets,
)
from edgefleet.store.devices import utc
from edgefleet.store.tables import DeviceRow, TelemetryRow, TelemetrySummaryRow

#: (device primary key, bucket start, model, version)
Key = tuple[int, datetime, str, str]
Pending = dict[Key, tuple[dict[str, Any], int]]
#: key -> (row id, data, samples) of stored buckets
Written = dict[Key, tuple[int, dict[str, Any], int]]
#: (device primary key, model, version, period end in epoch seconds) -> the summary
Summaries = dict[tuple[int, str, str, float], PeriodSummary]

#: Rows per statement when reading the stored buckets a flush extends.
CHUNK = 500
#: Buckets a writer remembers as it wrote them (about 2 KB each).
MAX_REMEMBERED = 200_000

_UPDATE = (
    update(TelemetryRow)
    .where(TelemetryRow.id == bindparam("row_id"))
    .values(data=bindparam("merged"), samples=bindparam("count"))
)


class TelemetryWriter:
    """Collects telemetry buckets in memory; ``flush`` writes them in one transaction.

    It also remembers what it last wrote of each device's current buckets. A flush
    that extends one of those reads only the stored row's sample count, not its data:
    if the count is still what this writer wrote, nobody else has touched the row and
    the remembered data is the stored data. (Decoding the stored JSON again was most
    of a flush's time at 10,000 devices; any other writer, say another server process,
    changes the count, and then the row's data is read.)
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: Pending = {}
        self._summaries: Summaries = {}
        self._lock = threading.Lock()
        # One flush at a time: the background loop and a reader may both ask for one.
        self._flushing = threading.Lock()
        #: key -> (row id, data, samples) as this writer last committed them
        self._written: Written = {}
        #: the newest bucket remembered (older than the one before it are dropped)
        self._newest: datetime | None = None

    def add(self, device_pk: int, buckets: dict[BucketKey, tuple[dict[str, Any], int]]) -> None:
        with self._lock:
            for (bucket, model, version), entry in buckets.items():
                key = (device_pk, bucket, model, version)
                self._pending[key] = _combine(self._pending.get(key), entry)

    def add_summaries(self, device_pk: int, summaries: Iterable[PeriodSummary]) -> None:
        """Keep a device's drift summaries for the next flush (the first of a period
        wins; the store ignores one it has already)."""
        with self._lock:
            for summary in summaries:
                key = (device_pk, summary.model, summary.version, summary.period_end)
                self._summaries.setdefault(key, summary)

    def add_samples(self, device_pk: int, samples: Iterable[TelemetrySample]) -> int:
        """Merge a device's batch into its pending buckets and keep its drift summaries;
        returns how many buckets."""
        batch = list(samples)
        buckets = to_buckets(batch)
        self.add(device_pk, buckets)
        self.add_summaries(device_pk, summaries_of(batch))
        return len(buckets)

    @property
    def pending(self) -> int:
        """Buckets and summaries waiting to be written."""
        return len(self._pending) + len(self._summaries)

    def flush(self) -> int:
        """Write pending buckets and summaries; returns how many buckets. Raises
        DBAPIError (nothing lost)."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, {}
                summaries, self._summaries = self._summaries, {}
            if not pending and not summaries:
                return 0
            try:
                try:
                    written = self._write(pending, summaries)
                except IntegrityError:
                    # Another server process inserted one of these buckets meanwhile (or
                    # a device was deleted): read again and write once more.
                    written = self._write(pending, summaries)
            except DBAPIError:
                with self._lock:
                    for key, entry in pending.items():
                        self._pending[key] = _combine(entry, self._pending.get(key))
                    for summary_key, summary in summaries.items():
                        self._summaries.setdefault(summary_key, summary)
                raise
            count, rows = written
            self._remember(rows)
            return count

    def _write(self, pending: Pending, summaries: Summaries) -> tuple[int, Written]:
        with Session(self.engine) as session, session.begin():
            result = write_buckets(session, pending, self._written)
            write_summaries(session, summaries)
            return result

    def _remember(self, written: Written) -> None:
        """Keep what was committed, for the current and the previous bucket only."""
        self._written.update(written)
        if not written:
            return
        newest = max(key[1] for key in written)
        # Old buckets go when a new one opens (not a walk over all of them each flush).
        if self._newest is None or newest > self._newest or len(self._written) > MAX_REMEMBERED:
            self._newest = max(newest, self._newest or newest)
            self._written = {
                key: entry
                for key, entry in self._written.items()
                if key[1] >= self._newest - BUCKET
            }
            if len(self._written) > MAX_REMEMBERED:
                self._written.clear()  # more devices than it may hold: read them instead


def write_buckets(
    session: Session, pending: Pending, known: Written | None = None
) -> tuple[int, Written]:
    """Merge ``pending`` into the stored buckets; buckets of deleted devices are dropped.

    ``known``: rows as this process last wrote them, used where the stored sample
    count still matches (the rows are locked meanwhile: SQLite's write lock, PostgreSQL
    ``FOR UPDATE``). Returns the updated rows as written (inserted ones are read the
    next time), with how many buckets were written."""
    known = known or {}
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    pks = sorted({key[0] for key in pending})
    buckets = sorted({key[1] for key in pending})
    alive: set[int] = set()
    stored: dict[Key, tuple[int, dict[str, Any], int]] = {}
    unknown: dict[int, tuple[Key, int]] = {}
    for start in range(0, len(pks), CHUNK):
        chunk = pks[start : start + CHUNK]
        alive.update(connection.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(chunk))))
        query = select(
            TelemetryRow.id,
            TelemetryRow.device_pk,
            TelemetryRow.bucket,
            TelemetryRow.model,
            TelemetryRow.version,
            TelemetryRow.samples,
        ).where(TelemetryRow.device_pk.in_(chunk), TelemetryRow.bucket.in_(buckets))
        if postgres:
            query = query.with_for_update()
        for row_id, pk, bucket, model, version, samples in connection.execute(query):
            key = (pk, utc(bucket) or bucket, model, version)
            if key not in pending:
                continue  # another model's bucket of the device: not extended now
            mine = known.get(key)
            if mine is not None and mine[0] == row_id and mine[2] == samples:
                stored[key] = mine
            else:
                unknown[row_id] = (key, samples)
    ids = sorted(unknown)
    for start in range(0, len(ids), CHUNK):
        data_query = select(TelemetryRow.id, TelemetryRow.data).where(
            TelemetryRow.id.in_(ids[start : start + CHUNK])
        )
        for row_id, data in connection.execute(data_query):
            key, samples = unknown[row_id]
            stored[key] = (row_id, data, samples)
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    written: Written = {}
    for key, (data, samples) in pending.items():
        pk, bucket, model, version = key
        if pk not in alive:
            continue
        found = stored.get(key)
        if found is None:
            inserts.append(
                {
                    "device_pk": pk,
                    "bucket": bucket,
                    "model": model,
                    "version": version,
                    "samples": samples,
                    "data": data,
                }
            )
        else:
            row_id, old, count = found
            merged = merge_buckets(old, data)
            updates.append({"row_id": row_id, "merged": merged, "count": count + samples})
            # Remembered for minutes: in the form the garbage collector stops walking.
            written[key] = (row_id, frozen(merged), count + samples)
    if updates:
        connection.execute(_UPDATE, updates)
    if inserts:
        connection.execute(insert(TelemetryRow), inserts)
    return len(updates) + len(inserts), written


def write_summaries(session: Session, summaries: Summaries) -> int:
    """Insert drift summaries, batched; one already stored (same device, model version
    and period end) is left as it is, and those of deleted devices are dropped.
    Returns how many were new."""
    if not summaries:
        return 0
    connection = session.connection()
    pks = sorted({key[0] for key in summaries})
    alive: set[int] = set()
    for start in range(0, len(pks), CHUNK):
        chunk = pks[start : start + CHUNK]
        alive.update(connection.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(chunk))))
    rows = [
        {
            "device_pk": pk,
            "model": summary.model,
            "version": summary.version,
            "period_start": _moment(summary.period_start),
            "period_end": _moment(period_end),
            "data": dict(summary.data),
        }
        for (pk, _, _, period_end), summary in summaries.items()
        if pk in alive
    ]
    if not rows:
        return 0
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql_insert(TelemetrySummaryRow).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite_insert(TelemetrySummaryRow).on_conflict_do_nothing()
    else:  # pragma: no cover - the store runs on SQLite and PostgreSQL only
        raise RuntimeError(f"telemetry summaries need SQLite or PostgreSQL, not {dialect}")
    inserted = 0
    for start in range(0, len(rows), CHUNK):
        result = connection.execute(statement, rows[start : start + CHUNK])
        inserted += max(int(getattr(result, "rowcount", 0) or 0), 0)
    return inserted


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _combine(
    older: tuple[dict[str, Any], int] | None, newer: tuple[dict[str, Any], int] | None
) -> tuple[dict[str, Any], int]:
    if older is None:
        assert newer is not None
        return newer
    if newer is None:
        return older
    return merge_buckets(older[0], newer[0]), older[1] + newer[1]

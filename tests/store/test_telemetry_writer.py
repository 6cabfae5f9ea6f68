"""Telemetry merged in memory and written in batches (store/telemetry.py), on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from edgefleet.fleet.domain import TelemetrySample
from edgefleet.fleet.telemetry import BUCKET, bucket_of, to_buckets
from edgefleet.store.devices import SqlDeviceRepository
from edgefleet.store.tables import DeviceRow, TelemetryRow
from edgefleet.store.telemetry import TelemetryWriter

AT = datetime(2026, 11, 30, 12, 1, tzinfo=UTC)


def _device(engine, device_id: str) -> int:
    with Session(engine) as session, session.begin():
        row = SqlDeviceRepository(session).create(
            device_id,
            attributes={},
            group=None,
            credential_id=f"id-{device_id}",
            credential_hash="x",
            poll_interval_s=10,
            now=AT,
        )
        return row.id


def _sample(at: datetime, inferences: int, cpu: float) -> TelemetrySample:
    return TelemetrySample.model_validate(
        {
            "at": at.isoformat(),
            "health": {"cpu_percent": cpu},
            "models": [
                {
                    "model": "digits",
                    "version": "1.0.0",
                    "inferences": inferences,
                    "errors": {"runtime": 1},
                    "latency_counts": [inferences],
                    "class_counts": [inferences, 1],
                }
            ],
        }
    )


def _stored(engine) -> dict[tuple[int, datetime, str], tuple[int, dict]]:
    with Session(engine) as session:
        rows = session.scalars(select(TelemetryRow)).all()
        return {
            (r.device_pk, r.bucket.replace(tzinfo=UTC), r.version): (r.samples, r.data)
            for r in rows
        }


def test_batches_merge_in_memory_and_extend_stored_buckets(engine):
    a, b = _device(engine, "cam-a"), _device(engine, "cam-b")
    writer = TelemetryWriter(engine)
    writer.add(a, to_buckets([_sample(AT, 10, 20.0), _sample(AT + timedelta(seconds=30), 5, 40.0)]))
    writer.add(a, to_buckets([_sample(AT + timedelta(seconds=60), 1, 60.0)]))
    writer.add(b, to_buckets([_sample(AT, 7, 10.0)]))
    assert writer.pending == 2  # one bucket per device: merged before any write
    assert writer.flush() == 2
    assert writer.pending == 0
    bucket = bucket_of(AT)
    samples, data = _stored(engine)[(a, bucket, "1.0.0")]
    assert samples == 3
    assert data["inferences"] == 16
    assert data["errors"] == {"runtime": 3}
    assert data["class_counts"] == [16, 3]
    assert data["health_sum"]["cpu_percent"] == pytest.approx(120.0)
    assert data["health_max"]["cpu_percent"] == pytest.approx(60.0)

    # A later flush adds to the stored bucket and opens the next one.
    writer.add(a, to_buckets([_sample(AT + timedelta(seconds=90), 4, 20.0)]))
    writer.add(a, to_buckets([_sample(AT + BUCKET, 2, 20.0)]))
    assert writer.flush() == 2
    stored = _stored(engine)
    assert stored[(a, bucket, "1.0.0")][0] == 4
    assert stored[(a, bucket, "1.0.0")][1]["inferences"] == 20
    assert stored[(a, bucket_of(AT + BUCKET), "1.0.0")][1]["inferences"] == 2
    assert stored[(b, bucket, "1.0.0")][1]["inferences"] == 7
    assert writer.flush() == 0  # nothing pending: no transaction


def test_buckets_of_a_device_deleted_meanwhile_are_dropped(engine):
    kept, gone = _device(engine, "cam-kept"), _device(engine, "cam-gone")
    writer = TelemetryWriter(engine)
    writer.add(kept, to_buckets([_sample(AT, 1, 1.0)]))
    writer.add(gone, to_buckets([_sample(AT, 1, 1.0)]))
    with Session(engine) as session, session.begin():
        session.execute(delete(DeviceRow).where(DeviceRow.id == gone))
    assert writer.flush() == 1
    assert [key[0] for key in _stored(engine)] == [kept]


def test_a_failed_write_keeps_everything_for_the_next_flush(engine, settings):
    pk = _device(engine, "cam-a")
    writer = TelemetryWriter(engine)
    writer.add(pk, to_buckets([_sample(AT, 3, 1.0)]))
    with Session(engine) as session, session.begin():
        session.execute(TelemetryRow.__table__.delete())
    TelemetryRow.__table__.drop(engine)  # the store breaks under the writer
    with pytest.raises(DBAPIError):
        writer.flush()
    writer.add(pk, to_buckets([_sample(AT, 4, 1.0)]))  # arrives while the store is down
    assert writer.pending == 1
    TelemetryRow.__table__.create(engine)
    assert writer.flush() == 1
    ((samples, data),) = _stored(engine).values()
    assert (samples, data["inferences"]) == (2, 7)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_writers_extending_one_bucket_each_see_the_other(engine):
    # Two server processes, say: each remembers what it wrote, and a row the other
    # changed meanwhile is read again, not overwritten from memory.
    pk = _device(engine, "cam-a")
    first, second = TelemetryWriter(engine), TelemetryWriter(engine)
    for step, writer in enumerate([first, second, first, first, second]):
        writer.add(pk, to_buckets([_sample(AT + timedelta(seconds=step), 1 + step, 1.0)]))
        assert writer.flush() == 1
    ((samples, data),) = _stored(engine).values()
    assert (samples, data["inferences"]) == (5, 1 + 2 + 3 + 4 + 5)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_extending_its_own_buckets_reads_no_stored_data(engine):
    from sqlalchemy import event

    a, b = _device(engine, "cam-a"), _device(engine, "cam-b")
    writer = TelemetryWriter(engine)
    statements: list[tuple[str, object]] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, params, *_: statements.append((sql, params)),
    )
    writer.add(a, to_buckets([_sample(AT, 1, 1.0)]))
    writer.add(b, to_buckets([_sample(AT, 1, 1.0)]))
    writer.flush()  # inserts
    writer.add(a, to_buckets([_sample(AT, 2, 1.0)]))
    writer.flush()  # reads a's new row once (inserted rows are not remembered)
    statements.clear()
    writer.add(a, to_buckets([_sample(AT, 3, 1.0)]))
    writer.add(b, to_buckets([_sample(AT, 4, 1.0)]))
    writer.flush()
    data_reads = [
        params
        for sql, params in statements
        if sql.lstrip().upper().startswith("SELECT") and "telemetry.data" in sql
    ]
    # One row's data read: b's. a's row is as this writer left it.
    assert len(data_reads) == 1
    params = data_reads[0]
    values = list(params.values()) if isinstance(params, dict) else list(params)  # type: ignore[union-attr]
    assert len(values) == 1
    stored = _stored(engine)
    assert stored[(a, bucket_of(AT), "1.0.0")][1]["inferences"] == 6
    assert stored[(b, bucket_of(AT), "1.0.0")][1]["inferences"] == 5

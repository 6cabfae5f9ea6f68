"""Drift summaries in a table of their own (store/telemetry.py, store/drift.py), on both
backends: written once per device, model version and period in the flush that writes
the buckets, never merged into a bucket, read by a look by the time their period ended
(a 10-second window included), and deleted with the telemetry they are as old as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.fleet.domain import TelemetrySample
from edgefleet.store.database import describe_url
from edgefleet.store.devices import SqlDeviceRepository
from edgefleet.store.drift import SqlDriftUnitOfWork
from edgefleet.store.tables import TelemetryRow, TelemetrySummaryRow
from edgefleet.store.telemetry import TelemetryWriter

AT = datetime(2026, 11, 30, 12, 1, 3, tzinfo=UTC)


def _device(engine, device_id: str) -> int:
    with Session(engine) as session, session.begin():
        row = SqlDeviceRepository(session).create(
            device_id,
            attributes={"site": "a"},
            group=None,
            credential_id=f"id-{device_id}",
            credential_hash="x",
            poll_interval_s=10,
            now=AT,
        )
        return row.id


def _closing(period_end: datetime, counts: list[int], *, sent: datetime | None = None):
    """A sample that closes a 10-second summary period ending at ``period_end``."""
    return TelemetrySample.model_validate(
        {
            "at": (sent or period_end + timedelta(seconds=1)).isoformat(),
            "models": [
                {
                    "model": "digits",
                    "version": "1.0.0",
                    "inferences": 5,
                    "class_counts": [4, 1],
                    "feature_counts": {"X[0]": counts},
                    "sketch_rows": sum(counts),
                    "period_start": (period_end - timedelta(seconds=10)).timestamp(),
                    "period_end": period_end.timestamp(),
                }
            ],
        }
    )


def _summaries(engine) -> list[tuple[int, datetime, dict]]:
    with Session(engine) as session:
        rows = session.scalars(select(TelemetrySummaryRow).order_by(TelemetrySummaryRow.id))
        return [(r.device_pk, r.period_end.replace(tzinfo=UTC), r.data) for r in rows]


def test_a_summary_is_written_once_and_not_into_the_bucket(engine):
    pk = _device(engine, "d1")
    writer = TelemetryWriter(engine)
    first = AT.replace(second=0)
    writer.add_samples(pk, [_closing(first, [1, 2]), _closing(first + timedelta(seconds=10), [3])])
    assert writer.pending == 3  # one bucket, two summaries
    assert writer.flush() == 1
    # Resent (the agent retries a batch whose answer it lost): ignored, whole.
    writer.add_samples(pk, [_closing(first, [9, 9], sent=first + timedelta(seconds=20))])
    writer.flush()
    stored = _summaries(engine)
    assert [(p, end, data["feature_counts"]) for p, end, data in stored] == [
        (pk, first, {"X[0]": [1, 2]}),
        (pk, first + timedelta(seconds=10), {"X[0]": [3]}),
    ]
    assert stored[0][2]["sketch_rows"] == 3
    with Session(engine) as session:
        (bucket,) = session.scalars(select(TelemetryRow)).all()
    assert bucket.samples == 3 and bucket.data["inferences"] == 15
    assert not {"feature_counts", "sketches", "sketch_rows", "period_end"} & set(bucket.data)


def test_a_look_reads_summaries_by_the_end_of_their_period(engine):
    pk, other = _device(engine, "d1"), _device(engine, "d2")
    writer = TelemetryWriter(engine)
    start = AT.replace(second=0)
    writer.add_samples(pk, [_closing(start + timedelta(seconds=10), [1, 2])])
    writer.add_samples(other, [_closing(start + timedelta(seconds=20), [5, 5])])
    writer.flush()
    sessions = sessionmaker(engine, expire_on_commit=False)
    with SqlDriftUnitOfWork(sessions, describe_url(engine)) as uow:
        # A 10-second window inside one 5-minute bucket: only the period that ended in it.
        end = start + timedelta(seconds=10)
        assert [d.pk for d in uow.drift.window_devices("digits", ["1.0.0"], start, end)] == [pk]
        records = list(uow.drift.drift_buckets("digits", ["1.0.0"], start, end))
        summaries = [r for r in records if "period_end" in r.data]
        assert [(r.device_pk, r.bucket, r.data["feature_counts"]) for r in summaries] == [
            (pk, end, {"X[0]": [1, 2]})
        ]
        assert summaries[0].data["period_end"] == end.timestamp()
        assert summaries[0].data["period_start"] == start.timestamp()
        # The next window has the other device's (the bucket both were sent in started
        # before either window: its per-sample histograms belong to an earlier one).
        later = list(uow.drift.drift_buckets("digits", ["1.0.0"], end, end + timedelta(minutes=5)))
        assert [(r.device_pk, r.data["feature_counts"]) for r in later] == [
            (other, {"X[0]": [5, 5]})
        ]


def test_retention_deletes_old_summaries_too(engine):
    pk = _device(engine, "d1")
    writer = TelemetryWriter(engine)
    old, new = AT - timedelta(hours=49), AT
    writer.add_samples(pk, [_closing(old, [1])])
    writer.add_samples(pk, [_closing(new, [2])])
    writer.flush()
    with Session(engine) as session, session.begin():
        removed = SqlDeviceRepository(session).delete_telemetry_before(AT - timedelta(hours=48))
    assert removed == 2  # the old bucket and the old summary
    assert [end for _, end, _ in _summaries(engine)] == [new]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(TelemetryRow)) == 1

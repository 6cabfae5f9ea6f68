"""Group commit (store/groupcommit.py): many requests' writes, one transaction each
round; a failing job is rolled back alone; an answer means the write is stored."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from edgefleet.store.database import make_engine
from edgefleet.store.devices import SqlDeviceRepository
from edgefleet.store.errors import StoreError
from edgefleet.store.groupcommit import GroupCommitter
from edgefleet.store.migrate import ensure_schema
from edgefleet.store.tables import DeviceRow

AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def engine(settings):
    engine = make_engine(settings)
    ensure_schema(engine, auto_migrate=True)
    yield engine
    engine.dispose()


def _create(device_id: str, fail: bool = False):
    def job(session: Session) -> str:
        SqlDeviceRepository(session).create(
            device_id,
            attributes={},
            group=None,
            credential_id=f"id-{device_id}",
            credential_hash="x",
            poll_interval_s=10,
            now=AT,
        )
        if fail:
            raise ValueError(f"{device_id} refused")
        return device_id

    return job


def _stored(engine) -> list[str]:
    with Session(engine) as session:
        return sorted(session.scalars(select(DeviceRow.device_id)))


def test_jobs_share_transactions_and_a_failing_one_is_rolled_back_alone(engine):
    rounds: list[int] = []

    class Counting(GroupCommitter):
        def _commit(self, batch):  # type: ignore[no-untyped-def]
            rounds.append(len(batch))
            super()._commit(batch)

    writer = Counting(engine)
    running, gate = threading.Event(), threading.Event()

    def hold(session: Session) -> bool:
        running.set()
        return gate.wait(10)

    # Hold the writer on a first job so that the next ones queue up behind it.
    blocker = writer.submit(hold)
    assert running.wait(10)
    futures = [writer.submit(_create(f"cam-{i}", fail=i == 3)) for i in range(20)]
    gate.set()
    assert blocker.result(timeout=10) is True
    for i, future in enumerate(futures):
        if i == 3:
            with pytest.raises(ValueError, match="cam-3 refused"):
                future.result(timeout=10)
        else:
            assert future.result(timeout=10) == f"cam-{i}"
    writer.close()
    assert _stored(engine) == sorted(f"cam-{i}" for i in range(20) if i != 3)
    assert rounds == [1, 20]  # the blocker's round, then all twenty in one transaction


def test_a_database_error_in_a_job_is_a_store_error_for_that_request_only(engine):
    writer = GroupCommitter(engine)
    first = writer.submit(_create("cam-a"))
    assert first.result(timeout=10) == "cam-a"
    duplicate = writer.submit(_create("cam-a"))  # violates the unique device id
    other = writer.submit(_create("cam-b"))
    with pytest.raises(StoreError):
        duplicate.result(timeout=10)
    assert other.result(timeout=10) == "cam-b"
    writer.close()
    assert _stored(engine) == ["cam-a", "cam-b"]


def test_when_the_database_cannot_be_opened_every_write_hears_it(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    unusable = create_engine(f"sqlite:///{tmp_path / 'not-a-directory' / 'edgefleet.db'}")
    writer = GroupCommitter(unusable)
    futures = [writer.submit(_create(f"cam-{i}")) for i in range(3)]
    for future in futures:
        with pytest.raises(StoreError, match=r"edgefleet\.db"):
            future.result(timeout=10)
    writer.close()


def test_close_finishes_what_was_queued_and_refuses_more(engine):
    writer = GroupCommitter(engine)
    futures = [writer.submit(_create(f"cam-{i}")) for i in range(5)]
    writer.close()
    assert all(f.done() for f in futures)
    assert _stored(engine) == [f"cam-{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(_create("late"))

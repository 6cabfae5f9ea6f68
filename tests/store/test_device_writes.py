"""Device writes of many devices in one transaction: reported states
(``ReportWriter.write_many``) and event batches (``add_events_many``), on both backends."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgefleet.fleet.domain import DeviceEvent, ReportedState
from edgefleet.store.checkin import CheckinReader, CheckinRow, ReportWriter
from edgefleet.store.devices import SqlDeviceRepository
from edgefleet.store.tables import DeviceEventRow, DeviceRow
from tests.store.test_telemetry_writer import AT, _device


def _event(seq: int) -> DeviceEvent:
    return DeviceEvent.model_validate(
        {
            "seq": seq,
            "from_state": "IDLE",
            "to_state": "DOWNLOADING",
            "reason": "new_desired",
            "at": AT.isoformat(),
        }
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_event_batches_of_many_devices_in_one_transaction(engine):
    a, b = _device(engine, "cam-a"), _device(engine, "cam-b")
    with Session(engine) as session, session.begin():
        repo = SqlDeviceRepository(session)
        assert repo.add_events_many([(a, [_event(1), _event(2)])], AT) == [(2, 0, 2)]
    with Session(engine) as session, session.begin():
        results = SqlDeviceRepository(session).add_events_many(
            [
                (a, [_event(2), _event(3), _event(3)]),  # one stored, one twice in the batch
                (b, [_event(5)]),
                (a, [_event(1), _event(4)]),  # the same device again, later in the round
                (999_999, [_event(1)]),  # deleted meanwhile
            ],
            AT,
        )
    assert results == [(1, 2, 3), (1, 0, 5), (1, 1, 4), None]
    with Session(engine) as session:
        seqs = session.execute(
            select(DeviceEventRow.device_pk, DeviceEventRow.seq).order_by(
                DeviceEventRow.device_pk, DeviceEventRow.seq
            )
        ).all()
        last = dict(session.execute(select(DeviceRow.id, DeviceRow.last_event_seq)).all())
    assert [tuple(r) for r in seqs] == [(a, 1), (a, 2), (a, 3), (a, 4), (b, 5)]
    assert last == {a: 4, b: 5}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reported_states_of_many_devices_in_one_write_the_latest_wins(engine):
    pks = [_device(engine, f"cam-{i}") for i in range(3)]
    rows = [CheckinRow(pk, f"cam-{i}", "x", "etag", 10) for i, pk in enumerate(pks)]

    def state(version: str) -> ReportedState:
        return ReportedState(agent_state="COMMITTED", model="digits", version=version)

    writer = ReportWriter(engine, offline_after_intervals=3)
    later = AT + timedelta(seconds=5)
    writer.write_many(
        [
            (rows[0], state("1.0.0"), AT),
            (rows[1], state("1.0.0"), AT),
            (rows[0], state("1.1.0"), later),
        ]
    )
    with Session(engine) as session:
        stored = {r.id: r for r in session.scalars(select(DeviceRow).where(DeviceRow.id.in_(pks)))}
    assert stored[pks[0]].reported_version == "1.1.0"
    assert stored[pks[0]].offline_deadline.replace(tzinfo=UTC) == later + timedelta(seconds=30)
    assert stored[pks[1]].reported_version == "1.0.0" and stored[pks[1]].agent_state == "COMMITTED"
    assert stored[pks[2]].reported_version is None  # not in the batch, untouched


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_thread_s_own_lookup_connection_sees_every_commit(engine, settings):
    from edgefleet.store.database import make_engine

    reader = CheckinReader(make_engine(settings, read_only=True))
    try:
        assert reader.lookup("id-cam-a", own_connection=True) is None
        pk = _device(engine, "cam-a")  # committed after the connection was made
        row = reader.lookup("id-cam-a", own_connection=True)
        assert row is not None and (row.pk, row.device_id) == (pk, "cam-a")
        with Session(engine) as session, session.begin():
            session.get(DeviceRow, pk).desired_etag = "e2"  # type: ignore[union-attr]
        assert reader.lookup("id-cam-a", own_connection=True).desired_etag == "e2"  # type: ignore[union-attr]
        if engine.dialect.name == "postgresql":
            # Autocommit, as the pool made it: no transaction left open between reads.
            assert reader._own.connection.info.transaction_status == 0
        # Out of the pool: every pooled connection can still be checked out.
        pool = reader.engine.pool
        held = [reader.engine.raw_connection() for _ in range(pool.size())]  # type: ignore[attr-defined]
        assert reader.lookup("id-cam-a").device_id == "cam-a"  # type: ignore[union-attr]
        for connection in held:
            connection.close()
        # A connection that failed is dropped and made again.
        reader._own.connection.close()
        assert reader.lookup("id-cam-a", own_connection=True).pk == pk  # type: ignore[union-attr]
    finally:
        reader.close()
        reader.engine.dispose()
    assert reader._owned == []

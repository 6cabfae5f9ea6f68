"""The drift repository on each backend: monitor versions and the one in force, looks
once per window, alarms stored whole and found by state, the telemetry a look reads
(drift fields only, device by device), query segments."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import sessionmaker

from edgefleet.drift.alarms import Alarm, AlarmState, Finding, Fired, acknowledge, resolve
from edgefleet.drift.monitor import load_monitor
from edgefleet.drift.ports import NewLook
from edgefleet.fleet.telemetry import bucket_of
from edgefleet.store.database import describe_url
from edgefleet.store.drift import SqlDriftUnitOfWork
from edgefleet.store.telemetry import TelemetryWriter

T0 = datetime(2026, 12, 7, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def uow(engine):
    sessions = sessionmaker(engine, expire_on_commit=False)
    return lambda: SqlDriftUnitOfWork(sessions, describe_url(engine))


def finding(segment: str = "all", feature: str = "X[3]", value: float = 0.4) -> Finding:
    return Finding(
        model="digits",
        version="1.0.0",
        segment=segment,
        feature=feature,
        fired=(Fired(statistic="psi", value=value, threshold=0.2, p_value=1e-6, bh_cut=1e-3),),
        rows=500,
        devices=5,
        phi=1.5,
    )


def alarm(alarm_id: str, at: datetime, **key: str) -> Alarm:
    found = finding(**key)
    return Alarm(
        id=alarm_id,
        state=AlarmState.OPEN,
        opened_at=at,
        opening=found,
        latest=found,
        last_seen_at=at,
        last_look_at=at,
    )


def test_monitor_versions_and_the_one_in_force(uow):
    with uow() as u:
        assert u.drift.monitor("digits") is None and u.drift.monitors() == []
        first = load_monitor({"model": "digits"})
        second = load_monitor({"model": "digits", "window": "2h"})
        u.drift.add_monitor("digits", first, first.digest(), T0, "ops")
        u.drift.add_monitor("digits", second, second.digest(), T0 + HOUR, "ops")
        other = load_monitor({"model": "other"})
        u.drift.add_monitor("other", other, other.digest(), T0, "ops")
        u.commit()
    with uow() as u:
        current = u.drift.monitor("digits")
        assert current is not None and current.number == 2
        assert current.monitor == second and current.digest == second.digest()
        assert current.created_at == T0 + HOUR and current.created_at.tzinfo is not None
        assert [m.number for m in u.drift.monitor_versions("digits")] == [2, 1]
        assert [(m.model, m.number) for m in u.drift.monitors()] == [("digits", 2), ("other", 1)]


def test_a_window_is_looked_at_once(uow):
    with uow() as u:
        monitor = load_monitor({"model": "digits"})
        stored = u.drift.add_monitor("digits", monitor, monitor.digest(), T0, "ops")
        look = NewLook(stored.id, "digits", "1.0.0", T0, T0 + HOUR, T0 + HOUR, {"scores": []})
        assert u.drift.add_look(look) is not None
        assert u.drift.add_look(look) is None  # the same window again: nothing stored
        # The transaction is still usable after the refused one.
        later = NewLook(stored.id, "digits", "1.0.0", T0 + HOUR, T0 + 2 * HOUR, T0, {"scores": [1]})
        assert u.drift.add_look(later) is not None
        other_version = NewLook(stored.id, "digits", "1.1.0", T0, T0 + HOUR, T0, {})
        assert u.drift.add_look(other_version) is not None
        u.commit()
    with uow() as u:
        assert u.drift.last_window_end("digits") == T0 + 2 * HOUR
        assert u.drift.last_window_end("other") is None
        looks = u.drift.looks("digits", "1.0.0", T0, T0 + 2 * HOUR)
        assert [(x.window_start, x.result) for x in looks] == [
            (T0, {"scores": []}),
            (T0 + HOUR, {"scores": [1]}),
        ]
        assert len(u.drift.looks("digits", None, T0 - HOUR, T0 + 2 * HOUR)) == 3
        assert [x.window_end for x in u.drift.looks("digits", None, T0, T0 + HOUR)] == [
            T0 + HOUR,
            T0 + HOUR,
        ]
        latest = u.drift.latest_looks()
        assert [(x.version, x.window_end) for x in latest] == [("1.0.0", T0 + 2 * HOUR)]


def test_alarms_are_stored_whole_and_found_by_state(uow):
    first = alarm("da-1", T0, segment="site=a")
    second = alarm("da-2", T0 + HOUR, feature="X[4]")
    with uow() as u:
        u.drift.save_alarms([first, second], T0 + HOUR)
        u.commit()
    with uow() as u:
        assert u.drift.alarm("da-1") == first
        assert u.drift.alarm("nope") is None
        assert [a.id for a in u.drift.alarms()] == ["da-2", "da-1"]  # newest first
        assert {a.id for a in u.drift.active_alarms("digits")} == {"da-1", "da-2"}
        acked = acknowledge(u.drift.alarm("da-1", for_update=True), "ops", T0 + 2 * HOUR)
        gone = resolve(second, "ops", T0 + 2 * HOUR)
        u.drift.save_alarms([acked, gone], T0 + 2 * HOUR)
        u.commit()
    with uow() as u:
        assert [a.id for a in u.drift.alarms(state=AlarmState.ACKNOWLEDGED)] == ["da-1"]
        assert [a.id for a in u.drift.alarms(state=AlarmState.RESOLVED)] == ["da-2"]
        assert u.drift.alarms(model="other") == []
        assert [a.id for a in u.drift.active_alarms("digits")] == ["da-1"]
        assert {a.id for a in u.drift.alarm_history("digits", T0 + HOUR)} == {"da-1", "da-2"}
        assert {a.id for a in u.drift.alarm_history("digits", T0 + 3 * HOUR)} == {"da-1"}
        assert u.drift.alarm_counts() == {("digits", "acknowledged"): 1, ("digits", "resolved"): 1}


def test_a_look_reads_the_drift_fields_device_by_device(uow, engine):
    with uow() as u:
        pks = []
        for i, attributes in enumerate(
            [{"hw": "rev1", "site": "a"}, {"hw": "rev2", "site": "b", "solar": True}, {}]
        ):
            row = u.devices.create(
                f"cam-{i}",
                attributes=attributes,
                group="lab" if i == 0 else None,
                credential_id=f"c{i}",
                credential_hash="x",
                poll_interval_s=60,
                now=T0,
            )
            pks.append(row.id)
        u.commit()
    writer = TelemetryWriter(engine)
    drift = {
        "feature_counts": {"X[3]": [1, 2]},
        "sketches": {"X[3]": "text"},
        "period_end": (T0 + HOUR).timestamp(),
        "latency_counts": [5, 5],  # not a drift field: not read
    }
    for pk in reversed(pks[:2]):
        writer.add(pk, {(bucket_of(T0 + timedelta(minutes=10)), "digits", "1.0.0"): (drift, 1)})
        writer.add(pk, {(bucket_of(T0), "digits", "1.0.0"): ({"class_counts": [3, 4]}, 1)})
    writer.add(pks[2], {(bucket_of(T0), "digits", "9.9.9"): ({"class_counts": [1]}, 1)})
    writer.add(pks[2], {(bucket_of(T0 + 2 * HOUR), "digits", "1.0.0"): ({}, 1)})  # later
    writer.flush()
    with uow() as u:
        devices = u.drift.window_devices("digits", ["1.0.0"], T0, T0 + HOUR)
        assert [d.device_id for d in devices] == ["cam-0", "cam-1"]
        first, second = devices
        assert [first.attribute(n) for n in ("hw", "hardware", "site", "group")] == [
            "rev1",
            "rev1",
            "a",
            "lab",
        ]
        assert second.attribute("solar") == "true" and second.attribute("group") is None
        buckets = list(u.drift.drift_buckets("digits", ["1.0.0"], T0, T0 + HOUR))
        assert [(b.device_pk, b.bucket) for b in buckets] == [
            (pks[0], T0),
            (pks[0], T0 + timedelta(minutes=10)),
            (pks[1], T0),
            (pks[1], T0 + timedelta(minutes=10)),
        ]
        assert buckets[1].data == {
            "feature_counts": {"X[3]": [1, 2]},
            "sketches": {"X[3]": "text"},
            "period_end": (T0 + HOUR).timestamp(),
        }
        assert u.drift.unknown_version_buckets("digits", ["1.0.0"], T0, T0 + HOUR) == 1
        assert u.drift.unknown_version_buckets("digits", ["1.0.0", "9.9.9"], T0, T0 + HOUR) == 0


def test_query_segments(uow):
    with uow() as u:
        pks = [
            u.devices.create(
                f"cam-{i}",
                attributes={"region": region, "hw": hw},
                group=None,
                credential_id=f"c{i}",
                credential_hash="x",
                poll_interval_s=60,
                now=T0,
            ).id
            for i, (region, hw) in enumerate(
                [("eu-west", "rev2"), ("eu-west", "rev1"), ("us-east", "rev2")]
            )
        ]
        u.commit()
    with uow() as u:
        query = "region:eu-west AND hw:rev2"
        assert u.drift.query_members(query, pks, T0) == {pks[0]}
        assert u.drift.query_members(query, pks[1:], T0) == set()
        assert u.drift.query_problem(query) is None
        assert "expected" in (u.drift.query_problem("region:(") or "")
        assert u.drift.query_problem("firmware>=banana") is not None

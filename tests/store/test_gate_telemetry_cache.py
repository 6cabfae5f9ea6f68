"""The rollout controller's gate telemetry reads decode a bucket only when it changed
(store/rollouts.py ``GateTelemetryCache``), with the same answer as a full read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from edgefleet.fleet.query import parse_query
from edgefleet.fleet.telemetry import bucket_of
from edgefleet.store.rollouts import GateTelemetryCache, SqlRolloutRepository
from edgefleet.store.tables import (
    DeviceEventRow,
    DeviceRow,
    RolloutDeviceRow,
    RolloutRow,
    TelemetryRow,
)
from edgefleet.store.telemetry import TelemetryWriter
from tests.store.test_telemetry_writer import _device, _sample

AT = datetime(2026, 11, 30, 12, 1, tzinfo=UTC)
SINCE = bucket_of(AT)


def _fleet(engine, count: int) -> list[int]:
    """``count`` devices in region eu."""
    pks = [_device(engine, f"cam-{i}") for i in range(count)]
    with Session(engine) as session, session.begin():
        session.execute(
            update(DeviceRow).where(DeviceRow.id.in_(pks)).values(attributes={"region": "eu"})
        )
    return pks


def _rollout(engine, rollout_id: str, version: str, pks: list[int], status: str) -> None:
    """A running rollout of digits ``version`` holding the devices ``pks``."""
    with Session(engine) as session, session.begin():
        session.add(
            RolloutRow(
                id=rollout_id,
                name="test",
                model="digits",
                version=version,
                spec={},
                state="running",
                phase="rolling",
                phase_started_at=AT,
                created_at=AT,
                created_by="test",
                updated_at=AT,
            )
        )
        session.flush()
        for pk in pks:
            session.add(
                RolloutDeviceRow(
                    rollout_id=rollout_id,
                    device_pk=pk,
                    wave=0,
                    status=status,
                    assigned_at=AT,
                    updated_at=AT,
                )
            )


def _read(engine, cache: GateTelemetryCache | None, rollout_id: str = "ro-1"):
    """Both arms' (device, hardware, merged data), histograms as lists (the cache keeps
    them as tuples)."""
    with Session(engine) as session:
        repo = SqlRolloutRepository(session, cache)
        return json.loads(json.dumps(_arms(repo, rollout_id)))


def _arms(repo: SqlRolloutRepository, rollout_id: str):
    return (
        sorted(repo.candidate_telemetry(rollout_id, "digits", "1.0.0", SINCE)),
        sorted(
            repo.baseline_telemetry(parse_query("region:eu"), AT, "digits", "2.0.0", None, SINCE)
        ),
    )


def test_only_changed_buckets_are_decoded_again_and_answers_match_a_full_read(engine):
    pks = _fleet(engine, 4)
    _rollout(engine, "ro-1", "1.0.0", pks[:2], "trial")  # two of the four devices
    writer = TelemetryWriter(engine)
    for i, pk in enumerate(pks):
        writer.add_samples(pk, [_sample(AT, 100 + i, 10.0 + i)])
    writer.flush()
    cache = GateTelemetryCache()

    first = _read(engine, cache)
    assert first == _read(engine, None)
    assert [len(first[0]), len(first[1])] == [2, 4]
    assert (cache.decoded, cache.reused) == (6, 0)

    # Nothing changed: every bucket is used again as decoded.
    assert _read(engine, cache) == first
    assert (cache.decoded, cache.reused) == (6, 6)

    # One device's bucket takes another sample: that bucket alone is decoded again,
    # in both arms, and the answer has the new sample in it.
    writer.add_samples(pks[0], [_sample(AT, 50, 30.0)])
    writer.flush()
    changed = _read(engine, cache)
    assert (cache.decoded, cache.reused) == (8, 10)
    assert changed == _read(engine, None)
    by_device = {device: data for device, _, data in changed[0]}
    assert by_device["cam-0"]["inferences"] == 150

    # A bucket deleted (retention) is gone from the answer and from the cache.
    with Session(engine) as session, session.begin():
        session.execute(delete(TelemetryRow).where(TelemetryRow.device_pk == pks[3]))
    assert _read(engine, cache) == _read(engine, None)
    assert "cam-3" not in {device for device, _, _ in _read(engine, cache)[1]}


def test_the_cache_keeps_only_the_arms_read_last():
    cache = GateTelemetryCache(max_arms=2)
    for name in ("a", "b", "c"):
        cache.keep((name,), {1: (1, {"inferences": 1})})
    assert cache.arm(("a",)) == {}
    assert cache.arm(("b",)) == cache.arm(("c",)) == {1: (1, {"inferences": 1})}
    # Reading an arm hands out a copy: filling it in does not change the cache.
    cache.arm(("b",))[2] = (1, {})
    assert 2 not in cache.arm(("b",))


def test_trial_reports_are_each_devices_last_trial_of_the_version(engine):
    pks = _fleet(engine, 3)
    _rollout(engine, "ro-2", "2.0.0", pks[:2], "committed")  # two of the three devices
    with Session(engine) as session, session.begin():
        events = [
            (pks[0], 1, "trial_failed:latency", "2.0.0", {"latency_pairs": 5}),
            (pks[0], 2, "trial_passed", "2.0.0", {"latency_pairs": 50}),
            (pks[0], 3, "update_started", "2.0.0", {}),  # not a trial's end
            (pks[1], 1, "trial_passed", "1.0.0", {"latency_pairs": 7}),  # another version
            (pks[2], 1, "trial_passed", "2.0.0", {"latency_pairs": 9}),  # not the rollout's
        ]
        for pk, seq, reason, version, details in events:
            session.add(
                DeviceEventRow(
                    device_pk=pk,
                    seq=seq,
                    kind="transition",
                    reason=reason,
                    model="digits",
                    version=version,
                    details=details,
                    at=AT,
                    received_at=AT,
                )
            )
    with Session(engine) as session:
        repo = SqlRolloutRepository(session)
        reports = repo.trial_reports("ro-2", "digits", "2.0.0")
        attributes = repo.device_attributes(["cam-0", "cam-2", "nobody"])
    assert reports == [("cam-0", None, {"latency_pairs": 50})]
    # What segment_by reads: each device's attributes, unknown ids left out.
    assert attributes == {"cam-0": {"region": "eu"}, "cam-2": {"region": "eu"}}
    # With a gate cache an event's details are decoded once: events never change, so
    # a later read takes them from the cache (here: not what a direct edit wrote).
    cache = GateTelemetryCache()
    with Session(engine) as session:
        first = SqlRolloutRepository(session, cache).trial_reports("ro-2", "digits", "2.0.0")
    with Session(engine) as session, session.begin():
        session.execute(
            update(DeviceEventRow)
            .where(DeviceEventRow.reason == "trial_passed")
            .values(details={"edited": True})
        )
    with Session(engine) as session:
        again = SqlRolloutRepository(session, cache).trial_reports("ro-2", "digits", "2.0.0")
        fresh = SqlRolloutRepository(session).trial_reports("ro-2", "digits", "2.0.0")
    assert first == again == reports
    assert fresh == [("cam-0", None, {"edited": True})]

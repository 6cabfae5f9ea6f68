"""Pure rollout core around the controller: devices counted by status, the delivery
gates' counts, status changes by each device's wave, where a revert sends each device,
the query a wave draws from, and the target as read between ticks."""

from datetime import UTC, datetime, timedelta

from edgefleet.fleet.query import parse_query
from edgefleet.rollout.gates import Delivery
from edgefleet.rollout.membership import Membership
from edgefleet.rollout.policy import RolloutSpec
from edgefleet.rollout.ports import TargetDevice, TouchedDevice
from edgefleet.rollout.revert import previous_version, revert_groups, revert_version
from edgefleet.rollout.status import Assignment, DeviceStatus, Tally, status_changes
from edgefleet.rollout.waves import members, ranked, selection

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
S = DeviceStatus


def test_a_tally_counts_devices_per_status_in_all_and_per_wave():
    tally = Tally(
        {
            (0, S.COMMITTED, ""): 2,
            (0, S.ROLLED_BACK, "trial_failed:latency_p95"): 1,
            (1, S.ROLLED_BACK, "shadow_failed:agreement"): 1,
            (1, S.ROLLED_BACK, "smoke_test_failed"): 1,
            (1, S.FAILED, "verify_failed"): 1,
            (1, S.REVERTED, "1.0.0"): 2,
            (1, S.DOWNLOADING, ""): 3,
            (1, S.UNREACHABLE, "timeout"): 1,
        }
    )
    assert tally.by_status(0) == {S.COMMITTED: 2, S.ROLLED_BACK: 1}
    assert tally.by_status()[S.ROLLED_BACK] == 3
    assert tally.total() == 12
    # Finished: committed, rolled back, failed or reverted; the in-progress and the
    # unreachable are not. Trial failures: rollbacks of a failed trial or shadow.
    assert Delivery.of(tally) == Delivery(finished=8, failed=1, rolled_back=3, trial_failed=2)


def assignment(pk: int, wave: int, status=S.ASSIGNED, **twin) -> Assignment:
    heard = {"agent_state": None, "reported_version": None, "reported_at": None, "outcome": None}
    return Assignment(pk, wave, status, NOW - timedelta(minutes=30), **(heard | twin))


def test_status_changes_time_each_device_out_by_the_wave_it_came_in_with():
    spec = RolloutSpec.model_validate(
        {
            "model": "m",
            "version": "2.0.0",
            "target": "*",
            "waves": [
                {"percent": 10, "device_timeout_s": 600},
                {"percent": 100, "device_timeout_s": 3600},
            ],
        }
    )
    assignments = [
        assignment(1, 0),  # 30 minutes silent, wave 0 times out after 10: unreachable
        assignment(2, 1),  # wave 1 waits an hour: unchanged, not listed
        assignment(3, 1, outcome=("COMMITTED", "trial_passed")),
        assignment(4, 1, S.DOWNLOADING, agent_state="SMOKE_TEST", reported_at=NOW),
        assignment(5, 7),  # a wave past the last is timed out as the last
    ]
    assert status_changes(assignments, "2.0.0", spec.waves, NOW) == {
        1: (S.UNREACHABLE, "timeout"),
        3: (S.COMMITTED, ""),
        4: (S.TRIAL, ""),
    }


def device(reported=(None, None), desired=(None, None)) -> TargetDevice:
    return TargetDevice(1, "cam-1", "rev2", None, *reported, *desired)


def test_a_revert_goes_back_to_what_the_device_ran_or_was_told_to_run():
    assert previous_version(device(reported=("digits", "1.0.0")), "digits") == "1.0.0"
    # A device that reported no model yet names its version for any model.
    assert previous_version(device(reported=(None, "1.0.0")), "digits") == "1.0.0"
    # Its first reports still on their way: what it was told to run before.
    assert previous_version(device(desired=("digits", "0.9.0")), "digits") == "0.9.0"
    assert previous_version(device(reported=("other", "3.0.0")), "digits") is None
    assert previous_version(device(desired=("other", "3.0.0")), "digits") is None


def test_reverts_go_to_the_definitions_previous_version_else_the_recorded_one():
    assert revert_version("1.0.0", "0.9.0", "2.0.0") == "1.0.0"
    assert revert_version(None, "0.9.0", "2.0.0") == "0.9.0"
    assert revert_version(None, None, "2.0.0") is None  # nothing to go back to
    assert revert_version(None, "2.0.0", "2.0.0") is None  # it ran the candidate already
    touched = [
        TouchedDevice(1, "1.0.0", "rev2"),
        TouchedDevice(2, "1.0.0", "rev3"),
        TouchedDevice(3, "1.0.0", "rev2"),
        TouchedDevice(4, None, "rev2"),
        TouchedDevice(5, "0.9.0", "rev2"),
    ]
    assert revert_groups(touched, None, "2.0.0") == {
        ("1.0.0", "rev2"): [1, 3],
        ("1.0.0", "rev3"): [2],
        ("0.9.0", "rev2"): [5],
    }
    assert revert_groups(touched, "1.0.0", "2.0.0") == {
        ("1.0.0", "rev2"): [1, 3, 4, 5],
        ("1.0.0", "rev3"): [2],
    }


def test_a_wave_draws_from_the_target_or_the_target_within_its_cohorts():
    percent = RolloutSpec.model_validate({"model": "m", "version": "2.0.0", "target": "region:eu"})
    assert selection(percent, 0) == parse_query("region:eu")
    cohorts = RolloutSpec.model_validate(
        {
            "model": "m",
            "version": "2.0.0",
            "target": "region:eu",
            "waves": [{"cohort": "site:a"}, {"cohort": "site:b"}],
        }
    )
    assert selection(cohorts, 0) == parse_query("(region:eu) AND ((site:a))")
    assert selection(cohorts, 1) == parse_query("(region:eu) AND ((site:a) OR (site:b))")
    assert members(["c", "a", "b"], None) == ["c", "a", "b"]  # a cohort wave: all of them


def targets(*ids: str) -> list[TargetDevice]:
    return [TargetDevice(i, d, None, None, None, None, None, None) for i, d in enumerate(ids)]


def test_the_target_as_read_serves_the_ticks_of_the_refresh_time_and_its_wave():
    reads: list[list[TargetDevice]] = []

    def read(*ids: str):
        def reader() -> list[TargetDevice]:
            reads.append(targets(*ids))
            return reads[-1]

        return reader

    membership = Membership(refresh_s=10.0)
    first = membership.read("ro-1", 0, NOW, read("cam-1", "cam-2", "cam-3"))
    assert first.order == ranked("ro-1", ["cam-1", "cam-2", "cam-3"])
    assert first.by_id["cam-2"].device_id == "cam-2"
    later = NOW + timedelta(seconds=9)
    assert membership.read("ro-1", 0, later, read("cam-1")) is first  # fresh: not read
    assert len(reads) == 1
    # Read again: after the refresh time, at the next wave, when dropped, by another clock.
    assert membership.read("ro-1", 0, NOW + timedelta(seconds=10), read("cam-1")).order == ["cam-1"]
    assert membership.read("ro-1", 1, later, read("cam-2")).order == ["cam-2"]
    membership.drop("ro-1")
    assert membership.read("ro-1", 1, later, read("cam-3")).order == ["cam-3"]
    assert membership.read("ro-1", 1, NOW - timedelta(seconds=1), read("cam-4")).order == ["cam-4"]
    assert len(reads) == 5
    # Without a refresh time every tick reads.
    never = Membership()
    never.read("ro-2", 0, NOW, read("cam-1"))
    never.read("ro-2", 0, NOW, read("cam-1"))
    assert len(reads) == 7

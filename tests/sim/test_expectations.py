"""A scenario's expectations against what a run saw (pure: no server, no fleet).

Each expectation once where it holds and once where it does not, with the check's
name, expected and actual as the reports and ``--json`` show them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgefleet.sim.expectations import ReleaseFacts, RunFacts, release_checks, run_checks
from edgefleet.sim.result import Check, ReleaseResult
from edgefleet.sim.scenario import Expect

RUN = RunFacts(
    devices=10, serving={"1.1.0": 10}, interruptions=4, bytes_repeated=0, chunk_bytes=1000
)

RESULT = ReleaseResult(
    version="1.2.0",
    rollout_id="ro-1",
    bad=True,
    started_t=1.0,
    ended_t=31.0,
    state="aborted",
    reason="gate_failed:cpu_percent",
    waves_reached=1,
    devices={"rolled_back": 2},
    time_to_detect_s=12.5,
    time_to_rollback_s=4.0,
    exposed_share=0.2,
    failed_gates=["cpu_percent"],
    rollbacks_by_revision={"rpi3-r1.2": 2},
    restarts=3,
    committed=0,
)


def checks(
    expect: dict[str, Any],
    run: RunFacts = RUN,
    max_unreachable: int = 0,
    **result: Any,
) -> list[Check]:
    release = ReleaseFacts(Expect(**expect), replace(RESULT, **result), max_unreachable)
    return release_checks(release, run)


def only(expect: dict[str, Any], run: RunFacts = RUN, **result: Any) -> Check:
    (check,) = checks(expect, run, **result)
    return check


def test_no_expectation_no_check() -> None:
    assert checks({}) == []


def test_rollout_state() -> None:
    assert only({"state": "aborted"}) == Check("1.2.0: rollout state", True, "aborted", "aborted")
    assert only({"state": "aborted"}, state="succeeded") == Check(
        "1.2.0: rollout state", False, "aborted", "succeeded"
    )


def test_a_gate_failed_is_any_of_the_gates_named() -> None:
    expect = {"failed_gate": ["latency_p95", "cpu_percent"]}
    assert only(expect) == Check(
        "1.2.0: a gate failed", True, "any of ['latency_p95', 'cpu_percent']", ["cpu_percent"]
    )
    assert only(expect, failed_gates=["rollbacks"]) == Check(
        "1.2.0: a gate failed", False, "any of ['latency_p95', 'cpu_percent']", ["rollbacks"]
    )
    assert not only(expect, failed_gates=[]).passed


def test_stopped_by_wave() -> None:
    assert only({"max_wave": 1}) == Check("1.2.0: stopped by wave", True, "<= 1", 1)
    assert only({"max_wave": 1}, waves_reached=2) == Check(
        "1.2.0: stopped by wave", False, "<= 1", 2
    )


def test_devices_committed_all_is_the_whole_fleet() -> None:
    assert only({"committed": "all"}, committed=10) == Check(
        "1.2.0: devices committed", True, ">= 10", 10
    )
    assert only({"committed": "all"}, committed=9) == Check(
        "1.2.0: devices committed", False, ">= 10", 9
    )
    assert only({"committed": 5}, committed=5).passed
    assert only({"committed": 5}, committed=4) == Check(
        "1.2.0: devices committed", False, ">= 5", 4
    )


def test_share_exposed() -> None:
    assert only({"max_exposed_share": 0.2}) == Check("1.2.0: share exposed", True, "<= 0.2", 0.2)
    assert only({"max_exposed_share": 0.1}) == Check("1.2.0: share exposed", False, "<= 0.1", 0.2)


def test_every_device_serves_counts_the_devices_on_anything_else() -> None:
    assert only({"serving_at_end": "1.1.0"}) == Check(
        "1.2.0: every device serves 1.1.0", True, 0, "0 devices serve something else"
    )
    run = replace(RUN, serving={"1.1.0": 7, "1.2.0": 2, "none": 1})
    assert only({"serving_at_end": "1.1.0"}, run) == Check(
        "1.2.0: every device serves 1.1.0", False, 0, "3 devices serve something else"
    )


def test_rollbacks_only_on_the_revisions_named_and_some_there() -> None:
    expect = {"rollbacks_only_on": ["rpi3-r1.2"]}
    name = "1.2.0: on-device rollbacks only on rpi3-r1.2"
    assert only(expect) == Check(name, True, ["rpi3-r1.2"], {"rpi3-r1.2": 2})
    elsewhere = {"rpi3-r1.2": 2, "orin-a1": 1}
    assert only(expect, rollbacks_by_revision=elsewhere) == Check(
        name, False, ["rpi3-r1.2"], elsewhere
    )
    # The expectation says rollbacks happened: none at all is a failure too.
    assert only(expect, rollbacks_by_revision={}) == Check(name, False, ["rpi3-r1.2"], {})


def test_on_device_rollbacks_at_most() -> None:
    assert only({"max_rollbacks": 2}) == Check("1.2.0: on-device rollbacks", True, "<= 2", 2)
    assert only({"max_rollbacks": 0}) == Check("1.2.0: on-device rollbacks", False, "<= 0", 2)
    assert only({"max_rollbacks": 0}, rollbacks_by_revision={}).passed


def test_devices_restarted_at_least() -> None:
    assert only({"min_restarts": 3}) == Check("1.2.0: devices restarted on it", True, ">= 3", 3)
    assert only({"min_restarts": 3}, restarts=2) == Check(
        "1.2.0: devices restarted on it", False, ">= 3", 2
    )


def test_bytes_fetched_twice_allow_chunks_per_interruption() -> None:
    expect = {"max_repeated_chunks_per_interruption": 0.5}
    # 0.5 chunk for each of 4 interruptions: 2 chunks of 1000 bytes.
    assert only(expect, replace(RUN, bytes_repeated=2000)) == Check(
        "1.2.0: bytes fetched twice", True, "<= 2000", 2000
    )
    assert only(expect, replace(RUN, bytes_repeated=2001)) == Check(
        "1.2.0: bytes fetched twice", False, "<= 2000", 2001
    )
    nothing_cut = replace(RUN, interruptions=0, bytes_repeated=1)
    assert only(expect, nothing_cut) == Check("1.2.0: bytes fetched twice", False, "<= 0", 1)


def test_downloads_interrupted_at_least() -> None:
    name = "1.2.0: downloads interrupted and resumed"
    assert only({"min_interruptions": 4}) == Check(name, True, ">= 4", 4)
    assert only({"min_interruptions": 5}) == Check(name, False, ">= 5", 4)


def test_devices_counted_unreachable_at_least() -> None:
    release = ReleaseFacts(Expect(min_unreachable=5), RESULT, max_unreachable=5)
    assert release_checks(release, RUN) == [
        Check("1.2.0: devices counted unreachable", True, ">= 5", 5)
    ]
    release = replace(release, max_unreachable=4)
    assert release_checks(release, RUN) == [
        Check("1.2.0: devices counted unreachable", False, ">= 5", 4)
    ]


def test_time_to_detect_and_to_roll_back() -> None:
    expect = {"max_time_to_detect_s": 20, "max_time_to_rollback_s": 4}
    assert checks(expect) == [
        Check("1.2.0: time to detect", True, "<= 20.0 s", 12.5),
        Check("1.2.0: time to roll back", True, "<= 4.0 s", 4.0),
    ]
    assert checks(expect, time_to_detect_s=20.5, time_to_rollback_s=4.5) == [
        Check("1.2.0: time to detect", False, "<= 20.0 s", 20.5),
        Check("1.2.0: time to roll back", False, "<= 4.0 s", 4.5),
    ]


def test_a_failure_never_detected_fails_a_time_limit() -> None:
    expect = {"max_time_to_detect_s": 20, "max_time_to_rollback_s": 4}
    assert checks(expect, time_to_detect_s=None, time_to_rollback_s=None) == [
        Check("1.2.0: time to detect", False, "<= 20.0 s", None),
        Check("1.2.0: time to roll back", False, "<= 4.0 s", None),
    ]


def test_checks_come_in_the_order_of_the_expectations() -> None:
    expect = Expect.model_validate(
        {
            "max_time_to_rollback_s": 30,
            "serving_at_end": "1.1.0",
            "failed_gate": ["cpu_percent"],
            "state": "aborted",
        }
    )
    release = ReleaseFacts(expect, RESULT)
    assert [c.name for c in release_checks(release, RUN)] == [
        "1.2.0: rollout state",
        "1.2.0: a gate failed",
        "1.2.0: every device serves 1.1.0",
        "1.2.0: time to roll back",
    ]


def test_a_run_checks_each_release_then_the_simulator_itself() -> None:
    first = ReleaseFacts(Expect(state="succeeded"), replace(RESULT, version="1.1.0"))
    second = ReleaseFacts(Expect(state="succeeded"), RESULT)
    assert run_checks([first, second], RUN) == [
        Check("1.1.0: rollout state", False, "succeeded", "aborted"),
        Check("1.2.0: rollout state", False, "succeeded", "aborted"),
        Check("no simulator errors", True, [], []),
    ]


def test_simulator_errors_fail_the_run_showing_the_first_five() -> None:
    errors = [f"sim-r1-{i:05d}: boom" for i in range(7)]
    (check,) = run_checks([], replace(RUN, errors=errors))
    assert check == Check("no simulator errors", False, [], errors[:5])

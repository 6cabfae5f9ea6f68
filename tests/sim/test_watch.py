"""The run's record of a release's rollout (pure: no server, no fleet): each gate
analysis once, the failure detected and rolled back, the rollout over, devices settled."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgefleet.sim.scenario import Release
from edgefleet.sim.watch import RolloutWatch, analysis_looks


def _view(
    wave: int,
    looks: int,
    estimate: float | None,
    *,
    state: str = "running",
    reason: str = "",
    verdict: str = "pass",
    unreachable: int = 0,
) -> dict[str, Any]:
    gates = (
        []
        if estimate is None
        else [
            {
                "gate": "rollbacks",
                "metric": "rollbacks",
                "verdict": verdict,
                "dry_run": False,
                "numbers": {"estimate": estimate, "limit": {"max": 0.05}},
            }
        ]
    )
    return {
        "wave": wave,
        "looks": looks,
        "gates": gates,
        "state": state,
        "reason": reason,
        "devices": {"unreachable": unreachable} if unreachable else {},
    }


def _watch(started_t: float = 10.0) -> RolloutWatch:
    return RolloutWatch(Release(version="1.2.0"), "ro-1", started_t)


def _record(views: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """What the watch keeps of a series of polls: (wave, estimate) per analysis."""
    watch = _watch()
    for t, view in enumerate(views):
        watch.saw(view, float(t))
    return [(look.wave, look.numbers["estimate"]) for look in watch.looks]


def test_each_analysis_is_recorded_once_however_often_it_is_polled() -> None:
    polls = [_view(0, 0, None), _view(0, 1, 0.1), _view(0, 1, 0.1), _view(0, 2, 0.2)]
    assert _record(polls) == [(0, 0.1), (0, 0.2)]


def test_the_analysis_that_advanced_the_rollout_belongs_to_the_wave_it_judged() -> None:
    # The server moves to the next wave in the same step as the analysis that passed,
    # resets its look count and keeps that analysis's gates until the next one.
    polls = [
        _view(0, 3, 0.3),
        _view(1, 0, 0.4),  # wave 1's last analysis, shown under wave 2
        _view(1, 0, 0.4),
        _view(1, 1, 0.5),
        _view(2, 0, 0.6),
        _view(2, 1, 0.7),
    ]
    assert _record(polls) == [(0, 0.3), (0, 0.4), (1, 0.5), (1, 0.6), (2, 0.7)]


def test_a_view_without_gates_records_nothing() -> None:
    assert analysis_looks(_view(0, 0, None), 1.0) == (None, [])


def test_the_most_devices_counted_unreachable_is_kept() -> None:
    watch = _watch()
    for t, unreachable in enumerate([0, 3, 5, 2, 0]):
        watch.saw(_view(0, 0, None, unreachable=unreachable), float(t))
    assert watch.max_unreachable == 5


def test_the_first_gate_failure_logged_is_when_it_was_detected() -> None:
    watch = _watch(started_t=10.0)
    watch.logged([{"t": 11.0, "reason": ""}, {"t": 12.0, "reason": "gates_passed"}])
    assert watch.detected_t is None and watch.time_to_detect_s is None
    watch.logged([{"t": 25.5, "reason": "gate_failed:cpu_percent"}])
    watch.logged([{"t": 30.0, "reason": "gate_failed:latency_p95"}])
    assert watch.detected_t == 25.5 and watch.time_to_detect_s == 15.5
    assert [entry["t"] for entry in watch.log] == [11.0, 12.0, 25.5, 30.0]


def test_rolled_back_when_no_device_serves_the_version_after_the_failure() -> None:
    watch = _watch()
    watch.saw_serving(["1.1.0", None], 12.0)  # nothing failed yet: not a rollback
    assert watch.gone_t is None
    watch.logged([{"t": 20.0, "reason": "gate_failed:rollbacks"}])
    watch.saw_serving(["1.1.0", "1.2.0"], 21.0)
    assert watch.gone_t is None and watch.time_to_rollback_s is None
    watch.saw_serving(["1.1.0", None], 24.25)
    watch.saw_serving(["1.2.0"], 30.0)  # the first time counts
    assert watch.gone_t == 24.25 and watch.time_to_rollback_s == 4.25


def test_the_serving_versions_are_not_read_unless_a_rollback_is_awaited() -> None:
    # The runner hands over every device's version lazily: 10,000 of them every second.
    read: list[str] = []

    def versions() -> Iterator[str]:
        read.append("1.1.0")
        yield "1.1.0"

    watch = _watch()
    watch.saw_serving(versions(), 1.0)
    assert read == [] and watch.gone_t is None
    watch.logged([{"t": 2.0, "reason": "gate_failed:rollbacks"}])
    watch.saw_serving(versions(), 3.0)
    assert read == ["1.1.0"] and watch.gone_t == 3.0


def test_the_run_stops_watching_a_rollout_that_ended_or_paused() -> None:
    watch = _watch()
    assert not watch.over
    for state, over in [
        ("running", False),
        ("draft", False),
        ("paused", True),
        ("succeeded", True),
        ("aborted", True),
        ("failed", True),
    ]:
        watch.saw(_view(0, 0, None, state=state), 1.0)
        assert watch.over is over, state


def test_after_a_success_devices_serve_the_version_or_refused_it() -> None:
    watch = _watch()
    watch.saw(_view(2, 1, None, state="succeeded"), 1.0)
    assert watch.settled("1.2.0", refused=False)
    assert watch.settled("1.1.0", refused=True)
    assert not watch.settled("1.1.0", refused=False)


def test_after_an_abort_devices_serve_anything_but_the_version() -> None:
    watch = _watch()
    watch.saw(_view(0, 1, None, state="aborted"), 1.0)
    assert watch.settled("1.1.0", refused=False)
    assert watch.settled(None, refused=False)
    assert not watch.settled("1.2.0", refused=False)


def test_failed_gates_are_the_failed_looks_and_the_reason_without_dry_runs() -> None:
    watch = _watch()
    watch.saw(_view(0, 1, 0.2, verdict="fail"), 1.0)
    dry = _view(0, 2, 0.1, verdict="fail")
    dry["gates"] = [{**dry["gates"][0], "gate": "latency_p95", "dry_run": True}]
    watch.saw(dry, 2.0)
    assert watch.failed_gates == ["rollbacks"]
    watch.saw(
        _view(0, 2, None, state="aborted", reason="gate_failed:restart_rate,cpu_percent"), 3.0
    )
    assert watch.failed_gates == ["cpu_percent", "restart_rate", "rollbacks"]
    assert _watch().failed_gates == []

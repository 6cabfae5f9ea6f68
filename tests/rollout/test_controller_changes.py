"""Pure controller and lifecycle: what each decision and each operator action does to a rollout's
progress, its decision log and its webhook notices; when an analysis is due."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.rollout.controller import Decision, analysed, analysis_due, apply
from edgefleet.rollout.errors import RolloutStateError
from edgefleet.rollout.gates import GateResult, Verdict
from edgefleet.rollout.lifecycle import (
    Change,
    Kind,
    Phase,
    RolloutProgress,
    RolloutState,
    approve,
    initial,
    pause,
    resume,
    start,
)
from edgefleet.rollout.lifecycle import abort as abort_rollout
from edgefleet.rollout.policy import RolloutSpec
from edgefleet.rollout.status import DeviceStatus

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)
GATES = {"gates": [{"gate": "rollbacks", "verdict": "fail"}]}


def progress(**changes) -> RolloutProgress:
    base = RolloutProgress(
        state=RolloutState.RUNNING,
        wave=0,
        phase=Phase.ROLLING,
        phase_started_at=EARLIER,
        looks=2,
        last_analysis_at=EARLIER,
        started_at=EARLIER,
    )
    return replace(base, **changes)


def events(change: Change) -> list[tuple[str, str, int, str]]:
    return [(n.event, n.state.value, n.wave, n.reason) for n in change.notices]


def logged(change: Change) -> list[tuple[str, int, str]]:
    return [(e.kind.value, e.wave, e.reason) for e in change.entries]


def test_a_new_rollout_starts_at_its_first_wave_or_waits_for_its_approval():
    spec = RolloutSpec.model_validate({"model": "m", "version": "2.0.0", "target": "*"})
    running = initial(spec, NOW, start=True)
    assert (running.state, running.wave, running.phase) == (RolloutState.RUNNING, 0, Phase.ROLLING)
    assert running.started_at == NOW and running.looks == 0
    manual = RolloutSpec.model_validate(
        {
            "model": "m",
            "version": "2.0.0",
            "target": "*",
            "waves": [{"percent": 5, "approval": "manual"}],
        }
    )
    draft = initial(manual, NOW, start=False)
    assert (draft.state, draft.phase, draft.started_at) == (
        RolloutState.DRAFT,
        Phase.AWAITING_APPROVAL,
        None,
    )


def test_waiting_changes_nothing():
    assert apply(progress(), Decision(Kind.WAIT), NOW) == Change(progress())


def test_assigning_logs_what_was_assigned_and_moves_nothing():
    change = apply(progress(), Decision(Kind.ASSIGN, "wave_members", 3), NOW, {"assigned": 3})
    assert change.progress == progress()
    assert logged(change) == [("assign", 0, "wave_members")]
    assert change.entries[0].details == {"assigned": 3}
    assert change.notices == ()


@pytest.mark.parametrize(
    ("kind", "phase"), [(Kind.BAKE, Phase.BAKING), (Kind.ANALYSE, Phase.ANALYSING)]
)
def test_bake_and_analyse_enter_their_phase(kind, phase):
    change = apply(progress(), Decision(kind, "why"), NOW)
    assert change.progress == progress(phase=phase, phase_started_at=NOW)
    assert logged(change) == [(kind.value, 0, "why")]


def test_advancing_starts_the_next_wave_with_new_looks():
    current = progress(phase=Phase.ANALYSING)
    change = apply(current, Decision(Kind.ADVANCE, "gates_passed", details=GATES), NOW)
    assert change.progress == progress(
        wave=1, phase=Phase.ROLLING, phase_started_at=NOW, looks=0, last_analysis_at=None
    )
    assert logged(change) == [("advance", 1, "gates_passed")]  # the new wave's
    assert change.notices == ()
    awaiting = apply(current, Decision(Kind.AWAIT_APPROVAL, "gates_passed"), NOW)
    assert awaiting.progress.phase is Phase.AWAITING_APPROVAL and awaiting.progress.wave == 1
    assert events(awaiting) == [("rollout.awaiting_approval", "running", 1, "gates_passed")]


def test_succeeding_ends_the_rollout_and_tells_the_webhooks():
    change = apply(progress(phase=Phase.ANALYSING), Decision(Kind.SUCCEED, "all_waves_passed"), NOW)
    assert change.progress.state is RolloutState.SUCCEEDED and change.progress.finished_at == NOW
    assert change.progress.reason == "all_waves_passed"
    assert logged(change) == [("succeed", 0, "all_waves_passed")]
    assert events(change) == [("rollout.succeeded", "succeeded", 0, "all_waves_passed")]


def test_a_failed_gate_pauses_with_a_gate_failure_notice():
    change = apply(progress(), Decision(Kind.PAUSE, "gate_failed:rollbacks", details=GATES), NOW)
    assert change.progress == progress(state=RolloutState.PAUSED, reason="gate_failed:rollbacks")
    assert events(change) == [
        ("rollout.gate_failed", "paused", 0, "gate_failed:rollbacks"),
        ("rollout.paused", "paused", 0, "gate_failed:rollbacks"),
    ]
    assert all(n.details == GATES for n in change.notices)
    inconclusive = apply(progress(), Decision(Kind.PAUSE, "inconclusive"), NOW)
    assert events(inconclusive) == [("rollout.paused", "paused", 0, "inconclusive")]


def test_a_failed_gate_aborts_reporting_the_gates_then_what_was_reverted():
    decision = Decision(Kind.ABORT, "gate_failed:rollbacks", details=GATES)
    change = apply(progress(), decision, NOW, {"reverted": 2})
    assert change.progress.state is RolloutState.ABORTED and change.progress.finished_at == NOW
    # The gate failure is told as found (running, the gates); the abort with the revert.
    assert events(change) == [
        ("rollout.gate_failed", "running", 0, "gate_failed:rollbacks"),
        ("rollout.aborted", "aborted", 0, "gate_failed:rollbacks"),
    ]
    assert change.notices[0].details == GATES
    assert change.notices[1].details == {**GATES, "reverted": 2}
    assert logged(change) == [("abort", 0, "gate_failed:rollbacks")]
    assert change.entries[0].details == {**GATES, "reverted": 2}


def test_an_analysis_is_one_more_look():
    gates = [GateResult("rollbacks", "rollbacks", Verdict.PASS, False, {"count": 0})]
    after = analysed(progress(), gates, NOW)
    assert (after.looks, after.last_analysis_at) == (3, NOW)
    assert after.gates == (gates[0].to_dict(),)


def test_an_analysis_is_due_once_devices_run_the_candidate_and_at_most_every_interval():
    running = {DeviceStatus.TRIAL: 1}
    fresh = progress(last_analysis_at=None)
    assert not analysis_due(fresh, NOW, 30, {DeviceStatus.ASSIGNED: 4})  # nothing to see yet
    assert analysis_due(fresh, NOW, 30, running)
    assert analysis_due(fresh, NOW, 30, {DeviceStatus.REVERTED: 1})  # finished devices count
    assert not analysis_due(
        progress(last_analysis_at=NOW - timedelta(seconds=29)), NOW, 30, running
    )
    assert analysis_due(progress(last_analysis_at=NOW - timedelta(seconds=30)), NOW, 30, running)
    assert not analysis_due(progress(phase=Phase.AWAITING_APPROVAL), NOW, 0, running)
    # Baking: analysed (a failing gate acts at once) even before any device finished.
    assert analysis_due(progress(phase=Phase.BAKING), NOW, 30, {})
    # Entering analysing after the last look: analysed at once, whatever the interval.
    entered = progress(phase=Phase.ANALYSING, phase_started_at=NOW, last_analysis_at=EARLIER)
    assert analysis_due(entered, NOW, 3600, {})


def test_operators_start_pause_and_resume():
    draft = progress(state=RolloutState.DRAFT, started_at=None)
    started = start("ro-1", draft, NOW)
    assert started.progress.state is RolloutState.RUNNING and started.progress.started_at == NOW
    assert logged(started) == [("start", 0, "operator")]
    assert events(started) == [("rollout.running", "running", 0, "start")]
    paused = pause("ro-1", progress())
    assert paused.progress.reason == "operator" and paused.progress.state is RolloutState.PAUSED
    assert events(pause("ro-1", progress(), "checking")) == [
        ("rollout.paused", "paused", 0, "checking")
    ]
    baking = progress(state=RolloutState.PAUSED, phase=Phase.ANALYSING, reason="inconclusive")
    resumed = resume("ro-1", baking, NOW).progress
    # The wave is observed afresh: it bakes again, with new looks.
    assert resumed == progress(
        phase=Phase.BAKING, phase_started_at=NOW, looks=0, last_analysis_at=None
    )
    rolling = resume("ro-1", progress(state=RolloutState.PAUSED), NOW).progress
    assert rolling.phase is Phase.ROLLING
    with pytest.raises(RolloutStateError, match="cannot pause rollout ro-1: it is paused"):
        pause("ro-1", progress(state=RolloutState.PAUSED))
    with pytest.raises(RolloutStateError, match="cannot start rollout ro-1: it is running"):
        start("ro-1", progress(), NOW)
    with pytest.raises(RolloutStateError, match="cannot resume"):
        resume("ro-1", progress(), NOW)


def test_approving_a_manual_wave_or_past_an_inconclusive_one():
    waiting = progress(phase=Phase.AWAITING_APPROVAL, wave=1)
    approved = approve("ro-1", waiting, 3, NOW)
    assert approved.progress == progress(phase=Phase.ROLLING, wave=1, phase_started_at=NOW)
    assert logged(approved) == [("approve", 1, "operator")]
    assert events(approved) == [("rollout.approved", "running", 1, "approved")]
    stuck = progress(state=RolloutState.PAUSED, phase=Phase.ANALYSING, reason="inconclusive")
    onward = approve("ro-1", stuck, 3, NOW).progress
    assert onward == progress(
        wave=1, phase=Phase.ROLLING, phase_started_at=NOW, looks=0, last_analysis_at=None
    )
    last = approve("ro-1", replace(stuck, wave=2), 3, NOW)
    assert last.progress.state is RolloutState.SUCCEEDED
    assert last.progress.reason == "approved_inconclusive"
    assert logged(last) == [("approve", 2, "operator"), ("succeed", 2, "approved_inconclusive")]
    assert events(last) == [
        ("rollout.approved", "paused", 2, "approved"),
        ("rollout.succeeded", "succeeded", 2, "approved_inconclusive"),
    ]
    with pytest.raises(RolloutStateError, match="not waiting for an approval") as refused:
        approve("ro-1", progress(state=RolloutState.PAUSED, reason="operator"), 3, NOW)
    assert refused.value.details == {"state": "paused", "phase": "rolling", "reason": "operator"}


def test_aborting_ends_any_rollout_that_has_not_ended():
    for state in (RolloutState.DRAFT, RolloutState.RUNNING, RolloutState.PAUSED):
        change = abort_rollout("ro-1", progress(state=state), NOW, "", {"reverted": 0})
        assert change.progress.state is RolloutState.ABORTED
        assert logged(change) == [("abort", 0, "operator")]
        assert events(change) == [("rollout.aborted", "aborted", 0, "operator")]
    for state in (RolloutState.SUCCEEDED, RolloutState.ABORTED, RolloutState.FAILED):
        with pytest.raises(RolloutStateError, match=f"already {state.value}"):
            abort_rollout("ro-1", progress(state=state), NOW)


def test_a_rollout_moved_when_an_operator_changed_it():
    seen = progress()
    assert not seen.moved_since(seen)
    assert not replace(seen, gates=({"gate": "x"},)).moved_since(seen)
    assert replace(seen, looks=3).moved_since(seen)
    assert replace(seen, state=RolloutState.PAUSED).moved_since(seen)

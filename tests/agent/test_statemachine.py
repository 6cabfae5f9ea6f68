"""The sans-I/O update state machine: every edge, recovery, and invariants under random
event sequences."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent.statemachine import (
    SETTLED,
    Activate,
    Activated,
    ActivationFailed,
    AgentState,
    CheckedIn,
    DesiredChanged,
    DesiredModel,
    Discard,
    Download,
    DownloadDeferred,
    Downloaded,
    DownloadFailed,
    InvalidEvent,
    OperatorCleared,
    RetryLater,
    RunShadow,
    RunTrial,
    ShadowFailed,
    ShadowPassed,
    SlotContent,
    SmokeFailed,
    SmokePassed,
    SmokeTest,
    State,
    SwitchBack,
    TrialFailed,
    TrialPassed,
    VerificationFailed,
    Verified,
    Verify,
    from_json,
    recover,
    step,
    to_json,
)

V1 = DesiredModel(
    "digits", "1.0.0", "onnx-fp32", "models/digits/1.0.0/onnx-fp32/m.onnx", "a" * 64, 100, 1
)
V2 = DesiredModel(
    "digits", "1.1.0", "onnx-fp32", "models/digits/1.1.0/onnx-fp32/m.onnx", "b" * 64, 200, 2
)

#: V2, shadowed first.
V2S = dataclasses.replace(V2, shadow={"min_compared": 100, "min_agreement": 0.9})


def run(state, *events):
    commands, transitions = [], []
    for event in events:
        state, more_commands, more_transitions = step(state, event)
        commands += more_commands
        transitions += more_transitions
    return state, commands, transitions


def installed(target=V1) -> AgentState:
    state, _, _ = run(
        AgentState.initial(),
        DesiredChanged(target),
        Downloaded(),
        Verified(),
        SmokePassed(),
        Activated(),
        TrialPassed(),
    )
    return state


def test_first_install_walks_every_state_in_order():
    state, commands, transitions = run(
        AgentState.initial(),
        DesiredChanged(V1),
        Downloaded(),
        Verified(),
        SmokePassed(),
        Activated(),
        TrialPassed({"inferences": 200}),
    )
    assert [t.to_state for t in transitions] == [
        State.DOWNLOADING,
        State.VERIFYING,
        State.STAGED,
        State.SMOKE_TEST,
        State.ACTIVATING,
        State.TRIAL,
        State.COMMITTED,
    ]
    assert [t.seq for t in transitions] == list(range(1, 8))
    assert commands == [
        Download(V1, "a"),
        Verify(V1, "a"),
        SmokeTest(V1, "a"),
        Activate("a"),
        RunTrial(V1, None),
    ]
    assert state.state is State.COMMITTED and state.active == "a"
    assert state.slots["a"] == SlotContent("digits", "1.0.0", "onnx-fp32", "a" * 64, True)
    assert transitions[-1].details == {"inferences": 200}
    assert state.target is None


def test_update_goes_to_the_inactive_slot_and_keeps_the_old_as_backup():
    state, commands, _ = run(
        installed(),
        DesiredChanged(V2),
        Downloaded(),
        Verified(),
        SmokePassed(),
        Activated(),
        TrialPassed(),
    )
    assert commands[0] == Download(V2, "b")
    assert state.active == "b"
    assert state.slots["a"].version == "1.0.0"  # backup
    assert state.slots["b"].version == "1.1.0"


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ((SmokeFailed("golden_mismatch"),), "golden_mismatch"),
        ((SmokePassed(), ActivationFailed("load_failed")), "load_failed"),
        (
            (SmokePassed(), Activated(), TrialFailed("error_rate", {"error_rate": 0.2})),
            "trial_failed:error_rate",
        ),
    ],
)
def test_failures_after_verification_roll_back_to_the_old_model(events, reason):
    state, commands, transitions = run(
        installed(), DesiredChanged(V2), Downloaded(), Verified(), *events
    )
    assert state.state is State.ROLLED_BACK
    assert transitions[-1].reason == reason
    assert state.active == "a" and state.slots["a"].version == "1.0.0"
    assert state.slots["b"] is None
    assert SwitchBack("a") in commands and Discard("b") in commands
    assert "digits@1.1.0" in state.refused
    # Never tried again unless an operator clears it.
    again, more, _ = run(state, DesiredChanged(V2))
    assert more == [] and again.state is State.ROLLED_BACK
    cleared, more, _ = run(state, OperatorCleared("digits@1.1.0"), DesiredChanged(V2))
    assert more == [Download(V2, "b")] and cleared.state is State.DOWNLOADING


def test_verification_failure_is_refused_without_touching_the_active_model():
    state, commands, transitions = run(
        installed(), DesiredChanged(V2), Downloaded(), VerificationFailed("revoked")
    )
    assert state.state is State.FAILED and transitions[-1].reason == "revoked"
    assert state.active == "a" and Discard("b") in commands
    assert "digits@1.1.0" in state.refused and state.last_error == {"reason": "revoked"}


def test_downloads_retry_then_give_up():
    state, commands, _ = run(
        installed(), DesiredChanged(V2), *[DownloadFailed("network", True)] * 3
    )
    assert state.state is State.DOWNLOADING
    assert commands[-2:] == [RetryLater(3), Download(V2, "b")]  # wait, then again
    state, commands, transitions = run(state, *[DownloadFailed("network", True)] * 5)
    assert state.state is State.FAILED and transitions[-1].details["attempts"] == 8
    state, _, transitions = run(installed(), DesiredChanged(V2), DownloadFailed("too_large", False))
    assert state.state is State.FAILED and transitions[-1].reason == "too_large"


def test_a_download_cut_after_progress_does_not_count_towards_giving_up():
    # A flaky link cuts an 80 MB download again and again, but each attempt resumes
    # further: the device never gives up while bytes keep arriving.
    cut = DownloadFailed("network", True, progressed=True)
    state, commands, _ = run(installed(), DesiredChanged(V2), *[cut] * 20)
    assert state.state is State.DOWNLOADING and commands[-2] == RetryLater(1)
    # Attempts that fetch nothing still end it.
    stuck = DownloadFailed("network", True)
    state, _, transitions = run(state, *[stuck] * 7)
    assert state.state is State.FAILED and transitions[-1].details["attempts"] == 8


def test_new_desired_supersedes_an_unfinished_download_but_not_a_live_trial():
    v3 = DesiredModel("digits", "1.2.0", "onnx-fp32", "p", "c" * 64, 300, 3)
    state, commands, transitions = run(installed(), DesiredChanged(V2), DesiredChanged(v3))
    assert state.target == v3
    assert [t.reason for t in transitions[-2:]] == ["superseded", "new_desired"]
    assert commands[-2:] == [Discard("b"), Download(v3, "b")]
    trial, _, _ = run(
        installed(), DesiredChanged(V2), Downloaded(), Verified(), SmokePassed(), Activated()
    )
    same, commands, _ = run(trial, DesiredChanged(v3))
    assert same == trial and commands == []
    back, commands, transitions = run(installed(), DesiredChanged(V2), DesiredChanged(V1))
    assert back.state is State.IDLE and transitions[-1].reason == "desired_is_active"


def test_events_that_cannot_happen_are_rejected():
    with pytest.raises(InvalidEvent, match="Verified cannot happen in state IDLE"):
        step(AgentState.initial(), Verified())
    with pytest.raises(InvalidEvent):
        run(installed(), TrialPassed())


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ((DesiredChanged(V2),), [Download(V2, "b")]),
        ((DesiredChanged(V2), Downloaded()), [Verify(V2, "b")]),
        ((DesiredChanged(V2), Downloaded(), Verified()), [SmokeTest(V2, "b")]),
        ((DesiredChanged(V2), Downloaded(), Verified(), SmokePassed()), [Activate("b")]),
    ],
)
def test_recovery_resumes_unfinished_updates(prefix, expected):
    state, _, _ = run(installed(), *prefix)
    recovered, commands, transitions = recover(from_json(to_json(state)))
    assert commands == expected and transitions == []
    assert recovered == state


def test_recovery_after_the_pointer_moved_but_before_the_state_did():
    state, _, _ = run(installed(), DesiredChanged(V2), Downloaded(), Verified(), SmokePassed())
    moved = type(state)(**{**vars(state), "active": "b"})  # crash between pointer and state write
    recovered, commands, transitions = recover(moved)
    assert recovered.state is State.TRIAL and commands == [RunTrial(V2, "a")]
    assert transitions[0].reason == "activated"


def test_restarts_during_the_trial_resume_it_until_the_limit():
    state, _, _ = run(
        installed(), DesiredChanged(V2), Downloaded(), Verified(), SmokePassed(), Activated()
    )
    state = dataclasses.replace(state, trial_progress={"serving_s": 12.0})
    # Below the limit the new model stays and the trial resumes, its evidence kept.
    for restarts in (1, 2):
        state, commands, transitions = recover(from_json(to_json(state)), restart_limit=3)
        assert state.state is State.TRIAL and state.active == "b" and state.trial_boots == restarts
        assert commands == [RunTrial(V2, "a")]
        assert [(t.reason, t.details) for t in transitions] == [
            ("trial_resumed", {"restarts": restarts, "restart_limit": 3})
        ]
        assert state.trial_progress == {"serving_s": 12.0}
    # A clean stop (a service stop) does not count.
    same, commands, transitions = recover(state, clean_stop=True, restart_limit=3)
    assert same == state and commands == [RunTrial(V2, "a")] and transitions == []
    # The third: rolled back, for its own reason, and never retried.
    recovered, commands, transitions = recover(state, restart_limit=3)
    assert recovered.state is State.ROLLED_BACK and recovered.active == "a"
    assert [(t.reason, t.details) for t in transitions] == [
        ("trial_failed:restart_limit", {"restarts": 3, "restart_limit": 3})
    ]
    assert commands == [SwitchBack("a"), Discard("b")]
    assert V2.key in recovered.refused and recovered.trial_progress is None


def test_a_limit_of_one_rolls_back_at_the_first_restart():
    state, _, _ = run(
        installed(), DesiredChanged(V2), Downloaded(), Verified(), SmokePassed(), Activated()
    )
    recovered, _, transitions = recover(state, restart_limit=1)
    assert recovered.state is State.ROLLED_BACK
    assert transitions[0].reason == "trial_failed:restart_limit"


def test_a_trials_evidence_does_not_outlive_it():
    state, _, _ = run(
        installed(), DesiredChanged(V2), Downloaded(), Verified(), SmokePassed(), Activated()
    )
    state = dataclasses.replace(state, trial_progress={"serving_s": 5.0})
    committed, _, _ = step(state, TrialPassed())
    assert committed.trial_progress is None


def test_persisted_form_round_trips_and_rejects_garbage():
    state, _, _ = run(installed(), DesiredChanged(V2), Downloaded())
    assert from_json(to_json(state)) == state
    bad = to_json(state) | {"active": "c"}
    with pytest.raises(ValueError, match="active slot must be a, b or null"):
        from_json(bad)


def test_shadow_first_runs_the_candidate_beside_the_serving_model_before_activating():
    state, commands, transitions = run(
        installed(), DesiredChanged(V2S), Downloaded(), Verified(), SmokePassed()
    )
    assert state.state is State.SHADOW and state.active == "a"  # the old model serves
    assert commands[-1] == RunShadow(V2S, "b")
    state, commands, transitions = step(state, ShadowPassed({"agreement": 0.97}))
    assert state.state is State.ACTIVATING and state.previous == "a"
    assert commands == [Activate("b")]
    assert transitions[0].reason == "shadow_passed" and transitions[0].details["agreement"] == 0.97
    state, _, _ = run(state, Activated(), TrialPassed())
    assert state.state is State.COMMITTED and state.active == "b"


def test_a_candidate_that_fails_its_shadow_period_never_serves():
    state, _, _ = run(installed(), DesiredChanged(V2S), Downloaded(), Verified(), SmokePassed())
    state, commands, transitions = step(state, ShadowFailed("agreement", {"agreement": 0.4}))
    assert state.state is State.ROLLED_BACK and state.active == "a"
    assert commands == [SwitchBack("a"), Discard("b")]
    assert transitions[0].reason == "shadow_failed:agreement"
    assert transitions[0].details == {"agreement": 0.4}
    assert V2S.key in state.refused and state.slots["b"] is None


def test_shadow_first_is_skipped_when_nothing_serves_yet():
    state, commands, _ = run(
        AgentState.initial(), DesiredChanged(V2S), Downloaded(), Verified(), SmokePassed()
    )
    assert state.state is State.ACTIVATING and commands[-1] == Activate("a")


def test_a_restart_during_shadow_shadows_again_and_a_new_desired_supersedes_it():
    state, _, _ = run(installed(), DesiredChanged(V2S), Downloaded(), Verified(), SmokePassed())
    recovered, commands, transitions = recover(from_json(to_json(state)))
    assert recovered == state and commands == [RunShadow(V2S, "b")] and not transitions
    assert from_json(to_json(state)).target.shadow == V2S.shadow
    state, commands, transitions = step(state, DesiredChanged(V1))
    assert state.state is State.IDLE and commands == [Discard("b")]
    assert transitions[0].reason == "desired_is_active"


def test_a_fleet_rollback_to_the_backup_slot_switches_without_downloading():
    state, _, _ = run(
        installed(), DesiredChanged(V2), Downloaded(), Verified(), SmokePassed(), Activated()
    )
    state, _, _ = step(state, TrialPassed())
    assert state.active == "b" and state.slots["a"].version == "1.0.0"
    state, commands, transitions = step(state, DesiredChanged(V1))
    assert state.state is State.ACTIVATING and commands == [Activate("a")]
    assert transitions[0].reason == "desired_is_backup" and state.previous == "b"
    state, commands, _ = step(state, Activated())
    assert state.state is State.TRIAL and state.active == "a"
    state, _, _ = step(state, TrialPassed())
    assert state.state is State.COMMITTED and state.slots["b"].version == "1.1.0"


EVENTS = st.one_of(
    st.sampled_from([V1, V2, V2S, None]).map(DesiredChanged),
    st.just(Downloaded()),
    st.builds(DownloadFailed, st.sampled_from(["network", "too_large"]), st.booleans()),
    st.builds(DownloadDeferred, st.just("precondition:time_window")),
    st.just(Verified()),
    st.builds(VerificationFailed, st.sampled_from(["signature", "revoked"])),
    st.just(SmokePassed()),
    st.builds(SmokeFailed, st.just("golden_mismatch")),
    st.builds(ShadowPassed),
    st.builds(ShadowFailed, st.sampled_from(["agreement", "latency_p95"])),
    st.just(Activated()),
    st.builds(ActivationFailed, st.just("load_failed")),
    st.builds(TrialPassed),
    st.builds(TrialFailed, st.sampled_from(["error_rate", "latency"])),
    st.sampled_from(["digits@1.0.0", "digits@1.1.0"]).map(OperatorCleared),
    st.builds(
        CheckedIn,
        st.sampled_from([V1, V2, V2S, None]),
        st.booleans(),
        st.sampled_from([frozenset(), frozenset({"digits@1.1.0"})]),
    ),
    st.just("RESTART"),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(EVENTS, max_size=40))
def test_invariants_hold_for_any_event_sequence(events):
    state = AgentState.initial()
    for event in events:
        before = state
        if event == "RESTART":
            state, commands, transitions = recover(from_json(to_json(state)), restart_limit=2)
        else:
            try:
                state, commands, transitions = step(state, event)
            except InvalidEvent:
                continue
        # Never write to the serving slot: downloads go to a slot that served neither
        # before nor after; discards only touch a slot that no longer serves.
        for command in commands:
            if isinstance(command, Download):
                assert command.slot not in (before.active, state.active)
            if isinstance(command, Discard):
                assert command.slot != state.active
        # The serving slot always holds a verified model (or nothing yet).
        if state.active is not None:
            content = state.slots[state.active]
            assert content is not None and content.verified
        # An update is in progress exactly outside the settled states.
        assert (state.target is None) == (state.state in SETTLED)
        # Sequence numbers count transitions, one each.
        assert state.seq == before.seq + len(transitions)
        assert [t.seq for t in transitions] == list(range(before.seq + 1, state.seq + 1))
        # Refused versions are never started (unless the same answer allowed them again).
        allowed = event.cleared if isinstance(event, CheckedIn) and event.changed else set()
        for command in commands:
            if isinstance(command, Download):
                assert command.target.key not in before.refused - allowed


def test_a_desired_state_put_off_during_a_trial_is_taken_up_when_it_ends():
    # A fleet abort reaches a device whose trial of the new version is running: the
    # core finishes the trial first, and the shell offers the desired state again once
    # settled (found by the simulator's cpu-spike scenario).
    state, _, _ = run(installed(), DesiredChanged(V2), Downloaded(), Verified(), SmokePassed())
    state, _, _ = run(state, Activated())
    assert state.state is State.TRIAL
    assert step(state, DesiredChanged(V1)) == (state, [], [])  # put off
    state, _, _ = run(state, TrialPassed())
    assert state.state is State.COMMITTED and state.active_content.version == "1.1.0"
    state, commands, transitions = step(state, DesiredChanged(V1))
    assert [t.reason for t in transitions] == ["desired_is_backup"]
    assert commands == [Activate(state.inactive)]
    state, _, _ = run(state, Activated(), TrialPassed())
    assert state.state is State.COMMITTED and state.active_content.version == "1.0.0"
    # Offered again when the device already follows it: nothing happens.
    assert step(state, DesiredChanged(V1)) == (state, [], [])

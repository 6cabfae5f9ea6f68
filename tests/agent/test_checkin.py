"""Check-ins without I/O: what the core makes of an answer (``CheckedIn``), the answer
remembered, the timing of check-ins and retries, what a flush sends, and when a device
is done."""

import dataclasses
import json

import pytest

from edgefleet.agent.checkin import (
    EVENTS_PER_REQUEST,
    NOTHING_TO_SEND,
    SAMPLES_PER_REQUEST,
    CheckinPolicy,
    Flush,
    LastAnswer,
    converged,
    plan_flush,
)
from edgefleet.agent.config import load_config
from edgefleet.agent.statemachine import (
    Activate,
    Activated,
    AgentState,
    CheckedIn,
    Discard,
    Download,
    DownloadDeferred,
    Downloaded,
    SmokeFailed,
    SmokePassed,
    State,
    TrialFailed,
    TrialPassed,
    Verified,
    step,
)
from edgefleet.errors import ConfigError
from tests.agent.test_statemachine import V1, V2, installed, run


def document(version: str = "1.1.0", **more) -> dict:
    """A desired state as the device API sends it."""
    model = {
        "name": "digits",
        "version": version,
        "variant": "onnx-fp32",
        "target_path": f"models/digits/{version}/onnx-fp32/m.onnx",
        "sha256": "b" * 64,
        "size": 200,
        "release": 2,
    }
    return {"model": model, "trial": {}, "preconditions": {}, "config": {}, **more}


# -- what the core makes of an answer ---------------------------------------------------


def test_a_new_answer_starts_the_update_it_names():
    state, commands, transitions = step(installed(), CheckedIn(V2))
    assert state.state is State.DOWNLOADING and state.target == V2
    assert [t.reason for t in transitions] == ["new_desired"]
    assert commands == [Download(V2, "b")]


def test_nothing_changed_leaves_a_settled_device_as_it_is():
    state = installed()
    assert step(state, CheckedIn(V1, changed=False)) == (state, [], [])
    assert step(state, CheckedIn(None, changed=False)) == (state, [], [])


def test_a_download_put_off_is_tried_again_at_the_next_check_in():
    state, _, _ = run(installed(), CheckedIn(V2), DownloadDeferred("precondition:time_window"))
    assert state.state is State.DOWNLOADING
    again, commands, transitions = step(state, CheckedIn(V2, changed=False))
    assert (commands, transitions) == ([Download(V2, "b")], [])
    assert again == state


def test_an_update_past_its_download_is_left_alone_by_check_ins():
    state, _, _ = run(installed(), CheckedIn(V2), Downloaded())
    assert state.state is State.VERIFYING
    assert step(state, CheckedIn(V2, changed=False)) == (state, [], [])


def test_new_policies_for_the_update_in_progress_are_kept_without_restarting_it():
    state, _, _ = run(installed(), CheckedIn(V2), DownloadDeferred("precondition:time_window"))
    relaxed = dataclasses.replace(V2, preconditions={"window_utc": None})
    kept, commands, transitions = step(state, CheckedIn(relaxed))
    assert transitions == []
    assert kept.target is not None and kept.target.preconditions == {"window_utc": None}
    assert commands == [Download(relaxed, "b")]  # and the download tried again


def test_a_new_model_supersedes_the_download_in_progress_once():
    state, _, _ = run(installed(), CheckedIn(V2), DownloadDeferred("precondition:time_window"))
    v3 = dataclasses.replace(V2, version="1.2.0", sha256="c" * 64)
    _, commands, transitions = step(state, CheckedIn(v3))
    assert [t.reason for t in transitions] == ["superseded", "new_desired"]
    assert commands == [Discard("b"), Download(v3, "b")]


def test_an_operator_clearing_a_refusal_lets_the_same_answer_start_it_again():
    state, _, _ = run(
        installed(), CheckedIn(V2), Downloaded(), Verified(), SmokePassed(), Activated()
    )
    state, _, _ = run(state, TrialFailed("latency"))
    assert "digits@1.1.0" in state.refused
    assert step(state, CheckedIn(V2)) == (state, [], [])  # refused: never retried
    again, commands, transitions = step(state, CheckedIn(V2, cleared=frozenset({V2.key})))
    assert "digits@1.1.0" not in again.refused
    assert [t.reason for t in transitions] == ["new_desired"]
    assert commands == [Download(V2, "b")]


def test_a_clearing_in_an_unchanged_answer_is_not_taken_again():
    state, _, _ = run(
        installed(), CheckedIn(V2), Downloaded(), Verified(), SmokePassed(), Activated()
    )
    state, _, _ = run(state, TrialFailed("latency"))
    unchanged = CheckedIn(V2, changed=False, cleared=frozenset({V2.key}))
    assert step(state, unchanged) == (state, [], [])


def test_a_desired_model_put_off_during_a_trial_is_taken_up_at_a_check_in_once_settled():
    state, _, _ = run(installed(), CheckedIn(V2), Downloaded(), Verified(), SmokePassed())
    state, _, _ = run(state, Activated())
    assert step(state, CheckedIn(V1)) == (state, [], [])  # put off while on trial
    state, _, _ = run(state, TrialPassed())
    _, commands, transitions = step(state, CheckedIn(V1, changed=False))
    assert [t.reason for t in transitions] == ["desired_is_backup"]
    assert commands == [Activate(state.inactive)]


# -- the answer remembered --------------------------------------------------------------


def test_an_answer_is_remembered_and_nothing_changed_costs_no_new_event():
    answer = LastAnswer()
    assert answer.unchanged == CheckedIn(None, changed=False)
    event = answer.answered('"tag-1"', document(config={"clear_refused": ["digits@1.0.0", 7]}))
    assert answer.etag == '"tag-1"' and answer.model == event.desired
    assert event.changed and event.cleared == frozenset({"digits@1.0.0"})
    assert event.desired is not None and event.desired.key == "digits@1.1.0"
    assert answer.unchanged is answer.unchanged
    assert answer.unchanged == CheckedIn(event.desired, changed=False)


def test_an_answer_without_a_model_desires_none():
    answer = LastAnswer()
    assert answer.answered('"tag"', None) == CheckedIn(None)
    assert answer.answered('"tag"', {"model": None, "config": {}}) == CheckedIn(None)
    assert answer.model is None


def test_an_answer_not_shaped_as_the_device_api_sends_it_is_an_error():
    with pytest.raises(KeyError):
        LastAnswer().answered('"tag"', {"model": {"name": "digits"}})


# -- timing ---------------------------------------------------------------------------


POLICY = CheckinPolicy(interval_s=10.0, max_backoff_s=300.0, telemetry_interval_s=60.0)


def test_check_ins_come_at_the_interval_moved_by_the_jitter():
    assert POLICY.delay_s(0, 0.5) == pytest.approx(10.0)
    assert POLICY.delay_s(0, 0.0) == pytest.approx(9.0)
    assert POLICY.delay_s(0, 0.999999) == pytest.approx(11.0)
    steady = dataclasses.replace(POLICY, jitter=0.0)
    assert steady.delay_s(0, 0.123) == 10.0


def test_failed_check_ins_back_off_exponentially_up_to_the_limit():
    steady = CheckinPolicy(interval_s=1.0, max_backoff_s=300.0, telemetry_interval_s=60, jitter=0)
    assert [steady.delay_s(n, 0.5) for n in range(1, 10)] == [
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        300.0,
    ]
    huge = dataclasses.replace(steady, max_backoff_s=1e9)
    assert huge.delay_s(1000, 0.5) == 1024.0  # doublings stop at ten


def test_a_download_is_retried_after_a_wait_that_doubles_per_attempt_up_to_the_limit():
    assert [POLICY.download_retry_s(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert POLICY.download_retry_s(20) == 300.0


def test_telemetry_is_due_once_its_interval_has_passed():
    assert not POLICY.telemetry_due(100.0, 50.0)
    assert POLICY.telemetry_due(110.0, 50.0)


# -- what a flush sends ---------------------------------------------------------------


REPORT = {"agent_state": "IDLE"}


def test_nothing_to_send_is_one_shared_plan():
    assert plan_flush(0, REPORT, REPORT, 0) is NOTHING_TO_SEND


def test_events_go_in_batches_oldest_first_then_the_changed_report_then_telemetry():
    plan = plan_flush(2 * EVENTS_PER_REQUEST + 34, REPORT, None, SAMPLES_PER_REQUEST + 5)
    assert plan == Flush((EVENTS_PER_REQUEST, EVENTS_PER_REQUEST, 34), True, SAMPLES_PER_REQUEST)
    assert plan_flush(EVENTS_PER_REQUEST, REPORT, REPORT, 3) == Flush(
        (EVENTS_PER_REQUEST,), False, 3
    )


def test_the_reported_state_is_sent_when_it_changed_and_after_a_start():
    assert plan_flush(0, REPORT, None, 0).report
    assert plan_flush(0, {"agent_state": "DOWNLOADING"}, REPORT, 0).report
    assert not plan_flush(1, dict(REPORT), REPORT, 0).report


# -- done -----------------------------------------------------------------------------


def test_converged_once_the_desired_model_is_served_refused_or_nothing_is_desired():
    assert converged(AgentState.initial(), None)
    assert not converged(AgentState.initial(), V1)
    assert converged(installed(), V1)
    downloading, _, _ = step(installed(), CheckedIn(V2))
    assert not converged(downloading, V2)
    refused = AgentState(refused=frozenset({V2.key}))
    assert converged(refused, V2)
    rolled_back, _, _ = run(downloading, Downloaded(), Verified(), SmokeFailed("load_failed"))
    assert rolled_back.state is State.ROLLED_BACK
    assert converged(rolled_back, dataclasses.replace(V2, version="1.2.0"))  # the update ended


# -- the config -----------------------------------------------------------------------


def test_the_check_in_interval_is_read_under_its_old_name_too(tmp_path):
    base = {"server": "http://fleet", "device_id": "cam-1", "state_dir": str(tmp_path)}
    for key in ("checkin_interval_s", "poll_interval_s"):
        path = tmp_path / f"{key}.yaml"
        path.write_text(json.dumps({**base, key: 5}))
        assert load_config(path).checkin_interval_s == 5.0
    path.write_text(json.dumps({**base, "poll_interval_s": 0}))
    with pytest.raises(ConfigError, match="poll_interval_s"):
        load_config(path)
    path.write_text(json.dumps({**base, "checkin_interval_s": 5, "poll_interval_s": 6}))
    with pytest.raises(ConfigError, match="poll_interval_s: Extra inputs"):
        load_config(path)  # both names: which one was meant?

"""Download preconditions (pure)."""

from datetime import UTC, datetime, time

import pytest

from edgefleet.agent.preconditions import Conditions, in_window, unmet
from edgefleet.agent.statemachine import (
    AgentState,
    DesiredChanged,
    DesiredModel,
    DownloadDeferred,
    State,
    step,
)
from edgefleet.fleet.domain import Preconditions

NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GOOD = Conditions(free_disk_mb=10_000, battery_percent=None, metered=False, now_utc=NOON)


@pytest.mark.parametrize(
    ("preconditions", "conditions", "reason"),
    [
        (Preconditions(), GOOD, None),
        (Preconditions(), Conditions(50, None, False, NOON), "precondition:free_disk"),
        (Preconditions(min_free_disk_mb=20_000), GOOD, "precondition:free_disk"),
        (
            Preconditions(min_battery_percent=30),
            Conditions(10_000, 20.0, False, NOON),
            "precondition:battery",
        ),
        (Preconditions(min_battery_percent=30), GOOD, None),  # mains powered
        (
            Preconditions(allow_metered=False),
            Conditions(10_000, None, True, NOON),
            "precondition:metered_network",
        ),
        (Preconditions(allow_metered=True), Conditions(10_000, None, True, NOON), None),
        (Preconditions(window_utc=("01:00", "05:00")), GOOD, "precondition:time_window"),
        (Preconditions(window_utc=("11:00", "13:00")), GOOD, None),
    ],
)
def test_preconditions(preconditions, conditions, reason):
    assert unmet(preconditions, needed_mb=100, conditions=conditions) == reason


def test_windows_may_wrap_past_midnight():
    assert in_window(time(23, 30), time(22, 0), time(4, 0))
    assert in_window(time(3, 0), time(22, 0), time(4, 0))
    assert not in_window(time(12, 0), time(22, 0), time(4, 0))


def test_a_deferred_download_waits_without_counting_an_attempt():
    target = DesiredModel("digits", "1.0.0", "onnx-fp32", "p", "a" * 64, 10, 1)
    state, _, _ = step(AgentState.initial(), DesiredChanged(target))
    deferred, commands, transitions = step(state, DownloadDeferred("precondition:time_window"))
    assert deferred.state is State.DOWNLOADING and commands == [] and transitions == []
    assert deferred.download_attempts == 0 and deferred.last_error == {
        "reason": "precondition:time_window"
    }

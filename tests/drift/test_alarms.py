"""Tests of the drift alarm lifecycle and the retraining rule (pure, no fixtures)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from edgefleet.drift.alarms import (
    Alarm,
    AlarmState,
    AlarmStateError,
    Finding,
    Fired,
    Look,
    Resolution,
    acknowledge,
    advance,
    drifting_features,
    features_due,
    resolve,
    retraining_due,
)
from edgefleet.drift.errors import DriftError
from edgefleet.drift.monitor import RetrainingRule

T0 = datetime(2024, 5, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def finding(
    feature: str = "input[3]",
    segment: str = "all",
    version: str = "1.1.0",
    psi: float = 0.31,
    rows: int = 12_345,
) -> Finding:
    return Finding(
        model="digits",
        version=version,
        segment=segment,
        feature=feature,
        fired=(
            Fired(statistic="psi", value=psi, threshold=0.2, p_value=1e-9, bh_cut=4e-4),
            Fired(
                statistic="ks",
                value=0.12,
                threshold=0.1,
                p_value=2e-6,
                bh_cut=4e-4,
                approximate="bins",
            ),
        ),
        rows=rows,
        devices=200,
        phi=1.7,
    )


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"a{next(counter)}"


def look(hours: float, resolve_after: int = 3, skipped: frozenset = frozenset()) -> Look:
    return Look(at=T0 + hours * HOUR, resolve_after=resolve_after, skipped=skipped)


def opened(*findings: Finding, at: float = 0) -> list[Alarm]:
    return list(advance([], findings, look(at), ids()).opened)


# --- advance ------------------------------------------------------------------------------


def test_a_new_finding_opens_an_alarm_with_its_numbers() -> None:
    changes = advance([], [finding()], look(1), ids())
    (alarm,) = changes.opened
    assert changes.updated == changes.resolved == ()
    assert alarm.id == "a1"
    assert alarm.state is AlarmState.OPEN
    assert alarm.opened_at == alarm.last_seen_at == alarm.last_look_at == T0 + HOUR
    assert alarm.opening == alarm.latest == finding()
    assert alarm.key == ("digits", "1.1.0", "all", "input[3]")
    assert [f.statistic for f in alarm.latest.fired] == ["psi", "ks"]
    assert alarm.looks_absent == 0
    assert changes.changed == (alarm,)


def test_a_finding_again_refreshes_the_alarm_and_keeps_the_opening_numbers() -> None:
    (alarm,) = opened(finding(psi=0.31))
    changes = advance([alarm], [finding(psi=0.45, rows=20_000)], look(1), ids())
    assert changes.opened == changes.resolved == ()
    (refreshed,) = changes.updated
    assert refreshed.id == alarm.id
    assert refreshed.opening.fired[0].value == 0.31
    assert refreshed.latest.fired[0].value == 0.45
    assert refreshed.latest.rows == 20_000
    assert refreshed.opened_at == T0
    assert refreshed.last_seen_at == refreshed.last_look_at == T0 + HOUR


def test_an_alarm_resolves_itself_after_resolve_after_looks_without_its_finding() -> None:
    (alarm,) = opened(finding())
    for hour, absent in [(1, 1), (2, 2)]:
        changes = advance([alarm], [], look(hour), ids())
        (alarm,) = changes.updated
        assert (alarm.state, alarm.looks_absent) == (AlarmState.OPEN, absent)
        assert alarm.last_seen_at == T0
    changes = advance([alarm], [], look(3), ids())
    assert changes.updated == ()
    (alarm,) = changes.resolved
    assert alarm.state is AlarmState.RESOLVED
    assert alarm.resolution is Resolution.AUTO
    assert alarm.resolved_at == T0 + 3 * HOUR
    assert alarm.resolved_by is None
    assert alarm.looks_absent == 3


def test_a_finding_between_absences_starts_the_count_again() -> None:
    (alarm,) = opened(finding())
    (alarm,) = advance([alarm], [], look(1), ids()).updated
    (alarm,) = advance([alarm], [], look(2), ids()).updated
    (alarm,) = advance([alarm], [finding()], look(3), ids()).updated
    assert alarm.looks_absent == 0
    (alarm,) = advance([alarm], [], look(4), ids()).updated
    assert alarm.state is AlarmState.OPEN
    assert alarm.looks_absent == 1


def test_resolve_after_one_resolves_at_the_first_absent_look() -> None:
    (alarm,) = opened(finding())
    (resolved,) = advance([alarm], [], look(1, resolve_after=1), ids()).resolved
    assert resolved.state is AlarmState.RESOLVED


def test_a_look_that_could_not_score_the_key_leaves_the_alarm_alone() -> None:
    (alarm,) = opened(finding())
    (alarm,) = advance([alarm], [], look(1), ids()).updated
    skipped = frozenset({alarm.key})
    for hour in range(2, 12):
        changes = advance([alarm], [], look(hour, skipped=skipped), ids())
        assert changes.changed == ()
    (alarm,) = advance([alarm], [], look(12), ids()).updated
    assert alarm.looks_absent == 2


def test_a_resolved_alarm_firing_again_opens_a_new_one() -> None:
    (alarm,) = opened(finding())
    resolved_alarm = resolve(alarm, "maria", T0 + HOUR)
    changes = advance([resolved_alarm], [finding()], look(2), ids())
    (new,) = changes.opened
    assert changes.updated == changes.resolved == ()
    assert new.key == resolved_alarm.key
    assert new.opened_at == T0 + 2 * HOUR
    assert new.state is AlarmState.OPEN


def test_an_acknowledged_alarm_refreshes_and_resolves_like_an_open_one() -> None:
    (alarm,) = opened(finding())
    alarm = acknowledge(alarm, "maria", T0 + timedelta(minutes=5))
    (alarm,) = advance([alarm], [finding(psi=0.5)], look(1), ids()).updated
    assert alarm.state is AlarmState.ACKNOWLEDGED
    assert alarm.acknowledged_by == "maria"
    assert alarm.latest.fired[0].value == 0.5
    for hour in (2, 3):
        (alarm,) = advance([alarm], [], look(hour), ids()).updated
    (alarm,) = advance([alarm], [], look(4), ids()).resolved
    assert alarm.state is AlarmState.RESOLVED
    assert alarm.acknowledged_by == "maria"


def test_one_alarm_per_model_version_segment_and_feature() -> None:
    findings = [
        finding("input[3]", "all"),
        finding("input[3]", "site=plant-7"),
        finding("input[4]", "all"),
        finding("input[3]", "all", version="1.2.0"),
    ]
    alarms = opened(*findings)
    assert len({alarm.key for alarm in alarms}) == 4
    assert [alarm.id for alarm in alarms] == ["a1", "a2", "a3", "a4"]
    changes = advance(alarms, findings[:2], look(1), ids())
    assert changes.opened == ()
    assert {a.key for a in changes.updated} == {a.key for a in alarms}
    assert sorted(a.looks_absent for a in changes.updated) == [0, 0, 1, 1]


def test_advance_refuses_inconsistent_inputs() -> None:
    with pytest.raises(ValueError, match="two findings"):
        advance([], [finding(), finding(psi=0.9)], look(0), ids())
    (alarm,) = opened(finding())
    twin = alarm.model_copy(update={"id": "other"})
    with pytest.raises(AlarmStateError, match="both active"):
        advance([alarm, twin], [], look(1), ids())
    with pytest.raises(AlarmStateError, match="not after") as caught:
        advance([alarm], [], look(0), ids())
    assert caught.value.details == {"id": "a1", "state": "open"}


def test_a_finding_with_a_statistic_twice_is_refused() -> None:
    fired = Fired(statistic="psi", value=0.3, threshold=0.2, p_value=0.0, bh_cut=0.01)
    with pytest.raises(ValidationError, match="once per finding"):
        Finding.model_validate({**finding().model_dump(), "fired": (fired, fired)})
    with pytest.raises(ValidationError, match="at least 1 item"):
        Finding.model_validate({**finding().model_dump(), "fired": ()})


def test_looks_need_an_aware_time_and_a_positive_resolve_after() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Look(at=datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="resolve_after"):
        Look(at=T0, resolve_after=0)


# --- acknowledge and resolve ----------------------------------------------------------


def test_acknowledge_an_open_alarm() -> None:
    (alarm,) = opened(finding())
    acked = acknowledge(alarm, "maria", T0 + HOUR)
    assert acked.state is AlarmState.ACKNOWLEDGED
    assert (acked.acknowledged_at, acked.acknowledged_by) == (T0 + HOUR, "maria")
    assert alarm.state is AlarmState.OPEN  # the input is unchanged
    with pytest.raises(AlarmStateError, match=r"acknowledged since .* by maria") as caught:
        acknowledge(acked, "li", T0 + 2 * HOUR)
    assert caught.value.details == {"id": "a1", "state": "acknowledged"}


def test_resolve_manually_from_open_or_acknowledged() -> None:
    (alarm,) = opened(finding())
    for start in (alarm, acknowledge(alarm, "maria", T0)):
        done = resolve(start, "li", T0 + HOUR)
        assert done.state is AlarmState.RESOLVED
        assert done.resolution is Resolution.MANUAL
        assert (done.resolved_at, done.resolved_by) == (T0 + HOUR, "li")


def test_invalid_transitions_raise_a_drift_error() -> None:
    (alarm,) = opened(finding())
    done = resolve(alarm, "li", T0 + HOUR)
    with pytest.raises(AlarmStateError, match=r"resolved since .* by li"):
        acknowledge(done, "maria", T0 + 2 * HOUR)
    with pytest.raises(AlarmStateError, match="already resolved"):
        resolve(done, "maria", T0 + 2 * HOUR)
    (gone,) = advance([alarm], [], look(1, resolve_after=1), ids()).resolved
    with pytest.raises(AlarmStateError, match="no longer found"):
        acknowledge(gone, "maria", T0 + 2 * HOUR)
    assert issubclass(AlarmStateError, DriftError)
    assert AlarmStateError.code == "drift_alarm_state"


def test_acting_needs_someone_and_a_time_after_the_opening() -> None:
    (alarm,) = opened(finding(), at=5)
    with pytest.raises(ValueError, match="who"):
        acknowledge(alarm, " ", T0 + 6 * HOUR)
    with pytest.raises(ValueError, match="before alarm a1 opened"):
        resolve(alarm, "li", T0)


def test_an_alarm_round_trips_through_json() -> None:
    (alarm,) = opened(finding())
    alarm = resolve(acknowledge(alarm, "maria", T0 + HOUR), "li", T0 + 2 * HOUR)
    data = json.loads(json.dumps(alarm.model_dump(mode="json")))
    assert data["state"] == "resolved"
    assert data["opened_at"] == "2024-05-01T00:00:00Z"
    assert data["latest"]["fired"][1]["approximate"] == "bins"
    assert Alarm.model_validate(data) == alarm


def test_an_alarm_keeps_its_invariants() -> None:
    (alarm,) = opened(finding())
    data = alarm.model_dump()
    for change, message in [
        ({"state": AlarmState.RESOLVED}, "resolved_at is set"),
        ({"state": AlarmState.ACKNOWLEDGED}, "acknowledged_at"),
        ({"latest": finding(feature="input[9]")}, "key of its opening"),
        ({"last_look_at": T0 - HOUR}, "opened_at <= last_seen_at <= last_look_at"),
        ({"resolved_at": T0, "state": AlarmState.RESOLVED}, "how it was resolved"),
    ]:
        with pytest.raises(ValidationError, match=message):
            Alarm.model_validate({**data, **change})


# --- retraining ---------------------------------------------------------------------------

RULE = RetrainingRule.model_validate({"min_features": 3, "for": "6h"})


def alarm_on(
    feature: str,
    opened_h: float,
    resolved_h: float | None = None,
    segment: str = "all",
    version: str = "1.1.0",
    state: AlarmState | None = None,
) -> Alarm:
    (alarm,) = opened(finding(feature, segment, version), at=opened_h)
    if resolved_h is not None:
        return resolve(alarm, "li", T0 + resolved_h * HOUR)
    if state is AlarmState.ACKNOWLEDGED:
        return acknowledge(alarm, "maria", T0 + opened_h * HOUR)
    return alarm


def test_retraining_is_due_when_enough_features_drift_for_long_enough() -> None:
    history = [alarm_on("a", 0), alarm_on("b", 1), alarm_on("c", 2, state=AlarmState.ACKNOWLEDGED)]
    assert not retraining_due(history, RULE, T0 + 8 * HOUR - timedelta(seconds=1))
    assert retraining_due(history, RULE, T0 + 8 * HOUR)  # exactly 6 h for the last one
    assert features_due(history, RULE, T0 + 8 * HOUR) == {("digits", "1.1.0"): ("a", "b", "c")}
    assert not retraining_due(history[:2], RULE, T0 + 100 * HOUR)  # two features only


def test_one_feature_in_several_segments_counts_once() -> None:
    history = [
        alarm_on("a", 0, segment="all"),
        alarm_on("a", 0, segment="site=plant-7"),
        alarm_on("a", 0, segment="hw=rev2"),
        alarm_on("b", 0),
    ]
    assert not retraining_due(history, RULE, T0 + 10 * HOUR)
    assert retraining_due([*history, alarm_on("c", 0)], RULE, T0 + 10 * HOUR)


def test_a_feature_drifts_without_a_break_across_alarms_that_touch_or_overlap() -> None:
    touching = [alarm_on("a", 0, resolved_h=3), alarm_on("a", 3)]
    overlapping = [
        alarm_on("a", 0, resolved_h=4, segment="site=1"),
        alarm_on("a", 2, resolved_h=5, segment="site=2"),
        alarm_on("a", 4.5, segment="site=3"),
    ]
    gap = [alarm_on("a", 0, resolved_h=3), alarm_on("a", 3 + 1 / 3600)]
    now = T0 + 7 * HOUR
    assert drifting_features(touching, now) == {("digits", "1.1.0"): {"a": T0}}
    assert drifting_features(overlapping, now) == {("digits", "1.1.0"): {"a": T0}}
    assert drifting_features(gap, now) == {
        ("digits", "1.1.0"): {"a": T0 + 3 * HOUR + timedelta(seconds=1)}
    }
    others = [alarm_on("b", 0), alarm_on("c", 0)]
    assert retraining_due([*touching, *others], RULE, now)
    assert not retraining_due([*gap, *others], RULE, now)


def test_resolved_drift_ends_at_the_resolution() -> None:
    history = [alarm_on("a", 0, resolved_h=9), alarm_on("b", 0), alarm_on("c", 0)]
    assert retraining_due(history, RULE, T0 + 8 * HOUR)  # looking back: still open then
    assert not retraining_due(history, RULE, T0 + 9 * HOUR)  # resolved exactly now
    assert drifting_features(history, T0 + 9 * HOUR) == {("digits", "1.1.0"): {"b": T0, "c": T0}}


def test_alarms_opened_after_now_and_other_versions_do_not_count() -> None:
    history = [
        alarm_on("a", 0),
        alarm_on("b", 0),
        alarm_on("c", 0, version="1.2.0"),
        alarm_on("d", 0, version="1.2.0"),
        alarm_on("e", 20),
    ]
    now = T0 + 10 * HOUR
    assert not retraining_due(history, RULE, now)
    assert drifting_features(history, now) == {
        ("digits", "1.1.0"): {"a": T0, "b": T0},
        ("digits", "1.2.0"): {"c": T0, "d": T0},
    }
    assert drifting_features([], now) == {}

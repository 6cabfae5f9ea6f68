"""A drift scenario's expectations against the alarms a run saw (pure: alarm dicts in
the drift API's shape, each with the ``opened_t`` the runner adds)."""

from __future__ import annotations

from typing import Any

from edgefleet.sim.expectations import (
    DriftFacts,
    RunFacts,
    alarm_statistics,
    alarmed_at,
    drift_checks,
    run_checks,
)
from edgefleet.sim.result import Check
from edgefleet.sim.scenario import DriftExpect
from tests.sim.drifting import api_alarm as alarm

SITE = "site=eu-west-site-1"


def facts(expect: dict[str, Any], *alarms: dict[str, Any], started_t: float | None = 20.0):
    return DriftFacts(DriftExpect.model_validate(expect), list(alarms), started_t)


def test_an_alarm_on_the_segment_after_the_drift_started_holds():
    expect = {"alarm_on": [{"segment": SITE}]}
    (check,) = drift_checks(facts(expect, alarm(SITE, "X[20]", 41.0), alarm("all", "X[3]", 30.0)))
    assert check == Check(f"drift alarm on {SITE}", True, "an alarm", ["X[20]"])
    (check,) = drift_checks(facts(expect, alarm("site=eu-west-site-2", "X[20]", 41.0)))
    assert check == Check(f"drift alarm on {SITE}", False, "an alarm", "none")


def test_an_alarm_from_before_the_drift_does_not_count():
    expect = {"alarm_on": [{"segment": SITE}]}
    (check,) = drift_checks(facts(expect, alarm(SITE, "X[20]", 12.0)))
    assert not check.passed and check.actual == "none"


def test_features_named_must_each_alarm_and_the_delay_is_until_the_last():
    expect = {
        "alarm_on": [{"segment": SITE, "features": ["X[20]", "confidence"]}],
        "max_time_to_alarm_s": 30,
    }
    both = facts(expect, alarm(SITE, "X[20]", 31.0), alarm(SITE, "confidence", 45.5))
    found, timed = drift_checks(both)
    assert found == Check(
        f"drift alarm on {SITE} for X[20], confidence",
        True,
        "alarms on ['X[20]', 'confidence']",
        ["X[20]", "confidence"],
    )
    assert timed == Check(f"time to drift alarm on {SITE}", True, "<= 30.0 s", 25.5)
    assert alarmed_at(both, SITE, ["X[20]", "confidence"]) == 45.5
    assert alarmed_at(both, SITE) == 31.0
    late = facts(expect, alarm(SITE, "X[20]", 31.0), alarm(SITE, "confidence", 50.5))
    assert drift_checks(late)[1] == Check(
        f"time to drift alarm on {SITE}", False, "<= 30.0 s", 30.5
    )
    one = facts(expect, alarm(SITE, "X[20]", 31.0))
    found, timed = drift_checks(one)
    assert not found.passed and found.actual == ["X[20]"]
    assert timed == Check(f"time to drift alarm on {SITE}", False, "<= 30.0 s", None)


def test_the_first_of_repeated_alarms_times_the_segment():
    expect = {"alarm_on": [{"segment": SITE}], "max_time_to_alarm_s": 60}
    again = facts(
        expect,
        alarm(SITE, "X[20]", 25.0, state="resolved", resolved_t=45.0),
        alarm(SITE, "X[20]", 70.0),
    )
    assert drift_checks(again)[1].actual == 5.0


def test_no_alarm_at_all():
    assert drift_checks(facts({"no_alarm": True})) == [Check("no drift alarm", True, [], [])]
    raised = drift_checks(facts({"no_alarm": True}, alarm("hw=armv7l", "confidence", 3.0)))
    assert raised == [Check("no drift alarm", False, [], ["hw=armv7l confidence"])]


def test_no_alarm_on_other_segments_spares_the_expected_ones():
    expect = {"alarm_on": [{"segment": SITE}], "no_alarm": ["site=*"]}
    name = f"no drift alarm on site=* (but {SITE})"
    only_there = drift_checks(
        facts(expect, alarm(SITE, "X[20]", 30.0), alarm("all", "X[20]", 31.0))
    )
    assert only_there[1] == Check(name, True, [], [])
    elsewhere = facts(
        expect, alarm(SITE, "X[20]", 30.0), alarm("site=us-east-site-0", "X[9]", 33.0)
    )
    assert drift_checks(elsewhere)[1] == Check(name, False, [], ["site=us-east-site-0 X[9]"])


def test_the_drift_checks_come_after_the_releases_and_before_the_simulators_own():
    run = RunFacts(
        devices=4, serving={"1.1.0": 4}, interruptions=0, bytes_repeated=0, chunk_bytes=1
    )
    checks = run_checks([], run, facts({"no_alarm": True}))
    assert [c.name for c in checks] == ["no drift alarm", "no simulator errors"]
    assert [c.name for c in run_checks([], run)] == ["no simulator errors"]


def test_an_alarm_says_the_statistics_it_fired_on_at_its_latest_look():
    assert alarm_statistics(alarm(SITE, "X[20]", 30.0, psi=0.5)) == [("psi", 0.5), ("ks", 0.31)]
    assert alarm_statistics({"segment": SITE}) == []

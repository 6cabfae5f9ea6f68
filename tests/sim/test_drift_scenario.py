"""The scenario format's drift fields: what validates, and what is refused with the field
named (pure: no server)."""

from __future__ import annotations

import pytest

from edgefleet.sim.cohort import Cohort
from edgefleet.sim.runner import make_fleet
from edgefleet.sim.scenario import ScenarioError, load_scenario, parse_scenario

DRIFTING = """
name: drifting
baseline: 1.1.0
fleet: {drift_period_s: 20}
drift:
  - {cohort: "site:eu-west-site-1 AND kind:camera", transform: blur, intensity: 0.5,
     start_s: 10, ramp_s: 30}
  - {transform: class_mix, intensity: 1.0, classes: {"3": 0.4}, start_s: 5}
drift_monitors:
  - {model: digits, window: 5m, segments: [site]}
drift_expect:
  alarm_on: [{segment: site=eu-west-site-1, features: ["X[20]"]}]
  max_time_to_alarm_s: 60
  no_alarm: ["site=*"]
drift_watch_s: 80
"""


def test_a_drift_scenario_needs_no_release_and_reads_every_field():
    scenario = parse_scenario(DRIFTING)
    assert scenario.releases == [] and scenario.drifting
    blur, mix = scenario.drift
    assert (blur.transform, blur.intensity, blur.start_s, blur.ramp_s) == ("blur", 0.5, 10, 30)
    assert blur.cohort == "site:eu-west-site-1 AND kind:camera" and blur.classes is None
    assert mix.cohort is None and mix.classes == {"3": 0.4} and mix.ramp_s == 0
    assert scenario.fleet.drift_period_s == 20 and scenario.drift_watch_s == 80
    assert scenario.drift_monitors == [{"model": "digits", "window": "5m", "segments": ["site"]}]
    expect = scenario.drift_expect
    assert expect is not None and expect.no_alarm == ["site=*"]
    assert expect.alarm_on is not None and expect.alarm_on[0].features == ["X[20]"]


def test_a_scenario_without_drift_pays_nothing_for_it():
    scenario = parse_scenario("name: plain\nbaseline: 1.0.0\nreleases: [{version: 1.1.0}]\n")
    assert not scenario.drifting and scenario.drift == [] and scenario.drift_expect is None
    assert scenario.fleet.drift_period_s == 3600  # a device's own default
    # Monitors alone (no drift) still have the devices summarise: a no-drift run.
    watched = parse_scenario(
        "name: calm\nbaseline: 1.1.0\ndrift_monitors: [{model: digits}]\n"
        "drift_expect: {no_alarm: true}\n"
    )
    assert watched.drifting and watched.drift == []


def _with(old: str, new: str) -> str:
    assert old in DRIFTING
    return DRIFTING.replace(old, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_with("transform: blur", "transform: fog"), "drift.0.transform: Input should be"),
        (_with("intensity: 0.5", "intensity: 1.5"), "drift.0.intensity: Input should be less"),
        (_with("intensity: 0.5", "intensity: -0.5"), "a blur intensity is between 0 and 1"),
        (_with("intensity: 0.5", "intensity: 0"), "intensity 0 changes nothing"),
        (_with("ramp_s: 30", "ramp_s: -1"), "drift.0.ramp_s: Input should be greater"),
        (_with("start_s: 10,", "start_s: 10, colour: red,"), "drift.0.colour: Extra inputs"),
        (
            _with('kind:camera"', 'kind:camera AND online:true"'),
            "drift.0: cohort: a drift cohort cannot use online",
        ),
        (
            _with("AND kind:camera", "kind:camera"),
            "drift.0: cohort: query syntax error at position 20",
        ),
        (_with(', classes: {"3": 0.4}', ""), "drift.1: class_mix needs classes"),
        (_with('{"3": 0.4}', '{"3": 0.7, "4": 0.6}'), "class shares add up to more than 1"),
        (_with('{"3": 0.4}', '{"three": 0.4}'), "classes are named by their index"),
        (_with("ramp_s: 30}", 'ramp_s: 30, classes: {"1": 0.5}}'), "classes is for class_mix"),
        (_with('no_alarm: ["site=*"]', "no_alarm: true"), "no_alarm: true contradicts alarm_on"),
        (_with('no_alarm: ["site=*"]', "no_alarm: []"), "no_alarm is true, or a list"),
        (_with("  max_time_to_alarm_s: 60\n", "  max_time_to_alarm_s: 0\n"), "greater than 0"),
        (
            _with('alarm_on: [{segment: site=eu-west-site-1, features: ["X[20]"]}]', ""),
            "max_time_to_alarm_s needs alarm_on",
        ),
        (_with("segment: site", "site: site"), "drift_expect.alarm_on.0.segment: Field required"),
        (_with("model: digits,", "model: faces,"), "drift_monitors.0.model: the run's devices"),
        (_with("drift_watch_s: 80", "drift_watch_s: 0"), "drift_watch_s: Input should be"),
        (_with("{drift_period_s: 20}", "{drift_period_s: 0}"), "fleet.drift_period_s"),
    ],
)
def test_bad_drift_fields_are_refused_with_the_field_named(text, message):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "drift.yaml")
    assert message in caught.value.message


def test_expectations_need_the_monitors_and_drift_they_speak_of():
    no_monitors = DRIFTING.split("drift_monitors:")[0] + "drift_expect: {no_alarm: true}\n"
    with pytest.raises(ScenarioError, match="drift_expect needs drift_monitors"):
        parse_scenario(no_monitors + "releases: [{version: 1.1.0}]\n")
    no_drift = (
        "name: x\nbaseline: 1.1.0\ndrift_monitors: [{model: digits}]\n"
        "drift_expect: {alarm_on: [{segment: all}], max_time_to_alarm_s: 30}\n"
    )
    with pytest.raises(ScenarioError, match="max_time_to_alarm_s needs drift"):
        parse_scenario(no_drift)
    with pytest.raises(ScenarioError, match="releases: List should have at least 1 item"):
        parse_scenario("name: x\nbaseline: 1.1.0\ndrift: [{transform: noise, intensity: 0.1}]\n")


@pytest.mark.parametrize("name", ["sensor-drift", "seasonal-shift", "no-drift"])
def test_the_builtin_drift_scenarios_expect_alarms_where_their_drift_is(name):
    scenario = load_scenario(name)
    assert scenario.devices == 200 and not scenario.releases and scenario.drift_monitors
    fleet = make_fleet(scenario, "r1")
    expect = scenario.drift_expect
    assert expect is not None
    for entry in expect.alarm_on or ():
        if entry.segment == "all":
            continue
        attribute, value = entry.segment.split("=")
        segment = [d for d in fleet if d.attributes[attribute] == value]
        drifting = [
            d
            for d in segment
            if any(
                drift.cohort is None or Cohort.parse(drift.cohort).matches(d.attributes)
                for drift in scenario.drift
            )
        ]
        # Enough devices for the monitor, and the drift a good share of its segment.
        assert len(segment) >= 10 and len(drifting) >= 0.4 * len(segment)
    if name == "no-drift":
        assert expect.no_alarm is True and not scenario.drift
    else:
        assert scenario.drift and expect.max_time_to_alarm_s is not None
        # The run watches long enough for the expected delay after the drift starts.
        first = min(drift.start_s for drift in scenario.drift)
        assert scenario.drift_watch_s >= first + expect.max_time_to_alarm_s

"""Scenario files: the built-ins validate, bad files are refused with the field named."""

from __future__ import annotations

import pytest

from edgefleet.sim.runner import make_fleet
from edgefleet.sim.scenario import (
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_scenario,
)

MINIMAL = """
name: tiny
baseline: 1.0.0
releases:
  - version: 1.1.0
"""


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_scenario_validates_and_says_what_it_expects(name):
    scenario = load_scenario(name)
    assert scenario.name == name and scenario.description
    assert scenario.devices == 200
    for release in scenario.releases:
        body = release.rollout.body(scenario.model, release.version, "sim_run:abc")
        assert body["model"] == "digits" and body["version"] == release.version
        assert body["target"].startswith("sim_run:abc")  # never beyond the run's devices
        # Every built-in release checks something about how it ended.
        assert release.expect.state is not None
    bad = [r for r in scenario.releases if r.bad]
    assert all(r.expect.max_exposed_share is not None for r in bad)


def test_a_minimal_file_gets_the_documented_defaults(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(MINIMAL)
    scenario = load_scenario(str(path), devices=12)
    assert scenario.devices == 12 and scenario.versions == ["1.0.0", "1.1.0"]
    rollout = scenario.releases[0].rollout
    assert rollout.target is None
    assert rollout.body("digits", "1.1.0", "sim_run:abc")["target"] == "sim_run:abc"
    rollout.target = "region:eu-west OR hw:x86_64"
    body = rollout.body("digits", "1.1.0", "sim_run:abc")
    assert body["target"] == "sim_run:abc AND (region:eu-west OR hw:x86_64)"
    assert scenario.fleet.checkin_interval_s == (2.0, 4.0)


def test_the_fleet_is_drawn_by_weight_and_is_the_same_for_a_seed():
    scenario = parse_scenario(MINIMAL, devices=600)
    fleet = make_fleet(scenario, "r1")
    assert fleet == make_fleet(scenario, "r1")
    assert len({d.device_id for d in fleet}) == 600
    kinds = {k.name: sum(d.kind.name == k.name for d in fleet) for k in scenario.fleet.kinds}
    # weights 3 : 3 : 4
    assert 130 < kinds["gateway"] < 230 and 180 < kinds["camera"] < 300
    low, high = scenario.fleet.checkin_interval_s
    assert all(low <= d.checkin_interval_s <= high for d in fleet)
    assert all(d.attributes["simulated"] is True for d in fleet)
    assert all(d.attributes["sim_run"] == "r1" and "-r1-" in d.device_id for d in fleet)
    other = make_fleet(parse_scenario(MINIMAL + "seed: 5\n", devices=600), "r1")
    assert [d.kind.name for d in other] != [d.kind.name for d in fleet]


def test_a_large_fleet_boots_over_time_so_its_enrollment_is_not_one_storm():
    # 600 devices at 200 a second boot within 3 s: within their poll interval.
    small = make_fleet(parse_scenario(MINIMAL, devices=600), "r1")
    assert {d.boot_within_s for d in small} == {3.0}
    large = make_fleet(parse_scenario(MINIMAL + "fleet: {enroll_per_s: 100}\n", devices=5000), "r1")
    assert {d.boot_within_s for d in large} == {50.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nreleases: []\nbaseline: 1.0.0\n", "releases: List should have at least 1"),
        (MINIMAL + "colour: red\n", "colour: Extra inputs are not permitted"),
        (
            MINIMAL + "fleet: {networks: {carrier-pigeon: 1}}\n",
            "unknown network profile(s) carrier-pigeon",
        ),
        (
            MINIMAL.replace("- version: 1.1.0", "- version: 1.1.0\n    expect: {state: fine}"),
            "releases.0.expect.state",
        ),
        (
            MINIMAL.replace(
                "- version: 1.1.0",
                "- version: 1.1.0\n    rollout: {waves: [{percent: 50}, {percent: 10}]}",
            ),
            "cumulative and must increase",
        ),
        (MINIMAL + "traffic: {class_shares: {'9': 1.5}}\n", "class shares are between 0 and 1"),
        ("name: [unclosed\n", "is not valid YAML"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_scenarios_are_refused_with_the_field_named(text, message):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "my.yaml")
    assert message in caught.value.message
    assert caught.value.message.startswith("my.yaml")


def test_an_unknown_scenario_names_the_builtins():
    with pytest.raises(ScenarioError) as caught:
        load_scenario("no-such-scenario")
    assert "good-release" in caught.value.message and "no such file" in caught.value.message

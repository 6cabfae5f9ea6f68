"""The embedded server's settings in a scenario: short drift looks by default (a few
seconds of grace, a look every second), any of them set in the ``server:`` block."""

from __future__ import annotations

import pytest

from edgefleet.sim.scenario import ScenarioError, load_scenario, parse_scenario

BASE = "name: x\nbaseline: 1.1.0\ndrift_monitors: [{model: digits}]\n"


def test_drift_looks_are_short_unless_the_scenario_says_otherwise():
    server = parse_scenario(BASE).server
    assert (server.drift_look_grace_s, server.drift_looks_interval_s) == (4.0, 1.0)
    # Longer than a device takes to send a closed period (its telemetry interval).
    assert server.drift_look_grace_s > parse_scenario(BASE).fleet.telemetry_interval_s
    server = parse_scenario(
        BASE + "server: {drift_look_grace_s: 12, drift_looks_interval_s: 2}\n"
    ).server
    assert (server.drift_look_grace_s, server.drift_looks_interval_s) == (12.0, 2.0)


def test_the_builtin_drift_scenarios_take_the_short_looks():
    for name in ("sensor-drift", "seasonal-shift", "no-drift"):
        scenario = load_scenario(name)
        assert scenario.server.drift_look_grace_s < scenario.fleet.drift_period_s


@pytest.mark.parametrize("value", ["-1", "x"])
def test_an_impossible_grace_is_refused_naming_the_field(value):
    with pytest.raises(ScenarioError, match="drift_look_grace_s"):
        parse_scenario(BASE + f"server: {{drift_look_grace_s: {value}}}\n")

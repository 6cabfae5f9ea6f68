"""The three built-in drift scenarios, played by 200 virtual devices against the real
server (its own process, SQLite): the server's own looks, on 10-second windows with a
grace of a few seconds (the scenario's ``server:`` settings), raise the alarms, not a
report on demand. sensor-drift alarms on the blurred site's segment alone, within its
``max_time_to_alarm_s``; seasonal-shift on the whole fleet; no-drift, scored on its 16
segments look after look, raises none."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from edgefleet.sim.result import RunResult
from edgefleet.sim.runner import run_scenario
from edgefleet.sim.scenario import load_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SITE = "site=eu-west-site-1"


def play(name: str, tmp_path, bundle_cache) -> RunResult:
    result = run_scenario(
        load_scenario(name, devices=200), work_dir=tmp_path / "run", bundle_cache=bundle_cache
    )
    failed = [
        f"{c.name}: expected {c.expected}, got {c.actual}" for c in result.checks if not c.passed
    ]
    assert not failed, failed
    assert result.devices == 200 and result.drift is not None
    assert "refused" not in result.requests
    return result


def latest_look(result: RunResult) -> dict[str, Any]:
    assert result.drift is not None
    (monitor,) = result.drift.status
    (look,) = monitor["looks"]
    assert look["version"] == "1.1.0" and look["reason"] is None
    return look


def window_s(look: dict[str, Any]) -> float:
    start, end = (datetime.fromisoformat(look["window"][k]) for k in ("start", "end"))
    return (end - start).total_seconds()


def test_sensor_drift_alarms_on_the_blurred_site_alone(tmp_path, bundle_cache):
    result = play("sensor-drift", tmp_path, bundle_cache)
    drift = result.drift
    assert drift is not None and drift.changes[0].devices == 16
    alarms = drift.alarms
    assert alarms and {a["segment"] for a in alarms} == {SITE}
    # Alarms of the looks, with the numbers they fired on: both effect and evidence.
    assert all(a["state"] == "open" for a in alarms)
    fired = [f for a in alarms for f in a["latest"]["fired"]]
    assert all(f["value"] >= f["threshold"] and f["p_value"] <= f["bh_cut"] for f in fired)
    assert any(a["feature"].startswith("X[") for a in alarms)
    # Within the scenario's stated delay (checked by the run too), on 10-second looks.
    assert drift.time_to_alarm_s[SITE] is not None and drift.time_to_alarm_s[SITE] <= 40
    look = latest_look(result)
    assert window_s(look) == 10
    assert len(look["segments"]) == 13  # all and the 12 sites


def test_seasonal_shift_alarms_on_the_whole_fleet(tmp_path, bundle_cache):
    result = play("seasonal-shift", tmp_path, bundle_cache)
    drift = result.drift
    assert drift is not None and drift.changes[0].devices == 200
    assert "all" in {a["segment"] for a in drift.alarms}
    assert drift.time_to_alarm_s["all"] is not None and drift.time_to_alarm_s["all"] <= 30


def test_no_drift_raises_no_alarm_on_looks_that_scored(tmp_path, bundle_cache):
    result = play("no-drift", tmp_path, bundle_cache)
    drift = result.drift
    assert drift is not None and drift.alarms == []
    # Not silent for want of looking: the latest look scored every segment.
    look = latest_look(result)
    assert window_s(look) == 10
    assert len(look["segments"]) == 16  # all, 12 sites, 3 hardware
    assert look["drifted_features"] == []
    assert set(look["segments"].values()) == {"ok"}

"""A drifting fleet end to end: 200 virtual devices against the real server (its own
process, SQLite), one site's cameras blurring, and the drift service scoring what the
devices sent.

The server's looks take windows of 5 minutes or more and wait a grace of 10 minutes
for late telemetry, so no alarm can open within a test's time; the report on demand
(GET /api/v1/drift/report) scores the same merged telemetry with the same pure scoring
a look uses, and is what this test reads. The built-in drift scenarios' alarm
expectations need a server that runs with short windows and grace."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from edgefleet.sim.result import RunResult
from edgefleet.sim.runner import run_scenario
from edgefleet.sim.scenario import load_scenario, parse_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SITE = "site=eu-west-site-1"
#: How long the test waits for the service to see the drift once it has begun.
SEEN_WITHIN_S = 120.0


def scenario_text() -> str:
    """sensor-drift's fleet and drift, with a monitor the server takes today (a 5-minute
    window) and no alarm expectations."""
    builtin = load_scenario("sensor-drift")
    drift = builtin.drift[0]
    return f"""
name: sensor-drift-report
description: sensor-drift, scored on demand
devices: {builtin.devices}
baseline: {builtin.baseline}
fleet: {{requests_per_s: {builtin.fleet.requests_per_s}, drift_period_s: 10}}
drift:
  - {{cohort: "{drift.cohort}", transform: {drift.transform}, intensity: {drift.intensity},
     start_s: 0, ramp_s: 0}}
drift_monitors:
  - {{model: digits, version: "1.1.0", window: 5m, segments: [site]}}
drift_watch_s: 1
time_limit_s: 400
"""


def drifted(report: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for score in report["scores"]:
        if score["drifted"]:
            found.setdefault(score["segment"], set()).add(score["feature"])
    return found


def test_the_server_sees_one_sites_cameras_blur_on_that_site_alone(tmp_path, bundle_cache):
    seen: dict[str, Any] = {}

    async def inspect(result: RunResult, url: str, token: str) -> None:
        params = {"model": "digits", "version": "1.1.0", "last": "5m", "segment_by": "site"}
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + SEEN_WITHIN_S
        async with httpx.AsyncClient(timeout=120) as http:
            while True:
                answer = await http.get(
                    f"{url}/api/v1/drift/report", params=params, headers=headers
                )
                assert answer.status_code == 200, answer.text
                report = answer.json()
                if len(drifted(report).get(SITE, ())) >= 10 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(2.0)  # another summary period reaches the server
        seen["report"] = report

    result = run_scenario(
        parse_scenario(scenario_text()),
        work_dir=tmp_path / "run",
        bundle_cache=bundle_cache,
        keep_running=inspect,
    )
    assert result.passed, [c for c in result.checks if not c.passed]
    drift = result.drift
    assert drift is not None and drift.changes[0].devices == 16
    assert drift.monitors[0]["monitor"]["window"] == "5m"
    assert drift.periods_sent >= 100 and "refused" not in result.requests
    assert drift.interval_cost_us is not None and drift.period_cost_us is not None

    report = seen["report"]
    found = drifted(report)
    # The blurred site, and nothing else: not the other sites, not the fleet as a whole.
    assert set(found) == {SITE}, {segment: sorted(f) for segment, f in found.items()}
    assert len(found[SITE]) >= 10 and any(f.startswith("X[") for f in found[SITE])
    segments = {s["segment"]: s for s in report["segments"]}
    assert len(segments) == 13  # all and the 12 sites
    assert all(s["status"] == "ok" for s in segments.values())
    assert segments[SITE]["devices"] == 29 and segments[SITE]["sketch_rows"] > 0
    # Rows of one device are not independent: the blurred cameras make the site's
    # devices differ from one another, which the dispersion measures.
    assert segments[SITE]["phi"] > 2 * segments["site=eu-west-site-0"]["phi"]

"""``edgefleet sim`` and ``edgefleet demo`` as a user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli.main import app

TINY_WRONG = """
name: tiny-wrong
description: a good release that the file wrongly expects to be aborted
devices: 12
baseline: 1.0.0
releases:
  - version: 1.1.0
    rollout:
      waves: [{percent: 100, bake_s: 1, device_timeout_s: 60}]
      trial: {min_inferences: 100, min_seconds: 1, max_latency_ratio: 3.0, max_cpu_ratio: 3.0}
      gates: [{metric: rollbacks, max_count: 0, min_samples: 1}]
    expect: {state: aborted, committed: all}
"""


@pytest.fixture
def cli(sim_cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(sim_cache))
    # The simulator's server is embedded, whatever the environment points at.
    monkeypatch.setenv("EDGEFLEET_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_list_shows_the_builtin_scenarios(cli):
    result = cli("sim", "--list")
    assert result.exit_code == 0, result.output
    for name in ("good-release", "cpu-spike", "missing-class", "slow-network", "crash-on-hw"):
        assert name in result.stdout


def test_bad_scenarios_are_an_error_message_not_a_traceback(cli, tmp_path):
    result = cli("sim", "--scenario", "no-such-scenario")
    assert result.exit_code == 1
    assert "no scenario 'no-such-scenario'" in result.output and "Traceback" not in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nbaseline: 1.0.0\nreleases: [{version: 1.1.0, bad: maybe}]\n")
    result = cli("sim", "--scenario", str(broken))
    assert result.exit_code == 1 and "releases.0.bad" in result.output
    result = cli("sim", "--scenario", "good-release", "--devices", "0")
    assert result.exit_code == 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_failed_expectations_exit_non_zero_with_the_json_and_report(cli, tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY_WRONG)
    report = tmp_path / "out" / "report.html"
    result = cli("sim", "--scenario", str(scenario), "--json", "--report", str(report))
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    for key in (
        "scenario",
        "passed",
        "exposed_share",
        "time_to_detect_s",
        "time_to_rollback_s",
        "bytes_transferred",
        "devices_committed",
    ):
        assert key in data
    assert data["scenario"] == "tiny-wrong" and data["passed"] is False
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["1.1.0: rollout state"]["passed"] is False
    assert checks["1.1.0: rollout state"]["actual"] == "succeeded"
    assert checks["1.1.0: devices committed"]["passed"] is True
    assert data["devices_committed"] == 12 and data["bytes_transferred"] > 0
    assert report.read_text().startswith("<!DOCTYPE html>")


def test_the_demo_report_goes_to_the_user_data_folder_by_default(tmp_path, monkeypatch):
    from edgefleet.cli.demo import default_report

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_report() == tmp_path / "data" / "edgefleet" / "demo-report.html"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_report() == Path.home() / ".local" / "share" / "edgefleet" / "demo-report.html"
    assert "XDG_DATA_HOME" in " ".join(CliRunner().invoke(app, ["demo", "--help"]).output.split())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_plays_its_story(cli, tmp_path, monkeypatch):
    from edgefleet.cli.output import console
    from edgefleet.sim.scenario import load_scenario

    # Wide enough that no table cell wraps, so the rows can be read back.
    monkeypatch.setattr(console, "width", 240)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    result = cli("demo")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "1.1.0 wave 1 → 2: advance (gates_passed)" in out
    assert "1.1.0 wave 3: succeed (all_waves_passed)" in out
    assert "1.2.0 wave 1: abort (gate_failed:" in out
    assert "decision log of" in out and "PASSED" in out

    # The story once, before the run.
    assert out.count(load_scenario("demo").description.strip()) == 1

    # Progress from the first second, every line on the one clock.
    stamps = [float(m) for m in re.findall(r"^ *(\d+\.\d)s ", out, re.MULTILINE)]
    assert stamps and stamps[0] < 1.0 and stamps == sorted(stamps)
    said = float(re.search(r"^ *(\d+\.\d)s rollout ro-\w+: digits 1\.1\.0", out, re.M)[1])
    ran = re.search(r"│ ran +│ t = (\d+\.\d) s → t = (\d+\.\d) s", out)
    assert ran and abs(float(ran[1]) - said) < 1.0
    ended = float(re.search(r"^ *(\d+\.\d)s rollout ro-\w+ succeeded", out, re.M)[1])
    assert abs(float(ran[2]) - ended) < 1.0

    # The rollout target explained where it first shows.
    assert re.search(r"to sim_run:r\w+ \(this run's 200 devices, the ones with sim_run=", out)

    # Commits counted per release, consistent with the fleet at the end.
    assert re.search(r"│ committed to 1\.1\.0 at the end of the run +│ 200 / 200 ", out)
    assert re.search(r"│ committed to 1\.2\.0 at the end of the run +│ 0 / 200 ", out)
    assert re.search(r"│ serving at the end \(of 200\) +│ 1\.1\.0 200 ", out)
    assert "│ devices committed" not in out
    if re.search(r"· lost \d", out):
        assert "lost: dropped by the simulated network" in out

    # The report where the last line says, outside the current folder.
    report = tmp_path / "data" / "edgefleet" / "demo-report.html"
    assert out.strip().splitlines()[-1].endswith(str(report))
    assert list(here.iterdir()) == []
    page = report.read_text(encoding="utf-8")
    assert len(page) > 10_000 and page.count('id="gate-legend"') == 1

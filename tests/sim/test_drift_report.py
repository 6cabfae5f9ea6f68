"""The drift section of a simulator run's reports: terminal, HTML page and JSON (built by
hand, with alarms as the drift API shows them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from edgefleet.sim.report import render_summary, to_json, write_html
from edgefleet.sim.result import Check, DriftChange, DriftResult, RunResult
from tests.sim.drifting import api_alarm

SITE = "site=eu-west-site-1"


def drift_run(alarms: list[dict] | None = None) -> RunResult:
    alarms = (
        [api_alarm(SITE, "X[20]", 48.5), api_alarm("all", "confidence", 61.0, psi=0.21)]
        if alarms is None
        else alarms
    )
    drift = DriftResult(
        monitors=[
            {"model": "digits", "number": 1, "monitor": {"model": "digits", "window": "10s"}}
        ],
        changes=[
            DriftChange(
                transform="blur",
                intensity=0.5,
                cohort="site:eu-west-site-1 AND kind:camera",
                devices=11,
                started_t=30.0,
                full_t=50.0,
            )
        ],
        clock_t=30.0,
        alarms=alarms,
        time_to_alarm_s={SITE: 18.5},
        status=[{"model": "digits", "versions": [], "alarms": []}],
        prepare_s=0.7,
        pools=44,
        interval_cost_us=238.4,
        period_cost_us=812.0,
        periods_sent=1200,
    )
    return RunResult(
        scenario="sensor-drift",
        description="one site's cameras <blur>",
        devices=200,
        server="http://127.0.0.1:1",
        duration_s=75.0,
        releases=[],
        checks=[Check(f"drift alarm on {SITE}", True, "an alarm", ["X[20]"])],
        exposed_share=0.0,
        time_to_detect_s=None,
        time_to_rollback_s=None,
        bytes_transferred=0,
        bytes_repeated=0,
        interruptions=0,
        devices_committed=0,
        final_versions={"1.1.0": 200},
        requests={"ok": 5000},
        drift=drift,
    )


def test_the_summary_has_the_drift_its_alarms_and_its_cost():
    console = Console(record=True, width=200)
    render_summary(drift_run(), console)
    text = console.export_text()
    assert "blur to 0.5 on 11 devices (site:eu-west-site-1 AND kind:camera)" in text
    assert "from t = 30.0 s, full at t = 50.0 s" in text
    assert f"time to alarm on {SITE}" in text and "18.5 s" in text
    assert "alarms opened" in text and f"2 ({SITE} 1 · all 1)" in text
    assert "monitors applied" in text and "1 (window 10s)" in text
    assert "238 µs of CPU per device interval, 812 µs of CPU per summary period" in text
    assert "44 pools" in text
    assert "drift clock: t = 0 of a drift's start_s" in text
    # The alarms table: when, where, what fired.
    assert re.search(
        r"t = 48\.5 s\s+│ site=eu-west-site-1\s+│ X\[20\]\s+│ psi 0\.42, ks 0\.31", text
    )


def test_the_page_has_a_drift_section_with_its_plot_and_alarms(tmp_path: Path):
    page = write_html(drift_run(), tmp_path / "r.html").read_text()
    section = page[page.index('<section class="drift"') :]
    assert '<figure id="plot-drift">' in section and "<svg" in section
    assert "alarm: site=eu-west-site-1" in section  # the plot's legend
    assert "<td>X[20]</td>" in section and "<td>psi 0.42, ks 0.31</td>" in section
    assert "one site&#x27;s cameras &lt;blur&gt;" in page


def test_a_run_without_alarms_says_so(tmp_path: Path):
    page = write_html(drift_run(alarms=[]), tmp_path / "r.html").read_text()
    assert "No drift alarm opened." in page
    console = Console(record=True, width=200)
    render_summary(drift_run(alarms=[]), console)
    assert "alarms opened" in console.export_text()


@pytest.mark.parametrize("with_drift", [True, False])
def test_json_carries_the_drift_or_null(with_drift: bool):
    run = drift_run()
    if not with_drift:
        run.drift = None
    data = json.loads(to_json(run))
    if with_drift:
        assert data["drift"]["time_to_alarm_s"] == {SITE: 18.5}
        assert data["drift"]["alarms"][0]["segment"] == SITE
        assert data["drift"]["changes"][0]["devices"] == 11
    else:
        assert data["drift"] is None


def test_the_terminal_lists_the_first_alarms_and_counts_the_rest():
    many = [api_alarm(SITE, f"X[{i}]", 40.0 + i) for i in range(25)]
    console = Console(record=True, width=200)
    render_summary(drift_run(alarms=many), console)
    text = console.export_text()
    assert "t = 59.0 s" in text and "t = 60.0 s" not in text  # X[19] is in, X[20] is not
    assert "and 5 more (the HTML report and --json list them all)" in text

"""``edgefleet drift``: monitors, status, reports (tables, JSON, the HTML page) and
alarms, on the local store and through a server, against the real drift service."""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.cli import demo as demo_cli
from edgefleet.cli import drift as drift_cli
from edgefleet.cli.main import app
from tests.drift.fleet import OPERATOR, START, Fleet, digits_fleet
from tests.server.conftest import serve

HOUR = timedelta(hours=1)
#: The drift planted on the south site's cameras.
SHIFT = {"X[20]": 3.0, "X[21]": 3.0}
MONITOR = """\
model: digits
statistics:
  psi: {threshold: 0.25}
  ks: {}
segments: [site]
"""


# -- the commands alone, on a client that records what it is asked ----------------------


class Recorder:
    """A drift client answering each action with a canned document."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, action: str, **kwargs: Any) -> Any:
        self.calls.append((action, kwargs))
        return self.answers[action]


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    client = Recorder({})

    @contextmanager
    def fake():
        yield client

    monkeypatch.setattr(drift_cli, "drift_client", fake)
    return client


def invoke(*args: str):
    return CliRunner().invoke(app, ["drift", *args])


def fired(statistic: str, value: float, threshold: float) -> dict[str, Any]:
    return {
        "statistic": statistic,
        "value": value,
        "threshold": threshold,
        "p_value": 3e-12,
        "bh_cut": 0.0001,
        "approximate": None,
    }


ALARM = {
    "id": "da-0123456789ab",
    "model": "digits",
    "version": "1.0.0",
    "segment": "site=south",
    "feature": "X[20]",
    "state": "open",
    "opened_at": "2026-12-07T01:00:00Z",
    "last_seen_at": "2026-12-07T02:00:00Z",
    "latest": {"fired": [fired("psi", 1.93, 0.25), fired("ks", 0.41, 0.1)]},
}


def small_report() -> dict[str, Any]:
    score = {
        "segment": "site=south",
        "feature": "X[20]",
        "statistic": "psi",
        "value": 1.93,
        "threshold": 0.25,
        "p_value": 3e-12,
        "bh_cut": 0.0001,
        "drifted": True,
        "approximate": None,
    }
    return {
        "model": "digits",
        "version": "1.0.0",
        "window": {"start": "2026-12-07T00:00:00Z", "end": "2026-12-07T01:00:00Z"},
        "reference": {"kind": "profile"},
        "segments": [
            {"segment": "site=south", "devices": 6, "rows": 240, "phi": 1.3, "status": "ok"},
            {
                "segment": "site=east",
                "devices": 1,
                "rows": 40,
                "phi": None,
                "status": "insufficient_data",
                "reason": "1 devices sent data, fewer than min_devices 3",
            },
        ],
        "scores": [score, {**score, "feature": "X[3]", "value": 0.01, "drifted": False}],
        "distributions": {
            "site=south": {
                "X[20]": {"edges": [1.0, 2.0], "reference": [5, 5, 5], "current": [0, 3, 12]}
            }
        },
        "history": [],
        "alarms": [ALARM],
        "skipped": {"bins_mismatch": 2},
        "drifted_features": ["X[20]"],
    }


def test_a_report_as_tables_with_what_was_not_scored(recorder: Recorder, monkeypatch):
    from edgefleet.cli.output import console

    monkeypatch.setattr(console, "width", 200)
    recorder.answers["report"] = small_report()
    result = invoke("report", "digits", "--last", "1d", "--segment-by", "site")
    assert result.exit_code == 0, result.output
    assert recorder.calls == [
        (
            "report",
            {
                "model": "digits",
                "version": None,
                "start": None,
                "end": None,
                "last": "1d",
                "segment_by": ["site"],
                "reference": None,
                "reference_start": None,
                "reference_end": None,
            },
        )
    ]
    out = result.stdout
    assert "digits 1.0.0: 2026-12-07 00:00:00 to 2026-12-07 01:00:00 UTC against the" in out
    assert re.search(r"│ site=south +│ X\[20\] +│ psi +│ 1\.93 +│ 0\.25 +│ 3e-12 +│ 0\.0001 ", out)
    assert "X[3]" not in out  # only what drifted is listed
    assert re.search(r"│ site=east .*insufficient data: 1 devices sent data", out)
    assert "drifted: X[20] (1 of 2 features); 1 segment(s) with insufficient data" in out
    assert "skipped, never scored: bins_mismatch 2" in out


def test_report_json_is_alone_on_stdout_and_the_page_is_written(recorder: Recorder, tmp_path):
    recorder.answers["report"] = small_report()
    page = tmp_path / "nested" / "drift.html"
    result = invoke(
        "report",
        "digits",
        "--start",
        "2026-12-07T00:00:00",
        "--end",
        "2026-12-07T01:00:00+01:00",
        "--html",
        str(page),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == small_report()
    # Off a terminal no spinner: stderr says where the page is, and nothing else.
    assert result.stderr.strip() == f"HTML report: {page}"
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and 'data-feature="X[20]"' in html
    asked = recorder.calls[0][1]
    # A time without a zone is UTC; one with a zone is kept.
    assert asked["start"].isoformat() == "2026-12-07T00:00:00+00:00"
    assert asked["end"].isoformat() == "2026-12-07T01:00:00+01:00"
    assert [p.name for p in page.parent.iterdir()] == ["drift.html"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--last", "1h", "--start", "2026-12-07T00:00:00Z"], "as --start or as --last, not both"),
        (["--start", "yesterday"], "--start 'yesterday' is not an ISO 8601 time"),
        (["--reference", "last-week"], "--reference must be 'profile' or 'window'"),
    ],
)
def test_report_options_that_do_not_fit_are_refused_before_asking(
    recorder: Recorder, args, message
):
    result = invoke("report", "digits", *args)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert recorder.calls == []


def test_an_unwritable_page_is_one_clear_error(recorder: Recorder, tmp_path):
    recorder.answers["report"] = small_report()
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("report", "digits", "--html", str(blocker / "drift.html"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write the HTML report to")


def test_alarms_show_the_numbers_they_fired_on(recorder: Recorder, monkeypatch):
    from edgefleet.cli.output import console

    monkeypatch.setattr(console, "width", 250)
    recorder.answers["alarms"] = [ALARM]
    result = invoke("alarms", "--state", "open", "--model", "digits")
    assert result.exit_code == 0, result.output
    assert recorder.calls == [("alarms", {"state": "open", "model": "digits"})]
    row = next(line for line in result.stdout.splitlines() if "da-0123456789ab" in line)
    assert "site=south" in row and "X[20]" in row and "digits 1.0.0" in row
    assert "psi 1.93 (threshold 0.25, p 3e-12); ks 0.41 (threshold 0.1, p 3e-12)" in row
    recorder.answers["alarms"] = []
    assert invoke("alarms", "--state", "resolved").stdout.strip() == "no resolved drift alarm"
    wrong = invoke("alarms", "--state", "closed")
    assert wrong.exit_code == 1
    assert "--state must be one of open, acknowledged, resolved" in wrong.stderr


def test_an_invalid_monitor_names_every_field_and_applies_nothing(recorder: Recorder, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: digits\nstatistics:\n  psi: {threshold: -1}\nwindow: 40d\nsegmnts: [site]\n"
    )
    result = invoke("monitor", "apply", str(bad))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: drift monitor {bad} is invalid; nothing was applied"
    assert lines[1] == "  statistics.psi.threshold: Input should be greater than 0"
    assert lines[2].startswith("  window: a window is ") and lines[2].endswith("up to 31d, got 40d")
    assert lines[3:] == ["  segmnts: unknown field (check its spelling)"]
    assert recorder.calls == []
    for text, message in (
        ("- a list", "must be a mapping of settings"),
        ("model: [unclosed", "cannot read drift monitor"),
    ):
        bad.write_text(text)
        refused = invoke("monitor", "apply", str(bad))
        assert refused.exit_code == 1 and message in refused.stderr
    missing = invoke("monitor", "apply", str(tmp_path / "nowhere.yaml"))
    assert missing.exit_code == 1 and "cannot read drift monitor" in missing.stderr
    assert recorder.calls == []


def test_a_monitor_is_sent_as_json_whatever_yaml_made_of_its_times(recorder: Recorder, tmp_path):
    recorder.answers["apply_monitor"] = {"model": "digits", "number": 3, "changed": True}
    monitor = tmp_path / "window.yaml"
    monitor.write_text(
        "model: digits\nreference:\n  window: {start: 2026-11-01T00:00:00Z, "
        "end: 2026-11-08T00:00:00+01:00}\n"
    )
    result = invoke("monitor", "apply", str(monitor), "--json")
    assert result.exit_code == 0, result.output
    [(action, asked)] = recorder.calls
    assert action == "apply_monitor"
    assert asked["spec"]["reference"] == {
        "window": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-08T00:00:00+01:00"}
    }
    json.dumps(asked["spec"])  # an API body as it is


def test_remote_report_parameters():
    moment = drift_cli._moment("--start", "2026-12-07T00:00:00Z")
    params = drift_cli._report_params(
        {"model": "digits", "version": None, "start": moment, "segment_by": ["site", "hw"]}
    )
    assert params == [
        ("model", "digits"),
        ("start", "2026-12-07T00:00:00+00:00"),
        ("segment_by", "site"),
        ("segment_by", "hw"),
    ]


# -- against the real service: the local store, then a server on it ----------------------


@pytest.fixture
def drifting(settings, example_bundles):
    """Digits 1.0.0 in production on 12 cameras at two sites; the south site's inputs
    drifted in the first hour, and the hour's look opened its alarms."""
    with digits_fleet(settings, example_bundles["1.0.0"]) as fleet:
        north = fleet.enroll(6, site="north")
        south = fleet.enroll(6, site="south")
        service = fleet.service()
        service.apply_monitor({"model": "digits", "segments": ["site"]}, OPERATOR)
        fleet.send_period(north, START + HOUR)
        fleet.send_period(south, START + HOUR, shift=SHIFT)
        fleet.send_outputs(north + south, START + timedelta(minutes=20))
        fleet.now = START + HOUR + timedelta(minutes=15)
        assert service.run_due_looks() == 1
        yield fleet


def local(settings, monkeypatch) -> None:
    monkeypatch.setenv("EDGEFLEET_HOME", str(settings.home))
    if settings.database_url_override:
        monkeypatch.setenv("EDGEFLEET_DATABASE_URL", settings.database_url_override)
    else:
        monkeypatch.delenv("EDGEFLEET_DATABASE_URL", raising=False)
    monkeypatch.delenv("EDGEFLEET_SERVER", raising=False)


def as_json(*args: str, root: tuple[str, ...] = ()) -> Any:
    result = CliRunner().invoke(app, [*root, "drift", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_commands_on_the_local_store_and_through_a_server(
    drifting: Fleet, settings, tmp_path, monkeypatch
):
    from edgefleet.cli.output import console

    monkeypatch.setattr(console, "width", 250)
    local(settings, monkeypatch)
    window = ["--start", "2026-12-07T00:00:00Z", "--end", "2026-12-07T01:00:00Z"]

    status = as_json("status")
    assert [(s["model"], s["monitor"]) for s in status] == [("digits", 1)]
    look = status[0]["looks"][0]
    assert look["version"] == "1.0.0" and {"X[20]", "X[21]"} <= set(look["drifted_features"])
    table = invoke("status")
    assert re.search(
        r"│ digits +│ 1\.0\.0 +│ 2026-12-07 00:00:00 to 2026-12-07 01:00:00 +│", table.stdout
    )

    alarms = as_json("alarms", "--state", "open")
    keys = {(a["segment"], a["feature"]) for a in alarms}
    assert {("site=south", "X[20]"), ("site=south", "X[21]")} <= keys
    assert not any(segment == "site=north" for segment, _ in keys)
    shown = invoke("alarms", "--state", "open")
    assert all(a["id"] in shown.stdout for a in alarms) and "(threshold 0.2, p " in shown.stdout

    page = tmp_path / "drift.html"
    report = as_json("report", "digits", *window, "--html", str(page))
    assert report["version"] == "1.0.0"
    assert [s["segment"] for s in report["segments"]] == ["all", "site=north", "site=south"]
    assert {"X[20]", "X[21]"} <= set(report["drifted_features"])
    html = page.read_text(encoding="utf-8")
    sections = re.findall(
        r'<section class="feature" id="feature-\d+" data-feature="([^"]+)">', html
    )
    assert sections == report["drifted_features"]
    features = {s["feature"] for s in report["scores"]}
    assert html.count('<rect class="cell"') == 3 * len(features)
    assert any(a["id"] in html for a in alarms)
    text = invoke("report", "digits", *window)
    assert text.exit_code == 0, text.output
    assert re.search(r"│ site=south +│ X\[20\] +│ psi +│", text.stdout)

    first, second = (a["id"] for a in alarms[:2])
    acknowledged = invoke("ack", first)
    assert acknowledged.exit_code == 0, acknowledged.output
    assert acknowledged.stdout.startswith(f"alarm {first}: acknowledged (digits 1.0.0, ")
    again = invoke("ack", first)
    assert again.exit_code == 1
    assert "only an open alarm can be acknowledged" in again.stderr
    unknown = invoke("resolve", "da-000000000000")
    assert unknown.exit_code == 1 and "da-000000000000" in unknown.stderr

    monitor = tmp_path / "monitor.yaml"
    monitor.write_text(MONITOR)
    applied = invoke("monitor", "apply", str(monitor))
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.startswith("drift monitor 2 of digits (the version in production")
    assert applied.stdout.rstrip().endswith(": applied")
    unchanged = as_json("monitor", "apply", str(monitor))
    assert (unchanged["number"], unchanged["changed"]) == (2, False)
    listed = as_json("monitor", "list")
    assert [(m["model"], m["number"]) for m in listed] == [("digits", 2)]
    # Reports score with the monitor in force: its statistics and thresholds now.
    report = as_json("report", "digits", *window)
    assert {s["statistic"] for s in report["scores"]} == {"psi", "ks"}

    # Through a server on the same store: the same answers.
    with serve(settings) as (url, _):
        token = (settings.home / "admin.token").read_text().strip()
        root = ("--server", url, "--token", token)
        monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "elsewhere"))  # no local store
        remote_report = as_json("report", "digits", *window, root=root)
        assert remote_report["scores"] == report["scores"]
        assert remote_report["segments"] == report["segments"]
        remote_alarms = as_json("alarms", root=root)
        assert {a["id"]: a["state"] for a in remote_alarms}[first] == "acknowledged"
        resolved = as_json("resolve", second, root=root)
        assert (resolved["state"], resolved["resolution"]) == ("resolved", "manual")
        shown = as_json("monitor", "show", "digits", root=root)
        assert shown["monitor"]["statistics"] == {
            "psi": {"threshold": 0.25},
            "ks": {"threshold": 0.1},
        }
        assert [v["number"] for v in shown["versions"]] == [2, 1]
        bad = tmp_path / "bad.yaml"
        bad.write_text(MONITOR.replace("psi: {threshold: 0.25}", "psi: {threshold: 0}"))
        refused = CliRunner().invoke(app, [*root, "drift", "monitor", "apply", str(bad)])
        assert refused.exit_code == 1
        assert "statistics.psi.threshold: Input should be greater than 0" in refused.stderr
        assert as_json("monitor", "show", "digits", root=root)["number"] == 2
        unknown_model = CliRunner().invoke(app, [*root, "drift", "monitor", "show", "nomodel"])
        assert unknown_model.exit_code == 1
        assert "'nomodel' has no drift monitor" in unknown_model.stderr
        assert remote_status_table(root).count("digits") == 1

        # The demo's drift page: the report of the window the first alarm opened in.
        said: list[str] = []
        run = SimpleNamespace(
            scenario="demo",
            drift=SimpleNamespace(monitors=[shown], alarms=remote_alarms),
        )
        page = tmp_path / "data" / "demo-report-drift.html"
        assert demo_cli.drift_page(page.with_name("demo-report.html")) == page
        written = asyncio.run(demo_cli._write_drift_page(run, url, token, page, said.append))
        assert written == page
        assert said == [
            "drift report of digits, 2026-12-07T00:00:00+00:00 to 2026-12-07T01:00:00+00:00"
        ]
        sections = re.findall(
            r'<section class="feature" id="feature-\d+" data-feature="([^"]+)">',
            page.read_text(encoding="utf-8"),
        )
        assert {"X[20]", "X[21]"} <= set(sections)
        # A server that cannot answer costs the page, not the demo.
        missing = tmp_path / "none.html"
        assert (
            asyncio.run(demo_cli._write_drift_page(run, url, "efk_x", missing, said.append)) is None
        )
        assert said[-1].startswith("no drift report page: ") and not missing.exists()
    assert not (tmp_path / "elsewhere").exists()


def remote_status_table(root: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*root, "drift", "status"])
    assert result.exit_code == 0, result.output
    return result.stdout

"""``rollout status --watch`` off a terminal: a line per change, the final view, and a
hint where a paused rollout waits for the operator."""

import io
from contextlib import contextmanager

from rich.console import Console
from typer.testing import CliRunner

from edgefleet.cli import rollout as rollout_cli
from edgefleet.cli.main import app


def view(state: str, phase: str, committed: int, reason: str | None = None) -> dict:
    devices = {"committed": committed, "assigned": 2 - committed}
    return {
        "id": "ro-0123456789ab",
        "model": "digits",
        "version": "1.2.0",
        "target": "*",
        "state": state,
        "phase": phase,
        "reason": reason,
        "wave": 0,
        "devices": devices,
        "waves": [{"index": 0, "percent": 100, "devices": devices}],
        "gates": [],
    }


def watch(monkeypatch, views: list[dict]):
    class Client:
        def call(self, action, rollout_id=None, **kwargs):
            assert (action, rollout_id) == ("show", "ro-0123456789ab")
            return views.pop(0) if len(views) > 1 else views[0]

    @contextmanager
    def fake_rollouts():
        yield Client()

    monkeypatch.setattr(rollout_cli, "rollouts", fake_rollouts)
    monkeypatch.setattr(rollout_cli.time, "sleep", lambda _: None)
    return CliRunner().invoke(app, ["rollout", "status", "ro-0123456789ab", "--watch"])


def test_a_watch_prints_a_line_per_change_and_ends_when_the_rollout_does(monkeypatch):
    result = watch(
        monkeypatch,
        [
            view("running", "assigning", 0),
            view("running", "assigning", 0),  # no change: no line
            view("running", "baking", 1),
            view("succeeded", "done", 2),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    progress = [line for line in lines if "(wave 1/1" in line and "ro-" not in line]
    assert [line.split(" ", 1)[1] for line in progress] == [
        "running (wave 1/1, assigning): assigned 2",
        "running (wave 1/1, baking): assigned 1, committed 1",
        "succeeded (wave 1/1, done): committed 2",
    ]
    assert result.stdout.endswith("\n") and "paused" not in result.stdout


def test_a_watch_ends_at_a_pause_and_says_how_to_go_on(monkeypatch):
    result = watch(
        monkeypatch,
        [view("running", "analysing", 1), view("paused", "analysing", 1, "gate_failed:rollbacks")],
    )
    assert result.exit_code == 0, result.output
    assert "gate_failed:rollbacks" in result.stdout
    assert "edgefleet rollout resume ro-0123456789ab" in result.stdout
    assert "edgefleet rollout abort ro-0123456789ab" in result.stdout


def test_status_shows_what_the_gates_could_detect_and_what_a_pause_waits_for():
    paused = view("paused", "analyse", 2, "inconclusive")
    paused["gates"] = [
        {
            "gate": "latency_p95",
            "verdict": "inconclusive",
            "dry_run": False,
            "numbers": {
                "estimate": 0.8,
                "low": -0.1,
                "high": 1.7,
                "limit": {"max_ratio": 1.2},
                "mde_ratio": 1.35,
                "devices": 10,
                "segment": "hardware=armv7l",
                "waiting_for": "hardware=armv7l: estimate beyond the limit, not yet significant",
            },
        }
    ]
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(rollout_cli._render(paused))
    text = console.export_text()
    assert "detectable" in text and "x1.35" in text
    assert "inconclusive (hardware=armv7l)" in text
    assert (
        "waiting for latency_p95: hardware=armv7l: estimate beyond the limit, not yet significant"
        in text
    )


def test_status_shows_an_extended_wave_and_a_paired_gates_ratio():
    failed = view("aborted", "analysing", 2, "gate_failed:inference_cpu")
    failed["waves"] = [{"index": 0, "percent": 5, "percent_now": 15.0, "devices": {"committed": 2}}]
    failed["gates"] = [
        {
            "gate": "inference_cpu",
            "verdict": "fail",
            "dry_run": False,
            "numbers": {"ratio": 1.2512, "limit": {"max_ratio": 1.2}, "devices": 12},
        }
    ]
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(rollout_cli._render(failed))
    text = console.export_text()
    assert "5%, extended to 15%" in text
    assert "x1.25" in text and "max_ratio 1.2" in text


def test_create_prints_what_detect_needs_and_what_became_of_wave_one(monkeypatch, tmp_path):
    created = view("running", "rolling", 0) | {
        "detect": [
            {
                "metric": "cpu_percent",
                "ratio": 1.5,
                "limit": 1.2,
                "baseline_devices": 412,
                "spread": 0.24,
                "devices": 31,
                "note": "",
            },
            {
                "metric": "latency_p95",
                "ratio": 1.3,
                "limit": 1.2,
                "baseline_devices": 3,
                "spread": None,
                "devices": None,
                "note": "too few baseline devices to estimate",
            },
        ],
        "first_wave": "grown from 5% to 7.525% (31 devices)",
    }

    class Client:
        def call(self, action, **kwargs):
            assert action == "create" and kwargs["spec"]["detect"] == {"cpu_percent": 1.5}
            return created

    @contextmanager
    def fake_rollouts():
        yield Client()

    monkeypatch.setattr(rollout_cli, "rollouts", fake_rollouts)
    definition = tmp_path / "release.yaml"
    definition.write_text(
        "model: digits\nversion: 1.2.0\ntarget: '*'\ndetect: {cpu_percent: 1.5}\n"
    )
    result = CliRunner().invoke(app, ["rollout", "create", str(definition)])
    assert result.exit_code == 0, result.output
    assert (
        "detect cpu_percent x1.5 (gate max_ratio 1.2): 31 candidate devices (baseline: 412 "
        "devices, spread 24.0%)" in result.stdout
    )
    assert (
        "detect latency_p95 x1.3 (gate max_ratio 1.2): no estimate (baseline: 3 devices); "
        "too few baseline devices to estimate" in result.stdout
    )
    assert "wave 1: grown from 5% to 7.525% (31 devices)" in result.stdout

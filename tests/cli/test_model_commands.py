"""The ``edgefleet model`` commands, in-process, on each backend."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgefleet.cli.main import app


@pytest.fixture
def run(settings):
    runner = CliRunner()
    env = {
        "EDGEFLEET_HOME": str(settings.home),
        "EDGEFLEET_DATABASE_URL": settings.database_url_override,
    }

    def invoke(*args: str):
        return runner.invoke(app, list(args), env=env)

    return invoke


def test_acceptance_sequence(run, example_bundles):
    first = run("model", "register", str(example_bundles["1.0.0"]))
    assert first.exit_code == 0, first.output
    assert "registered digits 1.0.0 as candidate" in first.stdout
    assert run("model", "register", str(example_bundles["1.1.0"])).exit_code == 0

    listed = run("model", "list", "--json")
    assert listed.exit_code == 0
    versions = json.loads(listed.stdout)["versions"]
    assert [(v["model"], v["version"], v["stage"]) for v in versions] == [
        ("digits", "1.0.0", "candidate"),
        ("digits", "1.1.0", "candidate"),
    ]

    again = run("model", "register", str(example_bundles["1.0.0"]))
    assert again.exit_code == 1
    assert "error: digits 1.0.0 is already registered" in again.stderr
    assert "Traceback" not in again.output

    shown = json.loads(run("model", "show", "digits", "1.1.0", "--json").stdout)
    for variant in shown["variants"]:
        data = (example_bundles["1.1.0"] / f"model-{variant['precision']}.onnx").read_bytes()
        assert variant["sha256"] == hashlib.sha256(data).hexdigest()
        assert variant["size"] == len(data)
    assert shown["reference_profile"]["sample_count"] == 540


def test_promote_compare_history_latest(run, example_bundles):
    run("model", "register", str(example_bundles["1.0.0"]))
    run("model", "register", str(example_bundles["1.1.0"]))
    promoted = run(
        "model", "promote", "digits", "1.0.0", "--stage", "production", "--actor", "ana", "--json"
    )
    assert promoted.exit_code == 0, promoted.output
    (change,) = json.loads(promoted.stdout)["changes"]
    assert (change["from_stage"], change["to_stage"], change["actor"]) == (
        "candidate",
        "production",
        "ana",
    )

    compared = json.loads(run("model", "compare", "digits", "1.0.0", "1.1.0", "--json").stdout)
    accuracy = next(r for r in compared["rows"] if r["name"] == "accuracy")
    assert accuracy["better"] == "b" and accuracy["delta"] > 0
    rows = {r["name"]: r for r in compared["rows"]}
    # The examples declare every metric's direction; resources and sizes need none.
    assert all(r["higher_is_better"] is not None for r in rows.values())
    disk = rows["disk_mb"]
    assert disk["higher_is_better"] is False
    assert disk["better"] == ("a" if disk["delta"] > 0 else "b")
    table = run("model", "compare", "digits", "1.0.0", "1.1.0")
    assert table.exit_code == 0 and "accuracy" in table.stdout

    latest = json.loads(run("model", "latest", "digits", "--stage", "production", "--json").stdout)
    assert latest["version"] == "1.0.0"
    history = json.loads(run("model", "history", "digits", "--json").stdout)["changes"]
    assert [c["to_stage"] for c in history] == ["candidate", "candidate", "production"]
    assert run("model", "list", "--tag", "digits").exit_code == 0
    shown = run("model", "show", "digits", "1.0.0")
    assert shown.exit_code == 0 and "stage: production" in shown.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model", "promote", "digits", "1.0.0", "--stage", "gold"], "unknown stage 'gold'"),
        (["model", "show", "digits", "1.0"], "'1.0' is not a semantic version"),
        (["model", "show", "nope", "1.0.0"], "no model named 'nope'"),
        (["model", "list", "--stage", "live"], "unknown stage 'live'"),
        (["model", "register", "/no/such/bundle"], "is not a bundle directory"),
    ],
)
def test_errors_are_one_clear_message(run, args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_console_script_reports_errors_without_traceback(tmp_path):
    env = {**os.environ, "EDGEFLEET_HOME": str(tmp_path), "EDGEFLEET_DB_BUSY_TIMEOUT_S": "never"}
    env.pop("EDGEFLEET_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet", "model", "list"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "error: invalid settings: EDGEFLEET_DB_BUSY_TIMEOUT_S" in result.stderr
    assert "Traceback" not in result.stderr
    version = subprocess.run(
        [sys.executable, "-m", "edgefleet", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("edgefleet ")


def test_compare_table_says_when_no_direction_is_declared(monkeypatch):
    from rich.console import Console

    from edgefleet.cli import model
    from edgefleet.registry.compare import Comparison, make_row

    recorded = Console(record=True, width=200)
    monkeypatch.setattr(model, "console", recorded)
    model.render_comparison(
        Comparison(
            model="m",
            a="1.0.0",
            b="1.1.0",
            rows=(
                make_row("resource", "disk_mb", 0.02, 0.05, higher_is_better=False),
                make_row("metric", "f1", 0.8, 0.9, higher_is_better=None),
            ),
        )
    )
    lines = recorded.export_text().splitlines()
    disk = next(line for line in lines if "disk_mb" in line)
    assert "+150.0%" in disk and disk.rstrip(" │").endswith("1.0.0")
    f1 = next(line for line in lines if " f1 " in line)
    assert "no direction declared" in f1 and "1.1.0" not in f1

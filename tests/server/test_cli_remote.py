"""The registry CLI in remote mode against a live server, and local token commands."""

import json

import pytest
from typer.testing import CliRunner

from edgefleet.cli.main import app
from tests.server.conftest import LiveServer, serve


@pytest.mark.parametrize("backend", ["sqlite"])
def test_model_commands_against_a_server(live: LiveServer, example_bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "elsewhere"))  # no local store involved
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--server", live.url, "--token", live.admin_token, *args])

    listed = run("model", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [v["version"] for v in json.loads(listed.stdout)["versions"]] == ["1.0.0", "1.1.0"]
    shown = json.loads(run("model", "show", "digits", "1.1.0", "--json").stdout)
    assert shown["reference_profile"]["sample_count"] == 540
    compared = json.loads(run("model", "compare", "digits", "1.0.0", "1.1.0", "--json").stdout)
    assert compared["b"] == "1.1.0"
    promoted = run("model", "promote", "digits", "1.0.0", "--stage", "production", "--json")
    assert json.loads(promoted.stdout)["changes"][0]["actor"].startswith("bootstrap admin")
    assert (
        json.loads(run("model", "latest", "digits", "--stage", "production", "--json").stdout)[
            "version"
        ]
        == "1.0.0"
    )
    assert len(json.loads(run("model", "history", "digits", "--json").stdout)["changes"]) == 3
    again = run("model", "register", str(example_bundles["1.0.0"]))
    assert again.exit_code == 1
    assert "error: digits 1.0.0 is already registered" in again.stderr
    not_found = run("model", "show", "digits", "4.0.0")
    assert not_found.exit_code == 1 and "digits has no version 4.0.0" in not_found.stderr
    wrong_key = runner.invoke(
        app, ["--server", live.url, "--token", "efk_0000000000000000_x", "model", "list"]
    )
    assert wrong_key.exit_code == 1 and "unknown or revoked API key" in wrong_key.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_remote_register_uploads_a_bundle(settings, example_bundles, tmp_path, monkeypatch):
    with serve(settings) as (url, _):
        token = (settings.home / "admin.token").read_text().strip()
        monkeypatch.setenv("EDGEFLEET_SERVER", url)
        monkeypatch.setenv("EDGEFLEET_TOKEN", token)
        result = CliRunner().invoke(
            app, ["model", "register", str(example_bundles["1.0.0"]), "--json"]
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["published"]["release"] == 1
        assert data["note"] == "signed as release 1"


def test_unreachable_server_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(
        app, ["--server", "http://127.0.0.1:1", "--token", "efk_x", "model", "list"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:1")


def test_local_token_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    monkeypatch.delenv("EDGEFLEET_DATABASE_URL", raising=False)
    runner = CliRunner()
    enrollment = runner.invoke(
        app,
        [
            "tokens",
            "create",
            "--kind",
            "enrollment",
            "--uses",
            "5",
            "--expires",
            "7d",
            "--group",
            "lab",
            "--json",
        ],
    )
    assert enrollment.exit_code == 0, enrollment.output
    data = json.loads(enrollment.stdout)
    assert (
        data["token"].startswith("efe_") and data["uses_remaining"] == 5 and data["group"] == "lab"
    )
    admin = runner.invoke(app, ["tokens", "create", "--role", "admin", "--json"])
    assert json.loads(admin.stdout)["token"].startswith("efk_")
    bad = runner.invoke(app, ["tokens", "create", "--kind", "enrollment", "--expires", "soon"])
    assert bad.exit_code == 1 and "is not a duration" in bad.stderr
    bad_role = runner.invoke(app, ["tokens", "create", "--role", "root"])
    assert bad_role.exit_code == 1 and "--role must be viewer, operator or admin" in bad_role.stderr


def test_devices_commands_remote_and_local(live: LiveServer, monkeypatch):
    device_id, _, _ = live.enroll(region="eu-west")
    live.enroll(region="us-east")
    runner = CliRunner()

    def remote(*args: str):
        return runner.invoke(
            app, ["--server", live.url, "--token", live.admin_token, "devices", *args]
        )

    listed = json.loads(remote("list", "--query", "region:eu-west", "--json").stdout)
    assert [d["device_id"] for d in listed["devices"]] == [device_id]
    assert remote("set-desired", "digits", "1.0.0", "--query", "region:*").stdout.startswith(
        "desired model of 2 device(s)"
    )
    shown = json.loads(remote("show", device_id, "--json").stdout)
    assert shown["device"]["desired"]["model"]["version"] == "1.0.0"
    assert json.loads(remote("summary", "--json").stdout)["devices"] == 2
    bad = remote("list", "--query", "region:")
    assert bad.exit_code == 1 and "query syntax error" in bad.stderr
    both = remote("set-desired", "digits", "1.0.0")
    assert both.exit_code == 1 and "exactly one of --device or --query" in both.stderr
    # The same commands straight on the store (the server's home and database).
    monkeypatch.setenv("EDGEFLEET_HOME", str(live.settings.home))
    if live.settings.database_url_override:
        monkeypatch.setenv("EDGEFLEET_DATABASE_URL", live.settings.database_url_override)
    else:
        monkeypatch.delenv("EDGEFLEET_DATABASE_URL", raising=False)
    local = runner.invoke(app, ["devices", "list", "--query", "region:us-east", "--json"])
    assert local.exit_code == 0, local.output
    assert len(json.loads(local.stdout)["devices"]) == 1
    unknown = runner.invoke(app, ["devices", "show", "nope"])
    assert unknown.exit_code == 1 and "no device 'nope'" in unknown.stderr

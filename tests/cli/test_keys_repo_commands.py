"""``edgefleet keys`` and ``edgefleet repo``, in-process on the embedded store."""

import json

import pytest
from typer.testing import CliRunner

from edgefleet.cli.main import app


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEFLEET_DATABASE_URL", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_init_register_publish_revoke_floor_status(run, example_bundles, tmp_path):
    init = run("keys", "init", "--root-keys", "2", "--root-threshold", "2", "--json")
    assert init.exit_code == 0, init.output
    info = json.loads(init.stdout)
    assert info["roles"]["root"]["threshold"] == 2 and len(info["roles"]["root"]["keys"]) == 2
    assert info["roles"]["root"]["offline"] and not info["roles"]["timestamp"]["offline"]
    again = run("keys", "init")
    assert again.exit_code == 1 and "refusing to overwrite keys" in again.stderr

    registered = run("model", "register", str(example_bundles["1.0.0"]), "--json")
    assert json.loads(registered.stdout)["published"]["release"] == 1
    human = run("model", "register", str(example_bundles["1.1.0"]))
    assert "signed as release 2" in human.stdout

    published = json.loads(run("repo", "publish", "--json").stdout)["published"]
    assert [(p["version"], p["release"], p["new"]) for p in published] == [
        ("1.0.0", 1, False),
        ("1.1.0", 2, False),
    ]
    assert "revoked versions now 1.0.0" in run("repo", "revoke", "digits", "1.0.0").stdout
    assert "release floor now 2" in run("repo", "floor", "digits", "2").stdout
    status = json.loads(run("repo", "status", "--json").stdout)
    assert status["targets"] == 11 and status["hashed_bins"] == 0 and status["root_version"] == 1
    assert run("repo", "refresh", "--force").stdout.startswith("re-signed: snapshot, timestamp")

    rotated = run("keys", "rotate", "timestamp", "--keys", "1")
    assert rotated.exit_code == 0 and "root is now version 2" in rotated.stdout
    bad_role = run("keys", "rotate", "admin")
    assert bad_role.exit_code == 1 and "unknown role 'admin'" in bad_role.stderr


def test_commands_before_keys_init_say_what_to_run(run, example_bundles):
    registered = run("model", "register", str(example_bundles["1.0.0"]))
    assert registered.exit_code == 0
    assert "not signed yet: run `edgefleet keys init`" in registered.stdout
    for args in (("repo", "status"), ("repo", "publish"), ("keys", "rotate", "root")):
        result = run(*args)
        assert result.exit_code == 1
        assert "run `edgefleet keys init` first" in result.stderr


def test_threshold_above_key_count_is_refused(run):
    result = run("keys", "init", "--targets-keys", "1", "--targets-threshold", "2")
    assert result.exit_code == 1
    assert "threshold cannot exceed the number of keys" in result.stderr

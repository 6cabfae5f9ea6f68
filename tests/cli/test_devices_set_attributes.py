"""``edgefleet devices set-attributes``: an operator sets labels and identity a device
may not set itself (docs/security.md)."""

import json

import pytest
from typer.testing import CliRunner

from edgefleet.cli.main import app
from edgefleet.config import load_settings
from edgefleet.server.context import ServerContext


@pytest.fixture
def env(tmp_path, monkeypatch):
    values = {"EDGEFLEET_HOME": str(tmp_path / "home"), "EDGEFLEET_DATABASE_URL": None}
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    ctx = ServerContext.open(load_settings())
    try:
        token = ctx.access.create_enrollment_token(
            uses=1, expires_at=None, group="lab", actor=None
        ).token
        ctx.fleet.enroll("cam-1", token, {"hw": "rev1", "region": "eu"})
    finally:
        ctx.close()
    return values


def run(env, *args):
    return CliRunner().invoke(app, ["devices", *args], env=env)


def test_an_operator_sets_group_cohort_and_hw_and_removes_an_attribute(env):
    result = run(
        env,
        "set-attributes",
        "cam-1",
        "group=production",
        "cohort=early",
        "hw=rev2",
        "--unset",
        "region",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "device_id": "cam-1",
        "group": "production",
        "attributes": {"hw": "rev2", "cohort": "early"},
    }
    listed = run(env, "list", "--query", "group:production AND hw:rev2 AND cohort:early", "--json")
    assert [d["device_id"] for d in json.loads(listed.stdout)["devices"]] == ["cam-1"]
    shown = run(env, "set-attributes", "cam-1", "site=plant-3")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == "cam-1: group production; cohort=early, hw=rev2, site=plant-3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cam-1"], "nothing to change"),
        (["cam-1", "group"], "'group' is not KEY=VALUE"),
        (["cam-1", "9bad=x"], "attribute 9bad"),
        (["cam-1", "site=a", "--unset", "site"], "'site' is both set and unset"),
        (["nobody", "group=lab"], "no device 'nobody'"),
    ],
)
def test_bad_input_is_one_clear_line(env, args, message):
    result = run(env, "set-attributes", *args)
    assert result.exit_code == 1
    assert message in result.stderr.splitlines()[0]

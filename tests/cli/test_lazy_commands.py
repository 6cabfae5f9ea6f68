"""The command line loads a command's module only when that command is used: a device
that runs ``edgefleet agent`` never imports the server, the store or the simulator."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from edgefleet.cli.main import COMMANDS, app

PROBE = """
import sys
from typer.testing import CliRunner
from edgefleet.cli.main import app
result = CliRunner().invoke(app, {args!r})
assert result.exit_code == 0, result.output
print(" ".join(sorted(sys.modules)))
"""


def loaded_by(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_the_agent_command_loads_neither_server_nor_store_nor_simulator():
    loaded = loaded_by("agent", "status", "--help")
    assert "edgefleet.cli.agent" in loaded
    heavy = {"fastapi", "sqlalchemy", "numpy", "httpx", "edgefleet.cli.server", "edgefleet.sim"}
    assert not heavy & loaded
    assert not {name for name in loaded if name.startswith("edgefleet.cli.")} - {
        "edgefleet.cli.agent",
        "edgefleet.cli.main",
        "edgefleet.cli.output",
    }


def test_the_help_lists_every_command_with_its_summary():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert f" {name} " in result.output
    assert "Run the control plane" in result.output  # a command's summary, loaded for it


def test_an_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(app, ["deploy"])
    assert result.exit_code == 2 and "No such command 'deploy'" in result.output

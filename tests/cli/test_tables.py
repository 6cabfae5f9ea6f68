"""Tables never cut a value: ids stay whole, however narrow the terminal."""

import ast
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import edgefleet.cli
from edgefleet.cli import output
from edgefleet.cli import rollout as rollout_commands
from edgefleet.cli.main import app
from edgefleet.cli.output import CliTable

ROLLOUT_ID = "ro-c3845c217c4f"


def rendered(table: CliTable, width: int) -> str:
    out = Console(width=width, record=True, soft_wrap=True)
    out.print(table)
    return out.export_text()


@pytest.mark.parametrize("width", [20, 60, 100, 200])
def test_ids_stay_whole_and_no_word_is_cut(width):
    table = CliTable("id", "name", "state", "created", ids={"id"})
    table.add_row(ROLLOUT_ID, "digits 1.1.0 to region:eu-west", "running", "2026-01-01 12:00:00")
    table.add_row("[not markup]", "[bold]rich markup[/] is measured as shown", "ok", "")
    text = rendered(table, width)
    assert ROLLOUT_ID in text and "[not markup]" in text
    assert "…" not in text
    # The other values wrap at their spaces; no word is broken.
    for word in ("digits", "region:eu-west", "running", "2026-01-01", "12:00:00"):
        assert word in text


def test_an_unknown_id_column_is_a_mistake():
    with pytest.raises(ValueError, match="not among"):
        CliTable("id", "name", ids={"rollout"})


def test_rollout_list_prints_whole_ids_in_100_columns(monkeypatch):
    rollouts = [
        {
            "id": ROLLOUT_ID,
            "name": "digits 1.1.0 to everything in region:eu-west",
            "version": "1.1.0",
            "state": "analysing",
            "wave": 0,
            "waves": [{}, {}, {}],
            "phase": "baking",
            "devices": {"trial": 1, "assigned": 3},
            "created_at": "2026-11-21T23:34:56.844006+00:00",
        }
    ]

    class Client:
        def call(self, action, rollout_id=None, **kwargs):
            assert action == "list"
            return rollouts

    @contextmanager
    def client():
        yield Client()

    monkeypatch.setattr(rollout_commands, "rollouts", client)
    monkeypatch.setattr(output.console, "width", 100)
    result = CliRunner().invoke(app, ["rollout", "list"])
    assert result.exit_code == 0, result.output
    assert ROLLOUT_ID in result.stdout
    assert "…" not in result.stdout


def test_every_cli_table_is_a_cli_table():
    # A plain rich Table cuts ids with "…" when the terminal is narrow.
    package = Path(edgefleet.cli.__file__).parent
    offenders = []
    for module in sorted(package.glob("*.py")):
        if module.name == "output.py":
            continue  # where CliTable is made of one
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Table":
                offenders.append(f"{module.name}:{node.lineno}")
    assert offenders == []

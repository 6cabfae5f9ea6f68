"""How the CLI prints an error: one line, then its indented details, as the message laid
them out."""

from typer.testing import CliRunner

from edgefleet.cli.main import app


def test_a_query_errors_caret_stays_under_its_character(tmp_path):
    query = "region:eu-west AND AND site:x"
    result = CliRunner().invoke(
        app,
        ["devices", "list", "--query", query],
        env={"EDGEFLEET_HOME": str(tmp_path / "home"), "EDGEFLEET_DATABASE_URL": None},
    )
    assert result.exit_code == 1
    first, shown, caret = result.stderr.splitlines()
    assert first.startswith("error: query syntax error at position 19: ")
    assert shown == f"  {query}"
    assert caret == "  " + " " * 19 + "^"  # under the second AND
    assert shown[caret.index("^")] == "A"


def test_detail_lines_are_indented_once(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "edgefleet.yaml").write_text("format: 1\nname: digits\n")
    result = CliRunner().invoke(
        app,
        ["model", "register", str(bundle)],
        env={"EDGEFLEET_HOME": str(tmp_path / "home"), "EDGEFLEET_DATABASE_URL": None},
    )
    assert result.exit_code == 1
    first, *details = result.stderr.splitlines()
    manifest = bundle / "edgefleet.yaml"
    assert first == f"error: {manifest} is invalid:"
    assert details and all(line.startswith(f"  {manifest}: ") for line in details)

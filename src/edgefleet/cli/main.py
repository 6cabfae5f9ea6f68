"""The ``edgefleet`` command: wires the command groups together."""

from __future__ import annotations

import typer

from edgefleet import __version__
from edgefleet.cli import (
    agent,
    db,
    demo,
    devices,
    drift,
    examples,
    keys,
    model,
    repo,
    rollout,
    server,
    sim,
    tokens,
)
from edgefleet.cli.output import REMOTE, EdgefleetGroup, console

app = typer.Typer(
    name="edgefleet",
    help="Ship machine-learning models to fleets of edge devices without breaking them.",
    cls=EdgefleetGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(model.app, name="model")
app.add_typer(examples.app, name="examples")
app.add_typer(keys.app, name="keys")
app.add_typer(repo.app, name="repo")
app.add_typer(devices.app, name="devices")
app.add_typer(rollout.app, name="rollout")
app.add_typer(drift.app, name="drift")
app.add_typer(agent.app, name="agent")
app.add_typer(tokens.app, name="tokens")
app.add_typer(db.app, name="db")
app.command(name="server")(server.server)
app.command(name="demo")(demo.demo)
app.command(name="sim")(sim.sim)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"edgefleet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Show the version."
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        help="Talk to this edgefleet server (default: $EDGEFLEET_SERVER; local store).",
    ),
    token: str | None = typer.Option(
        None, "--token", help="Operator API key for --server (default: $EDGEFLEET_TOKEN)."
    ),
) -> None:
    """edgefleet: registry, signed delivery, gated rollouts for models on devices."""
    REMOTE.server = server
    REMOTE.token = token


def main() -> None:
    """Console-script entry point."""
    app()

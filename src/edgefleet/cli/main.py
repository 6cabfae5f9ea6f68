"""The ``edgefleet`` command: wires the command groups together.

A command's module is imported only when that command runs (or when the help lists
them all), so ``edgefleet agent run`` on a Raspberry Pi does not pay for the registry,
the server or the simulator before it starts."""

from __future__ import annotations

import importlib
from typing import Any

import typer

from edgefleet import __version__
from edgefleet.cli.output import REMOTE, EdgefleetGroup, console

# name -> (module, attribute): a Typer app becomes a command group, a function a command.
COMMANDS: dict[str, tuple[str, str]] = {
    "server": ("edgefleet.cli.server", "server"),
    "demo": ("edgefleet.cli.demo", "demo"),
    "sim": ("edgefleet.cli.sim", "sim"),
    "model": ("edgefleet.cli.model", "app"),
    "examples": ("edgefleet.cli.examples", "app"),
    "keys": ("edgefleet.cli.keys", "app"),
    "repo": ("edgefleet.cli.repo", "app"),
    "devices": ("edgefleet.cli.devices", "app"),
    "rollout": ("edgefleet.cli.rollout", "app"),
    "drift": ("edgefleet.cli.drift", "app"),
    "agent": ("edgefleet.cli.agent", "app"),
    "tokens": ("edgefleet.cli.tokens", "app"),
    "db": ("edgefleet.cli.db", "app"),
}


def load_command(name: str) -> Any:
    """The click command ``name`` of ``COMMANDS``, built by Typer as if registered."""
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer()
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name=name)(target)
    # A callback makes Typer build a group even around a single command.
    holder.callback()(lambda: None)
    group = typer.main.get_group(holder)
    return group.commands[name]


class _RootGroup(EdgefleetGroup):
    """The root group, its commands loaded on first use. (Typer vendors its own click,
    whose types it does not export: hence ``Any`` for the context and the command.)"""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]


app = typer.Typer(
    name="edgefleet",
    help="Ship machine-learning models to fleets of edge devices without breaking them.",
    cls=_RootGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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

"""``edgefleet sim``: a virtual fleet against a real server, playing a scenario.

Built-in scenarios are listed by ``edgefleet sim --list``; a path runs a scenario file
of your own (docs/scenarios.md). Without ``--server`` an embedded server is started
for the run; with it, the run's devices enroll on that server (never a production
one: they are real enrollments). Exit code 0: every expectation held; 1: one did not.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefleet.cli.output import REMOTE, CliTable, console, err_console, json_option, progress_bars
from edgefleet.errors import MissingDependencyError


def cache_dir() -> Path:
    """Where example bundles are kept between runs (``$XDG_CACHE_HOME/edgefleet``)."""
    import os

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgefleet"


def narrator(out: Console) -> Callable[[str], None]:
    """Print a run's progress lines with the seconds since the first one."""
    started = time.monotonic()

    def say(line: str) -> None:
        out.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {line}", highlight=False)

    return say


def sim(
    scenario: Annotated[
        str, typer.Option("--scenario", "-s", help="A built-in scenario name or a scenario file.")
    ] = "good-release",
    devices: Annotated[
        int | None,
        typer.Option(min=1, max=100_000, help="Fleet size (default: the scenario's)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report here.")
    ] = None,
    as_json: Annotated[bool, json_option()] = False,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the run's server home and files here (default: removed)."),
    ] = None,
    list_scenarios: Annotated[
        bool, typer.Option("--list", help="List the built-in scenarios and exit.")
    ] = False,
) -> None:
    """Run virtual devices (the real agent core over HTTP) through a scenario's releases."""
    try:
        from edgefleet.sim.report import render_summary, to_json, write_html
        from edgefleet.sim.runner import RunTarget, run_scenario
        from edgefleet.sim.scenario import builtin_names, load_scenario
    except ImportError as exc:
        raise MissingDependencyError.for_extra("sim", exc.name or "matplotlib") from exc
    if list_scenarios:
        table = CliTable("scenario", "description", ids={"scenario"})
        for name in builtin_names():
            table.add_row(name, load_scenario(name).description.strip())
        console.print(table)
        return
    chosen = load_scenario(scenario, devices=devices)
    workdir = work_dir or Path(tempfile.mkdtemp(prefix="edgefleet-sim-"))
    say = narrator(err_console if as_json else console)
    try:
        with progress_bars() as progress:
            result = run_scenario(
                chosen,
                work_dir=workdir,
                bundle_cache=cache_dir() / "examples",
                target=RunTarget(server=REMOTE.server, token=REMOTE.token),
                progress=progress,
                say=say,
            )
    finally:
        if work_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if report is not None:
        write_html(result, report)
    if as_json:
        typer.echo(to_json(result))
    else:
        render_summary(result, console)
        if report is not None:
            console.print(f"report: {report}", highlight=False)
    if not result.passed:
        raise typer.Exit(1)

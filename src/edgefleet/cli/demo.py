"""``edgefleet demo``: the release story on this machine, no other service needed.

Builds the example models, starts an embedded server (SQLite in a temporary home) on a
free port, enrolls a simulated fleet of 200 devices that run the real agent core, and
plays the ``demo`` scenario: 1.0.0 everywhere, 1.1.0 through its canary waves to the
whole fleet, then the CPU-hungry 1.2.0 caught in its first wave and rolled back. It
ends with the fleet's state, the decision logs and an HTML report.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgefleet.cli.output import console, progress_bars
from edgefleet.cli.sim import cache_dir, narrator
from edgefleet.errors import MissingDependencyError

if TYPE_CHECKING:
    from edgefleet.sim.result import RunResult


def demo(
    devices: Annotated[int, typer.Option(min=1, max=100_000, help="Size of the fleet.")] = 200,
    scenario: Annotated[
        str, typer.Option(help="The scenario to play (a built-in name or a file).")
    ] = "demo",
    keep_running: Annotated[
        bool,
        typer.Option(
            help="Leave the server and the fleet running at the end and print how to reach "
            "them (Ctrl-C stops)."
        ),
    ] = False,
    report: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path(
        "edgefleet-demo-report.html"
    ),
    home: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's server home here (default: a temporary directory)."),
    ] = None,
) -> None:
    """Play a release story on a simulated fleet: a good release, then a bad one caught."""
    try:
        # The report needs matplotlib: say so before the run, not after it.
        import edgefleet.sim.report  # noqa: F401
        from edgefleet.sim.runner import run_scenario
        from edgefleet.sim.scenario import load_scenario
    except ImportError as exc:
        raise MissingDependencyError.for_extra("sim", exc.name or "matplotlib") from exc
    story = load_scenario(scenario, devices=devices)
    workdir = home or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    started = time.monotonic()
    console.rule("edgefleet demo")
    console.print(story.description.strip(), highlight=False)

    say = narrator(console)

    async def stay(result: RunResult, url: str, token: str) -> None:
        _finish(result, report)
        console.rule("still running")
        console.print(
            f"server:    {url}  (API docs: {url}/docs, metrics: {url}/metrics)\n"
            f"admin key: {token}\n"
            f"try:       edgefleet --server {url} --token {token} rollout list\n"
            f"           edgefleet --server {url} --token {token} devices list\n"
            "Ctrl-C stops the server and the fleet.",
            highlight=False,
        )
        await asyncio.Event().wait()

    try:
        with progress_bars() as progress:
            result = run_scenario(
                story,
                work_dir=workdir,
                bundle_cache=cache_dir() / "examples",
                progress=progress,
                say=say,
                keep_running=stay if keep_running else None,
            )
    except KeyboardInterrupt:
        console.print("stopped")
        return
    finally:
        if home is None:
            shutil.rmtree(workdir, ignore_errors=True)
    _finish(result, report)
    console.print(f"the story took {time.monotonic() - started:.0f} s", highlight=False)
    if not result.passed:
        raise typer.Exit(1)


def _finish(result: RunResult, report: Path) -> None:
    """The fleet's state, the decision logs and the report."""
    from edgefleet.sim.report import render_summary, write_html

    render_summary(result, console)
    for release in result.releases:
        table = Table(title=f"decision log of {release.rollout_id} ({release.version})")
        for column in ("at", "wave", "decision", "reason"):
            table.add_column(column)
        for entry in release.log:
            if entry["kind"] == "assign":
                continue
            table.add_row(
                str(entry["at"])[11:19], str(int(entry["wave"]) + 1), entry["kind"], entry["reason"]
            )
        console.print(table)
    path = write_html(result, report)
    console.print(f"HTML report: {path.resolve()}", highlight=False)

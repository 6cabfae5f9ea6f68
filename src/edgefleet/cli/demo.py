"""``edgefleet demo``: the release story on this machine, no other service needed.

Builds the example models, starts an embedded server (SQLite in a temporary home) on a
free port, enrolls a simulated fleet of 200 devices that run the real agent core, and
plays the ``demo`` scenario: 1.0.0 everywhere, 1.1.0 through its canary waves to the
whole fleet, then the CPU-hungry 1.2.0 caught in its first wave and rolled back. It
ends with the fleet's state, the decision logs and an HTML report, written to
``default_report()`` unless ``--report`` says where.

Every line of progress, every table and the report give times as t, seconds since the
demo started.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgefleet.cli.output import console, progress_bars
from edgefleet.cli.sim import cache_dir
from edgefleet.errors import MissingDependencyError

if TYPE_CHECKING:
    from edgefleet.sim.result import RunResult


def default_report() -> Path:
    """Where the demo writes its HTML report unless told: the user's data directory
    (``$XDG_DATA_HOME/edgefleet/demo-report.html``, by default under
    ``~/.local/share``), never the current folder; each run replaces it."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "edgefleet" / "demo-report.html"


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
    report: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the HTML report (default: "
            "$XDG_DATA_HOME/edgefleet/demo-report.html, i.e. "
            "~/.local/share/edgefleet/demo-report.html)."
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's server home here (default: a temporary directory)."),
    ] = None,
) -> None:
    """Play a release story on a simulated fleet: a good release, then a bad one caught."""
    started = time.monotonic()
    report_path = (report or default_report()).expanduser().resolve()
    say = _clock(started)
    try:
        from edgefleet.sim.scenario import load_scenario
    except ImportError as exc:
        raise MissingDependencyError.for_extra("sim", exc.name or "pyyaml") from exc
    story = load_scenario(scenario, devices=devices)
    console.rule("edgefleet demo")
    console.print(story.description.strip(), highlight=False)
    console.print(
        "[dim]Each line below starts with t, the seconds since the demo started; the "
        "tables and the report count time the same way.[/dim]"
    )
    say("loading the simulator (numpy, ONNX Runtime, matplotlib)")
    try:
        # The report needs matplotlib: say so before the run, not after it.
        import edgefleet.sim.report  # noqa: F401
        from edgefleet.sim.runner import run_scenario
    except ImportError as exc:
        raise MissingDependencyError.for_extra("sim", exc.name or "matplotlib") from exc
    workdir = home or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))

    async def stay(result: RunResult, url: str, token: str) -> None:
        _finish(result, report_path)
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
                started=started,
            )
    except KeyboardInterrupt:
        console.print("stopped")
        return
    finally:
        if home is None:
            shutil.rmtree(workdir, ignore_errors=True)
    _finish(result, report_path)
    if not result.passed:
        raise typer.Exit(1)


def _clock(started: float) -> Callable[[str], None]:
    """Progress lines stamped with t, on the run's clock (``run_scenario(started=)``)."""

    def say(line: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {line}", highlight=False)

    return say


def _finish(result: RunResult, report: Path) -> None:
    """The fleet's state, the decision logs and the report, its full path last."""
    from edgefleet.sim.report import decision_log_table, render_summary, write_html

    # The story was told before the run: the summary does not repeat it.
    render_summary(result, console, description=False)
    for release in result.releases:
        console.print(decision_log_table(release))
    path = write_html(result, report)
    console.print(f"HTML report (the same numbers, with charts): {path}", highlight=False)

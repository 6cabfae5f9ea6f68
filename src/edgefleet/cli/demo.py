"""``edgefleet demo``: the release story on this machine, no other service needed.

Builds the example models, starts an embedded server (SQLite in a temporary home) on a
free port, enrolls a simulated fleet of 200 devices that run the real agent core, and
plays the ``demo`` scenario: 1.0.0 everywhere, 1.1.0 through its canary waves to the
whole fleet, then the CPU-hungry 1.2.0 caught in its first wave and rolled back. Then
the drift chapter: one site's cameras blur, and the drift monitor raises its alarms on
that site's segment. It ends with the fleet's state, the decision logs, the alarms and
an HTML report, written to ``default_report()`` unless ``--report`` says where, with
the drift report of the first alarm's window beside it (``drift_page()``).

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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgefleet.cli.output import console, progress_bars
from edgefleet.cli.sim import cache_dir
from edgefleet.errors import EdgefleetError, MissingDependencyError
from edgefleet.fsutil import write_atomic

if TYPE_CHECKING:
    from edgefleet.sim.result import RunResult


def default_report() -> Path:
    """Where the demo writes its HTML report unless told: the user's data directory
    (``$XDG_DATA_HOME/edgefleet/demo-report.html``, by default under
    ``~/.local/share``), never the current folder; each run replaces it."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "edgefleet" / "demo-report.html"


def drift_page(report: Path) -> Path:
    """Where the demo writes the drift report page: beside its report, named after it
    (``demo-report.html`` -> ``demo-report-drift.html``)."""
    return report.with_name(f"{report.stem}-drift{report.suffix or '.html'}")


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

    drift_path: list[Path] = []  # the drift page, once written while the server is up

    async def after_story(result: RunResult, url: str, token: str) -> None:
        written = await _write_drift_page(result, url, token, drift_page(report_path), say)
        drift_path.extend([written] if written else [])
        if keep_running:
            await stay(result, url, token)

    async def stay(result: RunResult, url: str, token: str) -> None:
        _finish(result, report_path, drift_path)
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
                keep_running=after_story,
                started=started,
            )
    except KeyboardInterrupt:
        console.print("stopped")
        return
    finally:
        if home is None:
            shutil.rmtree(workdir, ignore_errors=True)
    _finish(result, report_path, drift_path)
    if not result.passed:
        raise typer.Exit(1)


def _clock(started: float) -> Callable[[str], None]:
    """Progress lines stamped with t, on the run's clock (``run_scenario(started=)``)."""

    def say(line: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {line}", highlight=False)

    return say


async def _write_drift_page(
    result: RunResult, url: str, token: str, path: Path, say: Callable[[str], None]
) -> Path | None:
    """The drift report of the window in which the run's first alarm opened (or of the
    monitor's last window, when none did), read from the server while it is still up and
    written to ``path`` as one HTML page; ``None`` when the scenario watches no drift.

    A page that cannot be made is said and left out: the story's own report matters more.
    """
    import httpx

    from edgefleet.drift.html import render_html
    from edgefleet.drift.monitor import parse_duration

    drift = result.drift
    if drift is None or not drift.monitors:
        return None
    monitor: dict[str, Any] = drift.monitors[0].get("monitor") or {}
    window = parse_duration(str(monitor.get("window", "1h")))
    opened = sorted(
        datetime.fromisoformat(a["opened_at"]) for a in drift.alarms if a.get("opened_at")
    )
    end = opened[0] if opened else datetime.now(UTC)
    params = {
        "model": str(monitor.get("model", result.scenario)),
        "start": (end - window).isoformat(),
        "end": end.isoformat(),
    }
    if monitor.get("version"):
        params["version"] = str(monitor["version"])
    say(f"drift report of {params['model']}, {params['start']} to {params['end']}")
    try:
        async with httpx.AsyncClient(timeout=60.0) as http:
            response = await http.get(
                f"{url}/api/v1/drift/report",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
        response.raise_for_status()
        page = render_html(response.json())
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, page.encode("utf-8"))
    except (httpx.HTTPError, OSError, ValueError, EdgefleetError) as exc:
        say(f"no drift report page: {exc}")
        return None
    return path


def _finish(result: RunResult, report: Path, drift_pages: list[Path] | None = None) -> None:
    """The fleet's state, the decision logs, the drift page's path and the report, its
    full path last."""
    from edgefleet.sim.report import decision_log_table, render_summary, write_html

    # The story was told before the run: the summary does not repeat it.
    render_summary(result, console, description=False)
    for release in result.releases:
        console.print(decision_log_table(release))
    for page in drift_pages or []:
        console.print(f"Drift report of the first alarm's window (HTML): {page}", highlight=False)
    path = write_html(result, report)
    console.print(f"HTML report (the same numbers, with charts): {path}", highlight=False)

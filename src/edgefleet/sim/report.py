"""Reports of a simulator run: a terminal summary, a self-contained HTML page and JSON.

``edgefleet sim`` hands the ``RunResult`` of a run (``sim.result``) to these::

    render_summary(result, Console())
    write_html(result, Path("reports/bad-canary.html"))
    Path("bad-canary.json").write_text(to_json(result))

The HTML page needs nothing beside itself, so it can be mailed or attached to a CI run:
inline CSS, and plots drawn by matplotlib as inline SVG. The plots are drawn on
``matplotlib.figure.Figure`` objects, never through pyplot, so a caller's backend and
open figures are left alone. Every text that comes from the scenario (names,
descriptions, reasons) is escaped.

Both say what their terms mean where they first appear (the request outcomes under the
run's numbers, the rollout target and device statuses under the first release, how to
read a gate chart under the charts, the drift terms under the drift section), and both
give every time as ``t``, seconds since the run started, the clock of the result and of
the run's progress lines.
"""

from __future__ import annotations

import html
import io
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgefleet.agent.statemachine import State
from edgefleet.fsutil import write_atomic
from edgefleet.rollout.status import DeviceStatus
from edgefleet.sim.expectations import alarm_statistics
from edgefleet.sim.result import (
    DriftChange,
    DriftResult,
    GateLook,
    ReleaseResult,
    RunResult,
    TimelinePoint,
    decision_wave,
)

#: Timelines longer than this are thinned before plotting, to keep the page small.
MAX_PLOT_POINTS = 2000

_DASH = "—"
#: The one clock of the reports.
_CLOCK = "t: seconds since the run started"

#: Agent states in the order an update passes through them; blues while the model
#: travels, oranges while it is tried, green when kept, reds when not.
_STATE_COLOURS: dict[str, str] = {
    State.IDLE: "#c7c7c7",
    State.DOWNLOADING: "#9ecae1",
    State.VERIFYING: "#4292c6",
    State.STAGED: "#fdd0a2",
    State.SMOKE_TEST: "#fdae6b",
    State.SHADOW: "#fd8d3c",
    State.ACTIVATING: "#e6550d",
    State.TRIAL: "#a63603",
    State.COMMITTED: "#31a354",
    State.ROLLED_BACK: "#de2d26",
    State.FAILED: "#67000d",
    "OFFLINE": "#636363",  # the simulator's own: a device inside a disconnect period
}
_GOOD_COLOURS = ("#3182bd", "#31a354", "#756bb1", "#636363", "#17becf", "#8c6d31")
_BAD_COLOURS = ("#de2d26", "#fd8d3c", "#e7298a", "#a50f15")
_WAVE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22")


def render_summary(result: RunResult, console: Console, *, description: bool = True) -> None:
    """Print the run's headline, its numbers, each release and the checks to ``console``.

    ``description=False`` leaves out the scenario's description (for a caller that
    printed it before the run).
    """
    verdict = ("PASSED", "bold green") if result.passed else ("FAILED", "bold red")
    console.print(
        Text.assemble(
            ("scenario ", "dim"),
            (result.scenario, "bold"),
            "  ",
            verdict,
            f"  {result.devices:,} devices, ran {_duration(result.duration_s)}",
        )
    )
    if description and result.description:
        console.print(Text(result.description, style="dim"))
    console.print(_pairs_table(f"Run ({_CLOCK})", _run_rows(result)))
    _print_notes(console, _run_notes(result))
    for index, release in enumerate(result.releases):
        console.print(_pairs_table(f"Release {release.version}", _release_rows(release, result)))
        if index == 0:
            _print_notes(console, _release_notes(result))
    if result.drift is not None:
        console.print(_pairs_table(f"Drift ({_CLOCK})", _drift_rows(result.drift)))
        _print_notes(console, _drift_notes(result.drift))
        if result.drift.alarms:
            console.print(_alarms_table(result.drift))
    if not result.checks:
        console.print(Text("No expectations to check.", style="dim"))
        return
    checks = Table("expectation", "expected", "actual", "", title="Checks", title_justify="left")
    for check in result.checks:
        checks.add_row(
            Text(check.name),
            Text(_value(check.expected)),
            Text(_value(check.actual)),
            Text("✓", style="green") if check.passed else Text("✗", style="bold red"),
        )
    console.print(checks)


def decision_log_table(release: ReleaseResult) -> Table:
    """The rollout's decisions (assignments left out) as a table, timed on the run's t."""
    table = Table(
        title=Text(f"decision log of {release.rollout_id} ({release.version})"),
        title_justify="left",
    )
    for column in ("t", "wave", "decision", "reason"):
        table.add_column(column)
    for entry in release.log:
        if entry.get("kind") == "assign":
            continue
        table.add_row(
            Text(_entry_t(entry)),
            Text(decision_wave(entry)),
            Text(str(entry.get("kind", ""))),
            Text(str(entry.get("reason", ""))),
        )
    return table


def write_html(result: RunResult, path: Path) -> Path:
    """Write the run's report as one self-contained HTML page to ``path``; return it.

    Creates the parent directory. The file is replaced atomically, so a reader never
    sees half a page. Raises ``OSError`` when the directory cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, _page(result).encode("utf-8"))
    return path


def to_json(result: RunResult) -> str:
    """The run as indented JSON with sorted keys; NaN and infinities become null."""
    return json.dumps(_tidy(result.to_dict()), indent=2, sort_keys=True, allow_nan=False)


# --- numbers as text, shared by the terminal and the page ---------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return _DASH
    # Seconds up to ten minutes, as the progress lines count them.
    if seconds < 600:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 90:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _t(seconds: float | None) -> str:
    """A moment of the run: ``t = 12.3 s``, seconds since the run started."""
    if seconds is None or not math.isfinite(seconds):
        return _DASH
    return f"t = {seconds:.1f} s"


def _entry_t(entry: Mapping[str, Any]) -> str:
    """A decision's moment on the run's clock (the runner adds ``t`` to each entry)."""
    t = entry.get("t")
    return _t(float(t)) if isinstance(t, int | float) else _DASH


def _bytes(count: int) -> str:
    size, unit = float(count), "B"
    for larger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{count:,} B" if unit == "B" else f"{size:,.1f} {unit}"


def _share(value: float) -> str:
    return f"{value:.2%}" if math.isfinite(value) else _DASH


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else _DASH


def _value(value: Any) -> str:
    """A check's expected or actual value, short."""
    if value is None:
        return _DASH
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items()) or _DASH
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value) or _DASH
    return str(value)


def _counts(counts: Mapping[str, int]) -> str:
    return " · ".join(f"{key} {n:,}" for key, n in counts.items() if n) or _DASH


def _run_rows(result: RunResult) -> list[tuple[str, str]]:
    transferred = (
        f"{_bytes(result.bytes_transferred)} "
        f"({_bytes(result.bytes_repeated)} repeated, {result.interruptions:,} interruptions)"
    )
    bad = ", ".join(r.version for r in result.releases if r.bad)
    first = next((r for r in result.releases if r.time_to_detect_s is not None), None)
    detect, rollback = _duration(result.time_to_detect_s), _duration(result.time_to_rollback_s)
    if first is not None:
        detect += f" ({first.version}: from its rollout's start to its first failed gate)"
        if result.time_to_rollback_s is not None:
            rollback += f" (from then until no device served {first.version})"
    return [
        ("exposed to bad versions", _share(result.exposed_share) + (f" ({bad})" if bad else "")),
        ("time to detect", detect),
        ("time to roll back", rollback),
        ("model bytes received", transferred),
        (f"serving at the end (of {result.devices:,})", _counts(result.final_versions)),
        ("device requests to the server", _counts(result.requests)),
        ("server", result.server),
    ]


def _release_rows(release: ReleaseResult, result: RunResult | None = None) -> list[tuple[str, str]]:
    state = f"{release.state} ({release.reason})" if release.reason else release.state
    waves = f"{release.waves_reached} of {release.waves}" if release.waves else ""
    fleet = f" / {result.devices:,}" if result is not None else ""
    return [
        ("version", release.version + (" (bad)" if release.bad else "")),
        ("rollout", release.rollout_id),
        ("target", release.target or _DASH),
        ("state", state),
        ("waves reached", waves or str(release.waves_reached)),
        ("ran", f"{_t(release.started_t)} → {_t(release.ended_t)}"),
        ("time to detect", _duration(release.time_to_detect_s)),
        ("time to roll back", _duration(release.time_to_rollback_s)),
        ("ever served it", _share(release.exposed_share) + " of the fleet"),
        ("its devices when the rollout ended", _counts(release.devices)),
        (
            f"committed to {release.version} at the end of the run",
            f"{release.committed:,}{fleet}",
        ),
        ("failed gates", ", ".join(release.failed_gates) or _DASH),
        ("rollbacks by hardware", _counts(release.rollbacks_by_revision)),
    ]


#: What each outcome of a virtual device's HTTP request to the server means.
_REQUEST_OUTCOMES = {
    "ok": "answered by the server",
    "lost": "dropped by the simulated network before reaching the server (a connection "
    "reset, as real links do now and then); the device tried again",
    "offline": "not sent: the device was inside a simulated outage",
    "server_unreachable": "no connection to the server could be made",
    "server_error": "the server answered 5xx or 429 (busy); the device tried again",
    "refused": "the server refused it (4xx): a bug of the simulator or the server",
}

#: What each status of a rollout's device means.
_DEVICE_STATUSES = {
    DeviceStatus.ASSIGNED: "told to take the version, nothing heard since",
    DeviceStatus.DOWNLOADING: "fetching the version",
    DeviceStatus.TRIAL: "running the version on trial",
    DeviceStatus.COMMITTED: "kept the version after its trial",
    DeviceStatus.ROLLED_BACK: "went back to its previous version on its own (the trial failed "
    "or the model did not load)",
    DeviceStatus.FAILED: "could not install the version",
    DeviceStatus.UNREACHABLE: "no news within the wave's device_timeout_s; the rollout went on "
    "without it",
    DeviceStatus.REVERTED: "sent back to its previous version when the rollout was aborted",
}


def _run_notes(result: RunResult) -> list[tuple[str, str]]:
    """The terms of the run's numbers, where they first appear."""
    notes = [
        (
            "device requests",
            "the virtual devices' HTTP requests to the server (enrolment, check-ins, "
            "events, telemetry, downloads)",
        )
    ]
    notes += [
        (outcome, meaning)
        for outcome, meaning in _REQUEST_OUTCOMES.items()
        if result.requests.get(outcome)
    ]
    return notes


def _release_notes(result: RunResult) -> list[tuple[str, str]]:
    """The terms of the releases' tables, under the first one."""
    notes = []
    if any(release.target for release in result.releases):
        run = f"sim_run:{result.run_id}" if result.run_id else "sim_run:<run id>"
        notes.append(
            (
                "target",
                f"the rollout's targeting query. {run} selects this run's "
                f"{result.devices:,} virtual devices (each carries that attribute), so a "
                "run never touches other devices of the server",
            )
        )
    statuses = {status for release in result.releases for status in release.devices}
    notes += [
        (status, meaning) for status, meaning in _DEVICE_STATUSES.items() if status in statuses
    ]
    if result.releases:
        notes.append(
            (
                "committed at the end of the run",
                "devices serving that version, committed, when the run ended (a later "
                "release may have replaced it)",
            )
        )
    return notes


def _drift_rows(drift: DriftResult) -> list[tuple[str, str]]:
    rows = [
        (f"drift {index + 1}", _change_text(change)) for index, change in enumerate(drift.changes)
    ]
    windows = sorted({str((m.get("monitor") or {}).get("window", _DASH)) for m in drift.monitors})
    rows.append(
        ("monitors applied", f"{len(drift.monitors)} (window {', '.join(windows) or _DASH})")
    )
    rows.append(("drift clock started", _t(drift.clock_t)))
    segments: dict[str, int] = {}
    for alarm in drift.alarms:
        segment = str(alarm.get("segment"))
        segments[segment] = segments.get(segment, 0) + 1
    rows.append(("alarms opened", f"{len(drift.alarms)} ({_counts(segments)})"))
    rows += [
        (f"time to alarm on {segment}", _duration(delay))
        for segment, delay in drift.time_to_alarm_s.items()
    ]
    interval = _micros(drift.interval_cost_us, "per device interval")
    period = _micros(drift.period_cost_us, "per summary period")
    rows.append(
        (
            "simulator's drift cost",
            f"{interval}, {period}; {drift.pools:,} pools made before the run in "
            f"{drift.prepare_s:.1f} s of CPU; {drift.periods_sent:,} summary periods sent",
        )
    )
    return rows


def _micros(value: float | None, what: str) -> str:
    return _DASH if value is None else f"{value:,.0f} µs of CPU {what}"


def _change_text(change: DriftChange) -> str:
    cohort = change.cohort or "every device"
    timing = (
        f"at once from {_t(change.started_t)}"
        if change.full_t <= change.started_t
        else f"from {_t(change.started_t)}, full at {_t(change.full_t)}"
    )
    return (
        f"{change.transform} to {change.intensity:g} on {change.devices:,} devices "
        f"({cohort}), {timing}"
    )


def _drift_notes(drift: DriftResult) -> list[tuple[str, str]]:
    notes = [
        (
            "drift clock",
            "t = 0 of a drift's start_s: when every device served the baseline",
        ),
        (
            "segment",
            '"all" (the fleet), "<attribute>=<value>" or a named cohort, as the drift '
            "report scores them",
        ),
    ]
    if drift.time_to_alarm_s:
        notes.append(
            (
                "time to alarm",
                "from the first drift's start until the segment's first alarm (with "
                "features named: until the last of them first alarmed)",
            )
        )
    notes.append(
        (
            "device interval",
            "a virtual device's telemetry interval: drawing its requests' rows, counting "
            "their classes and confidences, feeding its runtime recorder and closing summary "
            "periods",
        )
    )
    return notes


def _alarm_row(alarm: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    resolved = alarm.get("resolved_t")
    state = str(alarm.get("state", _DASH)) + (
        f" ({_t(float(resolved))})" if isinstance(resolved, int | float) else ""
    )
    return (
        _t(float(alarm["opened_t"])) if isinstance(alarm.get("opened_t"), int | float) else _DASH,
        str(alarm.get("segment", _DASH)),
        str(alarm.get("feature", _DASH)),
        ", ".join(_statistics(alarm)) or _DASH,
        state,
    )


_ALARM_COLUMNS = ("opened", "segment", "feature", "statistics", "state")


#: Alarms the terminal summary lists (the page lists them all).
MAX_ALARM_ROWS = 20


def _alarms_table(drift: DriftResult) -> Table:
    more = len(drift.alarms) - MAX_ALARM_ROWS
    caption = f"and {more:,} more (the HTML report and --json list them all)" if more > 0 else None
    table = Table(
        title=Text("drift alarms"), title_justify="left", caption=caption, caption_justify="left"
    )
    for column in _ALARM_COLUMNS:
        table.add_column(column)
    for alarm in drift.alarms[:MAX_ALARM_ROWS]:
        table.add_row(*(Text(cell) for cell in _alarm_row(alarm)))
    return table


def _statistics(alarm: Mapping[str, Any]) -> list[str]:
    """The statistics an alarm fired on, with their values."""
    return [
        name if value is None else f"{name} {_number(value)}"
        for name, value in alarm_statistics(alarm)
    ]


def _print_notes(console: Console, notes: Sequence[tuple[str, str]]) -> None:
    for term, meaning in notes:
        console.print(Text.assemble(("  " + term, "bold dim"), (": " + meaning, "dim")))


def _pairs_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    # Text cells: scenario strings may hold "[...]", which rich would read as markup.
    table = Table(title=Text(title), title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(Text(label), Text(value))
    return table


def _tidy(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # Nine significant digits drop binary noise (0.30000000000000004) and keep the rest.
        return float(f"{value:.9g}")
    if isinstance(value, Mapping):
        return {key: _tidy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_tidy(item) for item in value]
    return value


# --- the HTML page -------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.badge { padding: 0.1em 0.5em; border-radius: 4px; color: #fff; font-size: 0.8em; }
.passed { background: #2e7d32; } .failed { background: #c62828; }
.meta, .empty { color: #666; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; } td.ok { color: #2e7d32; } td.ko { color: #c62828; }
.log td:nth-child(5) { font-size: 0.9em; }
.notes { color: #444; font-size: 0.92em; margin: -0.5em 0 1em; }
.notes dt { font-weight: bold; float: left; clear: left; margin-right: 0.4em; }
.notes dt::after { content: ":"; } .notes dd { margin: 0 0 0.2em; }
.legend { background: #f7f9fa; border: 1px solid #dde3e6; border-radius: 4px;
          padding: 0.4em 1em; font-size: 0.92em; }
.legend li { margin: 0.25em 0; }
.verdict-pass { color: #2e7d32; } .verdict-fail { color: #c62828; font-weight: bold; }
.verdict-inconclusive { color: #8d6e00; }
figure { margin: 1em 0; } figcaption { color: #555; margin-bottom: 0.3em; }
figure svg { width: 100%; height: auto; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page(result: RunResult) -> str:
    badge = (
        '<span class="badge passed">PASSED</span>'
        if result.passed
        else '<span class="badge failed">FAILED</span>'
    )
    unit = _TimeUnit.for_span(result.duration_s)
    points = _thinned(result.timeline)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edgefleet sim: {_e(result.scenario)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(result.scenario)} {badge}</h1>",
        f'<p class="meta">{result.devices:,} virtual devices, ran '
        f"{_e(_duration(result.duration_s))} against {_e(result.server)}</p>",
        '<p class="meta">Every time on this page is t, seconds since the run started.</p>',
    ]
    if result.description:
        parts.append(f"<p>{_e(result.description)}</p>")
    parts += [
        '<h2 id="summary">Summary</h2>',
        _pairs_html(_run_rows(result)),
        _notes_html(_run_notes(result)),
    ]
    parts += ['<h2 id="checks">Checks</h2>', _checks_html(result)]
    parts.append('<h2 id="timeline">Timeline</h2>')
    if points:
        parts.append(
            _figure_html(
                "plot-progress",
                "Rollout progress: virtual devices by agent state, with each release's "
                "start, end and detection",
                _progress_figure(points, result.releases, unit),
            )
        )
        parts.append(
            _figure_html(
                "plot-versions",
                "Fleet versions: virtual devices by the version they serve",
                _versions_figure(points, result.releases, unit),
            )
        )
    else:
        parts.append('<p class="empty">No timeline recorded.</p>')
    legend_shown = False
    for index, release in enumerate(result.releases):
        notes = _release_notes(result) if index == 0 else []
        parts.append(_release_html(index, release, unit, result, notes, not legend_shown))
        legend_shown = legend_shown or bool(_plotted(release))
    if result.drift is not None:
        parts.append(_drift_html(result.drift, unit, result.duration_s))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _notes_html(notes: Sequence[tuple[str, str]]) -> str:
    if not notes:
        return ""
    items = "".join(f"<dt>{_e(term)}</dt><dd>{_e(meaning)}</dd>" for term, meaning in notes)
    return f'<dl class="notes">{items}</dl>'


def _pairs_html(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in rows)
    return f"<table>{body}</table>"


def _checks_html(result: RunResult) -> str:
    if not result.checks:
        return '<p class="empty">No expectations to check.</p>'
    rows = "".join(
        f"<tr><td>{_e(c.name)}</td><td>{_e(_value(c.expected))}</td>"
        f"<td>{_e(_value(c.actual))}</td>"
        + ('<td class="ok">✓</td>' if c.passed else '<td class="ko">✗</td>')
        + "</tr>"
        for c in result.checks
    )
    head = "<tr><th>expectation</th><th>expected</th><th>actual</th><th></th></tr>"
    return f'<table class="checks">{head}{rows}</table>'


def _release_html(
    index: int,
    release: ReleaseResult,
    unit: _TimeUnit,
    result: RunResult,
    notes: Sequence[tuple[str, str]],
    legend: bool,
) -> str:
    """A release's section; ``notes``: terms to explain under its table; ``legend``:
    whether to explain the gate charts under its chart (the first chart of the page)."""
    parts = [
        f'<section class="release" id="release-{index}">',
        f"<h2>Release {_e(release.version)}{' (bad)' if release.bad else ''}</h2>",
        _pairs_html(_release_rows(release, result)),
        _notes_html(notes),
    ]
    gates = _gates_figure(release, unit)
    if gates is None:
        parts.append('<p class="empty">No gate statistics recorded.</p>')
    else:
        parts.append(
            _figure_html(
                f"plot-gates-{index}",
                f"Gate statistics of {release.version}, one panel per gate: the estimate "
                "at each analysis (dots, by wave: filled pass, hollow inconclusive, ✕ fail), "
                "its confidence band and the threshold"
                + (" (how to read them: below)" if legend else " (how to read them: above)"),
                gates,
            )
        )
        if legend:
            parts.append(_gate_legend_html(release))
        parts.append(_gate_cases_html(release))
    parts += [f"<h3>Decision log of {_e(release.rollout_id)}</h3>", _log_html(release.log)]
    parts.append("</section>")
    return "\n".join(parts)


def _drift_html(drift: DriftResult, unit: _TimeUnit, end_s: float) -> str:
    parts = [
        '<section class="drift" id="drift">',
        "<h2>Drift</h2>",
        _pairs_html(_drift_rows(drift)),
        _notes_html(_drift_notes(drift)),
    ]
    if drift.changes or drift.alarms:
        parts.append(
            _figure_html(
                "plot-drift",
                "Drift: how far each drift had gone (share of its intensity) and when each "
                "alarm opened, by segment",
                _drift_figure(drift, unit, end_s),
            )
        )
    if drift.alarms:
        head = "".join(f"<th>{_e(column)}</th>" for column in _ALARM_COLUMNS)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in _alarm_row(alarm)) + "</tr>"
            for alarm in drift.alarms
        )
        parts.append(f'<table class="alarms"><tr>{head}</tr>{rows}</table>')
    else:
        parts.append('<p class="empty">No drift alarm opened.</p>')
    parts.append("</section>")
    return "\n".join(parts)


#: Segments whose alarms get a colour of their own in the drift plot; the rest share one.
_MAX_ALARM_SEGMENTS = 8


def _drift_figure(drift: DriftResult, unit: _TimeUnit, end_s: float) -> Figure:
    figure = Figure(figsize=(10, 3.2), layout="constrained")
    ax = figure.subplots()
    end = max(end_s, *(c.full_t for c in drift.changes), 1.0)
    for index, change in enumerate(drift.changes):
        t = [0.0, change.started_t, change.full_t, end]
        label = f"{change.transform} {change.intensity:g} ({change.cohort or 'every device'})"
        ax.plot(
            [unit.of(x) for x in t],
            [0.0, 0.0, 1.0, 1.0],
            color=_WAVE_COLOURS[index % len(_WAVE_COLOURS)],
            linewidth=2,
            label=_label(label),
        )
    segments = list(dict.fromkeys(str(a.get("segment")) for a in drift.alarms))
    colours = dict(zip(segments[:_MAX_ALARM_SEGMENTS], itertools.cycle(_BAD_COLOURS), strict=False))
    labelled: set[str] = set()
    for alarm in drift.alarms:
        opened = alarm.get("opened_t")
        if not isinstance(opened, int | float):
            continue
        segment = str(alarm.get("segment"))
        name = segment if segment in colours else "other segments"
        ax.axvline(
            unit.of(float(opened)),
            color=colours.get(segment, "#9e9e9e"),
            linestyle=":",
            linewidth=1.5,
            label="_" if name in labelled else _label(f"alarm: {name}"),
        )
        labelled.add(name)
    ax.set(xlabel=unit.label, ylabel="share of its intensity")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlim(0, unit.of(end))
    figure.legend(loc="outside right upper", fontsize="small")
    return figure


def _log_html(log: Sequence[Mapping[str, Any]]) -> str:
    if not log:
        return '<p class="empty">No decisions recorded.</p>'
    rows = []
    for entry in log:
        moment = _moment(entry.get("at"))
        at = moment.strftime("%Y-%m-%d %H:%M:%S %Z") if moment else str(entry.get("at", _DASH))
        rows.append(
            f'<tr><td title="server clock: {_e(at.strip())}">{_e(_entry_t(entry))}</td>'
            f"<td>{_e(decision_wave(entry))}</td>"
            f"<td>{_e(entry.get('kind', ''))}</td>"
            f"<td>{_e(entry.get('reason', ''))}</td>"
            f"<td>{_details_html(entry.get('details') or {})}</td></tr>"
        )
    head = "<tr><th>t</th><th>wave</th><th>decision</th><th>reason</th><th>details</th></tr>"
    return f'<table class="log">{head}{"".join(rows)}</table>'


def _moment(value: Any) -> datetime | None:
    # The API gives ISO strings; a log taken from the service in-process gives datetimes.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _details_html(details: Mapping[str, Any]) -> str:
    """A decision's details in a line or two: the gates' verdicts, then the scalars."""
    parts = []
    for key, value in details.items():
        if key == "gates" and isinstance(value, list):
            parts.append(" · ".join(_gate_verdict_html(gate) for gate in value))
        else:
            parts.append(f"{_e(key)} {_e(_short(value))}")
    return "<br>".join(parts)


def _gate_verdict_html(gate: Mapping[str, Any]) -> str:
    verdict = str(gate.get("verdict", ""))
    text = f"{gate.get('gate', '?')} {verdict}" + (" (dry run)" if gate.get("dry_run") else "")
    numbers = gate.get("numbers") or {}
    if verdict == "fail":
        estimate = numbers.get("estimate", numbers.get("max_change", numbers.get("count")))
        low, high = numbers.get("low"), numbers.get("high")
        interval = f" [{_short(low)}, {_short(high)}]" if low is not None else ""
        text += f": {_short(estimate)}{interval}, limit {_value(numbers.get('limit'))}"
    return f'<span class="verdict-{_e(verdict)}">{_e(text)}</span>'


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, list) and len(value) > 3:
        text = f"{_value(value[:3])}, … ({len(value)} in all)"
    else:
        text = _value(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- plots ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _TimeUnit:
    seconds: float
    name: str

    @classmethod
    def for_span(cls, span_s: float) -> _TimeUnit:
        if span_s >= 3 * 3600:
            return cls(3600.0, "h")
        if span_s >= 3 * 60:
            return cls(60.0, "min")
        return cls(1.0, "s")

    def of(self, seconds: float) -> float:
        return seconds / self.seconds

    @property
    def label(self) -> str:
        return f"t ({self.name} since the run started)"


def _thinned(timeline: Sequence[TimelinePoint]) -> list[TimelinePoint]:
    if len(timeline) <= MAX_PLOT_POINTS:
        return list(timeline)
    indices = np.unique(np.linspace(0, len(timeline) - 1, MAX_PLOT_POINTS).round().astype(int))
    return [timeline[i] for i in indices]


def _label(text: str) -> str:
    # matplotlib reads "$...$" as mathematics and hides legend labels starting with "_".
    text = text.replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def _keys(dicts: Iterable[Mapping[str, int]], order: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in dicts:
        seen.update(dict.fromkeys(item))
    known = [key for key in order if key in seen]
    return known + [key for key in seen if key not in order]


def _progress_figure(
    points: Sequence[TimelinePoint], releases: Sequence[ReleaseResult], unit: _TimeUnit
) -> Figure:
    states = _keys((p.states for p in points), list(_STATE_COLOURS))
    layers = [
        (
            _label(state),
            _STATE_COLOURS.get(state, "#bcbd22"),
            [p.states.get(state, 0) for p in points],
        )
        for state in states
    ]
    return _stacked_figure(points, layers, releases, unit, height=4.0)


def _versions_figure(
    points: Sequence[TimelinePoint], releases: Sequence[ReleaseResult], unit: _TimeUnit
) -> Figure:
    bad = {release.version for release in releases if release.bad}
    good_colours, bad_colours = itertools.cycle(_GOOD_COLOURS), itertools.cycle(_BAD_COLOURS)
    layers = []
    for version in _keys((p.versions for p in points), ["none"]):
        if version == "none":
            label, colour = "no model", "#e0e0e0"
        elif version in bad:
            label, colour = f"{version} (bad)", next(bad_colours)
        else:
            label, colour = version, next(good_colours)
        layers.append((_label(label), colour, [p.versions.get(version, 0) for p in points]))
    return _stacked_figure(points, layers, releases, unit, height=3.5)


def _stacked_figure(
    points: Sequence[TimelinePoint],
    layers: Sequence[tuple[str, str, Sequence[int]]],
    releases: Sequence[ReleaseResult],
    unit: _TimeUnit,
    height: float,
) -> Figure:
    """Stacked areas of device counts over time, with the releases marked."""
    t = np.array([unit.of(p.t) for p in points])
    counts = np.array([values for _, _, values in layers], dtype=float).reshape(len(layers), len(t))
    # A point inside a run of equal points adds SVG vertices but nothing to the picture.
    changed = np.any(counts[:, 1:] != counts[:, :-1], axis=0)
    keep = np.ones(len(t), dtype=bool)
    keep[1:-1] = changed[:-1] | changed[1:]
    t, tops = t[keep], np.cumsum(counts[:, keep], axis=0)
    figure = Figure(figsize=(10, height), layout="constrained")
    ax = figure.subplots()
    # Each layer is one polygon from zero to its top, the highest drawn first and covered
    # by the ones below: half the vertices of stackplot's bands, the same picture.
    x = np.r_[t[0], t, t[-1]]
    for (label, colour, _), top in reversed(list(zip(layers, tops, strict=True))):
        ax.fill(x, np.r_[0.0, top, 0.0], color=colour, linewidth=0, label=label)
    _release_markers(ax, releases, unit)
    ax.set(xlabel=unit.label, ylabel="virtual devices")
    ax.margins(x=0)
    ax.set_ylim(bottom=0)
    if layers or releases:  # an empty legend is a warning
        figure.legend(loc="outside right upper", fontsize="small")
    return figure


def _release_markers(ax: Axes, releases: Sequence[ReleaseResult], unit: _TimeUnit) -> None:
    labelled: set[str] = set()

    def line(seconds: float, label: str, **style: Any) -> None:
        # Each kind of line once in the legend, however many releases there are.
        ax.axvline(unit.of(seconds), label="_" if label in labelled else label, **style)
        labelled.add(label)

    for release in releases:
        line(release.started_t, "release start", color="black", linewidth=1)
        ax.text(
            unit.of(release.started_t),
            0.98,
            f" {_label(release.version)}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            va="top",
            fontsize="x-small",
        )
        if release.ended_t is not None:
            line(release.ended_t, "release end", color="black", linestyle="--", linewidth=1)
        if release.time_to_detect_s is not None:
            line(
                release.started_t + release.time_to_detect_s,
                "gate failure detected",
                color="#c62828",
                linestyle=":",
                linewidth=1.8,
            )


@dataclass(frozen=True)
class _GatePoint:
    """One look at one gate, in the units of the gate's test (see ``_gate_point``)."""

    t: float
    wave: int
    verdict: str
    value: float
    low: float  # NaN: no band at this look
    high: float
    threshold: float  # NaN: the numbers do not give one
    #: The smallest effect this look's data could fail, on the same scale (NaN: none).
    mde: float = math.nan


def _gate_point(look: GateLook) -> _GatePoint | None:
    """What a gate tested at one look and where its threshold lay, on one scale.

    The scale is the one ``rollout.gates`` decides on: the candidate's value for
    ``max``/``min``, the count for ``max_count``, the largest relative class-share
    change for ``max_change``, and candidate minus baseline for ``max_increase``,
    ``max_decrease`` and ``max_ratio``. A ratio is tested as a difference against
    ``(ratio - 1) * baseline mean``, and a decrease is a difference below ``-limit``.
    ``None`` when the look has nothing to plot (no data or no baseline yet).
    """
    numbers = look.numbers
    limit = numbers.get("limit") or {}
    if len(limit) != 1:
        return None
    kind, bound = next(iter(limit.items()))
    if kind == "max_count":
        value = numbers.get("count")
    elif kind == "max_change":
        value = numbers.get("max_change")
    else:
        value = numbers.get("estimate")
    if not isinstance(value, int | float) or not isinstance(bound, int | float):
        return None
    if kind == "max_decrease":
        threshold = -float(bound)
    elif kind == "max_ratio":
        baseline = numbers.get("baseline_mean")
        threshold = (bound - 1.0) * baseline if isinstance(baseline, int | float) else math.nan
    else:
        threshold = float(bound)
    low, high = numbers.get("low"), numbers.get("high")
    mde = numbers.get("mde")
    return _GatePoint(
        look.t,
        look.wave,
        look.verdict,
        float(value),
        float(low) if isinstance(low, int | float) else math.nan,
        float(high) if isinstance(high, int | float) else math.nan,
        threshold,
        (-1.0 if kind in _LOWER_IS_WORSE_KINDS else 1.0) * float(mde)
        if isinstance(mde, int | float)
        else math.nan,
    )


def _axis_label(metric: str, kind: str) -> str:
    if kind == "max_count":
        return f"devices ({metric})"
    if kind == "max_change":
        return "largest relative change\nof a class share"
    if kind in ("max", "min"):
        return f"candidate {metric}"
    return f"{metric}:\ncandidate - baseline"


def _threshold_label(kind: str, bound: Any) -> str:
    if kind == "max_ratio":
        return f"threshold ({_value(bound)} - 1) * baseline mean"
    if kind == "max_decrease":
        return f"threshold -{_value(bound)} (max_decrease)"
    return f"threshold {_value(bound)} ({kind})"


#: Limit kinds where lower values are the worse ones (the rest: higher is worse).
_LOWER_IS_WORSE_KINDS = frozenset({"min", "max_decrease"})
#: Gates counting finished devices (``rollout.gates``: delivery metrics).
_DELIVERY_METRICS = frozenset({"download_failures", "rollbacks", "trial_failures"})


def _plotted(release: ReleaseResult) -> dict[str, list[tuple[GateLook, _GatePoint]]]:
    """Each gate with something to plot: its looks with their points, in look order."""
    series: dict[str, list[tuple[GateLook, _GatePoint]]] = {}
    for look in release.gate_looks:
        point = _gate_point(look)
        if point is not None:
            series.setdefault(look.gate, []).append((look, point))
    return series


def _beyond(value: float, point: _GatePoint, lower_is_worse: bool) -> bool:
    """Whether ``value`` lies past the point's threshold, on the worse side."""
    return value < point.threshold if lower_is_worse else value > point.threshold


def _confidence(release: ReleaseResult) -> str:
    """The bands' confidence level as the gates' alpha gives it ("95%")."""
    for look in release.gate_looks:
        alpha = look.numbers.get("alpha")
        if isinstance(alpha, int | float) and 0 < alpha < 1:
            return f"{1 - alpha:.0%}"
    return "1 - alpha"


def _gate_legend_html(release: ReleaseResult) -> str:
    """How to read a gate chart: what the dots, the band and the line are, and when a
    gate fails, passes or waits (``rollout.gates`` decides so)."""
    level = _confidence(release)
    items = [
        "<b>Dots</b>: the gate's estimate at each analysis of the rollout, one colour per "
        "wave (waves are cumulative: an analysis covers every device of the rollout so "
        "far). Filled: pass; hollow: inconclusive; red ✕: fail.",
        f"<b>Grey band</b>: the gate's {level} <i>always-valid confidence sequence</i>: "
        "the values the data so far cannot rule out, valid at every analysis at once, so "
        "looking again and again does not add false alarms. For <code>max</code> on "
        "rollbacks, download failures or trial failures it is the candidate's own rate "
        "among its finished devices (an exact Beta-binomial mixture); for "
        "<code>max</code>/<code>min</code> on a per-device value (CPU, latency, ...) the "
        "candidate's mean; for <code>max_increase</code>, <code>max_decrease</code> and "
        "<code>max_ratio</code> the candidate minus the baseline (the target's devices "
        "still on the previous version, compared per hardware kind). Count and "
        "class-share gates (<code>max_count</code>, <code>max_change</code>) have no band.",
        "<b>Dashed red line</b>: the threshold on the same scale: the limit itself; for "
        "<code>max_ratio</code>, (ratio &minus; 1) &times; the baseline's mean, how far above the "
        "baseline the candidate may be; for <code>max_decrease</code>, minus the limit.",
        "<b>Dotted orange line</b>: the smallest detectable effect at each analysis, on "
        "the same scale: the threshold plus the band's half-width. A candidate whose true "
        "effect lies between the threshold and this line cannot fail the gate on the data "
        "so far; the line nears the threshold as devices and requests accrue.",
        "<b>Fail</b> only when the <i>whole</i> band is past the threshold: the data shows "
        "the candidate beyond its limit. A gate on per-device values also needs at least "
        "2 candidate devices before it may fail.",
        "<b>Pass</b> once the gate has its <code>min_samples</code> and the estimate is "
        "within the threshold, <i>even when the band still reaches past it</i>. A wide "
        "band means little data: the gates stop a release on evidence of harm, they do "
        "not wait for proof that it is safe. The band narrows as later waves add "
        "devices; size the first wave and <code>min_samples</code> for the certainty "
        "you want before going wider.",
        "<b>Inconclusive</b> otherwise: too few samples, or an estimate past the threshold "
        "that the band does not confirm yet. The controller analyses again; still "
        "inconclusive <code>analysis_timeout_s</code> after the bake, the rollout pauses "
        "with reason <code>inconclusive</code> (docs/rollouts.md).",
    ]
    body = "".join(f"<li>{item}</li>" for item in items)
    return (
        '<div class="legend" id="gate-legend"><h4>How to read the gate charts</h4>'
        f"<ul>{body}</ul></div>"
    )


def _gate_cases_html(release: ReleaseResult) -> str:
    """The verdicts a reader of the charts may not expect, said in words: a wave that
    moved on while a gate's band still reached past its threshold (its last analysis
    passed on the estimate), and a band wholly past the threshold that did not fail."""
    lines = []
    for gate, looks in _plotted(release).items():
        if looks[0][0].dry_run:
            continue
        lower = next(iter(looks[0][0].numbers["limit"])) in _LOWER_IS_WORSE_KINDS
        last: dict[int, tuple[GateLook, _GatePoint]] = {}
        unconfirmed: dict[int, tuple[GateLook, _GatePoint]] = {}
        for seen, point in looks:
            last[point.wave] = (seen, point)
            devices = seen.numbers.get("devices")
            if (
                point.verdict == "inconclusive"
                and isinstance(devices, int)
                and devices < 2
                and math.isfinite(point.threshold)
                and _beyond(point.high if lower else point.low, point, lower)
            ):
                unconfirmed.setdefault(point.wave, (seen, point))
        wide = [
            f"wave {wave + 1}: up to {_number(far)}{_evidence(seen)}"
            for wave, (seen, point) in sorted(last.items())
            if point.verdict == "pass"
            and math.isfinite(point.threshold)
            and _beyond(far := point.low if lower else point.high, point, lower)
        ]
        if wide:
            threshold = _number(last[max(last)][1].threshold)
            lines.append(
                f"<li><b>{_e(gate)}</b> passed with its band still past the threshold "
                f"({_e(threshold)}) in {_e('; '.join(wide))}. The estimate was within the "
                "limit and the gate had its min_samples: too few devices yet to show the "
                "candidate within the limit, none showing it beyond.</li>"
            )
        for wave, (seen, point) in sorted(unconfirmed.items()):
            lines.append(
                f"<li><b>{_e(gate)}</b> in wave {wave + 1} at {_e(_t(point.t))}: the band "
                "lay wholly past the threshold, and the verdict was inconclusive, not fail: "
                f"it rested on {_e(seen.numbers.get('devices'))} candidate device, and a "
                "gate on per-device values needs 2 before it may fail.</li>"
            )
    if not lines:
        return ""
    return (
        f'<div class="notes"><p>Verdicts of {_e(release.version)} to read with the legend:</p>'
        f"<ul>{''.join(lines)}</ul></div>"
    )


def _evidence(look: GateLook) -> str:
    """What a look counted, in words (" (0 of 10 finished devices rolled back)")."""
    numbers = look.numbers
    if look.metric in _DELIVERY_METRICS and isinstance(numbers.get("finished"), int):
        return f" ({numbers.get('count')} of {numbers['finished']} finished devices)"
    if isinstance(numbers.get("devices"), int):
        return f" ({numbers['devices']} candidate devices)"
    if isinstance(numbers.get("trials"), int):
        return f" ({numbers.get('events')} in {numbers['trials']:,} requests)"
    return ""


def _gates_figure(release: ReleaseResult, unit: _TimeUnit) -> Figure | None:
    plotted = _plotted(release)
    if not plotted:
        return None
    series = {gate: [point for _, point in looks] for gate, looks in plotted.items()}
    first_look = {gate: looks[0][0] for gate, looks in plotted.items()}
    level = _confidence(release)
    figure = Figure(figsize=(10, 0.6 + 2.2 * len(series)), layout="constrained")
    axes = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (gate, points) in zip(axes, series.items(), strict=True):
        look = first_look[gate]
        kind, bound = next(iter(look.numbers["limit"].items()))
        _gate_axes(ax, points, unit, f"{level} confidence band")
        thresholds = {p.threshold for p in points if math.isfinite(p.threshold)}
        label = _label(_threshold_label(kind, bound))
        if len(thresholds) == 1:
            ax.axhline(thresholds.pop(), color="#c62828", linestyle="--", label=label)
        elif thresholds:
            # A ratio's threshold moves with the baseline mean from look to look.
            _steps(ax, unit, points, [p.threshold for p in points], "#c62828", "--", label)
        if any(math.isfinite(p.mde) for p in points):
            # What the gate could see: effects nearer than this line cannot fail it yet.
            mde = [p.mde for p in points]
            _steps(ax, unit, points, mde, "#ef6c00", ":", "smallest detectable effect")
        title = gate if gate == look.metric else f"{gate} ({look.metric})"
        ax.set_title(_label(title), loc="left", fontsize="medium")
        ax.set_ylabel(_label(_axis_label(look.metric, kind)), fontsize="small")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small")
    axes[-1].set_xlabel(unit.label)
    return figure


def _steps(
    ax: Axes,
    unit: _TimeUnit,
    points: Sequence[_GatePoint],
    values: Sequence[float],
    colour: str,
    style: str,
    label: str,
) -> None:
    """A line of one value per look, held until the next look."""
    ax.plot(
        [unit.of(p.t) for p in points],
        values,
        drawstyle="steps-post",
        color=colour,
        linestyle=style,
        label=label,
    )


def _gate_axes(ax: Axes, points: Sequence[_GatePoint], unit: _TimeUnit, band_label: str) -> None:
    waves = sorted({p.wave for p in points})
    has_band = any(math.isfinite(p.low) for p in points)
    for wave in waves:
        # Per wave: the gate only looked at the wave's analyses, so the band and the line
        # do not bridge the time between waves.
        of_wave = [p for p in points if p.wave == wave]
        t = [unit.of(p.t) for p in of_wave]
        if has_band:
            low, high = [p.low for p in of_wave], [p.high for p in of_wave]
            band = band_label if wave == waves[0] else "_"
            ax.fill_between(t, low, high, color="#90a4ae", alpha=0.3, linewidth=0, label=band)
            ax.vlines(t, low, high, color="#90a4ae", linewidth=1)  # shows a single look too
        ax.plot(t, [p.value for p in of_wave], color="#455a64", linewidth=0.8)
        shown = [p for p in of_wave if p.verdict != "fail"]
        if shown:
            colour = _WAVE_COLOURS[wave % len(_WAVE_COLOURS)]
            # Filled: pass; hollow: inconclusive (too little data or not significant yet).
            ax.scatter(
                [unit.of(p.t) for p in shown],
                [p.value for p in shown],
                s=18,
                edgecolors=colour,
                facecolors=[colour if p.verdict == "pass" else "none" for p in shown],
                label=f"wave {wave + 1}",
                zorder=3,
            )
    failed = [p for p in points if p.verdict == "fail"]
    if failed:
        ax.scatter(
            [unit.of(p.t) for p in failed],
            [p.value for p in failed],
            s=60,
            marker="X",
            color="#c62828",
            label="fail",
            zorder=4,
        )


def _figure_html(element_id: str, caption: str, figure: Figure) -> str:
    return (
        f'<figure id="{element_id}"><figcaption>{_e(caption)}</figcaption>'
        f"{_svg(figure, element_id)}</figure>"
    )


def _svg(figure: Figure, scope: str) -> str:
    buffer = io.StringIO()
    # Text stays text instead of glyph outlines (a much smaller file), and a fixed hash
    # salt makes the same run give the same page.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "edgefleet"}):
        figure.savefig(
            buffer,
            format="svg",
            metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
        )
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML
    # Inlined SVGs share the page's ids and matplotlib numbers them per figure
    # (figure_1, axes_1, ...), so each figure's ids and references get its own prefix.
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{scope}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{scope}-\1)", svg)
    return re.sub(r'href="#([^"]+)"', rf'href="#{scope}-\1"', svg)

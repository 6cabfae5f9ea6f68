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
from edgefleet.sim.result import GateLook, ReleaseResult, RunResult, TimelinePoint

#: Timelines longer than this are thinned before plotting, to keep the page small.
MAX_PLOT_POINTS = 2000

_DASH = "—"

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


def render_summary(result: RunResult, console: Console) -> None:
    """Print the run's headline, its numbers, each release and the checks to ``console``."""
    verdict = ("PASSED", "bold green") if result.passed else ("FAILED", "bold red")
    console.print(
        Text.assemble(
            ("scenario ", "dim"),
            (result.scenario, "bold"),
            "  ",
            verdict,
            f"  {result.devices:,} devices, {_duration(result.duration_s)}",
        )
    )
    if result.description:
        console.print(Text(result.description, style="dim"))
    console.print(_pairs_table("Run", _run_rows(result)))
    for release in result.releases:
        console.print(_pairs_table(f"Release {release.version}", _release_rows(release)))
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
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 90:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


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
    return [
        ("exposed to bad versions", _share(result.exposed_share)),
        ("time to detect", _duration(result.time_to_detect_s)),
        ("time to roll back", _duration(result.time_to_rollback_s)),
        ("bytes transferred", transferred),
        ("devices committed", f"{result.devices_committed:,} / {result.devices:,}"),
        ("final versions", _counts(result.final_versions)),
        ("requests", _counts(result.requests)),
        ("server", result.server),
    ]


def _release_rows(release: ReleaseResult) -> list[tuple[str, str]]:
    state = f"{release.state} ({release.reason})" if release.reason else release.state
    return [
        ("version", release.version + (" (bad)" if release.bad else "")),
        ("rollout", release.rollout_id),
        ("state", state),
        ("waves reached", str(release.waves_reached)),
        ("ran", f"{_duration(release.started_t)} → {_duration(release.ended_t)} into the run"),
        ("time to detect", _duration(release.time_to_detect_s)),
        ("time to roll back", _duration(release.time_to_rollback_s)),
        ("exposed", _share(release.exposed_share)),
        ("devices", _counts(release.devices)),
        ("failed gates", ", ".join(release.failed_gates) or _DASH),
        ("rollbacks by hardware", _counts(release.rollbacks_by_revision)),
    ]


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
.log td:nth-child(6) { font-size: 0.9em; }
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
        f'<p class="meta">{result.devices:,} virtual devices, '
        f"{_e(_duration(result.duration_s))} against {_e(result.server)}</p>",
    ]
    if result.description:
        parts.append(f"<p>{_e(result.description)}</p>")
    parts += ['<h2 id="summary">Summary</h2>', _pairs_html(_run_rows(result))]
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
    for index, release in enumerate(result.releases):
        parts.append(_release_html(index, release, unit))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


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


def _release_html(index: int, release: ReleaseResult, unit: _TimeUnit) -> str:
    parts = [
        f'<section class="release" id="release-{index}">',
        f"<h2>Release {_e(release.version)}{' (bad)' if release.bad else ''}</h2>",
        _pairs_html(_release_rows(release)),
    ]
    gates = _gates_figure(release, unit)
    if gates is None:
        parts.append('<p class="empty">No gate statistics recorded.</p>')
    else:
        parts.append(
            _figure_html(
                f"plot-gates-{index}",
                f"Gate statistics of {release.version}: estimate, confidence band and "
                "threshold at each look, by wave",
                gates,
            )
        )
    parts += [f"<h3>Decision log of {_e(release.rollout_id)}</h3>", _log_html(release.log)]
    parts.append("</section>")
    return "\n".join(parts)


def _log_html(log: Sequence[Mapping[str, Any]]) -> str:
    if not log:
        return '<p class="empty">No decisions recorded.</p>'
    times = [_moment(entry.get("at")) for entry in log]
    origin = next((moment for moment in times if moment is not None), None)
    rows = []
    for entry, moment in zip(log, times, strict=True):
        at = moment.strftime("%Y-%m-%d %H:%M:%S") if moment else str(entry.get("at", _DASH))
        after = _duration((moment - origin).total_seconds()) if moment and origin else _DASH
        wave = entry.get("wave")
        rows.append(
            f"<tr><td>{_e(at)}</td><td>{_e(after)}</td><td>{_e(entry.get('kind', ''))}</td>"
            f"<td>{_e(wave + 1 if isinstance(wave, int) else _DASH)}</td>"
            f"<td>{_e(entry.get('reason', ''))}</td>"
            f"<td>{_details_html(entry.get('details') or {})}</td></tr>"
        )
    head = (
        "<tr><th>at</th><th>since the first decision</th><th>kind</th><th>wave</th><th>reason</th>"
        "<th>details</th></tr>"
    )
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
        return f"time since the run started ({self.name})"


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
    return _GatePoint(
        look.t,
        look.wave,
        look.verdict,
        float(value),
        float(low) if isinstance(low, int | float) else math.nan,
        float(high) if isinstance(high, int | float) else math.nan,
        threshold,
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


def _gates_figure(release: ReleaseResult, unit: _TimeUnit) -> Figure | None:
    series: dict[str, list[_GatePoint]] = {}
    first_look: dict[str, GateLook] = {}
    for look in release.gate_looks:
        point = _gate_point(look)
        if point is not None:
            series.setdefault(look.gate, []).append(point)
            first_look.setdefault(look.gate, look)
    if not series:
        return None
    figure = Figure(figsize=(10, 0.6 + 2.2 * len(series)), layout="constrained")
    axes = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (gate, points) in zip(axes, series.items(), strict=True):
        look = first_look[gate]
        kind, bound = next(iter(look.numbers["limit"].items()))
        _gate_axes(ax, points, unit)
        thresholds = {p.threshold for p in points if math.isfinite(p.threshold)}
        label = _label(_threshold_label(kind, bound))
        if len(thresholds) == 1:
            ax.axhline(thresholds.pop(), color="#c62828", linestyle="--", label=label)
        elif thresholds:
            # A ratio's threshold moves with the baseline mean from look to look.
            ax.plot(
                [unit.of(p.t) for p in points],
                [p.threshold for p in points],
                drawstyle="steps-post",
                color="#c62828",
                linestyle="--",
                label=label,
            )
        title = gate if gate == look.metric else f"{gate} ({look.metric})"
        ax.set_title(_label(title), loc="left", fontsize="medium")
        ax.set_ylabel(_label(_axis_label(look.metric, kind)), fontsize="small")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small")
    axes[-1].set_xlabel(unit.label)
    return figure


def _gate_axes(ax: Axes, points: Sequence[_GatePoint], unit: _TimeUnit) -> None:
    waves = sorted({p.wave for p in points})
    has_band = any(math.isfinite(p.low) for p in points)
    for wave in waves:
        # Per wave: the gate only looked at the wave's analyses, so the band and the line
        # do not bridge the time between waves.
        of_wave = [p for p in points if p.wave == wave]
        t = [unit.of(p.t) for p in of_wave]
        if has_band:
            low, high = [p.low for p in of_wave], [p.high for p in of_wave]
            band = "confidence sequence" if wave == waves[0] else "_"
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

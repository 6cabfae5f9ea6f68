"""The drift report as one self-contained HTML page.

``edgefleet drift report --html out.html`` hands the report JSON (the object
``GET /api/v1/drift/report`` answers, described in docs/drift.md) to ``render_html``
and writes what it returns::

    page = render_html(report)
    Path("drift.html").write_text(page, encoding="utf-8")

The page needs nothing beside itself, so it can be mailed or attached to a ticket:
inline CSS and charts drawn here as inline SVG (no plotting library: the server extra
alone is enough), no script, no URL to fetch. It shows, in this order: what was compared
with what; the segments, those with too little data to score said as such; a heatmap of
segments by features of each cell's strongest score relative to its threshold; the alarms;
then, per drifted feature, its scores with their p-values, the reference and current
distributions of the segments it drifted in, and each statistic over time against its
threshold (from the report's history of looks). Every text that comes from the report
(model, segment, feature, alarm fields) is escaped.

Pure: no I/O. Raises ``DriftError`` when the report lacks what the page needs.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgefleet.drift.errors import DriftError

#: A segment whose data was too thin to score (the report's ``status``).
INSUFFICIENT = "insufficient_data"
#: At most this many segments are drawn per drifted feature ("all" and the drifted
#: ones, in the report's order); the rest are named under its charts.
MAX_SEGMENTS_PER_FEATURE = 6

_DASH = "—"
_TIMES = "\u00d7"
_EN_DASH = "\u2013"
_SEGMENT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
_REFERENCE_COLOUR = "#9ecae1"
_CURRENT_COLOUR = "#e6550d"
_THRESHOLD_COLOUR = "#c62828"
_STATISTIC_NAMES = {
    "psi": "PSI",
    "jensen_shannon": "Jensen-Shannon distance",
    "chi_square": "chi-square",
    "ks": "Kolmogorov-Smirnov",
    "wasserstein": "Wasserstein-1 (reference standard deviations)",
}
_FONT = 11  # px, the charts' text


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page (a complete document, ending in a newline).

    ``report`` is the report JSON, decoded. Raises ``DriftError`` naming the field
    when a part the page needs is missing or of the wrong kind.
    """
    view = _View.of(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edgefleet drift: {_e(view.model)} {_e(view.version)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Drift of {_e(view.model)} {_e(view.version)} {_badge(view)}</h1>",
        f'<p class="meta">Window {_e(_span(view.window))}, against {_e(_reference(view))}. '
        "Times are UTC.</p>",
        '<h2 id="summary">Summary</h2>',
        _pairs_html(_summary_rows(view)),
        '<h2 id="segments">Segments</h2>',
        _segments_html(view),
        '<h2 id="heatmap">Scores by segment and feature</h2>',
        _heatmap_html(view),
        '<h2 id="alarms">Alarms</h2>',
        _alarms_html(view.alarms),
        '<h2 id="drifted">Drifted features</h2>',
    ]
    if view.drifted_features:
        parts += [_feature_html(view, index, f) for index, f in enumerate(view.drifted_features)]
    else:
        parts.append('<p class="empty">No feature drifted in this window.</p>')
    parts += ['<h2 id="reading">How to read this page</h2>', _reading_html(), "</body></html>"]
    return "\n".join(parts) + "\n"


# --- the report, checked ---------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """The parts of a report the page uses, checked once."""

    model: str
    version: str
    window: Mapping[str, Any]
    reference: Mapping[str, Any]
    segments: Sequence[Mapping[str, Any]]
    scores: Sequence[Mapping[str, Any]]
    distributions: Mapping[str, Any]
    history: Sequence[Mapping[str, Any]]
    alarms: Sequence[Mapping[str, Any]]
    skipped: Mapping[str, Any]
    drifted_features: Sequence[str]
    #: The scores of each (segment, feature), in the report's order.
    by_cell: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> _View:
        if not isinstance(report, Mapping):
            raise DriftError("a drift report is a JSON object")
        segments = _list(report, "segments")
        for index, segment in enumerate(segments):
            _field(segment, "segment", f"segments[{index}]")
            _field(segment, "status", f"segments[{index}]")
        scores = _list(report, "scores")
        for index, score in enumerate(scores):
            for key in ("segment", "feature", "statistic", "value", "threshold", "drifted"):
                _field(score, key, f"scores[{index}]")
        history = _list(report, "history", required=False)
        for index, entry in enumerate(history):
            for key in ("window_end", "segment", "feature", "statistic", "value"):
                _field(entry, key, f"history[{index}]")
        by_cell: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for score in scores:
            by_cell.setdefault((str(score["segment"]), str(score["feature"])), []).append(score)
        drifted = report.get("drifted_features")
        if drifted is None:
            drifted = list(dict.fromkeys(s["feature"] for s in scores if s["drifted"]))
        elif not isinstance(drifted, list):
            raise DriftError("drift report: 'drifted_features' must be a list of names")
        return cls(
            model=str(_field(report, "model", "the report")),
            version=str(_field(report, "version", "the report")),
            window=_mapping(report, "window"),
            reference=_mapping(report, "reference", required=False),
            segments=segments,
            scores=scores,
            distributions=_mapping(report, "distributions", required=False),
            history=history,
            alarms=_list(report, "alarms", required=False),
            skipped=_mapping(report, "skipped", required=False),
            drifted_features=[str(f) for f in drifted],
            by_cell=by_cell,
        )

    def features(self) -> list[str]:
        """Every feature scored in some segment: inputs in their natural order (``X[2]``
        before ``X[10]``), then the outputs (``confidence``, ``classes``)."""
        return sorted({str(s["feature"]) for s in self.scores}, key=_feature_order)

    def segment_names(self) -> list[str]:
        names = [str(s["segment"]) for s in self.segments]
        # A score of a segment the segment list does not name still gets its row.
        return list(dict.fromkeys([*names, *(str(s["segment"]) for s in self.scores)]))

    def segment(self, name: str) -> Mapping[str, Any]:
        for segment in self.segments:
            if segment["segment"] == name:
                return segment
        return {"segment": name, "status": "ok"}

    def scores_of(self, segment: str, feature: str) -> Sequence[Mapping[str, Any]]:
        return self.by_cell.get((segment, feature), ())

    def distribution(self, segment: str, feature: str) -> Mapping[str, Any] | None:
        found = (self.distributions.get(segment) or {}).get(feature)
        return found if isinstance(found, Mapping) else None


#: Features that are the model's outputs, shown after its inputs.
_OUTPUTS = ("confidence", "classes")


def _feature_order(name: str) -> tuple[int, list[tuple[int, int | str]]]:
    # Runs of digits compare as numbers; the tags keep numbers and text apart.
    parts = [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]
    rank = _OUTPUTS.index(name) + 1 if name in _OUTPUTS else 0
    return rank, parts


def _field(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise DriftError(f"drift report: {where} must be an object")
    if key not in mapping:
        raise DriftError(f"drift report: {where} has no '{key}'", details={"field": key})
    return mapping[key]


def _list(report: Mapping[str, Any], key: str, *, required: bool = True) -> list[Any]:
    value = report.get(key) if not required else _field(report, key, "the report")
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise DriftError(f"drift report: '{key}' must be a list", details={"field": key})
    return value


def _mapping(report: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = report.get(key) if not required else _field(report, key, "the report")
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise DriftError(f"drift report: '{key}' must be an object", details={"field": key})
    return value


# --- numbers and moments as text -------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _number(value: Any) -> str:
    number = _finite(value)
    return _DASH if number is None else f"{number:.3g}"


def _pvalue(value: Any) -> str:
    number = _finite(value)
    return _DASH if number is None else f"{number:.2g}"


def _count(value: Any) -> str:
    number = _finite(value)
    return _DASH if number is None else f"{round(number):,}"


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _when(value: Any) -> str:
    moment = _moment(value)
    return moment.strftime("%Y-%m-%d %H:%M") if moment else str(value or _DASH)


def _span(window: Mapping[str, Any]) -> str:
    return f"{_when(window.get('start'))} to {_when(window.get('end'))}"


def _reference(view: _View) -> str:
    kind = view.reference.get("kind", "profile")
    if kind == "window":
        return f"the window {_span(view.reference)}"
    return "the version's reference profile"


def _statistic(name: str) -> str:
    return _STATISTIC_NAMES.get(name, name)


def _insufficient(segment: Mapping[str, Any]) -> bool:
    return segment.get("status") == INSUFFICIENT


# --- page sections ---------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.badge { padding: 0.1em 0.5em; border-radius: 4px; color: #fff; font-size: 0.7em; }
.drifted { background: #c62828; } .steady { background: #2e7d32; }
.meta, .empty { color: #666; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.yes { color: #c62828; font-weight: bold; } tr.insufficient td { color: #8d6e00; }
.scroll { overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 1em 0; } figcaption { color: #555; margin-bottom: 0.3em; }
section.feature { border-top: 1px solid #eee; margin-top: 1.5em; }
dl.notes dt { font-weight: bold; } dl.notes dd { margin: 0 0 0.6em 1.5em; }
"""


def _badge(view: _View) -> str:
    if view.drifted_features:
        count = len(view.drifted_features)
        return (
            f'<span class="badge drifted">{count} feature{"s" if count != 1 else ""} drifted</span>'
        )
    return '<span class="badge steady">no drift</span>'


def _pairs_html(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in rows)
    return f"<table>{body}</table>"


def _summary_rows(view: _View) -> list[tuple[str, str]]:
    thin = [s["segment"] for s in view.segments if _insufficient(s)]
    open_alarms = [a for a in view.alarms if a.get("state") == "open"]
    rows = [
        ("model", f"{view.model} {view.version}"),
        ("window", _span(view.window)),
        ("reference", _reference(view)),
        (
            "segments",
            f"{len(view.segments)}"
            + (
                f", {len(thin)} with insufficient data ({', '.join(map(str, thin))})"
                if thin
                else ""
            ),
        ),
        ("features scored", str(len(view.features()))),
        ("drifted features", ", ".join(view.drifted_features) or "none"),
        ("alarms", f"{len(view.alarms)} ({len(open_alarms)} open)"),
    ]
    skipped = {k: v for k, v in view.skipped.items() if v}
    if skipped:
        rows.append(
            (
                "skipped (never scored)",
                ", ".join(f"{reason} {_count(n)}" for reason, n in skipped.items()),
            )
        )
    return rows


def _segments_html(view: _View) -> str:
    if not view.segments:
        return '<p class="empty">The report names no segment.</p>'
    head = (
        "<tr><th>segment</th><th>devices</th><th>rows</th><th>sketch rows</th>"
        "<th>φ (design effect)</th><th>status</th></tr>"
    )
    rows = []
    for s in view.segments:
        thin = _insufficient(s)
        status = "insufficient data" if thin else str(s.get("status"))
        if s.get("reason"):
            status += f": {s['reason']}"
        rows.append(
            ('<tr class="insufficient">' if thin else "<tr>")
            + f'<td>{_e(s["segment"])}</td><td class="num">{_count(s.get("devices"))}</td>'
            f'<td class="num">{_count(s.get("rows"))}</td>'
            f'<td class="num">{_count(s.get("sketch_rows"))}</td>'
            f'<td class="num">{_number(s.get("phi"))}</td><td>{_e(status)}</td></tr>'
        )
    return f'<table class="segments">{head}{"".join(rows)}</table>'


def _alarms_html(alarms: Sequence[Mapping[str, Any]]) -> str:
    if not alarms:
        return '<p class="empty">No alarm concerns this model version in this window.</p>'
    head = (
        "<tr><th>id</th><th>state</th><th>segment</th><th>feature</th><th>opened</th>"
        "<th>last seen</th><th>fired on</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{_e(a.get('id', _DASH))}</td><td>{_e(a.get('state', _DASH))}</td>"
        f"<td>{_e(a.get('segment', _DASH))}</td><td>{_e(a.get('feature', _DASH))}</td>"
        f"<td>{_e(_when(a.get('opened_at')))}</td><td>{_e(_when(a.get('last_seen_at')))}</td>"
        f"<td>{_e(_alarm_numbers(a))}</td></tr>"
        for a in alarms
    )
    return f'<table class="alarms">{head}{rows}</table>'


def alarm_statistics(alarm: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The statistics an alarm fired on (``fired``), from its ``latest`` finding, else the
    ``opening`` one (the alarm JSON of docs/drift.md); ``[]`` when it has neither.

    Shared by the page and the CLI's alarm table.
    """
    for key in ("latest", "opening"):
        finding = alarm.get(key)
        if isinstance(finding, Mapping) and isinstance(finding.get("fired"), list):
            return [s for s in finding["fired"] if isinstance(s, Mapping)]
    return []


def _alarm_numbers(alarm: Mapping[str, Any]) -> str:
    parts = [
        f"{s.get('statistic', '?')} {_number(s.get('value'))} "
        f"(threshold {_number(s.get('threshold'))}, p {_pvalue(s.get('p_value'))})"
        for s in alarm_statistics(alarm)
    ]
    return "; ".join(parts) or _DASH


def _reading_html() -> str:
    notes = [
        (
            "effect and evidence",
            "A feature drifts in a segment when a statistic is at least its threshold (a "
            "difference large enough to matter) and its p-value is below the "
            "Benjamini-Hochberg cut of the look (a difference the sample cannot explain). "
            "Either alone is not enough: with a big fleet every small difference is "
            "significant, and with few devices a large one can be chance.",
        ),
        (
            "p-value",
            "Computed for the sample the window really holds: devices are clusters, so "
            "the rows are counted at their effective number (rows divided by φ, the "
            "design effect). The BH cut keeps the expected share of false findings among "
            "features and segments at the look's alpha.",
        ),
        (
            "heatmap",
            "Each cell is the strongest statistic of a segment and feature as a multiple "
            "of its threshold (1 = at the threshold); an outlined cell drifted. Hatched "
            "rows are segments with insufficient data (too few devices or rows): nothing "
            "was scored there, which is not the same as no drift.",
        ),
        (
            "distributions",
            "The share of rows in each bin of the reference profile's edges, reference "
            "against this window; the first and last bins are open-ended.",
        ),
        (
            "≈",
            "A statistic computed from the bins because devices sent no quantile summary "
            "(a platform without the sketch library): a lower bound for KS.",
        ),
    ]
    items = "".join(f"<dt>{_e(term)}</dt><dd>{_e(meaning)}</dd>" for term, meaning in notes)
    return f'<dl class="notes">{items}</dl>'


# --- the heatmap -----------------------------------------------------------------------


def _cell_ratio(scores: Sequence[Mapping[str, Any]]) -> float | None:
    """The strongest statistic of a cell as a multiple of its threshold."""
    ratios = []
    for score in scores:
        value, threshold = _finite(score.get("value")), _finite(score.get("threshold"))
        if value is not None and threshold:
            ratios.append(value / threshold)
    return max(ratios) if ratios else None


def _heat_colour(ratio: float) -> str:
    """White at 0, amber at the threshold (1), dark red from twice the threshold."""
    stops = ((0.0, (247, 247, 247)), (1.0, (253, 174, 97)), (2.0, (165, 15, 21)))
    ratio = min(max(ratio, 0.0), 2.0)
    for (low, a), (high, b) in itertools.pairwise(stops):
        if ratio <= high:
            f = (ratio - low) / (high - low)
            return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))
    return "#a50f15"


def _cell_title(segment: str, feature: str, scores: Sequence[Mapping[str, Any]]) -> str:
    numbers = "; ".join(
        f"{s['statistic']} {_number(s.get('value'))} (threshold {_number(s.get('threshold'))}, "
        f"p {_pvalue(s.get('p_value'))}){' drifted' if s.get('drifted') else ''}"
        for s in scores
    )
    return f"{segment} {_TIMES} {feature}: {numbers}"


def _heatmap_html(view: _View) -> str:
    features, segments = view.features(), view.segment_names()
    if not features or not segments:
        return '<p class="empty">No feature was scored in any segment.</p>'
    cell = 16
    left = min(260, 12 + 7 * max(len(s) for s in segments))
    top = min(200, 12 + 7 * max(len(f) for f in features))
    width, height = left + cell * len(features) + 4, top + cell * len(segments) + 4
    parts = [
        f'<svg class="heatmap" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-size="{_FONT}" '
        'font-family="system-ui, sans-serif">',
        _hatch("heatmap-hatch"),
    ]
    for column, feature in enumerate(features):
        x, y = left + column * cell + cell / 2 + 4, top - 4
        parts.append(
            f'<text x="{x:g}" y="{y:g}" transform="rotate(-90 {x:g} {y:g})">{_e(feature)}</text>'
        )
    for row, segment in enumerate(segments):
        y = top + row * cell
        thin = _insufficient(view.segment(segment))
        parts.append(
            f'<text x="{left - 4}" y="{y + cell - 4}" text-anchor="end">{_e(segment)}</text>'
        )
        for column, feature in enumerate(features):
            x = left + column * cell
            scores = view.scores_of(segment, feature)
            ratio = _cell_ratio(scores)
            drifted = any(s.get("drifted") for s in scores)
            if thin:
                fill, title = (
                    "url(#heatmap-hatch)",
                    f"{segment} {_TIMES} {feature}: insufficient data",
                )
            elif ratio is None:
                fill, title = "#ffffff", f"{segment} {_TIMES} {feature}: not scored"
            else:
                fill, title = _heat_colour(ratio), _cell_title(segment, feature, scores)
            stroke = (
                'stroke="#000000" stroke-width="2"'
                if drifted
                else 'stroke="#dddddd" stroke-width="1"'
            )
            parts.append(
                f'<rect class="cell" data-segment="{_e(segment)}" data-feature="{_e(feature)}" '
                f'x="{x + 1}" y="{y + 1}" width="{cell - 2}" height="{cell - 2}" fill="{fill}" '
                f"{stroke}><title>{_e(title)}</title></rect>"
            )
    parts.append("</svg>")
    return (
        '<figure id="heatmap-figure"><figcaption>Strongest score of each segment &times; feature '
        "as a multiple of its threshold (hover a cell for its numbers)</figcaption>"
        f'<div class="scroll">{"".join(parts)}</div>{_heat_legend()}</figure>'
    )


def _hatch(element_id: str) -> str:
    """The diagonal hatching of "insufficient data", as a pattern of this id."""
    return (
        f'<defs><pattern id="{element_id}" width="6" height="6" '
        'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#eeeeee"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#bdbdbd" stroke-width="2"/>'
        "</pattern></defs>"
    )


def _heat_legend() -> str:
    swatches = [
        (f'fill="{_heat_colour(0.0)}" stroke="#dddddd"', "0"),
        (f'fill="{_heat_colour(0.5)}" stroke="#dddddd"', "half the threshold"),
        (f'fill="{_heat_colour(1.0)}" stroke="#dddddd"', "at the threshold"),
        (f'fill="{_heat_colour(2.0)}" stroke="#dddddd"', "twice or more"),
        ('fill="#ffffff" stroke="#000000" stroke-width="2"', "drifted"),
        ('fill="url(#legend-hatch)" stroke="#dddddd"', "insufficient data"),
    ]
    x, parts = 1, [_hatch("legend-hatch")]
    for paint, label in swatches:
        parts.append(
            f'<rect x="{x}" y="2" width="14" height="14" {paint}/>'
            f'<text x="{x + 18}" y="13">{_e(label)}</text>'
        )
        x += 30 + 6 * len(label)
    return (
        f'<svg class="legend" width="{x}" height="20" viewBox="0 0 {x} 20" '
        f'font-size="{_FONT}" font-family="system-ui, sans-serif">{"".join(parts)}</svg>'
    )


# --- one drifted feature ---------------------------------------------------------------


def _feature_html(view: _View, index: int, feature: str) -> str:
    drifted_in = [
        name
        for name in view.segment_names()
        if any(s.get("drifted") for s in view.scores_of(name, feature))
    ]
    # Fleet-wide first, for scale, then where it drifted.
    fleet = ["all"] if view.scores_of("all", feature) else []
    shown = list(dict.fromkeys([*fleet, *drifted_in]))[:MAX_SEGMENTS_PER_FEATURE]
    left_out = [name for name in drifted_in if name not in shown]
    parts = [
        f'<section class="feature" id="feature-{index}" data-feature="{_e(feature)}">',
        f"<h3>{_e(feature)}</h3>",
        f"<p>Drifted in {_e(', '.join(drifted_in) or 'no segment')}.</p>",
        _feature_scores_html(view, feature, shown),
    ]
    charts = []
    for name in shown:
        distribution = view.distribution(name, feature)
        if distribution is not None:
            charts.append(_distribution_svg(distribution, name))
    if charts:
        parts.append(
            f'<figure id="distributions-{index}"><figcaption>Reference against current '
            f"distribution of {_e(feature)}, share of rows per bin, by segment</figcaption>"
            f'<div class="charts">{"".join(charts)}</div></figure>'
        )
    else:
        parts.append('<p class="empty">The report carries no bins of this feature.</p>')
    statistics = list(
        dict.fromkeys(str(s["statistic"]) for s in view.scores if s["feature"] == feature)
    )
    panels = [
        svg
        for statistic in statistics
        if (svg := _history_svg(view, feature, statistic, shown)) is not None
    ]
    if panels:
        parts.append(
            f'<figure id="history-{index}"><figcaption>{_e(feature)} over time, one panel per '
            "statistic: the value at the end of each look, by segment, and the threshold "
            f'(dashed)</figcaption><div class="charts">{"".join(panels)}</div></figure>'
        )
    if left_out:
        parts.append(
            f'<p class="meta">Also drifted in {_e(", ".join(left_out))} (numbers in the '
            "heatmap).</p>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _feature_scores_html(view: _View, feature: str, segments: Sequence[str]) -> str:
    head = (
        "<tr><th>segment</th><th>statistic</th><th>value</th><th>threshold</th>"
        "<th>p-value</th><th>BH cut</th><th>drifted</th></tr>"
    )
    rows = []
    for name in segments:
        for s in view.scores_of(name, feature):
            approximate = "≈ " if s.get("approximate") else ""
            rows.append(
                f"<tr><td>{_e(name)}</td><td>{_e(_statistic(str(s['statistic'])))}</td>"
                f'<td class="num">{approximate}{_number(s.get("value"))}</td>'
                f'<td class="num">{_number(s.get("threshold"))}</td>'
                f'<td class="num">{_pvalue(s.get("p_value"))}</td>'
                f'<td class="num">{_pvalue(s.get("bh_cut"))}</td>'
                + ('<td class="yes">yes</td>' if s.get("drifted") else "<td>no</td>")
                + "</tr>"
            )
    return f'<table class="scores">{head}{"".join(rows)}</table>'


def _bucket_labels(distribution: Mapping[str, Any], buckets: int) -> list[str]:
    labels = distribution.get("labels")
    if isinstance(labels, list) and len(labels) == buckets:
        return [str(label) for label in labels]
    edges = [_number(e) for e in distribution.get("edges") or []]
    if len(edges) + 1 == buckets and edges:
        return (
            [f"< {edges[0]}"]
            + [f"{a}{_EN_DASH}{b}" for a, b in itertools.pairwise(edges)]
            + [f"≥ {edges[-1]}"]
        )
    return [str(i) for i in range(buckets)]


def _shares(counts: Any) -> list[float] | None:
    if not isinstance(counts, list) or not counts:
        return None
    numbers = [_finite(c) for c in counts]
    if any(n is None or n < 0 for n in numbers):
        return None
    total = sum(n for n in numbers if n is not None)
    return [(n or 0.0) / total if total else 0.0 for n in numbers]


def _distribution_svg(distribution: Mapping[str, Any], segment: str) -> str:
    reference, current = (
        _shares(distribution.get("reference")),
        _shares(distribution.get("current")),
    )
    if reference is None or current is None or len(reference) != len(current):
        return (
            f'<p class="empty">{_e(segment)}: the reference and current bins do not match; '
            "not drawn.</p>"
        )
    labels = _bucket_labels(distribution, len(reference))
    step, plot_h, left, top = 30, 140, 44, 24
    bottom = 16 + 6 * max(len(label) for label in labels)
    width = max(260, left + step * len(reference) + 10)
    height = top + plot_h + bottom
    ticks = _nice_ticks(max([*reference, *current, 0.01]))
    peak = ticks[-1]
    parts = [
        f'<svg class="distribution" data-segment="{_e(segment)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" font-size="{_FONT}" '
        'font-family="system-ui, sans-serif">',
        f'<text x="{left}" y="12" font-weight="bold">{_e(segment)}</text>',
        _legend_item(width - 150, 4, _REFERENCE_COLOUR, "reference"),
        _legend_item(width - 75, 4, _CURRENT_COLOUR, "current"),
    ]
    for tick in ticks:
        y = top + plot_h - plot_h * tick / peak
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 6}" y2="{y:.1f}" stroke="#eeeeee"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{tick * 100:.3g}%</text>'
        )
    for i, (ref, cur) in enumerate(zip(reference, current, strict=True)):
        x = left + i * step
        for offset, share, colour, what in (
            (3, ref, _REFERENCE_COLOUR, "reference"),
            (15, cur, _CURRENT_COLOUR, "current"),
        ):
            h = plot_h * share / peak
            parts.append(
                f'<rect x="{x + offset}" y="{top + plot_h - h:.1f}" width="11" height="{h:.1f}" '
                f'fill="{colour}"><title>{_e(labels[i])}: {what} {share:.1%}</title></rect>'
            )
        lx, ly = x + step / 2 + 3, top + plot_h + 10
        parts.append(
            f'<text x="{lx:g}" y="{ly}" text-anchor="end" '
            f'transform="rotate(-60 {lx:g} {ly})">{_e(labels[i])}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 6}" y2="{top + plot_h}" '
        'stroke="#444444"/></svg>'
    )
    return "".join(parts)


def _legend_item(x: float, y: float, colour: str, label: str) -> str:
    return (
        f'<rect x="{x:g}" y="{y:g}" width="10" height="10" fill="{colour}"/>'
        f'<text x="{x + 14:g}" y="{y + 9:g}">{_e(label)}</text>'
    )


def _history_points(
    view: _View, feature: str, statistic: str, segment: str
) -> list[tuple[datetime, float, float | None]]:
    """(window end, value, threshold) of each look, this window's scores included."""
    points: dict[datetime, tuple[float, float | None]] = {}
    for entry in view.history:
        if (entry["feature"], entry["statistic"], entry["segment"]) != (
            feature,
            statistic,
            segment,
        ):
            continue
        moment, value = _moment(entry["window_end"]), _finite(entry["value"])
        if moment is not None and value is not None:
            points[moment] = (value, _finite(entry.get("threshold")))
    end = _moment(view.window.get("end"))
    for score in view.scores_of(segment, feature):
        value = _finite(score.get("value"))
        if score["statistic"] == statistic and end is not None and value is not None:
            points.setdefault(end, (value, _finite(score.get("threshold"))))
    return sorted((moment, value, threshold) for moment, (value, threshold) in points.items())


def _history_svg(view: _View, feature: str, statistic: str, segments: Sequence[str]) -> str | None:
    series = {
        name: points
        for name in segments
        if (points := _history_points(view, feature, statistic, name))
    }
    if not series:
        return None
    times = [p[0] for points in series.values() for p in points]
    values = [p[1] for points in series.values() for p in points]
    thresholds = sorted(
        {(p[0], p[2]) for points in series.values() for p in points if p[2] is not None}
    )
    first, last = min(times), max(times)
    span = (last - first).total_seconds()
    width, plot_h, left, top, right = 420, 150, 48, 40, 12
    plot_w, height = width - left - right, top + 150 + 34
    ticks = _nice_ticks(max([*values, *(t for _, t in thresholds), 1e-9]) * 1.05)
    peak = ticks[-1]

    def x_of(moment: datetime) -> float:
        if span <= 0:
            return left + plot_w / 2
        return left + plot_w * (moment - first).total_seconds() / span

    def y_of(value: float) -> float:
        return top + plot_h - plot_h * value / peak

    parts = [
        f'<svg class="history" data-statistic="{_e(statistic)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" font-size="{_FONT}" '
        'font-family="system-ui, sans-serif">',
        f'<text x="{left}" y="12" font-weight="bold">{_e(_statistic(statistic))}</text>',
    ]
    x = float(left)
    for colour, name in zip(_SEGMENT_COLOURS, series, strict=False):
        parts.append(_legend_item(x, 18, colour, name))
        x += 24 + 6.5 * len(name)
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eeeeee"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:.3g}</text>'
        )
    moments = _time_ticks(first, last)
    clock = _tick_format(span)
    for i, moment in enumerate(moments):
        # The end labels stay inside the chart.
        anchor = "middle" if 0 < i < len(moments) - 1 or len(moments) == 1 else "start"
        if i == len(moments) - 1 and len(moments) > 1:
            anchor = "end"
        parts.append(
            f'<text x="{x_of(moment):.1f}" y="{top + plot_h + 14}" text-anchor="{anchor}">'
            f"{_e(moment.strftime(clock))}</text>"
        )
    if thresholds:
        if len({t for _, t in thresholds}) == 1 or span <= 0:
            level = y_of(thresholds[-1][1])
            line = f"{left},{level:.1f} {left + plot_w},{level:.1f}"
        else:
            steps: list[str] = []
            for i, (moment, level_value) in enumerate(thresholds):
                start = left if i == 0 else x_of(moment)
                end = x_of(thresholds[i + 1][0]) if i + 1 < len(thresholds) else left + plot_w
                steps += [
                    f"{start:.1f},{y_of(level_value):.1f}",
                    f"{end:.1f},{y_of(level_value):.1f}",
                ]
            line = " ".join(steps)
        parts.append(
            f'<polyline class="threshold" points="{line}" fill="none" '
            f'stroke="{_THRESHOLD_COLOUR}" stroke-dasharray="5 3"><title>threshold '
            f"{_number(thresholds[-1][1])}</title></polyline>"
            f'<text x="{left + plot_w}" y="{y_of(thresholds[-1][1]) - 4:.1f}" text-anchor="end" '
            f'fill="{_THRESHOLD_COLOUR}">threshold {_number(thresholds[-1][1])}</text>'
        )
    for colour, (name, points) in zip(_SEGMENT_COLOURS, series.items(), strict=False):
        coordinates = " ".join(f"{x_of(m):.1f},{y_of(v):.1f}" for m, v, _ in points)
        parts.append(f'<g class="series" data-segment="{_e(name)}">')
        if len(points) > 1:
            parts.append(
                f'<polyline points="{coordinates}" fill="none" stroke="{colour}" '
                'stroke-width="1.5"/>'
            )
        for moment, value, threshold in points:
            above = threshold is not None and value >= threshold
            parts.append(
                f'<circle cx="{x_of(moment):.1f}" cy="{y_of(value):.1f}" r="3" '
                f'stroke="{colour}" fill="{colour if above else "#ffffff"}"><title>'
                f"{_e(name)} {_e(_when(moment.isoformat()))}: {_number(value)}</title></circle>"
            )
        parts.append("</g>")
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#444444"/></svg>'
    )
    return "".join(parts)


def _nice_ticks(top: float) -> list[float]:
    """0 and three or four round steps (1, 2, 2.5 or 5 times a power of ten) up to at
    least ``top``."""
    raw = top / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return [round(step * i, 12) for i in range(count + 1)]


def _tick_format(span_s: float) -> str:
    """Time labels as fine as the span needs: seconds within an hour (looks of a few
    seconds in a simulation), minutes within a few days, days beyond."""
    if span_s < 3600:
        return "%H:%M:%S"
    if span_s < 3 * 86400:
        return "%m-%d %H:%M"
    return "%Y-%m-%d"


def _time_ticks(first: datetime, last: datetime, count: int = 2) -> list[datetime]:
    if last <= first:
        return [first]
    return [first + (last - first) * (i / count) for i in range(count + 1)]

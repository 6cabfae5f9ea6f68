"""The drift report page: one valid, self-contained HTML document showing what drifted."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any
from xml.etree import ElementTree

import pytest

from edgefleet.drift.errors import DriftError
from edgefleet.drift.html import MAX_SEGMENTS_PER_FEATURE, render_html

EDGES = [0.1, 0.2, 0.3, 0.4]
FEATURES = ["input[0]", "input[1]", "confidence", "classes"]
STATISTICS = {"psi": 0.2, "ks": 0.1}


def _score(segment: str, feature: str, statistic: str, value: float, *, drifted: bool) -> dict:
    return {
        "segment": segment,
        "feature": feature,
        "statistic": statistic,
        "value": value,
        "threshold": STATISTICS[statistic],
        "p_value": 1e-9 if drifted else 0.4,
        "bh_cut": 0.0004,
        "drifted": drifted,
        "approximate": None,
    }


def _report() -> dict[str, Any]:
    """input[1] drifted fleet-wide and at plant-2; plant-3 has too few devices."""
    scored = ["all", "site=plant-1", "site=plant-2"]
    scores = []
    for segment in scored:
        for feature in FEATURES:
            drifted = feature == "input[1]" and segment != "site=plant-1"
            for statistic, threshold in STATISTICS.items():
                value = threshold * (2.5 if drifted else 0.3)
                scores.append(_score(segment, feature, statistic, value, drifted=drifted))
    distributions = {
        segment: {
            feature: {
                "edges": EDGES,
                "reference": [10, 20, 40, 20, 10],
                "current": [5, 5, 20, 40, 30],
            }
            for feature in FEATURES
            if feature != "classes"
        }
        for segment in scored
    }
    for segment in scored:
        distributions[segment]["classes"] = {
            "edges": [],
            "labels": ["0", "1", "2"],
            "reference": [30, 30, 40],
            "current": [31, 29, 40],
        }
    history = [
        {
            "window_end": f"2026-03-0{day}T12:00:00Z",
            "segment": segment,
            "feature": "input[1]",
            "statistic": statistic,
            "value": threshold * day / 4,
            "threshold": threshold,
        }
        for day in (1, 2, 3)
        for segment in ("all", "site=plant-2")
        for statistic, threshold in STATISTICS.items()
    ]
    return {
        "model": "digits",
        "version": "1.1.0",
        "window": {"start": "2026-03-04T11:00:00Z", "end": "2026-03-04T12:00:00Z"},
        "reference": {"kind": "profile"},
        "segments": [
            {
                "segment": "all",
                "attribute": None,
                "value": None,
                "devices": 200,
                "rows": 12345,
                "sketch_rows": 4800,
                "phi": 1.7,
                "status": "ok",
                "reason": None,
            },
            *(
                {
                    "segment": f"site={site}",
                    "attribute": "site",
                    "value": site,
                    "devices": 90,
                    "rows": 6000,
                    "sketch_rows": 2100,
                    "phi": 1.4,
                    "status": "ok",
                    "reason": None,
                }
                for site in ("plant-1", "plant-2")
            ),
            {
                "segment": "site=plant-3",
                "attribute": "site",
                "value": "plant-3",
                "devices": 2,
                "rows": 150,
                "sketch_rows": 48,
                "phi": None,
                "status": "insufficient_data",
                "reason": "2 devices, fewer than min_devices 3",
            },
        ],
        "scores": scores,
        "distributions": distributions,
        "history": history,
        "alarms": [
            {
                "id": "da-1",
                "model": "digits",
                "version": "1.1.0",
                "segment": "site=plant-2",
                "feature": "input[1]",
                "state": "open",
                "opened_at": "2026-03-04T12:00:00Z",
                "last_seen_at": "2026-03-04T12:00:00Z",
                "latest": {
                    "fired": [{"statistic": "psi", "value": 0.5, "threshold": 0.2, "p_value": 1e-9}]
                },
            }
        ],
        "skipped": {"bins_mismatch": 3, "sketch_invalid": 0},
        "drifted_features": ["input[1]"],
    }


class _Structure(HTMLParser):
    """Checks that every element is closed, in order; collects attributes."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source"})
    # SVG leaves written as <rect .../> are closed by their own tag.
    SELF_CLOSED_OK = True

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [(tag, name, value) for name, value in attrs]

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}>"
        self.stack.pop()


def _parse(page: str) -> _Structure:
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert parser.doctype
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)


def _cells(page: str) -> list[tuple[str, str, str]]:
    """(segment, feature, title) of each heatmap cell."""
    return re.findall(
        r'<rect class="cell" data-segment="([^"]*)" data-feature="([^"]*)"[^>]*>'
        r"<title>([^<]*)</title>",
        page,
    )


def test_the_page_is_valid_html_with_well_formed_svg() -> None:
    page = render_html(_report())
    _parse(page)
    svgs = _svgs(page)
    assert svgs
    for svg in svgs:
        ElementTree.fromstring(svg)  # raises on anything not well-formed
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_nothing_is_fetched_from_anywhere() -> None:
    page = render_html(_report())
    parsed = _parse(page)
    for tag, name, value in parsed.attributes:
        if name in {"src", "href", "xlink:href", "action", "srcset", "data"}:
            pytest.fail(f"<{tag} {name}={value!r}>: the page must need nothing beside itself")
        assert not re.search(r"https?://", value or ""), (tag, name, value)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"url\((?!#)", page), "only in-page references in url()"


def test_every_drifted_feature_has_its_section_with_distributions_and_history() -> None:
    report = _report()
    report["drifted_features"] = ["input[1]", "confidence"]
    for score in report["scores"]:
        if score["feature"] == "confidence" and score["segment"] == "site=plant-1":
            score["drifted"] = True
    page = render_html(report)
    sections = re.findall(
        r'<section class="feature" id="feature-\d+" data-feature="([^"]+)">', page
    )
    assert sections == ["input[1]", "confidence"]
    drifted = re.search(r'data-feature="input\[1\]">(.*?)</section>', page, re.DOTALL)
    assert drifted
    body = drifted.group(1)
    # "all" first for scale, then the segments it drifted in; plant-1 did not drift.
    assert re.findall(r'<svg class="distribution" data-segment="([^"]+)"', body) == [
        "all",
        "site=plant-2",
    ]
    assert re.findall(r'<svg class="history" data-statistic="([^"]+)"', body) == ["psi", "ks"]
    assert "Drifted in all, site=plant-2." in body


def test_the_heatmap_has_one_cell_per_segment_and_feature() -> None:
    report = _report()
    page = render_html(report)
    cells = _cells(page)
    segments = [s["segment"] for s in report["segments"]]
    assert sorted((s, f) for s, f, _ in cells) == sorted((s, f) for s in segments for f in FEATURES)
    drifted = re.findall(
        r'data-segment="([^"]+)" data-feature="([^"]+)"[^>]*stroke="#000000"', page
    )
    assert sorted(drifted) == [("all", "input[1]"), ("site=plant-2", "input[1]")]


def test_the_heatmap_lists_inputs_in_their_natural_order_then_the_outputs() -> None:
    report = _report()
    names = ["classes", "X[10]", "confidence", "X[2]", "b[1]", "X[1]"]
    report["scores"] = [_score("all", name, "psi", 0.1, drifted=False) for name in names]
    report["drifted_features"] = []
    columns = [feature for segment, feature, _ in _cells(render_html(report)) if segment == "all"]
    assert columns == ["X[1]", "X[2]", "X[10]", "b[1]", "confidence", "classes"]


def test_insufficient_data_is_shown_as_such_never_as_a_score() -> None:
    page = render_html(_report())
    thin = [title for segment, _, title in _cells(page) if segment == "site=plant-3"]
    assert len(thin) == len(FEATURES)
    assert all(title.endswith(": insufficient data") for title in thin)
    row = re.search(r'<tr class="insufficient"><td>site=plant-3</td>.*?</tr>', page)
    assert row and "insufficient data: 2 devices, fewer than min_devices 3" in row.group()
    assert "1 with insufficient data (site=plant-3)" in page


def test_the_score_over_time_has_each_look_and_the_threshold() -> None:
    page = render_html(_report())
    panel = re.search(r'<svg class="history" data-statistic="psi".*?</svg>', page, re.DOTALL)
    assert panel
    svg = panel.group()
    # Three earlier looks and this window, for each of the two segments drawn.
    assert svg.count("<circle") == 8
    assert '<polyline class="threshold"' in svg and "<title>threshold 0.2</title>" in svg
    # This window's value (2.5 x the threshold) is over it: a filled dot.
    assert re.search(r'stroke="#1f77b4" fill="#1f77b4"><title>all 2026-03-04 12:00: 0.5<', svg)


@pytest.mark.parametrize(
    ("step", "labels"),
    [
        ({"seconds": 10}, ["11:59:40", "11:59:50", "12:00:00"]),
        ({"hours": 1}, ["03-04 10:00", "03-04 11:00", "03-04 12:00"]),
        ({"days": 3}, ["2026-02-26", "2026-03-01", "2026-03-04"]),
    ],
)
def test_the_time_axis_is_as_fine_as_the_looks(step, labels) -> None:
    from datetime import datetime, timedelta

    report = _report()
    end = datetime(2026, 3, 4, 12, 0, 0)
    report["window"]["end"] = f"{end.isoformat()}Z"
    report["history"] = [
        {
            "window_end": f"{(end - timedelta(**step) * looks).isoformat()}Z",
            "segment": "all",
            "feature": "input[1]",
            "statistic": "psi",
            "value": 0.1,
            "threshold": 0.2,
        }
        for looks in (1, 2)
    ]
    panel = re.search(
        r'<svg class="history" data-statistic="psi".*?</svg>', render_html(report), re.DOTALL
    )
    assert panel
    ticks = re.findall(r'y="204" text-anchor="\w+">([^<]+)</text>', panel.group())
    assert ticks == labels


def test_the_distribution_bars_are_the_shares_of_each_bin() -> None:
    page = render_html(_report())
    chart = re.search(
        r'<svg class="distribution" data-segment="site=plant-2".*?</svg>', page, re.DOTALL
    )
    assert chart
    titles = re.findall(r"<title>([^<]+)</title>", chart.group())
    assert titles[:2] == ["&lt; 0.1: reference 10.0%", "&lt; 0.1: current 5.0%"]
    assert titles[-2:] == ["≥ 0.4: reference 10.0%", "≥ 0.4: current 30.0%"]
    assert "0.1\u20130.2: current 5.0%" in titles


def test_class_mix_uses_its_labels() -> None:
    report = _report()
    report["drifted_features"] = ["classes"]
    report["scores"].append(_score("all", "classes", "psi", 0.9, drifted=True))
    page = render_html(report)
    chart = re.search(
        r'data-feature="classes">.*?<svg class="distribution".*?</svg>', page, re.DOTALL
    )
    assert chart and "<title>2: reference 40.0%</title>" in chart.group()


def test_the_summary_alarms_and_skipped_rows() -> None:
    page = render_html(_report())
    assert "1 feature drifted" in page
    assert "<tr><th>drifted features</th><td>input[1]</td></tr>" in page
    assert "<tr><th>skipped (never scored)</th><td>bins_mismatch 3</td></tr>" in page
    assert "sketch_invalid" not in page  # a zero count is not news
    alarm = re.search(r'<table class="alarms">.*?</table>', page, re.DOTALL)
    assert alarm and "da-1" in alarm.group() and "psi 0.5 (threshold 0.2, p 1e-09)" in alarm.group()


def test_segments_beyond_the_limit_are_named_not_drawn() -> None:
    report = _report()
    extra = [f"site=extra-{i}" for i in range(MAX_SEGMENTS_PER_FEATURE + 2)]
    for name in extra:
        report["segments"].append({**report["segments"][1], "segment": name})
        report["scores"].append(_score(name, "input[1]", "psi", 0.9, drifted=True))
        report["distributions"][name] = report["distributions"]["site=plant-2"]
    page = render_html(report)
    section = re.search(r'data-feature="input\[1\]">(.*?)</section>', page, re.DOTALL)
    assert section
    body = section.group(1)
    drawn = ["all", "site=plant-2", *extra[: MAX_SEGMENTS_PER_FEATURE - 2]]
    assert re.findall(r'<svg class="distribution" data-segment="([^"]+)"', body) == drawn
    history = re.search(r'<svg class="history" data-statistic="psi".*?</svg>', body, re.DOTALL)
    assert history
    assert re.findall(r'<g class="series" data-segment="([^"]+)"', history.group()) == drawn
    # Every drifted segment is named, the ones not drawn under the charts.
    assert f"Drifted in all, site=plant-2, {', '.join(extra)}." in body
    assert f"Also drifted in {', '.join(extra[MAX_SEGMENTS_PER_FEATURE - 2 :])}" in body


def test_a_report_with_no_drift() -> None:
    report = _report()
    for score in report["scores"]:
        score["drifted"] = False
    report["drifted_features"] = []
    report["alarms"] = []
    page = render_html(report)
    _parse(page)
    assert "No feature drifted in this window." in page
    assert '<span class="badge steady">no drift</span>' in page
    assert '<section class="feature"' not in page


def test_a_report_of_only_insufficient_segments_still_gives_a_page() -> None:
    report = _report()
    report["segments"] = [report["segments"][-1]]
    report.update(scores=[], distributions={}, history=[], alarms=[], drifted_features=[])
    page = render_html(report)
    _parse(page)
    assert "No feature was scored in any segment." in page


def test_text_from_the_report_is_escaped() -> None:
    report = _report()
    hostile = '<script>alert("x")</script>'
    report["model"] = "<b>m</b>"
    report["segments"][1]["segment"] = hostile
    for score in report["scores"]:
        if score["segment"] == "site=plant-1":
            score["segment"] = hostile
    report["alarms"][0]["feature"] = "<img src=x onerror=alert(1)>"
    page = render_html(report)
    _parse(page)
    assert "<script" not in page and "<img" not in page and "<b>m</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("scores"), "the report has no 'scores'"),
        (lambda r: r.pop("window"), "the report has no 'window'"),
        (lambda r: r["segments"][0].pop("status"), "segments[0] has no 'status'"),
        (lambda r: r["scores"][3].pop("threshold"), "scores[3] has no 'threshold'"),
        (lambda r: r["history"][0].pop("window_end"), "history[0] has no 'window_end'"),
        (lambda r: r.update(segments={}), "'segments' must be a list"),
    ],
)
def test_a_report_missing_what_the_page_needs_is_refused_naming_it(change, message) -> None:
    report = copy.deepcopy(_report())
    change(report)
    with pytest.raises(DriftError, match=re.escape(message)):
        render_html(report)

"""Reports of a simulator run: terminal summary, self-contained HTML page, JSON.

The results are built by hand, but their gate numbers come from the real gates
(``rollout.gates.evaluate``) on hand-built evidence, so the reports read real shapes.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from rich.console import Console

from edgefleet.rollout.gates import Delivery, DeviceSummary, Evidence, Verdict, combine, evaluate
from edgefleet.rollout.policy import GateSpec, Metric
from edgefleet.sim.report import (
    _gate_point,
    decision_log_table,
    render_summary,
    to_json,
    write_html,
)
from edgefleet.sim.result import (
    Check,
    GateLook,
    ReleaseResult,
    RunResult,
    TimelinePoint,
    decision_wave,
)

DEVICES = 200
WAVES = (4, 20, 60)  # cumulative candidate devices per wave
LOOKS_PER_WAVE = 3
CLASS_SHARES = (0.1,) * 10
GATES = (
    GateSpec(metric=Metric.ROLLBACKS, max=0.05, min_samples=4),
    GateSpec(metric=Metric.CPU, max_ratio=1.3, min_samples=4),
    GateSpec(metric=Metric.ERROR_RATE, max_increase=0.005, min_samples=1000),
    GateSpec(metric=Metric.CLASS_DISTRIBUTION, max_change=0.5, min_samples=1000),
)
START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
RUN_ID = "rtest1"


def _device(rng: np.random.Generator, name: str, cpu: float) -> DeviceSummary:
    inferences = 400
    return DeviceSummary(
        name,
        "rev2" if name.endswith(("0", "2", "4", "6", "8")) else "rev3",
        inferences,
        int(rng.binomial(inferences, 0.002)),
        class_counts=tuple(int(c) for c in rng.multinomial(inferences, CLASS_SHARES)),
        confidence_counts=(0,) * 17 + (20, 80, 300),
        health={"cpu_percent": float(rng.normal(cpu, 2.0))},
    )


def _baseline(rng: np.random.Generator) -> list[DeviceSummary]:
    return [_device(rng, f"base-{i}", 30.0) for i in range(100)]


def _release(version: str, *, bad: bool, started_t: float, seed: int) -> ReleaseResult:
    """A rollout through the waves, looking at the real gates at each analysis.

    The bad version runs a little hotter and rolls back on rev2 boards from the second
    wave on, so its rollbacks gate fails there and the rollout aborts.
    """
    rng = np.random.default_rng(seed)
    baseline = _baseline(rng)
    cpu = 36.0 if bad else 30.5
    rollout_id = f"ro-{version.replace('.', '')}"
    log: list[dict[str, object]] = [_entry(1, started_t, "create", 0, "", {})]
    looks: list[GateLook] = []
    candidate: list[DeviceSummary] = []
    t = started_t
    for wave, size in enumerate(WAVES):
        new = [_device(rng, f"dev-{len(candidate) + i}", cpu) for i in range(size - len(candidate))]
        candidate += new
        t += 120.0
        log.append(_entry(len(log) + 1, t, "assign", wave, "wave_members", _assigned(new)))
        rolled_back = len(candidate) // 4 if bad and wave > 0 else 0
        delivery = Delivery(finished=len(candidate), rolled_back=rolled_back)
        evidence = Evidence(delivery, candidate, baseline)
        for look in range(1, LOOKS_PER_WAVE + 1):
            t += 30.0
            results = [evaluate(gate, evidence, 0.05, look) for gate in GATES]
            looks += [
                GateLook(t, wave, r.gate, r.metric, r.verdict.value, r.numbers) for r in results
            ]
            details = {"gates": [r.to_dict() for r in results]}
            if combine(results) is Verdict.FAIL:
                failed = [r.gate for r in results if r.verdict is Verdict.FAIL]
                reason = "gate_failed:" + ",".join(failed)
                reverted = len(candidate) - rolled_back
                log.append(
                    _entry(len(log) + 1, t, "abort", wave, reason, details | {"reverted": reverted})
                )
                return ReleaseResult(
                    version=version,
                    rollout_id=rollout_id,
                    bad=True,
                    started_t=started_t,
                    ended_t=t,
                    state="aborted",
                    reason=reason,
                    waves_reached=wave + 1,
                    devices={"rolled_back": rolled_back, "reverted": reverted},
                    time_to_detect_s=t - started_t,
                    time_to_rollback_s=95.0,
                    exposed_share=len(candidate) / DEVICES,
                    failed_gates=failed,
                    rollbacks_by_revision={"rev2": rolled_back},
                    gate_looks=looks,
                    log=log,
                    target=f"sim_run:{RUN_ID}",
                    waves=len(WAVES),
                    committed=0,
                )
        kind = "succeed" if wave == len(WAVES) - 1 else "advance"
        # As the server logs it: an advance with the wave it leads into.
        into = wave + 1 if kind == "advance" else wave
        log.append(_entry(len(log) + 1, t, kind, into, "gates_passed", details))
    assert not bad, "the bad candidate should have failed a gate"
    return ReleaseResult(
        version=version,
        rollout_id=rollout_id,
        bad=False,
        started_t=started_t,
        ended_t=t,
        state="succeeded",
        reason="all_waves_passed",
        waves_reached=len(WAVES),
        devices={"committed": WAVES[-1]},
        time_to_detect_s=None,
        time_to_rollback_s=None,
        exposed_share=WAVES[-1] / DEVICES,
        failed_gates=[],
        rollbacks_by_revision={},
        gate_looks=looks,
        log=log,
        target=f"sim_run:{RUN_ID}",
        waves=len(WAVES),
        committed=WAVES[-1],
    )


def _assigned(devices: list[DeviceSummary]) -> dict[str, object]:
    return {"assigned": len(devices), "devices": [d.device_id for d in devices[:20]]}


def _entry(
    number: int, t: float, kind: str, wave: int, reason: str, details: dict[str, object]
) -> dict[str, object]:
    at = (START + timedelta(seconds=t)).isoformat()
    return {
        "id": number,
        "at": at,
        "t": t,
        "actor": "controller",
        "kind": kind,
        "wave": wave,
        "reason": reason,
        "details": details,
    }


def _timeline(
    points: int, duration_s: float, good: ReleaseResult, bad: ReleaseResult
) -> list[TimelinePoint]:
    """The fleet moving from 1.0.0 to the good version, then briefly onto the bad one,
    with devices dropping off the network now and then."""

    def progress(t: float, start: float, end: float) -> float:
        return min(max((t - start) / (end - start), 0.0), 1.0)

    assert good.ended_t is not None and bad.ended_t is not None
    assert bad.time_to_rollback_s is not None
    rng = np.random.default_rng(points)
    timeline = []
    for i in range(points):
        t = duration_s * i / max(points - 1, 1)
        on_good = round(WAVES[-1] * progress(t, good.started_t, good.ended_t))
        reached = sum(bad.devices.values())
        on_bad = round(reached * progress(t, bad.started_t, bad.ended_t)) - round(
            reached * progress(t, bad.ended_t, bad.ended_t + bad.time_to_rollback_s)
        )
        rolling = good.started_t <= t < good.ended_t or bad.started_t <= t < bad.ended_t
        rolled_back = bad.devices["rolled_back"] if t >= bad.ended_t else 0
        busy = {"DOWNLOADING": 3, "TRIAL": 2} if rolling else {}
        offline = int(rng.integers(0, 9))
        idle = DEVICES - on_good - on_bad - rolled_back - sum(busy.values()) - offline
        timeline.append(
            TimelinePoint(
                t=t,
                states={
                    "IDLE": idle,
                    **busy,
                    "COMMITTED": on_good + on_bad,
                    "ROLLED_BACK": rolled_back,
                    "OFFLINE": offline,
                },
                versions={
                    "1.0.0": DEVICES - on_good - on_bad,
                    good.version: on_good,
                    bad.version: on_bad,
                },
                rollout={"committed": on_bad} if bad.started_t <= t else {},
                release=bad.version if bad.started_t <= t < bad.ended_t else None,
            )
        )
    return timeline


def _run(
    scenario: str = "canary-catches-hot-model",
    description: str = "a good release, then one that runs hot",
    timeline_points: int = 40,
) -> RunResult:
    good = _release("1.1.0", bad=False, started_t=60.0, seed=1)
    assert good.ended_t is not None
    bad = _release("1.2.0", bad=True, started_t=good.ended_t + 60.0, seed=2)
    assert bad.time_to_detect_s is not None
    return RunResult(
        scenario=scenario,
        description=description,
        devices=DEVICES,
        server="http://127.0.0.1:8765",
        duration_s=3600.0,
        releases=[good, bad],
        checks=[
            Check("bad release aborted", True, "aborted", "aborted"),
            Check("exposed share at most", True, 0.1, bad.exposed_share),
            Check("detected within seconds", True, 1800, bad.time_to_detect_s),
        ],
        exposed_share=bad.exposed_share,
        time_to_detect_s=bad.time_to_detect_s,
        time_to_rollback_s=bad.time_to_rollback_s,
        bytes_transferred=123_456_789,
        bytes_repeated=2_345_678,
        interruptions=17,
        devices_committed=WAVES[-1],
        final_versions={"1.0.0": DEVICES - WAVES[-1], "1.1.0": WAVES[-1], "1.2.0": 0},
        requests={"ok": 90_000, "lost": 450, "offline": 300, "server_error": 0},
        timeline=_timeline(timeline_points, 3600.0, good, bad),
        run_id=RUN_ID,
    )


def _empty_run() -> RunResult:
    return RunResult(
        scenario="nothing-happens",
        description="",
        devices=0,
        server="",
        duration_s=0.0,
        releases=[],
        checks=[],
        exposed_share=0.0,
        time_to_detect_s=None,
        time_to_rollback_s=None,
        bytes_transferred=0,
        bytes_repeated=0,
        interruptions=0,
        devices_committed=0,
        final_versions={},
        requests={},
    )


def _figure(page: str, element_id: str) -> str:
    match = re.search(rf'<figure id="{element_id}">(.*?)</figure>', page, re.DOTALL)
    assert match, f"no figure {element_id}"
    return match.group(1)


def _page_of(run: RunResult) -> str:
    with tempfile.TemporaryDirectory() as directory:
        return write_html(run, Path(directory) / "r.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def run() -> RunResult:
    return _run()


def test_the_page_has_each_plot_as_inline_svg_and_no_external_assets(
    run: RunResult, tmp_path: Path
) -> None:
    target = tmp_path / "reports" / "nested" / "run.html"
    assert write_html(run, target) == target
    page = target.read_text(encoding="utf-8")
    for element_id in ("plot-progress", "plot-versions", "plot-gates-0", "plot-gates-1"):
        svg = _figure(page, element_id)
        ElementTree.fromstring(svg[svg.index("<svg") :])  # well-formed after the id prefixes
    assert page.count("<svg") == 4
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert " src=" not in page
    # Nothing to fetch: every URL is an SVG namespace name or the run's server, as text.
    for url in re.finditer(r"https?://[^\"\s<]+", page):
        assert "xmlns" in page[url.start() - 14 : url.start()] or url.group() == run.server
    # Each inlined figure's ids are its own (matplotlib numbers them per figure).
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert [p.name for p in target.parent.iterdir()] == ["run.html"]  # no temporary left


def test_the_page_shows_the_numbers_the_checks_and_the_decision_log(run: RunResult) -> None:
    page = _page_of(run)
    assert '<span class="badge passed">PASSED</span>' in page
    assert "10.00%" in page
    assert "117.7 MiB" in page and "17 interruptions" in page
    assert "60 / 200" in page
    for check in run.checks:
        assert check.name in page
    bad = run.releases[1]
    assert bad.reason in page and "abort" in page
    # The decisive gate's numbers are shown compactly, not the whole numbers dict.
    failed = bad.log[-1]["details"]["gates"][0]["numbers"]
    assert (
        f'<span class="verdict-fail">rollbacks fail: {failed["estimate"]:.4g} '
        f"[{failed['low']:.4g}, {failed['high']:.4g}], limit max 0.05</span>"
    ) in page
    assert '<span class="verdict-pass">cpu_percent pass</span>' in page
    assert '"baseline_trials"' not in page
    assert "dev-0, dev-1, dev-2, … (4 in all)" in page


def test_text_from_the_scenario_is_escaped(run: RunResult) -> None:
    bad = run.releases[1]
    looks = [replace(look, gate=f"<script>alert({look.gate})</script>") for look in bad.gate_looks]
    hostile = replace(
        run,
        scenario="<b>bold</b> & co",
        description="<script>alert(1)</script>",
        checks=[Check("<img src=x onerror=alert(2)>", False, "<i>", None)],
        releases=[
            replace(
                bad,
                version="<script>alert(3)</script>",
                reason="gate_failed:<svg onload=alert(4)>",
                gate_looks=looks,
            )
        ],
    )
    page = _page_of(hostile)
    assert "<script" not in page and "<img" not in page and "<svg onload" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert "&lt;script&gt;alert(rollbacks)&lt;/script&gt;" in _figure(page, "plot-gates-0")
    assert '<span class="badge failed">FAILED</span>' in page


def test_a_timeline_without_counts_still_plots(run: RunResult) -> None:
    blank = [TimelinePoint(t=float(t), states={}, versions={}) for t in range(5)]
    page = _page_of(replace(run, releases=[], timeline=blank))
    assert "<svg" in _figure(page, "plot-progress") and "<svg" in _figure(page, "plot-versions")


def test_a_run_with_nothing_in_it_still_gives_a_page(tmp_path: Path) -> None:
    page = write_html(_empty_run(), tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "No timeline recorded." in page and "No expectations to check." in page
    assert "<svg" not in page
    assert "time to detect</th><td>—</td>" in page


def test_a_release_without_looks_or_log_gets_no_gate_plot(run: RunResult) -> None:
    quiet = replace(run.releases[0], gate_looks=[], log=[], ended_t=None)
    page = _page_of(replace(run, releases=[quiet], timeline=run.timeline[:1]))
    assert "No gate statistics recorded." in page and "No decisions recorded." in page
    assert 'id="plot-gates-0"' not in page
    assert "<svg" in _figure(page, "plot-progress")


def test_long_timelines_are_thinned_for_plotting() -> None:
    size_2k = len(_page_of(_run(timeline_points=2000)))
    size_10k = len(_page_of(_run(timeline_points=10_000)))
    assert size_10k < 1.05 * size_2k
    assert size_2k < 600_000


@pytest.mark.parametrize(
    ("gate", "expected_threshold"),
    [
        (GateSpec(metric=Metric.ROLLBACKS, max=0.05), lambda n: 0.05),
        (GateSpec(metric=Metric.CPU, max_ratio=1.3), lambda n: 0.3 * n["baseline_mean"]),
        (GateSpec(metric=Metric.ERROR_RATE, max_increase=0.005), lambda n: 0.005),
        (GateSpec(metric=Metric.MEAN_CONFIDENCE, max_decrease=0.02), lambda n: -0.02),
    ],
)
def test_gate_thresholds_are_on_the_scale_of_the_estimate(gate, expected_threshold) -> None:
    rng = np.random.default_rng(3)
    candidate = [_device(rng, f"dev-{i}", 40.0) for i in range(30)]
    evidence = Evidence(Delivery(finished=30, rolled_back=3), candidate, _baseline(rng))
    result = evaluate(gate, evidence, 0.05, look=1)
    point = _gate_point(GateLook(10.0, 0, result.gate, result.metric, "pass", result.numbers))
    assert point is not None
    assert point.value == result.numbers["estimate"]
    assert (point.low, point.high) == (result.numbers["low"], result.numbers["high"])
    assert point.threshold == pytest.approx(expected_threshold(result.numbers))
    # The smallest detectable effect: threshold plus the band's half-width, same scale.
    if gate.limit_kind == "max":
        assert math.isnan(point.mde)
    else:
        half = (point.high - point.low) / 2
        assert point.mde == pytest.approx(
            point.threshold + (half if point.threshold >= 0 else -half)
        )


def test_count_and_class_change_gates_plot_their_own_statistic() -> None:
    rng = np.random.default_rng(4)
    candidate = [_device(rng, f"dev-{i}", 30.0) for i in range(10)]
    evidence = Evidence(Delivery(finished=10, rolled_back=2), candidate, _baseline(rng))
    for gate, key, threshold in (
        (GateSpec(metric=Metric.ROLLBACKS, max_count=1), "count", 1.0),
        (GateSpec(metric=Metric.CLASS_DISTRIBUTION, max_change=0.5), "max_change", 0.5),
    ):
        result = evaluate(gate, evidence, 0.05, look=1)
        point = _gate_point(GateLook(1.0, 0, result.gate, result.metric, "pass", result.numbers))
        assert point is not None
        assert (point.value, point.threshold) == (result.numbers[key], threshold)
        assert math.isnan(point.low) and math.isnan(point.high)


def test_a_look_without_an_estimate_is_not_plotted() -> None:
    rng = np.random.default_rng(5)
    no_baseline = Evidence(Delivery(), [_device(rng, "dev-1", 30.0)], [])
    result = evaluate(GateSpec(metric=Metric.CPU, max_ratio=1.3), no_baseline, 0.05, look=1)
    assert result.numbers["test"] == "no baseline"
    assert (
        _gate_point(GateLook(1.0, 0, result.gate, result.metric, "inconclusive", result.numbers))
        is None
    )


def test_json_round_trips_with_the_headline_keys_and_no_nan(run: RunResult) -> None:
    looks = [
        *run.releases[1].gate_looks,
        GateLook(9.0, 0, "cpu", "cpu_percent", "inconclusive", {"estimate": math.nan}),
    ]
    odd = replace(
        run,
        exposed_share=math.nan,
        time_to_rollback_s=math.inf,
        releases=[replace(run.releases[1], gate_looks=looks)],
    )
    text = to_json(odd)
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    for key in (
        "passed",
        "exposed_share",
        "time_to_detect_s",
        "time_to_rollback_s",
        "bytes_transferred",
        "devices_committed",
        "scenario",
    ):
        assert key in data
    assert data["exposed_share"] is None and data["time_to_rollback_s"] is None
    assert data["releases"][0]["gate_looks"][-1]["numbers"]["estimate"] is None
    assert data["passed"] is True and data["scenario"] == "canary-catches-hot-model"
    assert data["time_to_detect_s"] == pytest.approx(run.time_to_detect_s)


def test_json_floats_are_tidy() -> None:
    data = json.loads(to_json(replace(_empty_run(), duration_s=0.1 + 0.2)))
    assert data["duration_s"] == 0.3


def test_summary_shows_the_verdict_numbers_releases_and_checks(run: RunResult) -> None:
    console = Console(record=True, width=120)
    render_summary(run, console)
    text = console.export_text()
    assert "PASSED" in text and "canary-catches-hot-model" in text
    assert "117.7 MiB (2.2 MiB repeated, 17 interruptions)" in text
    assert "60 / 200" in text
    assert "Release 1.1.0" in text and "Release 1.2.0" in text
    assert run.releases[1].reason in text and "rev2" in text
    for check in run.checks:
        assert check.name in text
    assert text.count("✓") == 3


def test_summary_of_a_failed_run_with_no_data() -> None:
    failed = replace(
        _empty_run(),
        scenario="[bold]literal[/bold]",
        checks=[Check("rollback within [s]", False, 600, None)],
    )
    console = Console(record=True, width=120)
    render_summary(failed, console)
    text = console.export_text()
    assert "FAILED" in text and "✗" in text
    assert "[bold]literal[/bold]" in text and "rollback within [s]" in text
    assert "time to detect" in text and "—" in text


def _summary(run: RunResult, **options: bool) -> str:
    console = Console(record=True, width=200)
    render_summary(run, console, **options)
    return console.export_text()


def _row(text: str, label: str) -> str:
    """The value of a two-column table row of the terminal summary."""
    match = re.search(rf"│ {re.escape(label)} +│ (.*?) +│", text)
    assert match, f"no row {label!r}"
    return match.group(1)


def test_commits_are_counted_per_release_and_agree_with_the_fleet_at_the_end(
    run: RunResult,
) -> None:
    text = _summary(run)
    # No run-wide count that silently means "of the last release".
    assert "devices committed" not in text.split("Release ")[0]
    serving = _row(text, "serving at the end (of 200)")
    for release in run.releases:
        committed = _row(text, f"committed to {release.version} at the end of the run")
        assert committed == f"{release.committed} / {DEVICES}"
        on_it = run.final_versions.get(release.version, 0)
        assert release.committed <= on_it
        assert (f"{release.version} {on_it}" in serving) == bool(on_it)
    page = _page_of(run)
    assert "<th>committed to 1.1.0 at the end of the run</th><td>60 / 200</td>" in page
    assert "<th>committed to 1.2.0 at the end of the run</th><td>0 / 200</td>" in page


def test_the_story_is_told_once(run: RunResult) -> None:
    assert _summary(run).count(run.description) == 1
    # A caller that told the story before the run leaves it out of the summary.
    assert run.description not in _summary(run, description=False)
    assert _page_of(run).count(run.description) == 1


def test_terms_are_explained_under_the_table_where_they_first_appear(run: RunResult) -> None:
    text = _summary(run)
    run_part, first_release, second_release = re.split(r"\nRelease ", text)[:3]
    assert "lost: dropped by the simulated network" in run_part
    assert "offline: not sent" in run_part
    assert "server_error" not in run_part  # none happened: nothing to explain
    assert f"target: the rollout's targeting query. sim_run:{RUN_ID} selects" in first_release
    assert "reverted: sent back to its previous version" in first_release
    assert "target:" not in second_release  # explained once
    page = _page_of(run)
    summary = page[page.index('id="summary"') : page.index('id="checks"')]
    assert "<dt>lost</dt><dd>dropped by the simulated network" in summary
    release = page[page.index('id="release-0"') : page.index('id="release-1"')]
    assert "<dt>target</dt>" in release and f"sim_run:{RUN_ID}" in release


def test_every_time_is_on_the_run_clock(run: RunResult) -> None:
    good = run.releases[0]
    assert good.ended_t is not None
    text = _summary(run)
    assert "Run (t: seconds since the run started)" in text
    assert f"t = {good.started_t:.1f} s → t = {good.ended_t:.1f} s" in text
    console = Console(record=True, width=200)
    console.print(decision_log_table(good))
    log = console.export_text()
    for entry in good.log:
        if entry["kind"] != "assign":
            assert f"t = {entry['t']:.1f} s" in log
    assert str(START.hour).zfill(2) + ":" not in log  # no wall clock beside t
    page = _page_of(run)
    assert "since the first decision" not in page
    first = good.log[0]
    clock = START + timedelta(seconds=float(first["t"]))
    assert f'<td title="server clock: {clock:%Y-%m-%d %H:%M:%S %Z}">t = {first["t"]:.1f} s' in page
    assert "t (min since the run started)" in _figure(page, "plot-gates-0")  # an hour-long run


def test_a_decision_that_moves_on_shows_both_waves() -> None:
    assert decision_wave({"kind": "advance", "wave": 1}) == "1 → 2"
    assert decision_wave({"kind": "await_approval", "wave": 2}) == "2 → 3"
    assert decision_wave({"kind": "bake", "wave": 1}) == "2"
    assert decision_wave({"kind": "abort", "wave": 0}) == "1"
    assert decision_wave({"kind": "create"}) == "—"


def test_the_gate_charts_have_a_legend_once_under_the_first(run: RunResult) -> None:
    page = _page_of(run)
    assert page.count('id="gate-legend"') == 1
    legend = page[page.index('id="gate-legend"') :]
    assert page.index('id="plot-gates-0"') < page.index('id="gate-legend"')
    assert page.index('id="gate-legend"') < page.index('id="plot-gates-1"')
    for words in (
        "95% <i>always-valid confidence sequence</i>",
        "the candidate minus the baseline",
        "<b>Fail</b> only when the <i>whole</i> band is past the threshold",
        "<i>even when the band still reaches past it</i>",
        "<code>analysis_timeout_s</code>",
        "<b>Dotted orange line</b>: the smallest detectable effect",
    ):
        assert words in legend
    assert "95% confidence band" in _figure(page, "plot-gates-0")


def test_a_pass_with_its_band_past_the_threshold_is_said_in_words(run: RunResult) -> None:
    # The good release's first wave: 4 devices, none rolled back: a pass on the
    # estimate while the band still reaches far past 0.05.
    first = [
        look for look in run.releases[0].gate_looks if look.gate == "rollbacks" and look.wave == 0
    ][-1]
    assert first.verdict == "pass" and first.numbers["high"] > 0.05
    page = _page_of(run)
    release = page[page.index('id="release-0"') : page.index('id="release-1"')]
    assert (
        "<b>rollbacks</b> passed with its band still past the threshold (0.05) in wave 1: "
        f"up to {first.numbers['high']:.4g} (0 of 4 finished devices)"
    ) in release

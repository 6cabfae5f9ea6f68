"""Drift summary periods on the device: the reservoirs, when a period closes, and what
the telemetry of a closed period carries (issue #19 part 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from edgefleet.drift.sketch import QuantileSummary
from edgefleet.fleet.domain import ModelMetrics as TelemetryModelMetrics
from edgefleet.registry.profile import ReferenceProfile, compute_profile
from edgefleet.runtime import metrics as runtime_metrics
from edgefleet.runtime.metrics import (
    CONFIDENCE,
    CONFIDENCE_ROWS,
    ModelIdentity,
    ModelMetrics,
    ModelStats,
    Reservoir,
    Uniforms,
    period_end,
)
from edgefleet.runtime.runtime import ModelRuntime

HOUR = 3600.0
#: A time on the hour (epoch seconds), so periods here close at START + k hours.
START = 1_767_225_600.0
IDENTITY = ModelIdentity("tabular", "1.0.0")


class Clock:
    """Epoch time that moves only when told."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tabular_profile(features: int = 5, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    return compute_profile(
        {"X": rng.standard_normal((500, features))},
        probabilities=rng.dirichlet(np.ones(3), 500),
    )


def recorder(clock: Clock, **kwargs) -> ModelMetrics:
    kwargs.setdefault("profile", tabular_profile())
    kwargs.setdefault("rng", np.random.default_rng(7))
    return ModelMetrics(IDENTITY, probabilities="p", clock=clock, **kwargs)


def observe(metrics: ModelMetrics, x: np.ndarray, confidence: float = 0.8) -> None:
    """One request of ``len(x)`` samples whose top-1 confidence is ``confidence``."""
    rest = (1 - confidence) / 2
    probs = np.tile([confidence, rest, rest], (len(x), 1))
    metrics.observe({"X": x}, {"p": probs}, latency_ms=0.5)


# -- the reservoir ----------------------------------------------------------------------


def test_the_reservoir_keeps_every_row_with_the_same_probability():
    """Algorithm R: after 100 rows, each is in a 10-row reservoir with probability 1/10,
    whether rows come one at a time or in batches (a chi-square test at a fixed seed)."""
    uniforms = Uniforms(np.random.default_rng(2024))
    stream = np.arange(100, dtype=np.float64)[:, None]
    kept_one, kept_batches = np.zeros(100), np.zeros(100)
    runs = 3000
    for _ in range(runs):
        one = Reservoir(10, 1, uniforms)
        for value in stream[:, 0].tolist():
            one.offer_one(value)
        batches = Reservoir(10, 1, uniforms)
        for chunk in np.split(stream, [3, 7, 30, 31, 64]):
            batches.offer(chunk)
        for counts, reservoir in ((kept_one, one), (kept_batches, batches)):
            sample = reservoir.sample()[:, 0].astype(int)
            assert len(set(sample.tolist())) == 10  # ten distinct rows, none twice
            counts[sample] += 1
    for counts in (kept_one, kept_batches):
        expected = runs * 10 / 100
        assert scipy_stats.chisquare(counts, np.full(100, expected)).pvalue > 1e-3
        # A row offered last is as likely to be kept as one offered first.
        assert abs(counts[:50].sum() - counts[50:].sum()) < 0.05 * runs * 10


def test_the_reservoir_holds_all_rows_until_full_and_no_more_after():
    reservoir = Reservoir(4, 2, Uniforms(np.random.default_rng(0)))
    assert reservoir.sample().shape == (0, 2)
    rows = np.arange(6.0).reshape(3, 2)
    reservoir.offer(rows)
    np.testing.assert_array_equal(reservoir.sample(), rows)
    reservoir.offer(np.arange(2000.0).reshape(1000, 2) + 100)
    assert reservoir.seen == 1003
    assert reservoir.sample().shape == (4, 2)
    # Rows stay whole: each kept row is a row that was offered.
    for a, b in reservoir.sample().tolist():
        assert b == a + 1 and a % 2 == 0
    with pytest.raises(ValueError, match="capacity >= 0 and width >= 1"):
        Reservoir(-1, 2, Uniforms(np.random.default_rng(0)))


# -- periods ----------------------------------------------------------------------------


def test_periods_end_on_multiples_of_their_length():
    assert period_end(START, HOUR) == START + HOUR
    assert period_end(START + 1, HOUR) == START + HOUR
    assert period_end(START + HOUR - 0.001, HOUR) == START + HOUR
    assert period_end(START + 10, 600) == START + 600
    with pytest.raises(ValueError, match="drift_period_s must be a positive"):
        ModelMetrics(IDENTITY, drift_period_s=0)
    with pytest.raises(ValueError, match="sketch_rows must be 0 or more"):
        ModelMetrics(IDENTITY, sketch_rows=-1)


def test_a_period_closes_at_the_first_report_after_its_end_and_carries_its_summary():
    clock = Clock(START + 100)
    metrics = recorder(clock, feature_every=1)
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((10, 5))
    for row in rows:
        observe(metrics, row[None, :])
        clock.now += 60
    clock.now = START + 1800
    halfway = metrics.snapshot(reset=True)
    assert halfway.requests == 10
    assert halfway.period_end is None and not halfway.sketches and not halfway.feature_counts
    more = rng.standard_normal((5, 5))
    observe(metrics, more, confidence=0.6)  # a batch of five
    clock.now = START + HOUR + 20  # the first report after the hour
    closed = metrics.snapshot(reset=True)
    assert closed.requests == 1
    assert (closed.period_start, closed.period_end) == (START + 100, START + HOUR + 20)
    assert closed.sketch_rows == 15
    data = np.vstack([rows, more])
    for f in range(5):
        summary = closed.sketches[f"X[{f}]"]
        assert summary.n == 15  # under k values: the summary is exact (as float32)
        column = np.sort(data[:, f].astype(np.float32).astype(np.float64))
        assert (summary.min, summary.max) == (column[0], column[-1])
        np.testing.assert_allclose(summary.cdf(column), np.arange(1, 16) / 15)
        assert sum(closed.feature_counts[f"X[{f}]"]) == 15
    confidence = closed.sketches[CONFIDENCE]
    assert confidence.n == 15
    assert confidence.cdf(np.array([0.7]))[0] == pytest.approx(5 / 15)
    # The next period starts where this one ended and is empty so far.
    clock.now += 30
    after = metrics.snapshot(reset=True)
    assert after.period_end is None and not after.feature_counts


def test_the_reservoirs_stay_bounded_however_busy_the_period():
    clock = Clock()
    metrics = recorder(clock, feature_every=4, sketch_rows=24)
    rng = np.random.default_rng(3)
    for _ in range(500):
        observe(metrics, rng.standard_normal((4, 5)), confidence=float(rng.uniform(0.4, 1)))
    clock.now += HOUR
    closed = metrics.snapshot(reset=True)
    assert closed.sketch_rows == 24
    assert {s.n for name, s in closed.sketches.items() if name != CONFIDENCE} == {24}
    assert closed.sketches[CONFIDENCE].n == CONFIDENCE_ROWS
    # the bins count every sampled row (125 requests of 4), not just the reservoir's
    assert {sum(c) for c in closed.feature_counts.values()} == {500}


def test_a_peek_shows_the_open_periods_bins_and_closes_nothing():
    clock = Clock()
    metrics = recorder(clock, feature_every=1)
    observe(metrics, np.zeros((1, 5)))
    clock.now += 2 * HOUR
    peek = metrics.snapshot()
    assert {sum(c) for c in peek.feature_counts.values()} == {1}
    assert peek.period_end is None and not peek.sketches
    closed = metrics.snapshot(reset=True)  # the period the peek saw is still open
    assert {sum(c) for c in closed.feature_counts.values()} == {1}
    assert closed.period_end == START + 2 * HOUR


def test_a_quiet_period_sends_nothing_and_sketch_rows_zero_sends_bins_and_confidence():
    clock = Clock()
    quiet = recorder(clock)
    clock.now += HOUR
    nothing = quiet.snapshot(reset=True)
    assert nothing.period_end is None and not nothing.feature_counts
    no_rows = recorder(clock, feature_every=1, sketch_rows=0)
    observe(no_rows, np.ones((2, 5)))
    clock.now += HOUR
    closed = no_rows.snapshot(reset=True)
    assert set(closed.sketches) == {CONFIDENCE} and closed.sketch_rows == 0
    assert len(closed.feature_counts) == 5


def test_image_inputs_are_summarised_on_their_per_sample_statistics():
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (200, 1, 4, 4))
    profile = compute_profile({"img": images})
    clock = Clock()
    metrics = ModelMetrics(
        IDENTITY, profile=profile, feature_every=1, clock=clock, rng=np.random.default_rng(0)
    )
    batch = images[:6] * 0.5
    metrics.observe({"img": batch}, {}, latency_ms=1.0)
    clock.now += HOUR
    closed = metrics.snapshot(reset=True)
    assert set(closed.sketches) == {"img:mean", "img:contrast"}  # no probabilities output
    flat = batch.reshape(6, -1)
    assert closed.sketches["img:mean"].max == pytest.approx(flat.mean(axis=1).max(), rel=1e-6)
    assert closed.sketches["img:contrast"].min == pytest.approx(flat.std(axis=1).min(), rel=1e-6)


def test_without_the_sketch_package_a_period_carries_its_bins_only(monkeypatch):
    monkeypatch.setattr(runtime_metrics, "HAVE_KLL", False)
    clock = Clock()
    metrics = recorder(clock, feature_every=1)
    observe(metrics, np.ones((3, 5)))
    clock.now += HOUR
    closed = metrics.snapshot(reset=True)
    assert not closed.sketches and closed.sketch_rows == 0
    assert {sum(c) for c in closed.feature_counts.values()} == {3}
    assert closed.period_end == START + HOUR


def test_stats_of_two_periods_merge_and_round_trip_through_a_dict():
    clock = Clock()
    parts = []
    for seed in (1, 2):
        metrics = recorder(clock, feature_every=1, rng=np.random.default_rng(seed))
        observe(metrics, np.random.default_rng(seed).standard_normal((3, 5)))
        clock.now += HOUR
        parts.append(metrics.snapshot(reset=True))
    total = ModelStats.merge_all(parts)
    assert total.sketch_rows == 6
    assert (total.period_start, total.period_end) == (START, START + 2 * HOUR)
    assert total.sketches["X[0]"].n == 6
    again = ModelStats.from_dict(total.to_dict())
    assert again.sketch_rows == 6 and again.period_end == START + 2 * HOUR
    assert again.sketches["X[2]"].to_text() == total.sketches["X[2]"].to_text()
    # Progress saved before summaries existed still reads.
    old = total.to_dict()
    for key in ("feature_counts", "sketches", "sketch_rows", "period_start", "period_end"):
        del old[key]
    assert ModelStats.from_dict(old).period_end is None


# -- the runtime's telemetry --------------------------------------------------------------


def _entries(runtime: ModelRuntime) -> dict[str, dict]:
    return {entry["version"]: entry for entry in runtime.telemetry(reset=True)}


def test_telemetry_carries_a_period_once_in_the_sample_that_closes_it(digits):
    path, identity, golden = digits("1.1.0")
    reference = golden.inputs["X"]
    profile = compute_profile(
        {"X": reference}, probabilities=np.eye(10)[np.arange(len(reference)) % 10]
    )
    clock = Clock(START + 5)
    runtime = ModelRuntime(feature_every=1, clock=clock)
    runtime.load(path, identity, profile=profile)
    for row in reference:
        runtime.predict({"X": row[None, :]})
    clock.now += 30
    first = _entries(runtime)["1.1.0"]
    assert not {"feature_counts", "sketches", "period_start"} & set(first)
    clock.now = START + HOUR + 10
    runtime.predict(reference[:2])
    closing = _entries(runtime)["1.1.0"]
    TelemetryModelMetrics.model_validate(closing)  # the device API takes it as it is
    rows = len(reference) + 2
    assert closing["sketch_rows"] == min(rows, 24)
    assert (closing["period_start"], closing["period_end"]) == (START + 5, START + HOUR + 10)
    assert len(closing["sketches"]) == 64 + 1
    assert QuantileSummary.from_text(closing["sketches"][CONFIDENCE]).n == rows
    assert {sum(c) for c in closing["feature_counts"].values()} == {rows}
    clock.now += 30
    assert "sketches" not in _entries(runtime)["1.1.0"]


def test_a_swapped_out_model_reports_its_partial_period_at_the_next_report(digits):
    old_path, old_id, golden = digits("1.0.0")
    new_path, new_id, _ = digits("1.1.0")
    profile = compute_profile({"X": golden.inputs["X"]})
    clock = Clock(START + 60)
    runtime = ModelRuntime(feature_every=1, clock=clock)
    runtime.load(old_path, old_id, profile=profile)
    runtime.predict(golden.inputs)
    clock.now += 600
    runtime.load(new_path, new_id, profile=profile)
    runtime.predict(golden.inputs)
    clock.now += 30  # mid-period: only the retired model's period closes
    entries = _entries(runtime)
    retired, active = entries["1.0.0"], entries["1.1.0"]
    assert (retired["period_start"], retired["period_end"]) == (START + 60, START + 690)
    assert retired["sketch_rows"] == min(len(golden.inputs["X"]), 24)
    assert "sketches" not in active and "feature_counts" not in active
    clock.now += 30
    assert set(_entries(runtime)) == {"1.1.0", "1.0.0"}  # reported once more, at zero
    assert set(_entries(runtime)) == {"1.1.0"}  # then forgotten


def test_the_agent_configs_drift_settings_reach_its_runtime(tmp_path: Path):
    from edgefleet.agent.config import AgentConfig
    from edgefleet.agent.shell import Agent

    config = AgentConfig(
        server="http://127.0.0.1:9",
        device_id="cam-1",
        state_dir=tmp_path,
        drift_period_s=900,
        sketch_rows=48,
    )
    agent = Agent(config)
    assert (agent.runtime.drift_period_s, agent.runtime.sketch_rows) == (900, 48)
    defaults = AgentConfig(server="http://x", device_id="cam-1", state_dir=tmp_path)
    assert (defaults.drift_period_s, defaults.sketch_rows) == (3600, 24)
    with pytest.raises(ValueError, match="sketch_rows"):
        AgentConfig(server="http://x", device_id="c", state_dir=tmp_path, sketch_rows=-1)

"""A virtual device's drift summaries: the device runtime's recorder fed with the rows
the runtime would sample, sent once per period in the device API's shape (pure: no
server; a fixed linear classifier stands in for the model, a hand-moved clock for time)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.drift.sketch import HAVE_KLL, QuantileSummary
from edgefleet.fleet.domain import ModelMetrics
from edgefleet.registry.profile import compute_profile
from edgefleet.sim.drift import PERIOD_FIELDS, DeviceSummaries, DriftInputError, DriftInputs
from edgefleet.sim.scenario import Drift
from tests.sim.drifting import KEY, LinearModel, held_out


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def setup(period_s: float = 20.0, start: float = 1000.0):
    held = held_out()
    model = LinearModel()
    profile = compute_profile(
        {"X": held.inputs}, probabilities=model(KEY, held.inputs), class_count=4
    )
    inputs = DriftInputs([Drift(transform="brightness", intensity=0.25)], held, model)
    clock = Clock(start)
    summaries = DeviceSummaries({"1.1.0": profile}, period_s=period_s, seed=3, clock=clock)
    return inputs, summaries, clock


def test_nothing_is_sent_until_the_period_closes_then_its_summary_once():
    inputs, summaries, clock = setup()
    pool = inputs.pool(KEY, (0,))
    rng = np.random.default_rng(0)
    for _ in range(10):
        summaries.observe("digits", "1.1.0", pool, pool.draw(100, rng))
        assert summaries.closed("digits", "1.1.0") == {}
    clock.now = 1020.0  # periods end on multiples of 20 s
    fields = summaries.closed("digits", "1.1.0")
    assert set(fields) <= set(PERIOD_FIELDS)
    assert fields["period_start"] == 1000.0 and fields["period_end"] == 1020.0
    # The runtime samples features of every 8th request: 1,000 requests, 125 rows.
    histograms = fields["feature_counts"]
    assert len(histograms) == 16 and all(sum(c) == 125 for c in histograms.values())
    if HAVE_KLL:
        assert set(fields["sketches"]) == {*histograms, "confidence"}
        assert fields["sketch_rows"] == 24
        assert QuantileSummary.from_text(fields["sketches"]["X[5]"]).n == 24
    # What a device sends is what the server accepts.
    ModelMetrics.model_validate({"model": "digits", "version": "1.1.0", **fields})
    assert summaries.closed("digits", "1.1.0") == {}  # sent once
    assert summaries.periods == 1


def test_the_sampled_requests_are_counted_across_intervals():
    inputs, summaries, clock = setup()
    pool = inputs.pool(KEY, (0,))
    rng = np.random.default_rng(1)
    for size in (3, 5, 7, 1, 12):  # 28 requests: numbers 1, 9, 17, 25 are sampled
        summaries.observe("digits", "1.1.0", pool, pool.draw(size, rng))
    clock.now = 1040.0
    histograms = summaries.closed("digits", "1.1.0")["feature_counts"]
    assert {sum(c) for c in histograms.values()} == {4}


def test_the_summary_moves_with_the_drift_level():
    inputs, summaries, clock = setup()
    rng = np.random.default_rng(2)
    for level in (0, 10):
        pool = inputs.pool(KEY, (level,))
        summaries.observe("digits", "1.1.0", pool, pool.draw(4000, rng))
        clock.now += 20.0
        fields = summaries.closed("digits", "1.1.0")
        histogram = np.asarray(fields["feature_counts"]["X[10]"])
        # A quarter of the range (4) brighter: nothing is left in the reference's two
        # lowest bins (values below about 3.2, a fifth of them at level 0).
        low = histogram[:2].sum() / histogram.sum()
        if level == 0:
            assert 0.12 < low < 0.28
        else:
            assert low == 0.0


def test_a_version_no_longer_served_is_sent_at_once():
    inputs, summaries, _ = setup()
    pool = inputs.pool(KEY, (0,))
    summaries.observe("digits", "1.1.0", pool, pool.draw(80, np.random.default_rng(3)))
    assert summaries.serving() == [("digits", "1.1.0")]
    fields = summaries.closed("digits", "1.1.0", flush=True)
    assert fields["period_end"] >= fields["period_start"] == 1000.0
    assert summaries.serving() == []


def test_a_version_without_a_profile_cannot_be_summarised():
    inputs, summaries, _ = setup()
    pool = inputs.pool(KEY, (0,))
    with pytest.raises(DriftInputError, match=r"no reference profile of digits 1\.2\.0"):
        summaries.observe("digits", "1.2.0", pool, pool.draw(8, np.random.default_rng(4)))

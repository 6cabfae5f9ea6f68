"""KS and Wasserstein against a reference profile from its quantile summaries (issue #19):
exact against scipy on the raw rows when both sides have summaries, from the bins
(flagged) when either side has none, never from a summary that does not decode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats as scipy_stats

import edgefleet.drift.scoring as scoring
from edgefleet.drift.monitor import load_monitor
from edgefleet.drift.ports import DriftBucket
from edgefleet.drift.scoring import (
    REFERENCE_SKETCH_INVALID,
    Layout,
    Rules,
    Scored,
    WindowAccumulator,
    profile_features,
    profile_reference,
    score,
)
from edgefleet.drift.segments import Segment
from edgefleet.drift.sketch import HAVE_KLL, QuantileSummary
from edgefleet.registry.profile import ReferenceProfile, bin_counts, compute_profile

pytestmark = pytest.mark.skipif(not HAVE_KLL, reason="datasketches is not installed")

START = datetime(2026, 12, 7, tzinfo=UTC)
END = START + timedelta(hours=1)
ALL = Segment("all", None, None)
FEATURES = ("x[0]", "x[1]", "confidence")
SHIFT = 0.5  # reference standard deviations, planted on x[0] only


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sample(rows: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Rows of the two features and the model's top-1 confidence on them, as float32
    (what a summary holds), so the raw values and the summaries' values are the same."""
    x = rng.normal(size=(rows, 2))
    x[:, 0] += shift
    probs = softmax(np.stack([x[:, 0], -x[:, 0], 0.5 * x[:, 1]], axis=1))
    return {
        "x[0]": x[:, 0].astype(np.float32),
        "x[1]": x[:, 1].astype(np.float32),
        "confidence": probs.max(axis=1).astype(np.float32),
        "probabilities": probs,
    }


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return sample(540, np.random.default_rng(11))


@pytest.fixture(scope="module")
def profile(reference: Mapping[str, np.ndarray]) -> ReferenceProfile:
    x = np.stack([reference["x[0]"], reference["x[1]"]], axis=1)
    return compute_profile({"x": x}, probabilities=reference["probabilities"])


@pytest.fixture(scope="module")
def devices() -> list[dict[str, np.ndarray]]:
    """Six devices' rows of the window, x[0] shifted."""
    rng = np.random.default_rng(12)
    return [sample(150, rng, shift=SHIFT) for _ in range(6)]


def window(
    layout: Layout,
    profile: ReferenceProfile,
    devices: Sequence[Mapping[str, np.ndarray]],
    *,
    summaries: bool = True,
    segments: Sequence[Sequence[int]] | None = None,
) -> scoring.WindowData:
    """The devices' summary periods (bins of the profile's edges, summaries of every
    row) and confidence histograms, folded as the service folds them."""
    edges = {f.name: f.edges for p in profile.inputs for f in p.features}
    edges["confidence"] = profile.confidence_edges
    count = 1 if segments is None else 1 + max(max(s) for s in segments)
    accumulator = WindowAccumulator(layout, count, START, END, summaries=summaries)
    for pk, rows in enumerate(devices):
        period = {
            "feature_counts": {
                name: list(bin_counts(rows[name], edges[name])) for name in FEATURES[:2]
            },
            "sketches": {name: QuantileSummary.of(rows[name]).to_text() for name in FEATURES},
            "sketch_rows": len(rows["x[0]"]),
            "period_start": START.timestamp(),
            "period_end": END.timestamp(),
        }
        bucket = {"confidence_counts": list(bin_counts(rows["confidence"], edges["confidence"]))}
        accumulator.add_device(
            (0,) if segments is None else segments[pk],
            [DriftBucket(pk, END, "1.0.0", period), DriftBucket(pk, START, "1.0.0", bucket)],
        )
    return accumulator.finish()


def scored_against_profile(
    profile: ReferenceProfile,
    devices: Sequence[Mapping[str, np.ndarray]],
    *,
    summaries: bool = True,
    segments: Sequence[Segment] = (ALL,),
    members: Sequence[Sequence[int]] | None = None,
) -> Scored:
    monitor = load_monitor({"model": "digits", "outputs": ["confidence"]})
    layout = Layout.of(profile_features(profile, monitor))
    current = window(layout, profile, devices, summaries=summaries, segments=members)
    return score(layout, segments, current, profile_reference(layout), Rules.of(monitor))


def by_key(scored: Scored) -> dict[tuple[str, str, str], dict]:
    return {(s["segment"], s["feature"], s["statistic"]): s for s in scored.scores}


def test_against_a_profile_with_summaries_ks_and_wasserstein_are_scipy_s_on_the_raw_rows(
    reference, profile, devices
):
    scores = by_key(scored_against_profile(profile, devices))
    for name in FEATURES:
        ref = reference[name].astype(np.float64)
        cur = np.concatenate([d[name] for d in devices]).astype(np.float64)
        ks = scores[("all", name, "ks")]
        wasserstein = scores[("all", name, "wasserstein")]
        assert ks["approximate"] is None and wasserstein["approximate"] is None
        # Both sides hold every value (fewer than k): within float rounding of scipy.
        assert ks["value"] == pytest.approx(scipy_stats.ks_2samp(ref, cur).statistic, abs=1e-9)
        expected = scipy_stats.wasserstein_distance(ref, cur) / ref.std()
        assert wasserstein["value"] == pytest.approx(expected, rel=1e-6)
    # The planted shift is what the numbers show: half a standard deviation on x[0].
    assert scores[("all", "x[0]", "wasserstein")]["value"] == pytest.approx(SHIFT, abs=0.1)
    assert scores[("all", "x[1]", "wasserstein")]["value"] < 0.2


def test_the_bins_underestimate_what_the_summaries_measure(profile, devices):
    """Why the summaries are worth their size: on the same window, KS from the profile's
    bins is a lower bound of the summaries' exact KS."""
    exact = by_key(scored_against_profile(profile, devices))
    binned = by_key(scored_against_profile(profile.model_copy(update={"sketches": {}}), devices))
    for name in FEATURES:
        assert binned[("all", name, "ks")]["approximate"] == "bins"
        assert binned[("all", name, "ks")]["value"] <= exact[("all", name, "ks")]["value"] + 1e-9


def test_a_profile_without_summaries_is_scored_from_its_bins_flagged(profile, devices):
    old = profile.model_copy(update={"sketches": {}})
    monitor = load_monitor({"model": "digits", "outputs": ["confidence"]})
    assert not Layout.of(profile_features(old, monitor)).has_summaries
    assert Layout.of(profile_features(profile, monitor)).has_summaries
    scores = scored_against_profile(old, devices).scores
    flagged = {s["approximate"] for s in scores if s["statistic"] in ("ks", "wasserstein")}
    assert flagged == {"bins"}


def test_a_window_without_summaries_is_scored_from_the_bins_flagged(profile, devices):
    scores = scored_against_profile(profile, devices, summaries=False).scores
    flagged = {s["approximate"] for s in scores if s["statistic"] in ("ks", "wasserstein")}
    assert flagged == {"bins"}


def test_a_reference_summary_that_does_not_decode_is_skipped_and_counted(profile, devices):
    broken = profile.model_copy(update={"sketches": {**profile.sketches, "x[1]": "RUZRAQ=="}})
    scored = scored_against_profile(broken, devices)
    scores = by_key(scored)
    assert scored.skipped[REFERENCE_SKETCH_INVALID] == 1
    assert scores[("all", "x[1]", "ks")]["approximate"] == "bins"
    assert scores[("all", "x[0]", "ks")]["approximate"] is None
    assert scores[("all", "confidence", "ks")]["approximate"] is None


def test_without_datasketches_the_profile_s_summaries_are_not_read(profile, monkeypatch):
    monitor = load_monitor({"model": "digits"})
    layout = Layout.of(profile_features(profile, monitor))
    monkeypatch.setattr(scoring, "HAVE_KLL", False)
    assert not layout.has_summaries
    reference = profile_reference(layout)
    assert reference.shared_sketches == {} and reference.skipped == {}


def test_the_profile_s_summaries_serve_every_segment(reference, profile, devices):
    north, south = Segment("site=north", "site", "north"), Segment("site=south", "site", "south")
    # Devices 0-2 in the north, 3-5 in the south; all of them fleet-wide.
    members = [(0, 1)] * 3 + [(0, 2)] * 3
    scores = by_key(
        scored_against_profile(profile, devices, segments=(ALL, north, south), members=members)
    )
    ref = reference["x[0]"].astype(np.float64)
    for segment, inside in ((north, devices[:3]), (south, devices[3:])):
        cur = np.concatenate([d["x[0]"] for d in inside]).astype(np.float64)
        ks = scores[(segment.name, "x[0]", "ks")]
        assert ks["approximate"] is None
        assert ks["value"] == pytest.approx(scipy_stats.ks_2samp(ref, cur).statistic, abs=1e-9)

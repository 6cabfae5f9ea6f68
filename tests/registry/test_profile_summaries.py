"""Reference profiles keep quantile summaries of the reference sample (issue #19): exact
for a sample smaller than the server's k, named as telemetry names them, optional."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

import edgefleet.registry.profile as profile_module
from edgefleet.drift.errors import SummaryError
from edgefleet.drift.sketch import HAVE_KLL, SERVER_K, QuantileSummary
from edgefleet.registry.profile import (
    CONFIDENCE_SKETCH,
    ReferenceProfile,
    compute_profile,
    per_sample_image_stats,
)

needs_kll = pytest.mark.skipif(not HAVE_KLL, reason="datasketches is not installed")


def _tabular(rows: int = 300, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    x[:, 2] = np.round(x[:, 2])  # repeated values, as pixel intensities have
    logits = rng.normal(size=(rows, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return x, probs


@needs_kll
def test_every_feature_and_the_confidence_get_an_exact_summary() -> None:
    x, probs = _tabular()
    profile = compute_profile({"x": x}, probabilities=probs, bins=5)
    assert set(profile.sketches) == {"x[0]", "x[1]", "x[2]", CONFIDENCE_SKETCH}
    for index in range(3):
        summary = profile.reference_summary(f"x[{index}]")
        assert summary is not None
        assert summary.k == SERVER_K and summary.n == 300
        # Fewer values than k: every value is kept, so the CDF is the sample's own.
        values = x[:, index].astype(np.float64)
        points = np.unique(values)
        expected = np.searchsorted(np.sort(values), points, side="right") / values.size
        assert np.array_equal(summary.cdf(points), expected)
        assert (summary.min, summary.max) == (values.min(), values.max())
    confidence = profile.reference_summary(CONFIDENCE_SKETCH)
    assert confidence is not None and confidence.n == 300
    top = probs.max(axis=1).astype(np.float32).astype(np.float64)
    assert np.array_equal(confidence.support(), np.unique(top))


@needs_kll
def test_image_inputs_summarise_their_per_sample_statistics() -> None:
    rng = np.random.default_rng(5)
    images = rng.random((40, 1, 6, 6))
    profile = compute_profile({"image": images}, labels=np.arange(40) % 3, bins=4)
    # Labels only: no confidence, so no confidence summary.
    assert set(profile.sketches) == {"image:mean", "image:contrast"}
    stats = per_sample_image_stats(images)
    for stat in ("mean", "contrast"):
        summary = profile.reference_summary(f"image:{stat}")
        assert summary is not None
        expected = np.unique(stats[stat].astype(np.float32).astype(np.float64))
        assert np.array_equal(summary.support(), expected)


@needs_kll
def test_the_profile_round_trips_through_json_with_its_summaries() -> None:
    x, probs = _tabular(rows=50)
    profile = compute_profile({"x": x}, probabilities=probs, bins=4)
    again = ReferenceProfile.model_validate_json(profile.model_dump_json())
    assert again == profile
    summary = again.reference_summary("x[1]")
    assert summary is not None and summary.to_text() == profile.sketches["x[1]"]


def test_summaries_can_be_left_out_and_are_without_datasketches(monkeypatch) -> None:
    x, probs = _tabular(rows=50)
    full = compute_profile({"x": x}, probabilities=probs)
    assert compute_profile({"x": x}, probabilities=probs, summaries=False).sketches == {}
    monkeypatch.setattr(profile_module, "HAVE_KLL", False)
    profile = compute_profile({"x": x}, probabilities=probs)
    assert profile.sketches == {}
    assert profile.reference_summary("x[0]") is None
    # The bins and counts do not depend on whether summaries were built.
    assert profile == full.model_copy(update={"sketches": {}})


def test_a_profile_written_before_summaries_still_loads() -> None:
    old = {
        "sample_count": 4,
        "inputs": [
            {
                "name": "x",
                "kind": "features",
                "features": [{"name": "x[0]", "edges": [0.5], "counts": [2, 2]}],
            }
        ],
        "class_counts": [3, 1],
        "confidence_edges": [0.5],
        "confidence_counts": [1, 3],
    }
    profile = ReferenceProfile.model_validate_json(json.dumps(old))
    assert profile.sketches == {}
    assert profile.reference_summary("x[0]") is None
    assert profile.reference_summary(CONFIDENCE_SKETCH) is None


def test_summaries_must_name_the_profile_s_features() -> None:
    base = {
        "sample_count": 4,
        "inputs": [
            {
                "name": "x",
                "kind": "features",
                "features": [{"name": "x[0]", "edges": [0.5], "counts": [2, 2]}],
            }
        ],
    }
    with pytest.raises(ValidationError, match=r"not features of this profile: 'x\[7\]'"):
        ReferenceProfile.model_validate({**base, "sketches": {"x[7]": "RUZRAQ=="}})
    # No confidence histogram: a confidence summary has nothing to stand beside.
    with pytest.raises(ValidationError, match="'confidence'"):
        ReferenceProfile.model_validate({**base, "sketches": {"confidence": "RUZRAQ=="}})
    too_long = "A" * (profile_module.MAX_SUMMARY_TEXT + 4)
    with pytest.raises(ValidationError, match=r"over \d+ characters"):
        ReferenceProfile.model_validate({**base, "sketches": {"x[0]": too_long}})


@needs_kll
def test_a_stored_summary_that_does_not_decode_is_a_summary_error() -> None:
    x, probs = _tabular(rows=20)
    profile = compute_profile({"x": x}, probabilities=probs, bins=3)
    broken = profile.model_copy(update={"sketches": {**profile.sketches, "x[0]": "RUZRAQ=="}})
    with pytest.raises(SummaryError):
        broken.reference_summary("x[0]")
    assert isinstance(broken.reference_summary("x[1]"), QuantileSummary)

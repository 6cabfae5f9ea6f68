import numpy as np
import pytest

from edgefleet.registry.profile import (
    CONFIDENCE_EDGES,
    bin_counts,
    bucket_index,
    compute_profile,
    quantile_edges,
)


def test_quantile_edges_split_into_equal_mass():
    values = np.arange(1000, dtype=np.float64)
    edges = quantile_edges(values, bins=4)
    assert len(edges) == 3
    assert bin_counts(values, edges) == (250, 250, 250, 250)


def test_constant_feature_collapses_to_one_edge():
    edges = quantile_edges(np.zeros(50), bins=10)
    assert edges == (0.0,)
    assert bin_counts(np.zeros(50), edges) == (0, 50)


def test_values_outside_the_reference_land_in_the_end_buckets():
    edges = (1.0, 2.0)
    assert list(bucket_index([-5.0, 1.0, 1.5, 2.0, 99.0], edges)) == [0, 1, 1, 2, 2]


def test_counts_from_parts_add_up_to_the_whole():
    rng = np.random.default_rng(0)
    values = rng.normal(size=2000)
    edges = quantile_edges(values, bins=10)
    whole = np.array(bin_counts(values, edges))
    parts = np.array(bin_counts(values[:700], edges)) + np.array(bin_counts(values[700:], edges))
    assert (whole == parts).all()
    assert whole.sum() == 2000


def test_non_finite_values_are_not_counted():
    assert sum(bin_counts([1.0, np.nan, np.inf, 2.0], (1.5,))) == 2


def test_quantile_edges_reject_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        quantile_edges([1.0], bins=1)
    with pytest.raises(ValueError, match="no finite values"):
        quantile_edges([np.nan], bins=4)


def test_profile_of_tabular_input_and_probabilities():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    probs = np.zeros((100, 4), dtype=np.float32)
    probs[np.arange(100), np.arange(100) % 3] = 0.97  # class 3 is never predicted
    probs[:, 3] = 0.01
    profile = compute_profile({"x": x}, probabilities=probs, bins=5)
    assert profile.sample_count == 100
    (inp,) = profile.inputs
    assert inp.kind == "features"
    assert [f.name for f in inp.features] == ["x[0]", "x[1]", "x[2]"]
    assert all(sum(f.counts) == 100 for f in inp.features)
    assert profile.class_counts == (34, 33, 33, 0)
    assert profile.confidence_edges == CONFIDENCE_EDGES
    assert profile.confidence_counts[-1] == 100  # 0.97 is in the top bucket
    assert profile.class_distribution()[3] == 0.0


def test_profile_of_images_uses_per_sample_statistics():
    images = np.random.default_rng(2).random((20, 3, 8, 8))
    profile = compute_profile({"image": images}, labels=np.arange(20) % 2, bins=4)
    (inp,) = profile.inputs
    assert inp.kind == "image_stats"
    assert [f.name for f in inp.features] == ["image:mean", "image:contrast"]
    assert profile.class_counts == (10, 10)
    assert profile.confidence_counts == ()


def test_profile_rejects_inconsistent_batches():
    with pytest.raises(ValueError, match="different sample counts"):
        compute_profile({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="probabilities must be"):
        compute_profile({"a": np.zeros((3, 2))}, probabilities=np.zeros((2, 5)))

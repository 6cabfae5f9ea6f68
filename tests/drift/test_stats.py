"""Drift statistics against direct computations and scipy on the raw data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.spatial import distance

from edgefleet.drift import sketch
from edgefleet.drift.errors import InsufficientDataError, SummaryError
from edgefleet.drift.sketch import QuantileSummary
from edgefleet.drift.stats import (
    chi_square,
    chi_square_pvalue,
    jensen_shannon,
    ks,
    ks_from_bins,
    psi,
    wasserstein,
    wasserstein_from_bins,
)
from edgefleet.registry.profile import bin_counts, quantile_edges

# --- bins: exact against a direct computation, one distribution at a time -------------------


def direct_psi(ref: np.ndarray, cur: np.ndarray, floor: float) -> float:
    total = 0.0
    for r, c in zip(ref / ref.sum(), cur / cur.sum(), strict=True):
        p, q = max(r, floor), max(c, floor)
        total += (q - p) * math.log(q / p)
    return total


def direct_chi_square(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """scipy's test of homogeneity on the columns that hold anything."""
    table = np.array([ref, cur])[:, (ref + cur) > 0]
    result = scipy_stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def random_counts(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Counts with zeros: a third of the bins empty, some bins empty on both sides."""
    counts = rng.poisson(rng.uniform(0.5, 40.0, size=shape)).astype(np.int64)
    counts[rng.uniform(size=shape) < 0.3] = 0
    counts[..., 0] += 1  # every distribution non-empty
    return counts


@pytest.mark.parametrize(
    ("reference_shape", "current_shape"),
    [
        ((12,), (12,)),  # one feature
        ((7, 12), (7, 12)),  # features
        ((4, 7, 12), (4, 7, 12)),  # segments x features
        ((7, 12), (20, 7, 12)),  # one reference, replicates x features
        ((3, 1, 12), (1, 5, 12)),  # anything that broadcasts
    ],
)
def test_bin_statistics_are_exact_over_any_leading_axes(
    reference_shape: tuple[int, ...], current_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(len(reference_shape) * 10 + len(current_shape))
    reference = random_counts(rng, reference_shape)
    current = random_counts(rng, current_shape)
    shape = np.broadcast_shapes(reference.shape, current.shape)
    ref_all, cur_all = np.broadcast_to(reference, shape), np.broadcast_to(current, shape)

    results = {
        "psi": psi(reference, current),
        "psi_floor": psi(reference, current, floor=1e-3),
        "js": jensen_shannon(reference, current),
        "chi": chi_square(reference, current),
        "p": chi_square_pvalue(reference, current),
    }

    for result in results.values():
        assert result.shape == shape[:-1]
    for index in np.ndindex(*shape[:-1]):
        ref, cur = ref_all[index].astype(float), cur_all[index].astype(float)
        statistic, pvalue = direct_chi_square(ref, cur)
        expected = {
            "psi": direct_psi(ref, cur, 1e-4),
            "psi_floor": direct_psi(ref, cur, 1e-3),
            "js": distance.jensenshannon(ref, cur, base=2),
            "chi": statistic,
            "p": pvalue,
        }
        for name, value in expected.items():
            np.testing.assert_allclose(results[name][index], value, rtol=1e-10, atol=1e-15)


def test_bin_statistics_of_raw_data_are_those_of_its_profile_bins() -> None:
    rng = np.random.default_rng(8)
    reference, current = rng.normal(size=20_000), rng.normal(0.3, 1.1, size=15_000)
    edges = quantile_edges(reference, bins=20)
    ref_counts = np.array(bin_counts(reference, edges))
    cur_counts = np.array(bin_counts(current, edges))
    # The raw data counted directly on the same buckets (bucket 0 below the first edge).
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])
    ref_direct = np.array(
        [np.sum((reference >= a) & (reference < b)) for a, b in itertools.pairwise(bounds)]
    )
    cur_direct = np.array(
        [np.sum((current >= a) & (current < b)) for a, b in itertools.pairwise(bounds)]
    )

    np.testing.assert_allclose(
        psi(ref_counts, cur_counts), direct_psi(ref_direct, cur_direct, 1e-4), rtol=1e-12
    )
    np.testing.assert_allclose(
        jensen_shannon(ref_counts, cur_counts),
        distance.jensenshannon(ref_direct, cur_direct, base=2),
        rtol=1e-12,
    )
    statistic, pvalue = direct_chi_square(ref_direct, cur_direct)
    np.testing.assert_allclose(chi_square(ref_counts, cur_counts), statistic, rtol=1e-12)
    np.testing.assert_allclose(chi_square_pvalue(ref_counts, cur_counts), pvalue, rtol=1e-9)


def test_zero_counts_are_handled_as_documented() -> None:
    reference = np.array([50.0, 50.0, 0.0, 0.0])
    current = np.array([50.0, 0.0, 50.0, 0.0])  # bin 3 is empty on both sides

    # PSI: empty shares raised to the floor, so the value is finite; the common empty
    # bin contributes nothing.
    expected_psi = 2 * (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    np.testing.assert_allclose(psi(reference, current), expected_psi, rtol=1e-12)
    # Jensen-Shannon: no floor; disjoint shares are at distance 1, equal ones at 0.
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < jensen_shannon(reference, current) < 1.0
    # Chi-square: the bin empty on both sides is dropped, leaving 2 degrees of freedom.
    statistic = chi_square(reference, current)
    np.testing.assert_allclose(
        chi_square_pvalue(reference, current), scipy_stats.chi2.sf(statistic, 2)
    )
    # Everything in one bin on both sides: no evidence of a difference.
    assert chi_square([0, 9, 0], [0, 4, 0]) == 0.0
    assert chi_square_pvalue([0, 9, 0], [0, 4, 0]) == 1.0


def test_identical_shares_score_zero_whatever_the_sizes() -> None:
    reference = np.array([[10, 20, 30], [1, 1, 1]])
    current = reference * 7
    np.testing.assert_allclose(psi(reference, current), 0.0, atol=1e-15)
    np.testing.assert_allclose(jensen_shannon(reference, current), 0.0, atol=1e-7)
    np.testing.assert_allclose(chi_square(reference, current), 0.0, atol=1e-12)
    np.testing.assert_allclose(chi_square_pvalue(reference, current), 1.0)


@pytest.mark.parametrize("statistic", [psi, jensen_shannon, chi_square, chi_square_pvalue])
def test_malformed_bins_are_refused(statistic) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SummaryError, match="same bins"):
        statistic([1, 2, 3], [1, 2])
    with pytest.raises(SummaryError, match="broadcast"):
        statistic(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(SummaryError, match="non-negative"):
        statistic([1, -2, 3], [1, 2, 3])
    with pytest.raises(SummaryError, match="non-negative"):
        statistic([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(SummaryError, match="single number"):
        statistic(5, [1, 2])
    with pytest.raises(SummaryError, match="no bins"):
        statistic(np.ones((2, 0)), np.ones((2, 0)))


@pytest.mark.parametrize("statistic", [psi, jensen_shannon, chi_square, chi_square_pvalue])
def test_a_side_without_counts_is_insufficient_data_not_nan(statistic) -> None:  # type: ignore[no-untyped-def]
    current = np.array([[1, 2, 3], [0, 0, 0], [4, 5, 6]])
    with pytest.raises(InsufficientDataError, match="current has no counts in 1 of 3") as raised:
        statistic([1, 1, 1], current)
    assert raised.value.details == {"side": "current", "empty": 1}
    with pytest.raises(InsufficientDataError, match="reference"):
        statistic([0, 0, 0], [1, 2, 3])


@pytest.mark.parametrize("floor", [0.0, -1e-4, 1.0, math.nan])
def test_psi_floor_outside_the_unit_interval_is_refused(floor: float) -> None:
    with pytest.raises(SummaryError, match="floor"):
        psi([1, 2], [2, 1], floor=floor)


# --- quantile summaries against scipy on the raw data ------------------------------------------

ROWS = 100_000


def planted(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    reference = rng.normal(size=ROWS)
    current = {
        "shift 0.2 sigma": lambda: rng.normal(0.2, 1.0, size=ROWS),
        "shift 0.5 sigma": lambda: rng.normal(0.5, 1.0, size=ROWS),
        "scale x1.5": lambda: rng.normal(0.0, 1.5, size=ROWS),
        "mixture": lambda: np.where(
            rng.uniform(size=ROWS) < 0.85, rng.normal(size=ROWS), rng.normal(3.0, 0.5, size=ROWS)
        ),
    }[name]()
    return reference, current


def one_summary(values: np.ndarray) -> QuantileSummary:
    return QuantileSummary.of(values)


def fleet_summary(values: np.ndarray) -> QuantileSummary:
    """1,000 devices x 100 rows: each device's own summary, sent as text, merged."""
    texts = [QuantileSummary.of(device).to_text() for device in values.reshape(1_000, 100)]
    return QuantileSummary.merge_all(QuantileSummary.from_text(text) for text in texts)


@pytest.mark.parametrize("summarise", [one_summary, fleet_summary], ids=["single", "fleet"])
@pytest.mark.parametrize(
    "scenario", ["shift 0.2 sigma", "shift 0.5 sigma", "scale x1.5", "mixture"]
)
def test_ks_and_wasserstein_match_scipy_on_the_raw_data(scenario: str, summarise) -> None:  # type: ignore[no-untyped-def]
    # The data are fixed by the seed; the sketches' own compaction is random (the C++
    # library seeds itself), which the tolerances absorb with a wide margin.
    reference, current = planted(scenario, np.random.default_rng(sum(map(ord, scenario))))
    ref32, cur32 = reference.astype(np.float32), current.astype(np.float32)
    true_ks = scipy_stats.ks_2samp(ref32, cur32).statistic
    true_w = scipy_stats.wasserstein_distance(ref32, cur32)

    ref_summary, cur_summary = summarise(reference), summarise(current)

    assert abs(ks(ref_summary, cur_summary) - true_ks) <= 0.02
    assert abs(wasserstein(ref_summary, cur_summary) - true_w) <= 0.05 * true_w


@pytest.mark.parametrize("sizes", [(150, 80), (24, 24), (1, 5), (200, 3)])
def test_on_summaries_holding_every_value_ks_and_wasserstein_are_scipy_s(
    sizes: tuple[int, int],
) -> None:
    # Below k a summary keeps all its values: the statistics must then be exactly scipy's
    # on the (float32) values, ties included.
    rng = np.random.default_rng(sum(sizes))
    a = np.round(rng.normal(size=sizes[0]), 1).astype(np.float32)
    b = np.round(rng.normal(0.3, size=sizes[1]), 1).astype(np.float32)
    left, right = QuantileSummary.of(a), QuantileSummary.of(b)

    assert ks(left, right) == pytest.approx(scipy_stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert wasserstein(left, right) == pytest.approx(
        scipy_stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-12
    )
    assert ks(left, right) == ks(right, left)
    assert wasserstein(left, right) == pytest.approx(wasserstein(right, left), rel=1e-12)


def test_a_summary_compared_with_itself_scores_zero() -> None:
    summary = QuantileSummary.of(np.random.default_rng(1).exponential(size=50_000))
    assert ks(summary, summary) == 0.0
    assert wasserstein(summary, summary) == 0.0
    single = QuantileSummary.of([2.5])
    assert ks(single, single) == 0.0 and wasserstein(single, single) == 0.0
    assert wasserstein(single, QuantileSummary.of([4.0])) == pytest.approx(1.5)
    assert ks(single, QuantileSummary.of([4.0])) == 1.0


def test_empty_summaries_are_insufficient_data_not_nan() -> None:
    full, empty = QuantileSummary.of([1.0, 2.0]), QuantileSummary.empty()
    for statistic in (ks, wasserstein):
        with pytest.raises(InsufficientDataError, match="current quantile summary is empty"):
            statistic(full, empty)
        with pytest.raises(InsufficientDataError, match="reference quantile summary is empty"):
            statistic(empty, full)
        with pytest.raises(SummaryError, match="not a QuantileSummary"):
            statistic(full, [1.0, 2.0])  # type: ignore[arg-type]


# --- bins standing in for summaries (no datasketches on the device) -------------------------


def test_bin_fallback_on_hand_made_bins() -> None:
    edges = [0.0, 1.0, 3.0]
    reference = [0, 4, 4, 0]  # uniform on [0, 3) with a kink at 1
    current = [0, 0, 4, 4]  # half in [1, 3), half beyond 3

    # F at the edges: reference 0, 1/2, 1; current 0, 0, 1/2.
    assert ks_from_bins(edges, reference, current) == 0.5
    # |F_ref - F_cur| rises linearly 0 -> 1/2 over [0, 1], then 1/2 -> 1/2 over [1, 3];
    # the mass beyond the last edge counts as sitting on it.
    assert wasserstein_from_bins(edges, reference, current) == pytest.approx(0.25 + 1.0)
    # A difference that changes sign inside a bucket: +1/2 at 1, -1/2 at 3, crossing at 2.
    assert wasserstein_from_bins(edges, [0, 4, 0, 4], [0, 0, 8, 0]) == pytest.approx(0.25 + 0.5)


def test_bin_fallback_integrates_the_piecewise_linear_cdfs() -> None:
    rng = np.random.default_rng(12)
    edges = np.sort(rng.uniform(-3, 3, size=15))
    reference, current = rng.integers(0, 50, size=16), rng.integers(0, 50, size=16)
    grid = np.linspace(edges[0], edges[-1], 2_000_001)

    def linear_cdf(counts: np.ndarray) -> np.ndarray:
        at_edges = np.cumsum(counts)[:-1] / counts.sum()
        return np.interp(grid, edges, at_edges)

    gaps = np.abs(linear_cdf(reference) - linear_cdf(current))
    integral = np.sum((gaps[1:] + gaps[:-1]) / 2 * np.diff(grid))
    assert wasserstein_from_bins(edges, reference, current) == pytest.approx(integral, rel=1e-6)


@pytest.mark.parametrize("shift", [0.2, 0.5])
def test_bin_fallback_against_scipy_on_profile_bins(shift: float) -> None:
    rng = np.random.default_rng(int(shift * 10))
    reference, current = rng.normal(size=ROWS), rng.normal(shift, 1.0, size=ROWS)
    edges = quantile_edges(reference, bins=100)
    ref_counts, cur_counts = bin_counts(reference, edges), bin_counts(current, edges)
    true_ks = scipy_stats.ks_2samp(reference, current).statistic
    true_w = scipy_stats.wasserstein_distance(reference, current)

    binned_ks = ks_from_bins(edges, ref_counts, cur_counts)
    binned_w = wasserstein_from_bins(edges, ref_counts, cur_counts)

    assert binned_ks <= true_ks + 1e-12  # the CDFs are seen at the edges only
    assert binned_ks >= true_ks - 0.02
    assert abs(binned_w - true_w) <= 0.1 * true_w


def test_bin_fallback_needs_no_quantile_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sketch, "HAVE_KLL", False)
    with pytest.raises(SummaryError, match="datasketches"):
        QuantileSummary.of([1.0])

    assert ks_from_bins([0.0], [3, 1], [1, 3]) == 0.5
    assert wasserstein_from_bins([0.0, 2.0], [1, 1, 0], [0, 1, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize("statistic", [ks_from_bins, wasserstein_from_bins])
def test_bin_fallback_refuses_what_does_not_fit(statistic) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SummaryError, match="2 edges make 3 buckets, the counts have 4"):
        statistic([0.0, 1.0], [1, 1, 1, 1], [1, 1, 1, 1])
    with pytest.raises(SummaryError, match="same bins"):
        statistic([0.0, 1.0], [1, 1, 1], [1, 1])
    with pytest.raises(SummaryError, match="strictly increasing"):
        statistic([1.0, 0.0], [1, 1, 1], [1, 1, 1])
    with pytest.raises(SummaryError, match="strictly increasing"):
        statistic([0.0, np.inf], [1, 1, 1], [1, 1, 1])
    with pytest.raises(SummaryError, match="non-empty"):
        statistic([], [1], [1])
    with pytest.raises(SummaryError, match="one-dimensional"):
        statistic([0.0], [[1, 1], [1, 1]], [[1, 1], [1, 1]])
    with pytest.raises(InsufficientDataError):
        statistic([0.0], [0, 0], [1, 1])

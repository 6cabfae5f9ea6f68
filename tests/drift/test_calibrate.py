"""Tests of drift calibration: the dispersion sums, the cluster-robust evidence, BH and
the decision.

The central tests (``test_false_alarm_rate_holds_*``) replay many looks of a fleet
without drift whose devices each see a slightly different distribution (in one
direction of the bins, as a device-wide shift does, or in all of them), run the whole
decision (cluster-robust p-values, Benjamini-Hochberg across features, the look's
alpha) and check the share of looks that raise anything against alpha. The statistics
are written out here from their textbook definitions, so these tests depend on nothing
but the calibration itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import stats as scipy_stats

from edgefleet.drift.calibrate import (
    CalibrationError,
    Dispersion,
    benjamini_hochberg,
    bh_cut,
    bin_evidence,
    cauchy_combination,
    decide,
    look_alpha,
    rao_scott_pvalues,
)
from edgefleet.drift.errors import DriftError

Array = NDArray[np.float64]


def _shares(counts: Array) -> Array:
    total = counts.sum(axis=-1, keepdims=True)
    return counts / np.where(total > 0, total, 1.0)


def psi(reference: Array, current: Array) -> Array:
    """Population stability index on shares floored at 1e-4."""
    p = np.maximum(_shares(reference), 1e-4)
    q = np.maximum(_shares(current), 1e-4)
    return ((q - p) * np.log(q / p)).sum(axis=-1)


def _fleet_counts(
    rng: np.random.Generator,
    shares: Array,
    looks: int,
    devices: int,
    concentration: float,
    median_rows: float,
) -> Array:
    """Counts ``[devices, looks, features, bins]`` of a fleet without drift: each
    device's distribution is a Dirichlet perturbation of ``shares`` ([features, bins])
    around it, and devices' traffic differs (log-normal, a few busy devices)."""
    rows = np.maximum(np.rint(rng.lognormal(math.log(median_rows), 0.8, (looks, devices))), 1)
    gamma = rng.gamma(concentration * shares, size=(looks, devices, *shares.shape))
    device_shares = gamma / gamma.sum(axis=-1, keepdims=True)
    counts = rng.multinomial(rows[..., None].astype(np.int64), device_shares)
    return np.moveaxis(counts.astype(np.float64), 1, 0)


EDGES = scipy_stats.norm.ppf(np.linspace(0.1, 0.9, 9))  # deciles of N(0, 1): 10 bins
NORMAL_SHARES = np.diff(scipy_stats.norm.cdf(np.r_[-np.inf, EDGES, np.inf]))


def _shifted_fleet_counts(
    rng: np.random.Generator,
    looks: int,
    devices: int,
    features: int,
    icc: float,
    shift: float = 0.0,
) -> Array:
    """Counts ``[devices, looks, features, 10]`` of a fleet where every row is N(0, 1)
    like the reference's (moved by ``shift`` if given), but each device's rows of a
    look share an offset ``u ~ N(0, icc)`` (its lighting, its sensor, this hour):
    intraclass correlation ``icc``, all in one direction of the bins. Devices have 20
    to 100 rows a look."""
    most = 100
    rows = rng.integers(20, most + 1, size=(looks, devices))
    offsets = shift + rng.normal(0.0, math.sqrt(icc), (looks, devices, 1, features))
    values = offsets + math.sqrt(1 - icc) * rng.standard_normal((looks, devices, most, features))
    index = np.searchsorted(EDGES, values, side="right")  # [looks, devices, rows, features]
    present = np.arange(most)[None, None, :, None] < rows[..., None, None]
    cell = np.arange(looks)[:, None, None, None] * devices + np.arange(devices)[None, :, None, None]
    flat = ((cell * features + np.arange(features)) * 10 + index)[
        np.broadcast_to(present, index.shape)
    ]
    counts = np.bincount(flat, minlength=looks * devices * features * 10).astype(np.float64)
    return np.moveaxis(counts.reshape(looks, devices, features, 10), 1, 0)


# --- Dispersion -------------------------------------------------------------------------


def test_dispersion_of_equal_devices_is_pearsons_statistic_over_its_degrees_of_freedom() -> None:
    rng = np.random.default_rng(1)
    table = rng.multinomial(300, rng.dirichlet(np.ones(6), size=12))  # 12 devices x 6 bins
    statistic, _, dof, _ = scipy_stats.chi2_contingency(table, correction=False)
    dispersion = Dispersion.of_devices(table[:, None, :])  # one feature
    assert dispersion.pearson()[0] == pytest.approx(statistic / dof, rel=1e-10)
    # Equal sizes: the design effect is Pearson's dispersion itself (floored at 1).
    assert dispersion.phi()[0] == pytest.approx(max(statistic / dof, 1.0), rel=1e-10)
    assert dispersion.devices[0] == 12
    assert dispersion.n[0] == 12 * 300


def test_dispersion_merges_exactly_across_disjoint_devices() -> None:
    rng = np.random.default_rng(2)
    counts = rng.poisson(20.0, size=(30, 4, 3, 8)).astype(float)  # devices x 4 x 3 x bins
    counts[5, 1, 2] = 0  # a device with no rows in one place
    whole = Dispersion.of_devices(counts)
    parts = [Dispersion.of_devices(counts[i : i + 7]) for i in range(0, 30, 7)]
    left = parts[0]
    for part in parts[1:]:
        left = left.merged(part)
    right = parts[-1]
    for part in reversed(parts[:-1]):
        right = part.merged(right)
    for merged in (left, right):
        np.testing.assert_allclose(merged.totals, whole.totals)
        np.testing.assert_allclose(merged.sums_sq, whole.sums_sq)
        np.testing.assert_allclose(merged.cross, whole.cross)
        np.testing.assert_allclose(merged.n_x, whole.n_x)
        np.testing.assert_allclose(merged.n_sq, whole.n_sq)
        np.testing.assert_array_equal(merged.devices, whole.devices)
        np.testing.assert_allclose(merged.phi(), whole.phi())
        np.testing.assert_allclose(merged.covariance(), whole.covariance())
    assert whole.devices[1, 2] == 29
    empty = Dispersion.empty((4, 3), 8)
    np.testing.assert_allclose(empty.merged(whole).phi(), whole.phi())


def test_one_device_or_one_bin_gives_phi_one() -> None:
    one_device = Dispersion.of_devices(np.array([[[5.0, 0.0, 9.0, 100.0]]]))
    assert one_device.phi()[0] == 1.0
    assert math.isnan(one_device.pearson()[0])
    one_bin = Dispersion.of_devices(np.array([[[0.0, 7.0]], [[0.0, 90.0]]]))
    assert one_bin.phi()[0] == 1.0
    nothing = Dispersion.empty((2,), 5)
    np.testing.assert_array_equal(nothing.phi(), [1.0, 1.0])


def test_phi_is_the_variance_inflation_of_the_pooled_counts_with_unequal_devices() -> None:
    """Across many fleets drawn from one Dirichlet-multinomial model, the pooled shares
    vary phi times more than a multinomial's of the same size. Pearson's dispersion
    alone (the devices' average) falls well short when a few devices are busy."""
    rng = np.random.default_rng(3)
    shares = np.array([[0.3, 0.25, 0.2, 0.15, 0.1]])
    counts = _fleet_counts(rng, shares, looks=600, devices=60, concentration=80, median_rows=200)
    dispersion = Dispersion.of_devices(counts)  # leading [looks, 1]
    pooled = _shares(dispersion.totals)[:, 0, :]
    n = dispersion.n[:, 0]
    # Variance of the pooled shares, each look scaled by its size, over a multinomial's.
    scaled = (pooled - shares[0]) * np.sqrt(n)[:, None]
    measured = (scaled**2).mean(axis=0).sum() / (1 - (shares[0] ** 2).sum())
    assert float(np.median(dispersion.phi())) == pytest.approx(measured, rel=0.15)
    assert float(np.median(dispersion.pearson())) < 0.8 * measured
    assert np.all(dispersion.phi() >= 1.0)


def test_homogeneous_devices_have_phi_near_one() -> None:
    rng = np.random.default_rng(4)
    counts = rng.multinomial(500, np.full(10, 0.1), size=(50, 200)).astype(float)
    phi = Dispersion.of_devices(counts).phi()
    assert float(np.median(phi)) < 1.05
    assert np.all(phi >= 1.0)


def test_covariance_is_the_pooled_shares_variation_with_devices_as_clusters() -> None:
    """Across many fleets of one model, the covariance the sums give each fleet matches
    how much the pooled shares really vary, direction by direction: a device-wide shift
    moves neighbouring bins together, which no single design effect can say."""
    rng = np.random.default_rng(5)
    counts = _shifted_fleet_counts(rng, looks=3000, devices=60, features=1, icc=0.1)
    dispersion = Dispersion.of_devices(counts)  # leading [looks, 1]
    shares = dispersion.totals[:, 0] / dispersion.n[:, 0, None]
    measured = np.cov(shares.T)
    estimated = np.median(dispersion.covariance()[:, 0], axis=0)
    scale = np.abs(measured).max()
    np.testing.assert_allclose(estimated, measured, atol=0.15 * scale)
    # The direction of a shift (low bins down, high bins up) varies most, far beyond a
    # multinomial's of the same size with the scalar design effect...
    direction = np.linspace(-1, 1, 10)
    direction /= np.linalg.norm(direction)
    pooled = shares.mean(axis=0)
    multinomial = (np.diag(pooled) - np.outer(pooled, pooled)) / dispersion.n[:, 0].mean()
    phi = float(np.median(dispersion.phi()))
    along = direction @ measured @ direction
    assert along > 1.5 * phi * (direction @ multinomial @ direction)
    assert direction @ estimated @ direction == pytest.approx(along, rel=0.15)


def test_covariance_of_independent_rows_is_the_multinomials() -> None:
    rng = np.random.default_rng(13)
    truth = np.full(10, 0.1)
    counts = rng.multinomial(rng.integers(20, 200, size=(80, 400, 1)), truth).astype(float)
    dispersion = Dispersion.of_devices(counts)
    n = dispersion.n[:, 0].mean()
    expected = (np.diag(truth) - np.outer(truth, truth)) / n
    np.testing.assert_allclose(
        dispersion.covariance()[:, 0].mean(axis=0), expected, atol=0.05 * expected.max()
    )
    # One device: the multinomial part alone (how much devices differ is unknown).
    one = Dispersion.of_devices(counts[:1])
    within, between = one.covariance_parts()
    assert np.all(between == 0.0) and np.all(one.covariance() == within)
    shares = one.totals / one.n[..., None]
    np.testing.assert_allclose(
        within[0, 0], (np.diag(shares[0, 0]) - np.outer(shares[0, 0], shares[0, 0])) / one.n[0, 0]
    )


def test_dispersion_refuses_bad_counts() -> None:
    with pytest.raises(CalibrationError, match="negative"):
        Dispersion.of_devices(np.array([[1.0, -1.0]]))
    with pytest.raises(CalibrationError, match=r"\[devices, \.\.\., bins\]"):
        Dispersion.of_devices(np.array([1.0, 2.0]))
    with pytest.raises(CalibrationError, match="merge"):
        Dispersion.empty((2,), 5).merged(Dispersion.empty((3,), 5))
    assert issubclass(CalibrationError, DriftError)


# --- the evidence --------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 4, 9])
def test_rao_scott_with_a_known_covariance_is_the_chi_square_or_the_f(dims: int) -> None:
    """Identity covariance: ``Q`` is chi-square with ``dims`` degrees of freedom, exact
    without estimation noise, and F(dims, dims * df) when the scale was estimated from
    ``df + 1`` clusters: the saddlepoint tail matches both far out (within 10 %: one
    degree of freedom is its worst case)."""
    rng = np.random.default_rng(dims)
    delta = rng.standard_normal((200, dims)) * np.sqrt(rng.uniform(0.2, 6.0, (200, 1)))
    q = (delta**2).sum(axis=-1)
    sigma = np.broadcast_to(np.eye(dims), (200, dims, dims))
    transform = np.broadcast_to(np.eye(dims), (200, dims, dims))
    exact = rao_scott_pvalues(delta, sigma, transform, np.full(200, 1e12))
    np.testing.assert_allclose(exact, scipy_stats.chi2.sf(q, dims), rtol=0.08)
    estimated = rao_scott_pvalues(delta, sigma, transform, np.full(200, 12.0))
    np.testing.assert_allclose(estimated, scipy_stats.f.sf(q / dims, dims, 12 * dims), rtol=0.1)
    assert np.isnan(rao_scott_pvalues(delta[:1], sigma[:1], transform[:1], [0.0])[0])


def test_a_dominant_direction_keeps_the_tail_where_two_moments_lose_it() -> None:
    """``Q = 9 chi2_1 + chi2_1 + chi2_1``: its tail (simulated with 4 million draws) is
    what the p-values say, within 10 % at 1e-3 and 1e-4."""
    rng = np.random.default_rng(14)
    weights = np.array([9.0, 1.0, 1.0])
    draws = (rng.standard_normal((4_000_000, 3)) ** 2) @ weights
    points = np.quantile(draws, [1 - 1e-3, 1 - 1e-4])
    delta = np.stack([[math.sqrt(x), 0.0, 0.0] for x in points]) / 3.0
    sigma = np.broadcast_to(np.diag(weights / 9.0), (2, 3, 3))
    transform = np.broadcast_to(np.eye(3), (2, 3, 3))
    p = rao_scott_pvalues(delta, sigma, transform, np.full(2, 1e12))
    np.testing.assert_allclose(p, [1e-3, 1e-4], rtol=0.1)


def test_cauchy_combination() -> None:
    p = np.array([[0.01, 0.01], [1e-12, 1e-12], [0.3, np.nan], [np.nan, np.nan]])
    combined = cauchy_combination(p)
    np.testing.assert_allclose(combined[:3], [0.01, 1e-12, 0.3], rtol=1e-9)
    assert math.isnan(combined[3])
    # Independent uniform p-values combine to a uniform one.
    rng = np.random.default_rng(15)
    uniform = cauchy_combination(rng.uniform(size=(200_000, 2)))
    for alpha in (0.05, 0.01, 0.001):
        assert float((uniform <= alpha).mean()) == pytest.approx(alpha, rel=0.1)
    # One strong test carries the combination.
    assert cauchy_combination(np.array([1e-9, 0.9])) < 1e-8


def test_independent_rows_give_the_textbook_chi_square() -> None:
    """Every row its own device: the unordered evidence is Pearson's 2 x B test of
    homogeneity (scipy's), up to the covariance being estimated."""
    rng = np.random.default_rng(16)
    truth = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.07])
    reference = rng.multinomial(20_000, truth).astype(float)
    for shift in (0.0, 0.01, 0.02):
        live = truth + shift * np.linspace(-1, 1, 7)
        rows = np.eye(7)[rng.choice(7, size=3000, p=live / live.sum())]
        p = bin_evidence(reference, Dispersion.of_devices(rows[:, None, :]), ordered=False)[0]
        table = np.stack([reference, rows.sum(axis=0)])
        expected = scipy_stats.chi2_contingency(table, correction=False).pvalue
        assert math.log(p) == pytest.approx(math.log(expected), rel=0.1, abs=0.1)


def test_evidence_is_small_for_drift_and_vectorised_over_leading_axes() -> None:
    rng = np.random.default_rng(17)
    counts = _shifted_fleet_counts(rng, looks=3, devices=50, features=4, icc=0.05)
    counts[:, 1, 2] = _shifted_fleet_counts(rng, 1, 50, 1, 0.05, shift=0.3)[:, 0, 0]
    reference = rng.multinomial(50_000, NORMAL_SHARES).astype(float)
    dispersion = Dispersion.of_devices(counts)  # leading [3, 4]
    for ordered in (True, False):
        p = bin_evidence(reference, dispersion, ordered=ordered)
        assert p.shape == (3, 4)
        assert p[1, 2] < 1e-4
        assert np.all(np.delete(p.ravel(), 6) > 1e-4)


def test_evidence_is_nan_without_a_test() -> None:
    reference = np.array([[10.0, 10.0, 10.0], [0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    devices = np.array(
        [
            [[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [9.0, 9.0, 9.0]],
            [[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]],
        ]
    )  # the third feature has one device with rows: no spread to measure
    p = bin_evidence(reference, Dispersion.of_devices(devices), ordered=True)
    assert np.all(np.isnan(p))


def test_evidence_of_a_degenerate_bin() -> None:
    """One used bin on both sides: nothing can differ (1); mass elsewhere is drift."""
    reference = np.array([0.0, 500.0, 0.0])
    same = Dispersion.of_devices(np.array([[[0.0, 20.0, 0.0]], [[0.0, 9.0, 0.0]]]))
    assert bin_evidence(reference, same, ordered=False)[0] == 1.0
    rows = np.random.default_rng(23).integers(10, 30, size=12)
    moved = Dispersion.of_devices(np.stack([[[3.0, float(n), 0.0]] for n in rows]))
    assert bin_evidence(reference, moved, ordered=False)[0] < 1e-3


def test_evidence_refuses_bad_inputs() -> None:
    window = Dispersion.of_devices(np.ones((3, 2, 4)))
    with pytest.raises(CalibrationError, match="bins"):
        bin_evidence(np.ones(3), window, ordered=True)
    with pytest.raises(CalibrationError, match="negative"):
        bin_evidence(np.array([1.0, -2.0, 1.0, 1.0]), window, ordered=True)
    with pytest.raises(CalibrationError, match="broadcast"):
        bin_evidence(np.ones((3, 4)), window, ordered=True)


def test_an_earlier_window_as_the_reference_is_clustered_too() -> None:
    """Two windows of the same clustered fleet: with the reference window's own
    covariance the test holds its level; taking its rows as independent does not."""
    rng = np.random.default_rng(18)
    looks = 600
    past = Dispersion.of_devices(_shifted_fleet_counts(rng, looks, 40, 1, 0.1))
    now = Dispersion.of_devices(_shifted_fleet_counts(rng, looks, 40, 1, 0.1))
    clustered = bin_evidence(past.totals, now, ordered=True, reference_dispersion=past)
    naive = bin_evidence(past.totals, now, ordered=True)
    assert float((clustered <= 0.05).mean()) == pytest.approx(0.05, abs=0.025)
    assert float((naive <= 0.05).mean()) > 2 * 0.05


# --- Benjamini-Hochberg -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.001, 0.01, 0.05])),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([0.001, 0.01, 0.05, 0.2]),
)
def test_benjamini_hochberg_matches_scipy(pvalues: list[float], alpha: float) -> None:
    p = np.array(pvalues)
    expected = scipy_stats.false_discovery_control(p, method="bh") <= alpha
    # scipy's adjusted p-values are rounded products; compare away from ties with alpha.
    adjusted = scipy_stats.false_discovery_control(p, method="bh")
    clear = ~np.isclose(adjusted, alpha, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(benjamini_hochberg(p, alpha)[clear], expected[clear])


def test_bh_cut_and_nan_tests() -> None:
    p = np.array([[0.001, 0.02, np.nan], [0.04, 0.5, 0.012]])  # five tests, one NaN
    # k=3: 0.02 <= 3 * 0.05 / 5 = 0.03; k=4: 0.04 > 0.04? no, 0.04 <= 0.04
    assert bh_cut(p, 0.05) == pytest.approx(0.04)
    np.testing.assert_array_equal(
        benjamini_hochberg(p, 0.05), [[True, True, False], [True, False, True]]
    )
    assert bh_cut(np.array([0.5, 0.9]), 0.05) == pytest.approx(0.025)  # none: alpha / m
    assert bh_cut(np.array([np.nan]), 0.05) == 0.05
    with pytest.raises(CalibrationError, match="alpha"):
        bh_cut(p, 1.0)
    with pytest.raises(CalibrationError, match=r"\[0, 1\]"):
        benjamini_hochberg(np.array([1.2]), 0.05)


def test_decide_needs_both_evidence_and_effect() -> None:
    p = np.array([1e-9, 1e-9, 0.6, np.nan])
    effects = np.array([0.3, 0.05, 0.9, 0.9])
    decision = decide(p, effects, 0.2, alpha=0.01)
    np.testing.assert_array_equal(decision.evidence, [True, True, False, False])
    np.testing.assert_array_equal(decision.drifted, [True, False, False, False])
    per_test = decide(p, effects, np.array([0.4, 0.01, 0.1, 0.1]), alpha=0.01)
    np.testing.assert_array_equal(per_test.drifted, [False, True, False, False])
    with pytest.raises(CalibrationError, match="broadcast"):
        decide(p, np.ones(3), 0.1, alpha=0.01)


def test_decide_counts_each_shared_test_once() -> None:
    """Four statistics of one feature share its p-value: one test, not four. With two
    features the BH cut for the second smallest is alpha (2 of 2), not alpha / 2."""
    p = np.array([0.001, 0.001, 0.001, 0.001, 0.009])
    tests = np.array([0, 0, 0, 0, 1])
    shared = decide(p, np.ones(5), 0.0, alpha=0.01, tests=tests)
    np.testing.assert_array_equal(shared.evidence, [True] * 5)
    assert shared.cut == pytest.approx(0.01)
    apart = decide(p, np.ones(5), 0.0, alpha=0.01)  # five tests: 0.009 > 5/5 * 0.01? no
    assert apart.cut == pytest.approx(0.01)
    assert decide(p[[0, 4]], np.ones(2), 0.0, alpha=0.01, tests=np.array([3, 7])).cut == 0.01
    with pytest.raises(CalibrationError, match="different p-values"):
        decide(np.array([0.1, 0.2]), np.ones(2), 0.0, alpha=0.01, tests=np.array([1, 1]))
    with pytest.raises(CalibrationError, match="name a test"):
        decide(p, np.ones(5), 0.0, alpha=0.01, tests=np.array([0, 1]))


def test_look_alpha_spends_the_rate_over_the_period() -> None:
    assert look_alpha(0.01, 3600, 7 * 86400) == pytest.approx(0.01 / 168)
    assert look_alpha(0.05, 86400, 86400) == pytest.approx(0.05)
    for bad in [(0.0, 3600, 86400), (1.0, 3600, 86400), (0.01, 0, 86400), (0.5, 7200, 3600)]:
        with pytest.raises(CalibrationError):
            look_alpha(*bad)


# --- calibration of the whole decision ---------------------------------------------------

ALPHA_LOOK = 0.1
LOOKS = 2000
# The binomial standard error of the measured rate is sqrt(0.1 * 0.9 / 2000) = 0.0067;
# the +-20 % tolerance (0.02) is 3 standard errors, so a calibrated procedure fails the
# test with probability ~0.3 % and one off by 30 % passes it with probability ~7 %.
TOLERANCE = 0.2


def _alarm_rate(reference: Array, dispersion: Dispersion, ordered: bool) -> float:
    """The share of looks (first leading axis) in which the decision over the look's
    features (second axis), on evidence alone at ALPHA_LOOK, raises anything."""
    p = bin_evidence(reference, dispersion, ordered=ordered)
    looks = p.shape[0]
    alarms = sum(
        bool(decide(p[look], np.zeros(p.shape[1]), 0.0, ALPHA_LOOK).drifted.any())
        for look in range(looks)
    )
    return alarms / looks


def _as_independent_rows(d: Dispersion) -> Dispersion:
    """The same counts with every row taken as a device of its own."""
    bins = d.totals.shape[-1]
    return Dispersion(
        totals=d.totals,
        sums_sq=d.totals,
        cross=d.totals[..., :, None] * np.eye(bins),
        n_x=d.totals,
        n=d.n,
        n_sq=d.n,
        devices=np.rint(d.n).astype(np.int64),
    )


def test_false_alarm_rate_holds_when_devices_shift() -> None:
    """THE calibration test of issue #19: 2,000 no-drift looks of 3 features from 40
    devices whose rows each share a device-wide offset (intraclass correlation 0.05,
    20 to 100 rows: a design effect of about 4 in the direction of a shift, 1 in the
    others), against a 50,000-row reference. The share of looks raising an alarm is
    within +-20 % of the look's alpha."""
    rng = np.random.default_rng(19)
    counts = _shifted_fleet_counts(rng, LOOKS, devices=40, features=3, icc=0.05)
    reference = rng.multinomial(50_000, NORMAL_SHARES, size=(LOOKS, 3)).astype(float)
    dispersion = Dispersion.of_devices(counts)  # leading [looks, features]
    assert float(np.median(dispersion.phi())) > 1.3  # clustered: something to correct
    rate = _alarm_rate(reference, dispersion, ordered=True)
    assert abs(rate - ALPHA_LOOK) <= TOLERANCE * ALPHA_LOOK, rate


def test_false_alarm_rate_holds_on_a_heterogeneous_fleet() -> None:
    """The same with devices that differ in every direction (Dirichlet perturbations,
    rho ~ 0.01, 200 devices of log-normal traffic of median 250 rows: a design effect
    above 3) and categories (the unordered test alone). (With 40 such devices, whose
    few busiest carry most rows, the evidence is conservative: 0.43x at 0.01.)"""
    rng = np.random.default_rng(20)
    truth = rng.dirichlet(np.full(10, 4.0), size=3)
    reference = rng.multinomial(5_000, truth, size=(LOOKS, 3)).astype(np.float64)
    counts = _fleet_counts(rng, truth, LOOKS, devices=200, concentration=100, median_rows=250)
    dispersion = Dispersion.of_devices(counts)
    assert float(np.median(dispersion.phi())) > 3
    rate = _alarm_rate(reference, dispersion, ordered=False)
    assert abs(rate - ALPHA_LOOK) <= TOLERANCE * ALPHA_LOOK, rate


def test_ignoring_devices_as_clusters_inflates_the_false_alarm_rate() -> None:
    """The shifting fleet with every row taken as independent alarms on most looks.
    300 looks tell such a rate from 0.1 easily."""
    rng = np.random.default_rng(21)
    counts = _shifted_fleet_counts(rng, 300, devices=40, features=3, icc=0.05)
    reference = rng.multinomial(50_000, NORMAL_SHARES, size=(300, 3)).astype(float)
    naive = _as_independent_rows(Dispersion.of_devices(counts))
    assert _alarm_rate(reference, naive, ordered=True) > 3 * ALPHA_LOOK


def test_effect_thresholds_silence_a_huge_sample_without_practical_drift() -> None:
    """10 million rows from 2,000 devices: a live distribution that differs from the
    reference by a hair (PSI ~ 0.002) is *significant*, but with the default effect
    threshold (PSI 0.2) nothing alarms; a planted shift of practical size does."""
    rng = np.random.default_rng(22)
    features = 8
    truth = np.full((features, 10), 0.1)
    reference = rng.multinomial(1_000_000, truth).astype(np.float64)
    live = truth * np.linspace(0.98, 1.02, 10)  # the hair: reality is never the reference
    live[3] = np.array([0.02, 0.03, 0.05, 0.07, 0.1, 0.12, 0.14, 0.15, 0.16, 0.16])
    live /= live.sum(axis=-1, keepdims=True)
    counts = _fleet_counts(rng, live, 1, devices=2000, concentration=2000, median_rows=3500)
    dispersion = Dispersion.of_devices(counts)
    totals = dispersion.totals[0]
    p = bin_evidence(reference, dispersion.select((np.array([0]),)), ordered=True)[0]
    effects = psi(reference, totals)
    alpha = look_alpha(0.01, 3600, 7 * 86400)
    assert totals.sum() > 10_000_000
    decision = decide(p, effects, 0.2, alpha)
    np.testing.assert_array_equal(np.nonzero(decision.drifted)[0], [3])
    assert effects[3] > 0.2
    # Evidence alone would have alarmed on the hair.
    assert decide(p, effects, 0.0, alpha).drifted.sum() > 1

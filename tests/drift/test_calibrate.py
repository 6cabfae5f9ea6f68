"""Tests of drift calibration: the design effect, the simulated nulls, BH and the decision.

The central test (``test_false_alarm_rate_holds_on_a_heterogeneous_fleet``) replays many
looks of a fleet without drift whose devices each see a slightly different distribution,
runs the whole decision (cluster-aware p-values, Benjamini-Hochberg across features, the
look's alpha) and checks the share of looks that raise anything against alpha. The bin
statistics are written out here from their textbook definitions so these tests depend on
nothing but the calibration itself.
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
    bin_pvalues,
    decide,
    effective_size,
    ks_pvalue,
    look_alpha,
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


def js_distance(reference: Array, current: Array) -> Array:
    """Jensen-Shannon distance, base 2."""
    p, q = _shares(reference), _shares(current)
    m = (p + q) / 2

    def kl(a: Array, b: Array) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / np.where(b > 0, b, 1.0)), 0.0).sum(axis=-1)

    return np.sqrt(np.maximum((kl(p, m) + kl(q, m)) / 2, 0.0))


def chi_square(reference: Array, current: Array) -> Array:
    """Pearson's 2 x B homogeneity statistic (bins empty on both sides left out)."""
    n1 = reference.sum(axis=-1, keepdims=True)
    n2 = current.sum(axis=-1, keepdims=True)
    column = reference + current
    e1 = n1 * column / (n1 + n2)
    e2 = n2 * column / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(
            column > 0,
            (reference - e1) ** 2 / np.where(e1 > 0, e1, 1.0)
            + (current - e2) ** 2 / np.where(e2 > 0, e2, 1.0),
            0.0,
        )
    return terms.sum(axis=-1)


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
        np.testing.assert_allclose(merged.n_sq, whole.n_sq)
        np.testing.assert_array_equal(merged.devices, whole.devices)
        np.testing.assert_allclose(merged.phi(), whole.phi())
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


def test_design_effect_of_the_sketch_rows_uses_their_own_sizes() -> None:
    rng = np.random.default_rng(5)
    shares = np.full((1, 8), 1 / 8)
    counts = _fleet_counts(rng, shares, looks=1, devices=200, concentration=50, median_rows=2000)
    dispersion = Dispersion.of_devices(counts)
    rho = dispersion.intraclass()[0, 0]
    assert 0.5 / 51 < rho < 2.0 / 51  # the model's rho is 1 / (concentration + 1)
    # 24 sketch rows per device: a far smaller design effect than the bins' thousands.
    sketch = dispersion.design_effect(200 * 24, 200 * 24**2)[0, 0]
    assert sketch == pytest.approx(1 + 23 * rho)
    assert sketch < dispersion.phi()[0, 0] / 5


def test_dispersion_refuses_bad_counts() -> None:
    with pytest.raises(CalibrationError, match="negative"):
        Dispersion.of_devices(np.array([[1.0, -1.0]]))
    with pytest.raises(CalibrationError, match=r"\[devices, \.\.\., bins\]"):
        Dispersion.of_devices(np.array([1.0, 2.0]))
    with pytest.raises(CalibrationError, match="merge"):
        Dispersion.empty((2,), 5).merged(Dispersion.empty((3,), 5))
    assert issubclass(CalibrationError, DriftError)


# --- bin p-values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statistic", "power"), [(psi, 1.0), (chi_square, 1.0), (js_distance, 2.0)]
)
def test_fitted_null_matches_a_large_simulation_in_the_tail(statistic, power) -> None:
    """At the 99th and 99.9th percentiles of a 40,000-draw null, the p-value fitted from
    400 replicates is close to 0.01 and 0.001 (median over independent fits)."""
    rng = np.random.default_rng(6)
    shares = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005])
    reference = rng.multinomial(20_000, shares).astype(float)
    n_eff = 800
    big = 40_000
    null = statistic(
        rng.multinomial(20_000, reference / 20_000, size=big).astype(float),
        rng.multinomial(n_eff, reference / 20_000, size=big).astype(float),
    )
    q99, q999 = np.quantile(null, [0.99, 0.999])
    # Current counts whose statistic sits at those quantiles: the null draws closest.
    draws = rng.multinomial(n_eff, reference / 20_000, size=big).astype(float)
    values = statistic(np.broadcast_to(reference, draws.shape), draws)
    at99 = draws[np.argmin(np.abs(values - q99))]
    at999 = draws[np.argmin(np.abs(values - q999))]
    current = np.stack([at99, at999] * 25)  # 25 independent fits of each
    p = bin_pvalues(statistic, reference, current, 1.0, rng, 400, power=power)
    assert float(np.median(p[0::2])) == pytest.approx(0.01, rel=0.35)
    assert float(np.median(p[1::2])) == pytest.approx(0.001, rel=0.6)


def test_bin_pvalues_are_small_for_drift_and_vectorised_over_leading_axes() -> None:
    rng = np.random.default_rng(7)
    reference = rng.multinomial(10_000, np.full(10, 0.1)).astype(float)  # one reference
    current = rng.multinomial(2_000, np.full(10, 0.1), size=(3, 4)).astype(float)
    current[1, 2] = rng.multinomial(2_000, np.linspace(0.05, 0.15, 10))
    phi = np.ones((3, 1))  # broadcasts over the segments axis
    p = bin_pvalues(psi, reference, current, phi, rng)
    assert p.shape == (3, 4)
    assert p[1, 2] < 1e-6
    assert np.all(np.delete(p.ravel(), 6) > 1e-4)
    # A design effect weakens the same evidence.
    clustered = bin_pvalues(psi, reference, current[1, 2], 30.0, rng)
    assert clustered > p[1, 2]


def test_bin_pvalues_are_reproducible_with_a_seeded_generator() -> None:
    reference = np.array([400.0, 300.0, 200.0, 100.0])
    current = np.array([[40.0, 30.0, 20.0, 10.0], [10.0, 20.0, 30.0, 40.0]])
    first = bin_pvalues(psi, reference, current, 1.0, np.random.default_rng(8))
    second = bin_pvalues(psi, reference, current, 1.0, np.random.default_rng(8))
    np.testing.assert_array_equal(first, second)
    assert first[0] > 0.5
    assert first[1] < 1e-6


def test_bin_pvalues_give_nan_for_an_empty_sample() -> None:
    """An empty side is no test; a statistic that refuses empty sides never sees one."""

    def strict_psi(reference: Array, current: Array) -> Array:
        if np.any(reference.sum(axis=-1) == 0) or np.any(current.sum(axis=-1) == 0):
            raise ValueError("a side has no counts")
        return psi(reference, current)

    rng = np.random.default_rng(9)
    reference = np.array([[10.0, 10.0, 10.0], [0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    current = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [1.0, 30.0, 1.0]])
    p = bin_pvalues(strict_psi, reference, current, 1.0, rng)
    assert np.all(np.isnan(p[:2]))
    assert p[2] < 1e-3


def test_bin_pvalues_of_a_degenerate_null() -> None:
    """One used bin: the null is always 0; the same current gives 1, mass elsewhere 0."""
    rng = np.random.default_rng(10)
    reference = np.array([0.0, 50.0, 0.0])
    current = np.array([[0.0, 20.0, 0.0], [3.0, 20.0, 0.0]])
    np.testing.assert_array_equal(bin_pvalues(chi_square, reference, current, 1.0, rng), [1, 0])


def test_bin_pvalues_refuse_bad_inputs() -> None:
    rng = np.random.default_rng(11)
    ref = np.array([5.0, 5.0])
    with pytest.raises(CalibrationError, match="bins"):
        bin_pvalues(psi, ref, np.array([1.0, 2.0, 3.0]), 1.0, rng)
    with pytest.raises(CalibrationError, match="phi"):
        bin_pvalues(psi, ref, ref, 0.5, rng)
    with pytest.raises(CalibrationError, match="negative"):
        bin_pvalues(psi, ref, np.array([1.0, -2.0]), 1.0, rng)
    with pytest.raises(CalibrationError, match="replicates"):
        bin_pvalues(psi, ref, ref, 1.0, rng, replicates=5)
    with pytest.raises(CalibrationError, match="broadcast"):
        bin_pvalues(psi, np.ones((2, 2)), np.ones((3, 2)), 1.0, rng)
    with pytest.raises(CalibrationError, match="reduce the last"):
        bin_pvalues(lambda r, c: r + c, ref, ref, 1.0, rng)


def test_effective_size() -> None:
    np.testing.assert_allclose(effective_size([1000, 90], [4.0, 1.0]), [250.0, 90.0])
    with pytest.raises(CalibrationError):
        effective_size(10, 0.9)


# --- KS ---------------------------------------------------------------------------------


def test_ks_pvalue_matches_scipys_asymptotic_two_sample_test() -> None:
    rng = np.random.default_rng(12)
    for n, m, shift in [(3000, 500, 0.0), (3000, 500, 0.15), (800, 2500, 0.05)]:
        a = rng.normal(size=n)
        b = rng.normal(shift, size=m)
        expected = scipy_stats.ks_2samp(a, b, method="asymp")
        assert ks_pvalue(expected.statistic, n, m) == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_pvalue_discounts_clustering_and_the_sketch_error() -> None:
    strong = ks_pvalue(0.05, 10_000, 10_000)
    assert strong < 1e-6
    assert ks_pvalue(0.05, 10_000, 10_000 / 20) > 0.1  # phi = 20
    assert ks_pvalue(0.05, 10_000, 10_000, rank_error=0.05) == 1.0
    assert ks_pvalue(0.05, 10_000, 10_000, rank_error=0.01) > strong
    assert math.isnan(ks_pvalue(0.3, 0, 100))
    for bad in [(1.5, 10, 10), (0.1, -1, 10), (0.1, 10, math.inf)]:
        with pytest.raises(CalibrationError):
            ks_pvalue(*bad)


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


def _replay(seed: int, looks: int, phi_of: str, replicates: int = 200) -> tuple[float, float]:
    """The share of no-drift looks that raise an alarm, and the median design effect.

    Each look: 3 features of 10 bins, a fresh 5,000-row reference, 40 devices of
    log-normal traffic (median 250 rows) whose shares are Dirichlet perturbations of
    the truth (concentration 100, rho ~ 0.01); PSI p-values at the design effect
    ``phi_of`` says ("phi", "pearson" or "none"), BH across the look's features at
    ALPHA_LOOK, effect thresholds at 0 so the evidence alone decides.
    """
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet(np.full(10, 4.0), size=3)
    reference = rng.multinomial(5_000, truth, size=(looks, 3)).astype(np.float64)
    counts = _fleet_counts(rng, truth, looks, devices=40, concentration=100, median_rows=250)
    dispersion = Dispersion.of_devices(counts)  # leading [looks, features]
    if phi_of == "phi":
        phi = dispersion.phi()
    elif phi_of == "pearson":
        phi = np.maximum(np.nan_to_num(dispersion.pearson(), nan=1.0), 1.0)
    else:
        phi = np.ones(dispersion.n.shape)
    p = bin_pvalues(psi, reference, dispersion.totals, phi, rng, replicates)
    alarms = sum(
        bool(decide(p[look], np.zeros(3), 0.0, ALPHA_LOOK).drifted.any()) for look in range(looks)
    )
    return alarms / looks, float(np.median(phi))


def test_false_alarm_rate_holds_on_a_heterogeneous_fleet() -> None:
    """THE calibration test of issue #19: over 2,000 no-drift looks the share of looks
    raising an alarm is within +-20 % of the look's alpha (200 replicates per null, half
    the default, so the fitted nulls are noisier than in service)."""
    rate, phi = _replay(seed=19, looks=LOOKS, phi_of="phi")
    assert phi > 3  # the fleet is strongly clustered: the test has something to correct
    assert abs(rate - ALPHA_LOOK) <= TOLERANCE * ALPHA_LOOK, rate


def test_ignoring_devices_as_clusters_inflates_the_false_alarm_rate() -> None:
    """The same fleet with every row taken as independent (phi = 1) alarms on most
    looks; Pearson's dispersion unadjusted for devices' unequal traffic still alarms
    several times too often. 300 looks tell such rates from 0.1 easily."""
    naive, _ = _replay(seed=20, looks=300, phi_of="none")
    assert naive > 5 * ALPHA_LOOK
    pearson, _ = _replay(seed=21, looks=300, phi_of="pearson")
    assert pearson > 2 * ALPHA_LOOK


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
    p = bin_pvalues(psi, reference, totals, dispersion.phi()[0], rng)
    effects = psi(reference, totals)
    alpha = look_alpha(0.01, 3600, 7 * 86400)
    assert totals.sum() > 10_000_000
    decision = decide(p, effects, 0.2, alpha)
    np.testing.assert_array_equal(np.nonzero(decision.drifted)[0], [3])
    assert effects[3] > 0.2
    # Evidence alone would have alarmed on the hair.
    assert decide(p, effects, 0.0, alpha).drifted.sum() > 1

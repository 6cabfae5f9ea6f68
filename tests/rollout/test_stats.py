"""Tests of the rollout statistics core, with simulations of gates that look again and again.

The simulations check the property the gates rely on: with equal candidate and baseline,
the share of rollouts whose confidence sequence *ever* excludes "no difference" over all
looks stays at most alpha, while a fixed-sample 95% interval checked at every look does not.
"""

import functools
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import stats as scipy_stats

from edgefleet.rollout.stats import (
    Interval,
    Moments,
    Stratum,
    beta_binomial_cs,
    chi_square,
    jensen_shannon,
    mean_difference_cs,
    normal_mixture_radius,
    rate_difference_cs,
    spent_alpha,
)

ALPHA = 0.05
Z95 = 1.959963984540054
LOOKS = 50

# Two hardware kinds, with different rates or means but the same in both arms under the null.
# Each look adds this many units of each kind to the candidate arm and to the baseline arm.
CANDIDATE_PER_LOOK = np.array([120, 80])
BASELINE_PER_LOOK = np.array([1200, 800])
RATES = np.array([0.01, 0.04])
RATE_TAU = 0.02

UNITS_C = np.array([6, 4])
UNITS_B = np.array([60, 40])
MEANS = np.array([10.0, 30.0])
SDS = np.array([2.0, 6.0])
MEAN_TAU = 4.0


# ---------------------------------------------------------------------------- Moments


def test_moments_of_matches_numpy():
    values = np.random.default_rng(0).normal(5.0, 3.0, size=1000)
    m = Moments.of(values.tolist())
    assert m.n == 1000
    assert m.mean == pytest.approx(values.mean(), rel=1e-12)
    assert m.variance == pytest.approx(values.var(ddof=1), rel=1e-12)
    assert m.m2 == pytest.approx(values.var() * 1000, rel=1e-12)


def test_moments_of_small_samples():
    assert Moments.of([]) == Moments()
    assert Moments.of([4.0]) == Moments(n=1, mean=4.0, m2=0.0)
    assert Moments.of([4.0]).variance == 0.0
    assert Moments.of([1.0, 2.0, 3.0]) == Moments(n=3, mean=2.0, m2=2.0)
    assert Moments().merge(Moments.of([1.0, 3.0])) == Moments.of([1.0, 3.0])
    assert Moments.of([1.0, 3.0]).merge(Moments()) == Moments.of([1.0, 3.0])


@given(
    st.lists(st.floats(-1e3, 1e3), max_size=40),
    st.lists(st.floats(-1e3, 1e3), max_size=40),
)
def test_merging_split_samples_equals_the_whole(left: list[float], right: list[float]):
    whole = Moments.of(left + right)
    merged = Moments.of(left).merge(Moments.of(right))
    assert merged.n == whole.n
    assert merged.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-9)
    assert merged.m2 == pytest.approx(whole.m2, rel=1e-9, abs=1e-6)
    assert merged.variance == pytest.approx(whole.variance, rel=1e-9, abs=1e-6)


def test_merging_many_batches():
    values = np.random.default_rng(1).exponential(2.0, size=997)
    total = Moments()
    for batch in np.array_split(values, 13):
        total = total.merge(Moments.of(batch.tolist()))
    assert total.n == 997
    assert total.mean == pytest.approx(values.mean(), rel=1e-12)
    assert total.variance == pytest.approx(values.var(ddof=1), rel=1e-10)


# ---------------------------------------------------------------------------- Interval


def test_interval_checks_its_order():
    assert Interval(0.0, -math.inf, math.inf).excludes(5.0) is False
    assert Interval(1.0, 0.5, 2.0).excludes(0.0)
    assert Interval(-1.0, -2.0, -0.5).excludes(0.0)
    with pytest.raises(ValueError):
        Interval(estimate=0.0, low=0.1, high=1.0)
    with pytest.raises(ValueError):
        Interval(estimate=math.nan, low=0.0, high=1.0)


# ---------------------------------------------------------------------------- radius


def test_normal_mixture_radius_by_hand():
    # V = tau2 = 1 and alpha = 1/e: sqrt(2 * 1 * 2 / 1 * (1 + 0.5 log 2)).
    expected = math.sqrt(4.0 * (1.0 + 0.5 * math.log(2.0)))
    assert normal_mixture_radius(1.0, math.exp(-1.0), 1.0) == pytest.approx(expected)
    assert normal_mixture_radius(0.0, 0.05, 1.0) == 0.0
    assert normal_mixture_radius(-1.0, 0.05, 1.0) == 0.0
    assert normal_mixture_radius(math.inf, 0.05, 1.0) == math.inf


def test_normal_mixture_radius_shrinks_with_variance_and_grows_as_alpha_shrinks():
    variances = [10.0**k for k in range(2, -9, -1)]
    radii = [normal_mixture_radius(v, 0.05, 1.0) for v in variances]
    assert all(a > b > 0 for a, b in itertools.pairwise(radii))
    by_alpha = [normal_mixture_radius(0.01, alpha, 1.0) for alpha in (0.5, 0.1, 0.05, 1e-3, 1e-9)]
    assert all(a < b for a, b in itertools.pairwise(by_alpha))
    # Always wider than the fixed-sample 95% interval: that is the price of looking often.
    for v in variances:
        assert normal_mixture_radius(v, 0.05, 1.0) > Z95 * math.sqrt(v)


@pytest.mark.parametrize(
    ("alpha", "tau2"), [(0.0, 1.0), (1.0, 1.0), (-0.1, 1.0), (1.5, 1.0), (0.05, 0.0), (0.05, -1.0)]
)
def test_normal_mixture_radius_rejects_bad_arguments(alpha: float, tau2: float):
    with pytest.raises(ValueError):
        normal_mixture_radius(1.0, alpha, tau2)


# ---------------------------------------------------------------------------- beta-binomial


def test_beta_binomial_cs_closed_forms():
    # With a = b = 1, s = n: log(1/(n+1)) - n log p0 >= log(1/alpha) <=> p0 <= (alpha/(n+1))^(1/n).
    ten_of_ten = beta_binomial_cs(10, 10, 0.05)
    assert ten_of_ten.estimate == 1.0
    assert ten_of_ten.high == 1.0
    assert ten_of_ten.low == pytest.approx((0.05 / 11) ** 0.1, rel=1e-9)  # 0.583
    assert ten_of_ten.low > 0.05
    # And s = 0: 1 - p0 <= (alpha/(n+1))^(1/n).
    none_of_100 = beta_binomial_cs(0, 100, 0.05)
    assert none_of_100.low == 0.0
    assert none_of_100.high == pytest.approx(1 - (0.05 / 101) ** 0.01, rel=1e-9)  # 0.0733


def test_beta_binomial_cs_examples():
    assert beta_binomial_cs(0, 0, 0.05) == Interval(estimate=0.0, low=0.0, high=1.0)
    half = beta_binomial_cs(500, 1000, 0.05)
    assert half.estimate == 0.5
    assert half.low == pytest.approx(1 - half.high, abs=1e-9)  # symmetric
    assert 0.43 < half.low < 0.45
    # Wider than the exact fixed-sample (Clopper-Pearson) interval, narrower with more data.
    clopper_low = scipy_stats.beta.ppf(0.025, 500, 501)
    assert half.low < clopper_low
    assert beta_binomial_cs(5000, 10000, 0.05).low > half.low
    # Smaller alpha, wider interval; rare events stay well inside (0, 1).
    assert beta_binomial_cs(500, 1000, 0.001).low < half.low
    rare = beta_binomial_cs(1, 10**9, 0.05)
    assert 0.0 < rare.low < 1e-9 < rare.high < 1e-7


def test_beta_binomial_cs_satisfies_its_definition():
    s, n, alpha = 37, 400, 0.05

    def log_mixture(p0: float) -> float:
        from scipy.special import betaln

        return betaln(1 + s, 1 + n - s) - betaln(1, 1) - s * np.log(p0) - (n - s) * np.log1p(-p0)

    cs = beta_binomial_cs(s, n, alpha)
    assert log_mixture(cs.low) == pytest.approx(math.log(1 / alpha), abs=1e-6)
    assert log_mixture(cs.high) == pytest.approx(math.log(1 / alpha), abs=1e-6)
    assert log_mixture(cs.estimate) < 0


def test_beta_binomial_cs_contains_the_true_rate():
    rng = np.random.default_rng(2)
    for p in (0.001, 0.02, 0.3, 0.9):
        events = rng.binomial(1, p, size=20_000).cumsum()
        for n in (10, 100, 1000, 20_000):
            cs = beta_binomial_cs(int(events[n - 1]), n, ALPHA)
            assert cs.low <= p <= cs.high


@pytest.mark.parametrize(("events", "trials"), [(-1, 10), (11, 10), (1, 0)])
def test_beta_binomial_cs_rejects_bad_counts(events: int, trials: int):
    with pytest.raises(ValueError):
        beta_binomial_cs(events, trials, ALPHA)


# ---------------------------------------------------------------------------- mean difference


def test_mean_difference_cs_by_hand():
    candidate = Moments.of([1.0, 2.0, 3.0])  # mean 2, m2 2
    baseline = Moments.of([2.0, 3.0, 4.0, 5.0])  # mean 3.5, m2 5
    cs = mean_difference_cs([Stratum(candidate, baseline)], ALPHA, tau=1.0)
    assert cs is not None
    pooled = (2.0 + 5.0) / 5  # within-arm variance of both arms together
    # Welch: each arm's own variance, the candidate's never below the pooled one.
    variance = max(2.0 / 2, pooled) / 3 + (5.0 / 3) / 4
    radius = normal_mixture_radius(variance, ALPHA, 1.0)
    assert cs.estimate == pytest.approx(-1.5)
    assert cs.low == pytest.approx(-1.5 - radius)
    assert cs.high == pytest.approx(-1.5 + radius)


def test_mean_difference_cs_weights_strata_by_candidate_units():
    a = Stratum(Moments(n=1, mean=11.0, m2=0.0), Moments(n=10, mean=10.0, m2=9.0))
    b = Stratum(Moments(n=3, mean=30.0, m2=8.0), Moments(n=10, mean=32.0, m2=25.0))
    cs = mean_difference_cs([a, b], ALPHA, tau=1.0)
    assert cs is not None
    assert cs.estimate == pytest.approx(0.25 * 1.0 + 0.75 * -2.0)
    # Stratum a: a one-unit candidate arm takes the pooled variance (9/9 = 1.0).
    # Stratum b: pooled 33/11 = 3.0; candidate max(4.0, 3.0); baseline 25/9.
    variance = 0.25**2 * (1.0 / 1 + 1.0 / 10) + 0.75**2 * (4.0 / 3 + (25.0 / 9) / 10)
    assert cs.high - cs.estimate == pytest.approx(normal_mixture_radius(variance, ALPHA, 1.0))
    # A kind missing from one arm, or with too few units for a variance, is left out.
    only_candidate = Stratum(Moments(n=5, mean=100.0, m2=1.0), Moments())
    too_small = Stratum(Moments(n=1, mean=100.0), Moments(n=1, mean=0.0))
    assert mean_difference_cs([a, b, only_candidate, too_small], ALPHA, tau=1.0) == cs


def test_mean_difference_cs_without_data_is_none():
    one = Moments.of([1.0])
    assert mean_difference_cs([], ALPHA, tau=1.0) is None
    assert mean_difference_cs([Stratum(Moments.of([1.0, 2.0]), Moments())], ALPHA, 1.0) is None
    assert mean_difference_cs([Stratum(one, one), Stratum(Moments(), one)], ALPHA, 1.0) is None
    assert mean_difference_cs([Stratum(one, Moments.of([1.0, 2.0]))], ALPHA, 1.0) is not None


def test_mean_difference_cs_floors_a_zero_variance():
    same = Stratum(Moments.of([5.0] * 4), Moments.of([5.0] * 40))
    cs = mean_difference_cs([same], ALPHA, tau=1.0)
    assert cs is not None
    assert cs.estimate == 0.0
    assert 0.0 < cs.high < 1e-4
    assert cs.low == -cs.high
    shifted = Stratum(Moments.of([5.5] * 4), Moments.of([5.0] * 40))
    moved = mean_difference_cs([shifted], ALPHA, tau=1.0)
    assert moved is not None
    assert moved.low > 0.0


def test_mean_difference_cs_rejects_bad_arguments():
    stratum = Stratum(Moments.of([1.0, 2.0]), Moments.of([1.0, 2.0]))
    with pytest.raises(ValueError):
        mean_difference_cs([stratum], 0.0, tau=1.0)
    with pytest.raises(ValueError):
        mean_difference_cs([stratum], ALPHA, tau=0.0)


# ---------------------------------------------------------------------------- rate difference


def test_rate_difference_cs_by_hand():
    cs = rate_difference_cs([(5, 100, 20, 1000)], ALPHA, tau=0.02)
    assert cs is not None
    p = 25 / 1100
    variance = p * (1 - p) * (1 / 100 + 1 / 1000)
    assert cs.estimate == pytest.approx(0.03)
    assert cs.high - cs.estimate == pytest.approx(normal_mixture_radius(variance, ALPHA, 4e-4))


def test_rate_difference_cs_weights_and_edges():
    cs = rate_difference_cs([(10, 100, 10, 1000), (0, 300, 0, 10), (0, 0, 3, 50)], ALPHA, 0.02)
    assert cs is not None
    assert cs.estimate == pytest.approx(0.25 * 0.09)
    # Zero events still give a positive width, the pooled rate floored at 0.5 / trials.
    none = rate_difference_cs([(0, 100, 0, 1000)], ALPHA, tau=0.02)
    assert none is not None
    assert none.estimate == 0.0
    p = 0.5 / 1100
    width = normal_mixture_radius(p * (1 - p) * (1 / 100 + 1 / 1000), ALPHA, 4e-4)
    assert none.high == pytest.approx(width)
    everything = rate_difference_cs([(100, 100, 1000, 1000)], ALPHA, tau=0.02)
    assert everything is not None
    assert everything.high == pytest.approx(width)
    assert rate_difference_cs([], ALPHA, 0.02) is None
    assert rate_difference_cs([(1, 10, 0, 0), (0, 0, 5, 10)], ALPHA, 0.02) is None


@pytest.mark.parametrize("stratum", [(-1, 10, 0, 10), (11, 10, 0, 10), (0, 10, 11, 10)])
def test_rate_difference_cs_rejects_bad_counts(stratum: tuple[int, int, int, int]):
    with pytest.raises(ValueError):
        rate_difference_cs([stratum], ALPHA, tau=0.02)


# ---------------------------------------------------------------------------- simulations


def simulate_rates(
    rng: np.random.Generator, runs: int, candidate_rates: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Cumulative events and trials, shape (kinds, runs, looks), for a growing rollout."""
    looks = np.arange(1, LOOKS + 1)
    events_c = rng.binomial(
        CANDIDATE_PER_LOOK[:, None, None], candidate_rates[:, None, None], size=(2, runs, LOOKS)
    ).cumsum(axis=2)
    events_b = rng.binomial(
        BASELINE_PER_LOOK[:, None, None], RATES[:, None, None], size=(2, runs, LOOKS)
    ).cumsum(axis=2)
    trials_c = np.broadcast_to(CANDIDATE_PER_LOOK[:, None, None] * looks, events_c.shape)
    trials_b = np.broadcast_to(BASELINE_PER_LOOK[:, None, None] * looks, events_b.shape)
    return events_c, trials_c, events_b, trials_b


def first_rate_alarm(counts: tuple[NDArray[np.int64], ...], run: int) -> int | None:
    """The first look (1-based) at which rate_difference_cs excludes 0, or None."""
    ec, nc, eb, nb = (c[:, run, :].tolist() for c in counts)
    for look in range(LOOKS):
        strata = [(ec[h][look], nc[h][look], eb[h][look], nb[h][look]) for h in range(2)]
        cs = rate_difference_cs(strata, ALPHA, RATE_TAU)
        if cs is not None and cs.excludes(0.0):
            return look + 1
    return None


def naive_rate_alarms(counts: tuple[NDArray[np.int64], ...]) -> NDArray[np.bool_]:
    """Per run: whether the fixed-sample 95% z-interval excluded 0 at some look."""
    ec, nc, eb, nb = counts
    weights = nc / nc.sum(axis=0)
    trials = nc + nb
    pooled = np.clip((ec + eb) / trials, 0.5 / trials, 1 - 0.5 / trials)
    estimate = (weights * (ec / nc - eb / nb)).sum(axis=0)
    variance = (weights**2 * pooled * (1 - pooled) * (1 / nc + 1 / nb)).sum(axis=0)
    return (np.abs(estimate) > Z95 * np.sqrt(variance)).any(axis=1)


def simulate_means(
    rng: np.random.Generator, runs: int, candidate_means: NDArray[np.float64]
) -> tuple[NDArray[np.float64], ...]:
    """Cumulative (n, mean, m2) per arm, shape (kinds, runs, looks), of normal values.

    Each look's batch is drawn through its sufficient statistics, which is exact for normal
    data: the batch sum is N(k mu, k sigma^2) and its m2 is sigma^2 chi-square(k - 1).
    """
    looks = np.arange(1, LOOKS + 1)
    out: list[NDArray[np.float64]] = []
    for units, means in ((UNITS_C, candidate_means), (UNITS_B, MEANS)):
        k, mu, sd = units[:, None, None], means[:, None, None], SDS[:, None, None]
        shape = (2, runs, LOOKS)
        batch_sum = rng.normal(k * mu, sd * np.sqrt(k), size=shape)
        batch_m2 = sd**2 * rng.chisquare(k - 1, size=shape)
        n = np.broadcast_to(k * looks, shape).astype(float)
        total = batch_sum.cumsum(axis=2)
        squares = (batch_m2 + batch_sum**2 / k).cumsum(axis=2)
        out += [n, total / n, squares - total**2 / n]
    return tuple(out)


def first_mean_alarm(summaries: tuple[NDArray[np.float64], ...], run: int) -> int | None:
    """The first look (1-based) at which mean_difference_cs excludes 0, or None."""
    nc, mc, qc, nb, mb, qb = (s[:, run, :].tolist() for s in summaries)
    for look in range(LOOKS):
        strata = [
            Stratum(
                Moments(int(nc[h][look]), mc[h][look], qc[h][look]),
                Moments(int(nb[h][look]), mb[h][look], qb[h][look]),
            )
            for h in range(2)
        ]
        cs = mean_difference_cs(strata, ALPHA, MEAN_TAU)
        if cs is not None and cs.excludes(0.0):
            return look + 1
    return None


def naive_mean_alarms(summaries: tuple[NDArray[np.float64], ...]) -> NDArray[np.bool_]:
    """Per run: whether the fixed-sample 95% z-interval excluded 0 at some look."""
    nc, mc, qc, nb, mb, qb = summaries
    weights = nc / nc.sum(axis=0)
    pooled = (qc + qb) / (nc + nb - 2)
    estimate = (weights * (mc - mb)).sum(axis=0)
    variance = (weights**2 * pooled * (1 / nc + 1 / nb)).sum(axis=0)
    return (np.abs(estimate) > Z95 * np.sqrt(variance)).any(axis=1)


def test_rate_difference_cs_false_alarms_under_repeated_looks():
    runs = 4000
    counts = simulate_rates(np.random.default_rng(10), runs, RATES)
    always_valid = np.mean([first_rate_alarm(counts, r) is not None for r in range(runs)])
    naive = naive_rate_alarms(counts).mean()
    assert always_valid <= ALPHA
    assert naive > 2 * ALPHA


def test_mean_difference_cs_false_alarms_under_repeated_looks():
    runs = 3000
    summaries = simulate_means(np.random.default_rng(11), runs, MEANS)
    always_valid = np.mean([first_mean_alarm(summaries, r) is not None for r in range(runs)])
    naive = naive_mean_alarms(summaries).mean()
    assert always_valid <= ALPHA
    assert naive > 2 * ALPHA


def test_beta_binomial_cs_false_alarms_under_repeated_looks():
    runs, looks, per_look, p0 = 2000, 100, 20, 0.1
    events = np.random.default_rng(12).binomial(per_look, p0, size=(runs, looks)).cumsum(axis=1)
    trials = per_look * np.arange(1, looks + 1)
    # The same (events, trials) recurs across runs: compute each interval once.
    excludes = functools.cache(lambda s, n: beta_binomial_cs(s, n, ALPHA).excludes(p0))
    always_valid = np.mean([any(map(excludes, row, trials.tolist())) for row in events.tolist()])
    estimate = events / trials
    naive = (np.abs(estimate - p0) > Z95 * np.sqrt(estimate * (1 - estimate) / trials)).any(axis=1)
    assert always_valid <= ALPHA
    assert naive.mean() > 2 * ALPHA


@pytest.mark.parametrize("candidate_rates", [RATES + 0.04, RATES + 0.01])
def test_rate_difference_cs_power(candidate_rates: NDArray[np.float64]):
    runs = 300
    counts = simulate_rates(np.random.default_rng(13), runs, candidate_rates)
    alarms = [first_rate_alarm(counts, r) for r in range(runs)]
    assert np.mean([a is not None for a in alarms]) > 0.9


@pytest.mark.parametrize("shift", [2.0, 0.3])  # in standard deviations of each kind
def test_mean_difference_cs_power(shift: float):
    runs = 300
    summaries = simulate_means(np.random.default_rng(14), runs, MEANS + shift * SDS)
    alarms = [first_mean_alarm(summaries, r) for r in range(runs)]
    assert np.mean([a is not None for a in alarms]) > 0.9


# ---------------------------------------------------------------------------- distributions


def test_jensen_shannon_examples():
    assert jensen_shannon([1, 2, 3], [1, 2, 3]) == 0.0
    assert jensen_shannon([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-15)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4):
    # JS = (log2(4/3) + (log2(2/3) + log2(2)) / 2) / 2 = 0.311278...
    expected = (math.log2(4 / 3) + (math.log2(2 / 3) + 1.0) / 2) / 2
    assert jensen_shannon([2, 0], [3, 3]) == pytest.approx(expected)
    assert jensen_shannon([3, 3], [2, 0]) == pytest.approx(expected)


def test_jensen_shannon_pads_and_handles_empty():
    assert jensen_shannon([1, 1], [1, 1, 0]) == 0.0
    assert jensen_shannon([2], [3, 3]) == pytest.approx(jensen_shannon([2, 0], [3, 3]))
    assert jensen_shannon([], [1, 2]) == 0.0
    assert jensen_shannon([0, 0], [1, 2]) == 0.0
    with pytest.raises(ValueError):
        jensen_shannon([-1, 2], [1, 2])


def test_chi_square_examples():
    assert chi_square([10, 20, 30], [20, 40, 60]) == (0.0, 2, 1.0)
    # 2 x 2 with all expected counts 15: 4 * 5^2 / 15.
    statistic, dof, pvalue = chi_square([10, 20], [20, 10])
    assert statistic == pytest.approx(20 / 3)
    assert dof == 1
    assert pvalue == pytest.approx(math.erfc(math.sqrt(20 / 3 / 2)))  # chi2(1) tail
    # A class the candidate never predicts.
    statistic, dof, pvalue = chi_square([150, 150, 0], [100, 100, 100])
    assert dof == 2
    assert pvalue < 1e-20


def test_chi_square_padding_and_degenerate_tables():
    assert chi_square([5, 7], [6, 9, 0]) == chi_square([5, 7], [6, 9])
    assert chi_square([5, 0, 7], [6, 0, 9])[1] == 1
    assert chi_square([5], [0, 9]) == chi_square([5, 0], [0, 9])
    assert chi_square([5, 0, 0], [9]) == (0.0, 0, 1.0)  # one column left
    assert chi_square([0, 0], [3, 4]) == (0.0, 0, 1.0)  # empty row
    assert chi_square([], []) == (0.0, 0, 1.0)
    with pytest.raises(ValueError):
        chi_square([-1, 3], [3, 4])


def test_spent_alpha():
    spent = [spent_alpha(ALPHA, look) for look in range(1, 1001)]
    assert spent[0] == ALPHA / 2
    assert all(a > b for a, b in itertools.pairwise(spent))
    assert sum(spent) < ALPHA
    assert sum(spent) == pytest.approx(ALPHA * (1 - 1 / 1001))
    with pytest.raises(ValueError):
        spent_alpha(ALPHA, 0)

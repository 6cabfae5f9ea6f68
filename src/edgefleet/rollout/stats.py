"""Statistics core of rollout gates: always-valid confidence sequences and a few summaries.

A gate looks at the same growing data at every controller tick, and a fixed-sample test
checked at every tick raises false alarms far above its level. So the intervals here are
*confidence sequences* (CS): with probability >= 1 - alpha they hold at every look at once.
Differences of means and rates use Robbins' normal mixture (asymptotic: plug-in variance);
a single Bernoulli rate the exact Beta-binomial mixture. ``chi_square`` is a fixed-sample
test: repeated, look ``k`` gets ``spent_alpha(alpha, k)``. Pure functions, no I/O::

    >>> candidate = Moments.of([41.0, 39.5, 44.0])  # latency of candidate units, one kind
    >>> baseline = Moments.of([40.0, 38.0, 42.5, 40.5, 41.0])
    >>> cs = mean_difference_cs([Stratum(candidate, baseline)], alpha=0.05, tau=5.0)
    >>> cs is not None and cs.low < 0.0 < cs.high  # no evidence of a difference yet
    True
    >>> beta_binomial_cs(events=0, trials=100, alpha=0.05).high < 0.08
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special, stats  # type: ignore[import-untyped]

# Logit bound for root finding: expit(-800) is below the smallest float.
_LOGIT_LIMIT = 800.0


@dataclass(frozen=True)
class Interval:
    """An estimate with the bounds of its confidence sequence at the current look."""

    estimate: float
    low: float
    high: float  # low <= estimate <= high; may be -inf/inf when there is no information

    def __post_init__(self) -> None:
        if not self.low <= self.estimate <= self.high:
            raise ValueError(f"not an interval: {self.low} <= {self.estimate} <= {self.high}")

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval."""
        return value < self.low or value > self.high


@dataclass(frozen=True)
class Moments:
    """Mergeable summary of a sample: count, mean, and sum of squared deviations.

    Summaries of disjoint samples merge exactly (Welford / Chan et al.).
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        """Summarise ``values`` (two-pass, so as accurate as numpy)."""
        data = np.fromiter(values, dtype=float)
        if data.size == 0:
            return cls()
        mean = float(data.mean())
        return cls(n=int(data.size), mean=mean, m2=float(((data - mean) ** 2).sum()))

    def merge(self, other: Moments) -> Moments:
        """The summary of both samples together (Chan et al.'s parallel formula)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(n=n, mean=mean, m2=m2)

    @property
    def variance(self) -> float:
        """Sample variance (denominator ``n - 1``); 0.0 when ``n < 2``."""
        return self.m2 / (self.n - 1) if self.n >= 2 else 0.0


@dataclass(frozen=True)
class Stratum:
    """One hardware kind: candidate and baseline summaries of a per-unit quantity."""

    candidate: Moments
    baseline: Moments
    #: The least variance of one unit's value in each arm, where the data say what it
    #: is however alike the units look (a count rate's Poisson noise, for example).
    candidate_floor: float = 0.0
    baseline_floor: float = 0.0


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _tau2(tau: float) -> float:
    if not (tau > 0.0 and math.isfinite(tau)):
        raise ValueError(f"tau must be positive and finite, got {tau}")
    return tau * tau


def normal_mixture_radius(variance: float, alpha: float, tau2: float) -> float:
    """Half-width of the two-sided always-valid CS of Robbins' normal mixture N(0, tau2).

    ``sqrt(2 V (V + tau2) / tau2 * (log(1/alpha) + 0.5 * log((V + tau2) / V)))`` for an
    estimate of (plug-in) variance ``V = variance``: 0.0 when ``V <= 0``, inf when V is.
    ``alpha`` bounds the error over all looks; the CS is tightest for effects near ``sqrt(tau2)``.

    Raises:
        ValueError: alpha not in (0, 1), tau2 not positive, or variance NaN.
    """
    _check_alpha(alpha)
    if not tau2 > 0.0:
        raise ValueError(f"tau2 must be positive, got {tau2}")
    if math.isnan(variance):
        raise ValueError("variance is NaN")
    if variance <= 0.0 or math.isinf(variance):
        return max(variance, 0.0)
    log_term = math.log(1.0 / alpha) + 0.5 * math.log((variance + tau2) / variance)
    return math.sqrt(2.0 * variance * (variance + tau2) / tau2 * log_term)


def _cs(estimate: float, variance: float, alpha: float, tau2: float) -> Interval:
    radius = normal_mixture_radius(variance, alpha, tau2)
    return Interval(estimate=estimate, low=estimate - radius, high=estimate + radius)


def mean_difference_cs(strata: Sequence[Stratum], alpha: float, tau: float) -> Interval | None:
    """Always-valid CS for the candidate-minus-baseline difference of means, by hardware.

    Estimate ``sum_h w_h (mean_c,h - mean_b,h)``, ``w_h = n_c,h / sum n_c``, variance
    ``sum w_h^2 (max(s_c,h^2, s_h^2) / n_c,h + s_b,h^2 / n_b,h)``: Welch's per-arm
    variances, the candidate's never below ``s_h^2``, the pooled within-arm variance
    (df ``n_c,h + n_b,h - 2``); an arm of one unit uses ``s_h^2``; all floored at
    ``(1e-6 * max(1, |means|))^2`` and the stratum's ``candidate_floor`` /
    ``baseline_floor``. A stratum counts
    when both arms have a unit and there are 3 in all; None when none does. ``tau`` is the
    mixing scale in the quantity's units (about the effect that matters).

    Raises:
        ValueError: alpha not in (0, 1) or tau not positive.
    """
    _check_alpha(alpha)
    tau2 = _tau2(tau)
    usable = [
        s
        for s in strata
        if s.candidate.n >= 1 and s.baseline.n >= 1 and s.candidate.n + s.baseline.n >= 3
    ]
    if not usable:
        return None
    total = sum(s.candidate.n for s in usable)
    estimate = variance = 0.0
    for s in usable:
        c, b = s.candidate, s.baseline
        weight = c.n / total
        pooled = (c.m2 + b.m2) / (c.n + b.n - 2)
        floor = (1e-6 * max(1.0, abs(c.mean), abs(b.mean))) ** 2
        # Welch's per-arm variances, the candidate's never below the pooled one: a
        # noisier candidate widens the interval, and a canary of a few devices cannot
        # claim a tiny spread from its own handful of values.
        var_c = c.variance if c.n >= 2 else pooled
        var_b = b.variance if b.n >= 2 else pooled
        estimate += weight * (c.mean - b.mean)
        var_c = max(var_c, pooled, floor, s.candidate_floor)
        var_b = max(var_b, floor, s.baseline_floor)
        variance += weight * weight * (var_c / c.n + var_b / b.n)
    return _cs(estimate, variance, alpha, tau2)


def rate_difference_cs(
    strata: Sequence[tuple[int, int, int, int]], alpha: float, tau: float
) -> Interval | None:
    """Always-valid CS for the candidate-minus-baseline difference of rates, by hardware.

    Strata are ``(events_c, trials_c, events_b, trials_b)``, weighted by candidate trials;
    ``p_c - p_b`` has variance ``p (1 - p) (1/n_c + 1/n_b)``, ``p`` the pooled rate kept in
    ``[0.5 / (n_c + n_b), 1 - 0.5 / (n_c + n_b)]`` so zero events still give a positive
    variance. Strata without trials in both arms are ignored; None when all are. ``tau``
    is the mixing scale on the rate scale (e.g. 0.01 for one percentage point).

    Raises:
        ValueError: alpha or tau out of range, a count negative or events > trials.
    """
    _check_alpha(alpha)
    tau2 = _tau2(tau)
    for events_c, trials_c, events_b, trials_b in strata:
        if not (0 <= events_c <= trials_c and 0 <= events_b <= trials_b):
            raise ValueError(f"bad counts {(events_c, trials_c, events_b, trials_b)}")
    usable = [s for s in strata if s[1] >= 1 and s[3] >= 1]
    if not usable:
        return None
    total = sum(s[1] for s in usable)
    estimate = variance = 0.0
    for events_c, trials_c, events_b, trials_b in usable:
        weight = trials_c / total
        trials = trials_c + trials_b
        edge = 0.5 / trials
        p = min(max((events_c + events_b) / trials, edge), 1.0 - edge)
        estimate += weight * (events_c / trials_c - events_b / trials_b)
        variance += weight * weight * p * (1.0 - p) * (1.0 / trials_c + 1.0 / trials_b)
    return _cs(estimate, variance, alpha, tau2)


def _bound(excess: Callable[[float], float], inner: float, outer: float, extreme: float) -> float:
    """Rate where ``excess`` (negative at logit ``inner``) crosses 0 going out to ``outer``."""
    if excess(outer) < 0.0:
        return extreme
    return float(special.expit(optimize.brentq(excess, inner, outer, xtol=1e-12)))


def beta_binomial_cs(
    events: int, trials: int, alpha: float, a: float = 1.0, b: float = 1.0
) -> Interval:
    """Exact always-valid CS for a Bernoulli rate from a Beta(a, b) mixture martingale.

    With ``s`` events in ``n`` trials, ``p0`` is excluded once ``log B(a + s, b + n - s) -
    log B(a, b) - s log p0 - (n - s) log(1 - p0) >= log(1/alpha)`` (Robbins 1970). That is
    convex in ``p0`` and negative at the estimate ``s / n``, so the set is an interval; its
    ends come from brentq on the logit scale. No trials gives ``(0, 0, 1)``.

    Raises:
        ValueError: events < 0, events > trials, alpha not in (0, 1), or a or b not > 0.
    """
    _check_alpha(alpha)
    if not 0 <= events <= trials:
        raise ValueError(f"need 0 <= events <= trials, got {events} of {trials}")
    if not (a > 0.0 and b > 0.0):
        raise ValueError(f"a and b must be positive, got {a}, {b}")
    if trials == 0:
        return Interval(estimate=0.0, low=0.0, high=1.0)
    s, n = events, trials
    constant = float(special.betaln(a + s, b + n - s) - special.betaln(a, b)) - math.log(1 / alpha)

    def excess(t: float) -> float:  # t = logit(p0); log p0 = -log(1 + e^-t)
        log_p, log_q = -np.logaddexp(0.0, -t), -np.logaddexp(0.0, t)
        return float(constant - s * log_p - (n - s) * log_q)

    estimate = s / n  # excess < 0 at its logit, at a bracket end when s = 0 or s = n
    limit = _LOGIT_LIMIT
    t_hat = -limit if s == 0 else limit if s == n else math.log(s) - math.log(n - s)
    low = 0.0 if s == 0 else _bound(excess, t_hat, -limit, 0.0)
    high = 1.0 if s == n else _bound(excess, t_hat, limit, 1.0)
    return Interval(estimate=estimate, low=min(low, estimate), high=max(high, estimate))


def _padded(p: Sequence[float], q: Sequence[float]) -> NDArray[np.float64]:
    """Two rows of non-negative numbers, the shorter padded with zeros."""
    table = np.zeros((2, max(len(p), len(q))))
    table[0, : len(p)] = p
    table[1, : len(q)] = q
    if not (np.isfinite(table).all() and (table >= 0).all()):
        raise ValueError("counts must be finite and non-negative")
    return table


def jensen_shannon(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two count or probability vectors.

    They are normalised here, the shorter padded with zeros; 0.0 when either sums to 0.

    Raises:
        ValueError: a negative or non-finite entry.
    """
    table = _padded(p, q)
    totals = table.sum(axis=1)
    if (totals <= 0).any():
        return 0.0
    dist = table / totals[:, None]
    mixture = dist.mean(axis=0)
    divergence = float(special.rel_entr(dist, mixture).sum()) / (2.0 * math.log(2.0))
    return min(max(divergence, 0.0), 1.0)


def chi_square(candidate: Sequence[int], baseline: Sequence[int]) -> tuple[float, int, float]:
    """Chi-square test of homogeneity on the 2 x k table: (statistic, dof, p-value).

    The shorter row is padded with zeros, columns zero in both rows dropped; ``(0.0, 0,
    1.0)`` when fewer than two columns remain or a row sums to 0. A fixed-sample test: at
    look ``k`` of a gate, compare the p-value to ``spent_alpha(alpha, k)``.

    Raises:
        ValueError: a negative count.
    """
    table = _padded(candidate, baseline)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), int(result.dof), float(result.pvalue)


def spent_alpha(alpha: float, look: int) -> float:
    """Alpha to spend at look ``look`` (1-based): ``alpha / (look * (look + 1))``.

    These sum to less than ``alpha`` over any number of looks (a union bound).

    Raises:
        ValueError: look < 1 or alpha not in (0, 1).
    """
    _check_alpha(alpha)
    if look < 1:
        raise ValueError(f"look must be >= 1, got {look}")
    return alpha / (look * (look + 1))


def share_ratio_pvalue(
    candidate: tuple[float, float],
    baseline: tuple[float, float],
    ratio: float,
    *,
    lower: bool,
    dispersion: float = 1.0,
) -> float:
    """One-sided exact test on the ratio of two shares (a class's among predictions).

    ``candidate`` and ``baseline`` are ``(events, total)``. The null hypothesis is
    ``share_c / share_b >= ratio`` when ``lower`` (the candidate's share fell below
    ``ratio`` times the baseline's), ``<= ratio`` otherwise. Conditioned on the events of
    both arms, ``t``, the candidate's are binomial with ``pi = total_c * ratio /
    (total_c * ratio + total_b)`` at the null's edge (exact for Poisson counts, and for
    rare classes, where the chi-square approximation fails); the tail is the regularised
    incomplete beta. ``dispersion`` >= 1 divides the events (quasi-binomial): counts of
    devices whose class mix differs more than sampling explains weigh less.

    Raises:
        ValueError: a negative count, events above their total, ratio not positive or
            dispersion below 1.
    """
    (x_c, n_c), (x_b, n_b) = candidate, baseline
    if min(x_c, n_c, x_b, n_b) < 0 or x_c > n_c or x_b > n_b:
        raise ValueError(f"not counts: {candidate}, {baseline}")
    if not ratio > 0.0 or not dispersion >= 1.0:
        raise ValueError(f"ratio must be positive and dispersion >= 1: {ratio}, {dispersion}")
    if not n_c or not n_b:
        return 1.0
    x, t = x_c / dispersion, (x_c + x_b) / dispersion
    if t <= 0.0:
        return 1.0
    pi = n_c * ratio / (n_c * ratio + n_b)
    if lower:  # P(X <= x)
        return 1.0 if x >= t else float(special.betainc(t - x, x + 1.0, 1.0 - pi))
    return 1.0 if x <= 0.0 else float(special.betainc(x, t - x + 1.0, pi))  # P(X >= x)


def class_dispersion(arms: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
    """Each class's dispersion across devices: Pearson's chi-square of every device's
    count of the class against its arm's pooled share, over the degrees of freedom, at
    least 1. ``arms`` are (devices x classes) count matrices of the same width; 1 where
    there are fewer than three devices in all."""
    width = arms[0].shape[1] if arms else 0
    pearson = np.zeros(width)
    devices = 0
    for counts in arms:
        if counts.shape[0] == 0:
            continue
        devices += counts.shape[0]
        share = counts.sum(axis=0) / max(counts.sum(), 1.0)
        expected = counts.sum(axis=1, keepdims=True) * share
        spread = expected * (1.0 - share)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(spread > 0, (counts - expected) ** 2 / spread, 0.0)
        pearson += terms.sum(axis=0)
    dof = devices - len([a for a in arms if a.shape[0]])
    if dof < 1:
        return np.ones(width)
    return np.maximum(pearson / dof, 1.0)

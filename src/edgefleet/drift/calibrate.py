"""Evidence of drift calibrated to the sample a fleet really gives.

A window of telemetry holds many rows, but rows on one device are not independent: a
device in a dark corridor sends dark images all day. Treating N rows as N independent
draws makes every test fire on a big fleet (the classic complaint about drift tools).
This module turns a window's merged counts into p-values that hold for clustered data,
and into a decision that also asks for a practical effect size:

- :class:`Dispersion` accumulates mergeable per-device sums and estimates the *design
  effect* ``phi`` of the pooled counts (how much more they vary than a multinomial of
  the same size); the window then weighs as ``N / phi`` independent rows.
- :func:`bin_pvalues` simulates the null of any bin statistic (PSI, chi-square,
  Jensen-Shannon) from the reference at that effective size, vectorised over features,
  segments and replicates, and fits a scaled chi-square to it, so p-values far below
  ``1 / replicates`` are still smooth.
- :func:`ks_pvalue` does the same for KS (and Wasserstein, which borrows KS's evidence)
  with the two-sample Kolmogorov distribution.
- :func:`benjamini_hochberg` and :func:`decide` control false discoveries across the
  tests of one look; :func:`look_alpha` spends the monitor's false-alarm rate over its
  tumbling looks.

Example::

    dispersion = Dispersion.of_devices(device_counts)       # [devices, features, bins]
    p = bin_pvalues(psi, reference, dispersion.totals, dispersion.phi(), rng)
    alpha = look_alpha(rate=0.01, window_s=3600, period_s=7 * 86400)
    decision = decide(p, psi(reference, dispersion.totals), thresholds=0.2, alpha=alpha)
    decision.drifted  # per feature: evidence below the BH cut and PSI >= 0.2

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats  # type: ignore[import-untyped]

from edgefleet.drift.errors import DriftError

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: A bin statistic: reference and current counts ``[..., B]`` to values ``[...]``.
BinStatistic = Callable[[NDArray[Any], NDArray[Any]], NDArray[Any]]

#: Replicates of the simulated null per test. The fitted tail makes a few hundred enough:
#: they only need to pin the null's mean and variance (a 7 % standard error at 400).
DEFAULT_REPLICATES = 400

# Elements of one simulated chunk ([replicates, ..., B]); bounds memory at ~32 MB.
_CHUNK_ELEMENTS = 1 << 22


class CalibrationError(DriftError, ValueError):
    """Inputs to a calibration function do not fit together (shapes, negative counts,
    a rate outside (0, 1)); the message says which."""

    code = "drift_calibration_invalid"


@dataclass(frozen=True)
class Dispersion:
    """Mergeable sums that measure how much devices differ, per feature and segment.

    For each device ``d`` with bin counts ``x_d`` and total ``n_d`` (devices with no
    rows left out), over the leading axes ``[...]``:

    - ``totals[..., b] = sum_d x_db`` (the pooled counts),
    - ``sums_sq[..., b] = sum_d x_db**2 / n_d``,
    - ``n = sum_d n_d``, ``n_sq = sum_d n_d**2``, ``devices = D``.

    All are sums over devices, so the dispersion of disjoint sets of devices merges
    exactly (:meth:`merged`). A *device* here is whatever the counts given to
    :meth:`of_devices` belong to: give it each device's counts summed over the whole
    window. Merging the dispersions of one device's separate buckets counts that device
    as several independent devices, which understates ``phi`` when devices differ
    persistently (the usual case).
    """

    totals: FloatArray
    sums_sq: FloatArray
    n: FloatArray
    n_sq: FloatArray
    devices: NDArray[np.int64]

    def __post_init__(self) -> None:
        lead = self.n.shape
        if (
            self.totals.shape != self.sums_sq.shape
            or self.totals.shape[:-1] != lead
            or self.n_sq.shape != lead
            or self.devices.shape != lead
        ):
            raise CalibrationError(
                "dispersion sums have inconsistent shapes: totals "
                f"{self.totals.shape}, sums_sq {self.sums_sq.shape}, n {self.n.shape}, "
                f"n_sq {self.n_sq.shape}, devices {self.devices.shape}"
            )

    @staticmethod
    def of_devices(counts: ArrayLike) -> Dispersion:
        """The sums of devices' bin counts ``[D, ..., B]`` (one entry of the first axis
        per device; a device with no rows somewhere is simply not counted there).

        Raises:
            CalibrationError: the counts are not at least 2-dimensional, or negative.
        """
        x = _counts(counts, "device counts")
        if x.ndim < 2:
            raise CalibrationError(
                f"device counts must be [devices, ..., bins], got shape {x.shape}"
            )
        n_d = x.sum(axis=-1)
        safe = np.where(n_d > 0, n_d, 1.0)
        return Dispersion(
            totals=x.sum(axis=0),
            sums_sq=(x * x / safe[..., None]).sum(axis=0),
            n=n_d.sum(axis=0),
            n_sq=(n_d * n_d).sum(axis=0),
            devices=(n_d > 0).sum(axis=0).astype(np.int64),
        )

    @staticmethod
    def empty(shape: tuple[int, ...], bins: int) -> Dispersion:
        """No devices yet, for leading shape ``shape`` and ``bins`` bins."""
        return Dispersion(
            totals=np.zeros((*shape, bins)),
            sums_sq=np.zeros((*shape, bins)),
            n=np.zeros(shape),
            n_sq=np.zeros(shape),
            devices=np.zeros(shape, dtype=np.int64),
        )

    def merged(self, other: Dispersion) -> Dispersion:
        """The dispersion of both sets of devices (disjoint sets: see the class notes).

        Raises:
            CalibrationError: the two have different shapes.
        """
        if self.totals.shape != other.totals.shape:
            raise CalibrationError(
                f"cannot merge dispersions of shapes {self.totals.shape} and {other.totals.shape}"
            )
        return Dispersion(
            totals=self.totals + other.totals,
            sums_sq=self.sums_sq + other.sums_sq,
            n=self.n + other.n,
            n_sq=self.n_sq + other.n_sq,
            devices=self.devices + other.devices,
        )

    def pearson(self) -> FloatArray:
        """Pearson's dispersion statistic ``X^2 / ((D - 1)(B - 1))`` of the devices'
        counts against their pooled shares (bins no device used left out); about 1 when
        devices do not differ beyond chance. NaN where it is undefined (fewer than two
        devices or two used bins)."""
        statistic, df = self._pearson_parts()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(df > 0, statistic / np.where(df > 0, df, 1.0), np.nan)

    def intraclass(self) -> FloatArray:
        """The intra-device correlation ``rho`` of rows, in [0, 1], estimated from
        Pearson's statistic (a Dirichlet-multinomial model: each device's shares vary
        around the pooled ones with covariance ``rho`` times a single row's). 0 where
        it cannot be estimated (one device, one used bin, one row per device)."""
        statistic, df = self._pearson_parts()
        d = self.devices.astype(np.float64)
        safe_n = np.where(self.n > 0, self.n, 1.0)
        # E[X^2] = (B - 1)[(D - 1) + rho (N - sum n_d^2 / N - D + 1)] under that model.
        spread = self.n - self.n_sq / safe_n - (d - 1.0)
        usable = (df > 0) & (spread > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            bins_df = np.where(usable, df / np.where(d > 1, d - 1.0, 1.0), 1.0)
            rho = (statistic / bins_df - (d - 1.0)) / np.where(usable, spread, 1.0)
        return np.where(usable, np.clip(rho, 0.0, 1.0), 0.0)

    def design_effect(self, n: ArrayLike, n_sq: ArrayLike) -> FloatArray:
        """The design effect of another sample from the same devices with ``n`` rows
        in all and ``n_sq = sum_d n_d**2`` (say, the rows of the devices' quantile
        sketches): ``1 + rho (n_sq / n - 1)``, at least 1."""
        rows = np.asarray(n, dtype=np.float64)
        rows_sq = np.asarray(n_sq, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_size = np.where(rows > 0, rows_sq / np.where(rows > 0, rows, 1.0), 1.0)
        return np.asarray(1.0 + self.intraclass() * np.maximum(mean_size - 1.0, 0.0))

    def phi(self) -> FloatArray:
        """The design effect of the pooled counts, at least 1: their covariance is
        ``phi`` times a multinomial's of the same size, so they weigh as ``n / phi``
        independent rows.

        With devices of equal size this is Pearson's dispersion floored at 1; with
        unequal sizes it is converted through :meth:`intraclass`, because a few busy
        devices make the pooled counts vary more than the average device suggests. One
        device (or one used bin) gives 1: heterogeneity cannot be measured from a single
        device, which is why the service reports such a segment as insufficient data.
        """
        return self.design_effect(self.n, self.n_sq)

    def _pearson_parts(self) -> tuple[FloatArray, FloatArray]:
        used = self.totals > 0
        safe_n = np.where(self.n > 0, self.n, 1.0)
        shares = self.totals / safe_n[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(used, self.sums_sq / np.where(used, shares, 1.0), 0.0)
        statistic = np.maximum(terms.sum(axis=-1) - self.n, 0.0)
        bins = used.sum(axis=-1)
        df = np.maximum(self.devices - 1, 0) * np.maximum(bins - 1, 0)
        return statistic, df.astype(np.float64)


def effective_size(n: ArrayLike, phi: ArrayLike) -> FloatArray:
    """``n / phi``: how many independent rows a clustered sample of ``n`` weighs.

    Raises:
        CalibrationError: ``phi`` is below 1 or not finite, or ``n`` is negative.
    """
    rows = np.asarray(n, dtype=np.float64)
    factor = _phi(phi)
    if np.any(rows < 0):
        raise CalibrationError("sample sizes cannot be negative")
    return np.asarray(rows / factor)


def bin_pvalues(
    statistic: BinStatistic,
    reference: ArrayLike,
    current: ArrayLike,
    phi: ArrayLike,
    rng: np.random.Generator,
    replicates: int = DEFAULT_REPLICATES,
    *,
    power: float = 1.0,
) -> FloatArray:
    """P-values of a bin statistic under "no drift", for clustered current counts.

    The null is simulated from the reference: the reference resampled at its own size
    (``Multinomial(n_ref, p_ref)``) against a current sample at the effective size
    (``Multinomial(N / phi, p_ref)``); ``statistic`` is computed on every replicate at
    once (shape ``[replicates, ..., B]``). ``statistic ** power`` is then fitted with a
    scaled chi-square ``a * chi2(nu)`` by its mean and variance, which is what PSI and
    chi-square (``power=1``) and the squared Jensen-Shannon *distance* (``power=2``)
    are asymptotically; the p-value is that fit's upper tail at the observed value.
    The observed statistic is computed on the current counts rescaled to the effective
    size, so a statistic that grows with the sample (chi-square) compares like with like
    (for statistics of shares, such as PSI, the rescaling changes nothing).

    Args:
        statistic: counts ``[..., B]`` x2 to values ``[...]``, vectorised over leading
            axes (it receives float counts).
        reference: the reference's counts ``[..., B]``, broadcastable to ``current``.
        current: the window's pooled counts ``[..., B]``.
        phi: the design effect per test (``[...]``, broadcastable), at least 1.
        rng: the source of the simulation (seed it for reproducible p-values).
        replicates: simulated draws per test (at least 20).
        power: the power that makes the statistic about a scaled chi-square.

    Returns:
        p-values of the broadcast leading shape; NaN where the reference or the current
        sample is empty (no test: report insufficient data instead).

    Raises:
        CalibrationError: the bins do not match, counts are negative or not finite,
            ``phi`` is below 1, or ``replicates`` or ``power`` is out of range.
    """
    if replicates < 20:
        raise CalibrationError(f"replicates must be at least 20, got {replicates}")
    if not (math.isfinite(power) and power > 0):
        raise CalibrationError(f"power must be a positive number, got {power}")
    ref = _counts(reference, "reference counts")
    cur = _counts(current, "current counts")
    if ref.ndim < 1 or cur.ndim < 1 or ref.shape[-1] != cur.shape[-1]:
        raise CalibrationError(
            f"reference bins {ref.shape} and current bins {cur.shape} do not match: both "
            "need the same number of bins on the last axis"
        )
    try:
        lead = np.broadcast_shapes(ref.shape[:-1], cur.shape[:-1], np.shape(phi))
    except ValueError as exc:
        raise CalibrationError(
            f"shapes do not broadcast: reference {ref.shape}, current {cur.shape}, phi "
            f"{np.shape(phi)}"
        ) from exc
    bins = ref.shape[-1]
    ref = np.broadcast_to(ref, (*lead, bins))
    cur = np.broadcast_to(cur, (*lead, bins))
    factor = np.broadcast_to(_phi(phi), lead)

    n_ref = ref.sum(axis=-1)
    n_cur = cur.sum(axis=-1)
    testable = (n_ref > 0) & (n_cur > 0)
    n_eff = np.where(testable, np.maximum(np.rint(n_cur / factor), 1.0), 1.0)
    safe_ref = np.where(testable, n_ref, 1.0)
    shares = np.where(testable[..., None], ref / safe_ref[..., None], 1.0 / bins)

    scaled = cur * (n_eff / np.where(testable, n_cur, 1.0))[..., None]
    # An empty side has no distribution (statistics may refuse it): stand-in counts
    # there, and NaN in the result.
    observed = np.asarray(
        statistic(
            np.where(testable[..., None], ref, 1.0), np.where(testable[..., None], scaled, 1.0)
        ),
        dtype=np.float64,
    )
    if observed.shape != lead:
        raise CalibrationError(
            f"the statistic returned shape {observed.shape} for inputs of leading shape "
            f"{lead}: it must reduce the last (bins) axis only"
        )

    ref_trials = np.maximum(np.rint(safe_ref), 1.0).astype(np.int64)
    cur_trials = n_eff.astype(np.int64)
    total = np.zeros(lead)
    total_sq = np.zeros(lead)
    cells = max(1, math.prod(lead) * bins)
    chunk = max(1, min(replicates, _CHUNK_ELEMENTS // cells))
    done = 0
    while done < replicates:
        size = min(chunk, replicates - done)
        sim_ref = rng.multinomial(ref_trials, shares, size=(size, *lead)).astype(np.float64)
        sim_cur = rng.multinomial(cur_trials, shares, size=(size, *lead)).astype(np.float64)
        values = np.asarray(statistic(sim_ref, sim_cur), dtype=np.float64) ** power
        total += values.sum(axis=0)
        total_sq += (values * values).sum(axis=0)
        done += size
    mean = total / replicates
    variance = np.maximum(total_sq / replicates - mean * mean, 0.0) * (
        replicates / (replicates - 1)
    )
    p = _scaled_chi2_sf(np.maximum(observed, 0.0) ** power, mean, variance)
    return np.where(testable & np.isfinite(observed), p, np.nan)


def _scaled_chi2_sf(x: FloatArray, mean: FloatArray, variance: FloatArray) -> FloatArray:
    """Upper tail at ``x`` of ``a * chi2(nu)`` with the given mean and variance (a
    degenerate null, all replicates equal, gives 1 at or below its value, else 0)."""
    spread = variance > 1e-12 * np.maximum(mean * mean, 1e-300)
    safe_var = np.where(spread, variance, 1.0)
    scale = safe_var / (2.0 * np.where(spread, mean, 1.0))
    dof = 2.0 * mean * mean / safe_var
    fitted = stats.chi2.sf(x / np.where(spread, scale, 1.0), np.where(spread, dof, 1.0))
    degenerate = np.where(x <= mean * (1.0 + 1e-9) + 1e-12, 1.0, 0.0)
    return np.asarray(np.where(spread, fitted, degenerate), dtype=np.float64)


def ks_pvalue(ks: float, n_ref: float, n_cur_effective: float, *, rank_error: float = 0.0) -> float:
    """P-value of a two-sample KS distance under "no drift".

    The two-sample Kolmogorov distribution at ``en = n m / (n + m)`` (as
    ``scipy.stats.ks_2samp``'s asymptotic mode), where ``m`` is the current sample's
    *effective* size (its rows over the design effect, see
    :meth:`Dispersion.design_effect`). The quantile sketches' own rank error is taken
    off the distance first (``rank_error``, e.g. the KLL sketch's normalised rank
    error), so approximation is not mistaken for evidence. Wasserstein distances of the
    same summaries borrow this p-value: it measures the same evidence that the two
    distributions differ.

    Returns:
        The p-value, or NaN when either sample is empty.

    Raises:
        CalibrationError: ``ks`` or ``rank_error`` is outside [0, 1], or a size is
            negative or not finite.
    """
    for name, value in (("ks", ks), ("rank_error", rank_error)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise CalibrationError(f"{name} must be in [0, 1], got {value}")
    for name, value in (("n_ref", n_ref), ("n_cur_effective", n_cur_effective)):
        if not (math.isfinite(value) and value >= 0.0):
            raise CalibrationError(f"{name} must be a non-negative number, got {value}")
    if n_ref == 0 or n_cur_effective == 0:
        return math.nan
    distance = max(ks - rank_error, 0.0)
    if distance == 0.0:
        return 1.0
    en = max(round(n_ref * n_cur_effective / (n_ref + n_cur_effective)), 1)
    return float(stats.kstwo.sf(distance, en))


def benjamini_hochberg(pvalues: ArrayLike, alpha: float) -> BoolArray:
    """Which tests Benjamini-Hochberg rejects at false-discovery rate ``alpha``.

    One family is every p-value given, whatever its shape (features x segments x
    statistics of one look); NaN p-values are not tests (never rejected, not counted).
    Matches ``scipy.stats.false_discovery_control(p) <= alpha``.

    Raises:
        CalibrationError: ``alpha`` is not in (0, 1) or a p-value is outside [0, 1].
    """
    p = _pvalues(pvalues)
    return np.asarray(p <= bh_cut(p, alpha), dtype=np.bool_) & ~np.isnan(p)


def bh_cut(pvalues: ArrayLike, alpha: float) -> float:
    """The Benjamini-Hochberg cut: a p-value at or below it is a discovery.

    ``k * alpha / m`` for the largest ``k`` with ``p_(k) <= k * alpha / m`` (``m`` the
    number of non-NaN p-values); ``alpha / m`` when there is none (what the smallest
    p-value would have needed), and ``alpha`` when there are no tests at all.

    Raises:
        CalibrationError: ``alpha`` is not in (0, 1) or a p-value is outside [0, 1].
    """
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise CalibrationError(f"alpha must be in (0, 1), got {alpha}")
    p = _pvalues(pvalues)
    ordered = np.sort(p[~np.isnan(p)])
    m = ordered.size
    if m == 0:
        return alpha
    steps = alpha * np.arange(1, m + 1) / m
    below = np.nonzero(ordered <= steps)[0]
    k = int(below[-1]) + 1 if below.size else 1
    return float(alpha * k / m)


@dataclass(frozen=True)
class Decision:
    """The verdict of one look over all its tests (arrays of the p-values' shape)."""

    drifted: BoolArray  # evidence and a practical effect
    evidence: BoolArray  # p-value at or below the BH cut
    cut: float  # the BH cut of the look


def decide(pvalues: ArrayLike, effects: ArrayLike, thresholds: ArrayLike, alpha: float) -> Decision:
    """Drift where a test has evidence (Benjamini-Hochberg at ``alpha`` over all the
    p-values given, one family) AND its effect is at least its threshold.

    Pass every test of the look together, features x segments x statistics, so the
    probability that a look without drift raises anything stays at ``alpha`` (see
    :func:`look_alpha`). A NaN p-value or effect never drifts.

    Raises:
        CalibrationError: shapes do not broadcast, ``alpha`` is not in (0, 1) or a
            p-value is outside [0, 1].
    """
    p = _pvalues(pvalues)
    effect = np.asarray(effects, dtype=np.float64)
    threshold = np.asarray(thresholds, dtype=np.float64)
    try:
        shape = np.broadcast_shapes(p.shape, effect.shape, threshold.shape)
    except ValueError as exc:
        raise CalibrationError(
            f"p-values {p.shape}, effects {effect.shape} and thresholds "
            f"{threshold.shape} do not broadcast"
        ) from exc
    if shape != p.shape:
        raise CalibrationError(
            f"effects {effect.shape} and thresholds {threshold.shape} must broadcast to "
            f"the p-values' shape {p.shape}"
        )
    cut = bh_cut(p, alpha)
    evidence = np.asarray((p <= cut) & ~np.isnan(p), dtype=np.bool_)
    with np.errstate(invalid="ignore"):
        large = np.broadcast_to(effect >= threshold, shape)
    return Decision(drifted=evidence & large, evidence=evidence, cut=cut)


def look_alpha(rate: float, window_s: float, period_s: float) -> float:
    """The false-alarm probability one look may spend: ``rate * window / period``.

    Looks are tumbling windows, so a period holds ``period / window`` of them and the
    expected number of false alarms per period is ``rate`` (a union bound: the chance of
    any false alarm in the period is at most ``rate``).

    Raises:
        CalibrationError: ``rate`` is not in (0, 1), a duration is not positive, or the
            window is so long against the period that a look would spend 1 or more.
    """
    if not (math.isfinite(rate) and 0.0 < rate < 1.0):
        raise CalibrationError(f"the false-alarm rate must be in (0, 1), got {rate}")
    for name, value in (("window", window_s), ("period", period_s)):
        if not (math.isfinite(value) and value > 0):
            raise CalibrationError(f"the {name} must be a positive duration, got {value} s")
    alpha = rate * window_s / period_s
    if alpha >= 1.0:
        raise CalibrationError(
            f"a false-alarm rate of {rate} per {period_s:g} s gives each {window_s:g} s "
            f"look {alpha:g}, which is no test: lower the rate or lengthen its period"
        )
    return alpha


def _counts(values: ArrayLike, what: str) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{what} must be numbers: {exc}") from exc
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f"{what} must be finite")
    if np.any(array < 0):
        raise CalibrationError(f"{what} cannot be negative")
    return array


def _phi(phi: ArrayLike) -> FloatArray:
    factor = np.asarray(phi, dtype=np.float64)
    if not np.all(np.isfinite(factor)) or np.any(factor < 1.0):
        bad = factor[~(np.isfinite(factor) & (factor >= 1.0))].ravel()[0]
        raise CalibrationError(f"phi (the design effect) must be finite and >= 1, got {bad}")
    return factor


def _pvalues(pvalues: ArrayLike) -> FloatArray:
    p = np.asarray(pvalues, dtype=np.float64)
    finite = p[~np.isnan(p)]
    if np.any((finite < 0.0) | (finite > 1.0)):
        raise CalibrationError("p-values must lie in [0, 1] (or be NaN for no test)")
    return p

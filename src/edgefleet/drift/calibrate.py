"""Evidence of drift calibrated to the sample a fleet really gives.

A window of telemetry holds many rows, but rows on one device are not independent: a
device in a dark corridor sends dark images all day. Treating N rows as N independent
draws makes every test fire on a big fleet (the classic complaint about drift tools).
This module turns a window's merged counts into p-values that hold for clustered data,
and into a decision that also asks for a practical effect size:

- :class:`Dispersion` accumulates mergeable per-device sums of each feature's bin counts,
  among them the sums of the devices' outer products, so that :meth:`Dispersion.covariance`
  gives the *cluster-robust* covariance of the pooled shares: how much they really vary
  with devices as clusters, in every direction of the bins (a device that sees darker
  images moves the low bins together). ``phi``, one design effect for all directions, is
  kept for reports; it is not what the tests use, because clustering is rarely the same
  in every direction.
- :func:`bin_evidence` tests "the window's distribution is the reference's" on the bins
  with two quadratic forms of the difference of shares: Pearson's (any change) and an
  Anderson-Darling form on the cumulative shares (shifts and spread, for ordered bins).
  Each is referred to its null distribution under the covariance of both sides (the
  window's cluster-robust, the reference sample's multinomial or its own
  cluster-robust): a weighted sum of chi-squares by the covariance's eigenvalues, over
  the scale's own estimate with degrees of freedom from the number of devices, as in
  Rao and Scott's second-order correction (Thomas & Rao 1987; R's
  ``survey::svychisq``) but keeping the eigenvalues' shape, its tail by a saddlepoint
  approximation (:func:`rao_scott_pvalues`). The two p-values are joined by the Cauchy
  combination (:func:`cauchy_combination`, Liu & Xie 2020), valid however they depend.
  No simulation, so p-values far in the tail (a look's alpha is 6e-5 by default) cost
  nothing more than the others.
- :func:`benjamini_hochberg` and :func:`decide` control false discoveries across the
  tests of one look, one test per feature and segment; :func:`look_alpha` spends the
  monitor's false-alarm rate over its tumbling looks.

Example::

    dispersion = Dispersion.of_devices(device_counts)       # [devices, features, bins]
    p = bin_evidence(reference_counts, dispersion, ordered=True)       # [features]
    alpha = look_alpha(rate=0.01, window_s=3600, period_s=7 * 86400)
    decision = decide(p, psi(reference, dispersion.totals), thresholds=0.2, alpha=alpha)
    decision.drifted  # per feature: evidence below the BH cut and PSI >= 0.2

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats  # type: ignore[import-untyped]

from edgefleet.drift.errors import DriftError

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


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
    - ``cross[..., b, c] = sum_d x_db x_dc`` and ``n_x[..., b] = sum_d n_d x_db``,
    - ``n = sum_d n_d``, ``n_sq = sum_d n_d**2``, ``devices = D``.

    All are sums over devices, so the dispersion of disjoint sets of devices merges
    exactly (:meth:`merged`). A *device* here is whatever the counts given to
    :meth:`of_devices` belong to: give it each device's counts summed over the whole
    window. Merging the dispersions of one device's separate buckets counts that device
    as several independent devices, which understates the variance when devices differ
    persistently (the usual case).
    """

    totals: FloatArray
    sums_sq: FloatArray
    cross: FloatArray
    n_x: FloatArray
    n: FloatArray
    n_sq: FloatArray
    devices: NDArray[np.int64]

    def __post_init__(self) -> None:
        lead = self.n.shape
        bins = self.totals.shape[-1:]
        if (
            self.totals.shape != self.sums_sq.shape
            or self.totals.shape != self.n_x.shape
            or self.cross.shape != (*self.totals.shape, *bins)
            or self.totals.shape[:-1] != lead
            or self.n_sq.shape != lead
            or self.devices.shape != lead
        ):
            raise CalibrationError(
                "dispersion sums have inconsistent shapes: totals "
                f"{self.totals.shape}, sums_sq {self.sums_sq.shape}, cross "
                f"{self.cross.shape}, n_x {self.n_x.shape}, n {self.n.shape}, "
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
            cross=np.einsum("d...b,d...c->...bc", x, x),
            n_x=(n_d[..., None] * x).sum(axis=0),
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
            cross=np.zeros((*shape, bins, bins)),
            n_x=np.zeros((*shape, bins)),
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
            cross=self.cross + other.cross,
            n_x=self.n_x + other.n_x,
            n=self.n + other.n,
            n_sq=self.n_sq + other.n_sq,
            devices=self.devices + other.devices,
        )

    def select(self, index: tuple[NDArray[np.intp], ...]) -> Dispersion:
        """The sums at ``index`` into the leading axes (numpy indexing, e.g. a tuple of
        index arrays picking (segment, feature) pairs)."""
        return Dispersion(
            totals=self.totals[index],
            sums_sq=self.sums_sq[index],
            cross=self.cross[index],
            n_x=self.n_x[index],
            n=self.n[index],
            n_sq=self.n_sq[index],
            devices=self.devices[index],
        )

    def covariance(self) -> FloatArray:
        """The covariance of the pooled shares ``totals / n`` with devices as clusters,
        ``[..., B, B]``: ``within + between`` of :meth:`covariance_parts`."""
        within, between = self.covariance_parts()
        return within + between

    def covariance_parts(self) -> tuple[FloatArray, FloatArray]:
        """The covariance of the pooled shares in two parts, ``[..., B, B]`` each.

        A device's counts vary around its own shares as a multinomial does, and its
        shares vary around the fleet's with some covariance ``C`` (its lighting, its
        sensor): ``E[e_d e_d'] = n_d P + n_d (n_d - 1) C`` for the residual
        ``e_d = x_d - n_d p`` with ``P = diag(p) - p p'``. So the pooled shares vary by
        ``within = P / n`` (known from the shares alone, full rank) plus
        ``between = (sum n_d^2 - n) C / n^2``, whose ``C`` is estimated by the method of
        moments from ``sum_d e_d e_d'`` (the sums give it: ``cross``, ``n_x``, ``n_sq``).
        It is left unbiased, not forced positive: where devices do not differ, its
        noise has either sign (clipping it made tests of independent rows miss half
        their level); the tests keep only the positive eigenvalues of the whole
        covariance they form. Only ``between`` rests on the devices' number
        (a handful of devices cannot pin it, but the multinomial part needs no
        devices). Zero ``between`` with fewer than two devices or one row per device.
        """
        safe_n = np.where(self.n > 0, self.n, 1.0)
        p = self.totals / safe_n[..., None]
        bins = p.shape[-1]
        shares = p[..., :, None] * np.eye(bins) - p[..., :, None] * p[..., None, :]
        within = shares / safe_n[..., None, None]
        residual = (
            self.cross
            - p[..., :, None] * self.n_x[..., None, :]
            - self.n_x[..., :, None] * p[..., None, :]
            + self.n_sq[..., None, None] * p[..., :, None] * p[..., None, :]
        )
        d = self.devices.astype(np.float64)
        pairs = self.n_sq - self.n  # sum_d n_d (n_d - 1)
        usable = (d > 1) & (pairs > 0)
        inflate = np.where(usable, d / np.where(usable, d - 1.0, 1.0), 0.0)
        excess = residual * inflate[..., None, None] - self.n[..., None, None] * shares
        c = excess / np.where(usable, pairs, 1.0)[..., None, None]
        between = c * (np.where(usable, pairs, 0.0) / (safe_n * safe_n))[..., None, None]
        return np.asarray(within), np.asarray(between)

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

    def phi(self) -> FloatArray:
        """One design effect for the pooled counts, at least 1: on average over the
        directions of the bins, their covariance is ``phi`` times a multinomial's of the
        same size (``1 + rho (sum n_d^2 / n - 1)`` with :meth:`intraclass`'s ``rho``).

        A summary for reports and for weighing an earlier window as a reference; the
        tests use :meth:`covariance`, because clustering is seldom the same in every
        direction. One device (or one used bin) gives 1.
        """
        rows_sq = self.n_sq / np.where(self.n > 0, self.n, 1.0)
        return np.asarray(1.0 + self.intraclass() * np.maximum(rows_sq - 1.0, 0.0))

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


def bin_evidence(
    reference: ArrayLike,
    current: Dispersion,
    *,
    ordered: bool,
    reference_dispersion: Dispersion | None = None,
) -> FloatArray:
    """P-values of "the window's distribution over the bins is the reference's".

    ``current``'s pooled shares against the reference's, one test per leading index:
    Pearson's quadratic form of the difference of shares, and (``ordered`` bins) an
    Anderson-Darling form of the difference of cumulative shares, each referred to its
    null distribution under the covariance of both sides (:func:`rao_scott_pvalues`),
    joined by :func:`cauchy_combination`.

    Args:
        reference: the reference's counts ``[..., B]``, broadcastable to ``current``'s.
        current: the window's dispersion sums (leading shape ``[...]``).
        ordered: the bins have an order (a feature's ranges; not class labels).
        reference_dispersion: the reference's own dispersion sums when it is an earlier
            window of devices (its covariance is then cluster-robust too); ``None`` for
            a reference profile, a sample of independent rows (multinomial).

    Returns:
        p-values of the leading shape; NaN where either side is empty or the window
        has fewer than two devices (no test: report insufficient data instead).

    Raises:
        CalibrationError: the bins do not match, counts are negative or not finite, or
            shapes do not broadcast.
    """
    ref = _counts(reference, "reference counts")
    bins = current.totals.shape[-1]
    if ref.ndim < 1 or ref.shape[-1] != bins:
        raise CalibrationError(
            f"reference bins {ref.shape} and current bins {current.totals.shape} do not "
            "match: both need the same number of bins on the last axis"
        )
    lead = current.n.shape
    try:
        ref = np.broadcast_to(ref, (*lead, bins))
    except ValueError as exc:
        raise CalibrationError(
            f"reference counts {ref.shape} do not broadcast to the window's {lead}"
        ) from exc
    n_ref = ref.sum(axis=-1)
    n_cur = current.n
    devices = current.devices.astype(np.float64)
    testable = (n_ref > 0) & (n_cur > 0) & (devices >= 2)
    safe_ref = np.where(n_ref > 0, n_ref, 1.0)
    safe_cur = np.where(n_cur > 0, n_cur, 1.0)
    r = ref / safe_ref[..., None]
    q = current.totals / safe_cur[..., None]
    pooled = (ref + current.totals) / np.where(testable, n_ref + n_cur, 1.0)[..., None]
    if reference_dispersion is None:
        sigma_ref = (
            pooled[..., :, None] * np.eye(bins) - pooled[..., :, None] * pooled[..., None, :]
        )
        sigma_ref = sigma_ref / safe_ref[..., None, None]
        ref_devices = np.full(lead, np.inf)
    else:
        ref_devices = np.broadcast_to(reference_dispersion.devices, lead).astype(np.float64)
        testable &= ref_devices >= 2
    within, between = current.covariance_parts()
    if reference_dispersion is not None:
        ref_within, ref_between = reference_dispersion.covariance_parts()
        sigma_ref = np.broadcast_to(ref_within, (*lead, bins, bins))
        between = between + np.broadcast_to(ref_between, (*lead, bins, bins))
    sigma = within + sigma_ref + between
    delta = q - r
    # The design's degrees of freedom: devices less one, of the side with fewer.
    design_df = np.minimum(devices, ref_devices) - 1.0
    used = pooled > 0
    weights = np.where(used, 1.0 / np.sqrt(np.where(used, pooled, 1.0)), 0.0)
    unordered = rao_scott_pvalues(
        delta, sigma, weights[..., :, None] * np.eye(bins), design_df, estimated=between
    )
    if ordered and bins > 2:
        lower = np.tril(np.ones((bins - 1, bins)))  # cumulative shares at the inner edges
        cumulative = pooled @ lower.T
        inner = (cumulative > 0) & (cumulative < 1)
        scale = np.where(
            inner, 1.0 / np.sqrt(np.where(inner, cumulative * (1.0 - cumulative), 1.0)), 0.0
        )
        shifted = rao_scott_pvalues(
            delta, sigma, scale[..., :, None] * lower, design_df, estimated=between
        )
        p = cauchy_combination(np.stack([unordered, shifted], axis=-1))
    else:
        p = unordered
    return np.asarray(np.where(testable, p, np.nan))


def rao_scott_pvalues(
    delta: ArrayLike,
    sigma: ArrayLike,
    transform: ArrayLike,
    design_df: ArrayLike,
    *,
    estimated: ArrayLike | None = None,
) -> FloatArray:
    """Upper-tail p-values of ``Q = |A delta|^2`` for a difference ``delta`` ``[..., B]``
    whose covariance under the null, ``sigma`` ``[..., B, B]``, was estimated from
    clusters; ``A = transform`` ``[..., K, B]``.

    Under normality ``Q`` is ``sum_j lambda_j chi2_1`` with ``lambda`` the eigenvalues
    of ``M = A sigma A'``. The part of ``sigma`` estimated from the clusters,
    ``estimated`` (all of it when ``None``), makes their scale ``tr(M)`` an estimate,
    taken as ``tr(M) chi2_f / f`` with ``f = nu_e * design_df / w**2``: ``w`` that
    part's share of ``tr(M)`` and ``nu_e = tr(M_e)^2 / tr(M_e^2)`` its dimensions (with
    ``w = 1`` the convention of Rao and Scott's second-order F test, which this
    generalises: the F matches two moments, this keeps the eigenvalues' shape). So
    the p-value of
    ``T = Q / tr(M)`` is ``P(sum_j mu_j chi2_1 - T chi2_f / f > 0)``,
    ``mu = lambda / tr(M)``, a quadratic form in normal variables whose tail is
    computed by the Lugannani-Rice saddlepoint approximation (Kuonen 1999): accurate to
    a few per cent of the p-value far into the tail, where two-moment fits are off by
    several times when one direction dominates (a device-wide shift does).

    1 where ``M`` is zero and so is ``Q``; NaN where ``design_df`` is below 1 or NaN.
    """
    d = np.asarray(delta, dtype=np.float64)
    a = np.asarray(transform, dtype=np.float64)
    z = np.einsum("...kb,...b->...k", a, d)
    q = (z * z).sum(axis=-1)
    m = a @ np.asarray(sigma, dtype=np.float64) @ np.swapaxes(a, -1, -2)
    m = (m + np.swapaxes(m, -1, -2)) / 2.0
    lam = np.maximum(np.linalg.eigvalsh(m), 0.0)
    c1 = lam.sum(axis=-1)
    c2 = (lam * lam).sum(axis=-1)
    spread = (c1 > 0) & (c2 > 0)
    safe_c1 = np.where(spread, c1, 1.0)
    nu = np.where(spread, safe_c1 * safe_c1 / np.where(spread, c2, 1.0), 1.0)
    df2 = np.asarray(design_df, dtype=np.float64)
    usable = df2 >= 1  # NaN is not
    if estimated is None:
        share, dims = np.ones_like(c1), nu
    else:
        part = a @ np.asarray(estimated, dtype=np.float64) @ np.swapaxes(a, -1, -2)
        e1 = np.trace(part, axis1=-2, axis2=-1)
        e2 = (part * part).sum(axis=(-2, -1))
        share = np.clip(e1 / safe_c1, 0.0, 1.0)
        dims = np.where(e2 > 0, e1 * e1 / np.where(e2 > 0, e2, 1.0), 1.0)
    f = np.minimum(dims * np.where(usable, df2, 1.0) / np.maximum(share * share, 1e-18), 1e9)
    # Where M is zero any weights summing to 1 keep the arithmetic finite; unused.
    mu = np.where(spread[..., None], lam / safe_c1[..., None], 1.0 / lam.shape[-1])
    t = q / safe_c1
    p = _ratio_tail(mu, t, f)
    degenerate = np.where(q <= 1e-15, 1.0, 0.0)
    result = np.where(spread, p, degenerate)
    return np.asarray(np.where(usable, result, np.nan), dtype=np.float64)


def _ratio_tail(mu: FloatArray, t: FloatArray, f: FloatArray) -> FloatArray:
    """``P(sum_j mu_j chi2_1 - t chi2_f / f > 0)`` for weights ``mu >= 0`` summing to 1
    (``[..., J]``), ``t >= 0`` and ``f > 0`` (``[...]``), by the Lugannani-Rice
    saddlepoint approximation; its cumulant generating function is
    ``K(s) = -1/2 sum_j log(1 - 2 s mu_j) - f/2 log(1 + 2 s t / f)``."""
    top = mu.max(axis=-1)
    tiny = t <= 1e-12
    safe_t = np.where(tiny, 1.0, t)
    g = safe_t / f  # each of the f negative terms' weight
    # The saddlepoint solves K'(s) = 0 inside (-1 / (2 g), 1 / (2 top)), where K' rises.
    low = -1.0 / (2.0 * g) * (1.0 - 1e-12)
    high = 1.0 / (2.0 * top) * (1.0 - 1e-12)

    def slope(s: FloatArray) -> FloatArray:
        rising = (mu / (1.0 - 2.0 * s[..., None] * mu)).sum(axis=-1)
        return np.asarray(rising - safe_t / (1.0 + 2.0 * s * g), dtype=np.float64)

    for _ in range(100):  # bisection: far below a double's precision by then
        middle = (low + high) / 2.0
        rising = slope(middle) > 0
        high = np.where(rising, middle, high)
        low = np.where(rising, low, middle)
    s = (low + high) / 2.0
    k = -0.5 * np.log1p(-2.0 * s[..., None] * mu).sum(axis=-1) - 0.5 * f * np.log1p(2.0 * s * g)
    k2 = (2.0 * mu * mu / (1.0 - 2.0 * s[..., None] * mu) ** 2).sum(axis=-1) + 2.0 * f * g * g / (
        1.0 + 2.0 * s * g
    ) ** 2
    w = np.sign(s) * np.sqrt(np.maximum(-2.0 * k, 0.0))
    v = s * np.sqrt(k2)
    near = np.abs(w) < 1e-5
    safe_w = np.where(near, 1.0, w)
    safe_v = np.where(near, 1.0, v)
    tail = stats.norm.sf(w) + stats.norm.pdf(w) * (1.0 / safe_v - 1.0 / safe_w)
    # At the mean itself the limit: 1/2 minus the skewness term.
    k3 = (8.0 * mu**3).sum(axis=-1) - 8.0 * f * g**3
    k2_0 = (2.0 * mu * mu).sum(axis=-1) + 2.0 * f * g * g
    centre = 0.5 - k3 / (6.0 * np.sqrt(2.0 * np.pi) * k2_0**1.5)
    p = np.where(near, centre, tail)
    return np.asarray(np.where(tiny, 1.0, np.clip(p, 0.0, 1.0)), dtype=np.float64)


def cauchy_combination(pvalues: ArrayLike) -> FloatArray:
    """One p-value from several tests of the same hypothesis (last axis), valid
    whatever their dependence in the tail that matters: the Cauchy combination
    ``T = mean(tan((1/2 - p) pi))``, ``p = 1/2 - arctan(T) / pi`` (Liu & Xie 2020).
    Exact for independent tests and for identical ones; NaN entries are left out (all
    NaN gives NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    present = ~np.isnan(p)
    clipped = np.clip(np.where(present, p, 0.5), 1e-300, 1.0 - 1e-16)
    # tan((1/2 - p) pi) = 1 / tan(p pi), accurate for tiny p.
    terms = np.where(present, 1.0 / np.tan(np.pi * clipped), 0.0)
    count = present.sum(axis=-1)
    mean = terms.sum(axis=-1) / np.where(count > 0, count, 1)
    combined = np.arctan2(1.0, mean) / np.pi
    return np.asarray(np.where(count > 0, combined, np.nan), dtype=np.float64)


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


def decide(
    pvalues: ArrayLike,
    effects: ArrayLike,
    thresholds: ArrayLike,
    alpha: float,
    *,
    tests: ArrayLike | None = None,
) -> Decision:
    """Drift where an entry has evidence (Benjamini-Hochberg at ``alpha`` over all the
    tests given, one family) AND its effect is at least its threshold.

    Pass every test of the look together, features x segments, so the probability that
    a look without drift raises anything stays at ``alpha`` (see :func:`look_alpha`).
    Several entries may share one test (a feature's statistics, each an effect with
    its threshold, share the feature's evidence): ``tests`` then names each entry's
    test (any labels, an array of the p-values' shape), entries of one test carry its
    p-value, and Benjamini-Hochberg counts each test once. A NaN p-value or effect never
    drifts.

    Raises:
        CalibrationError: shapes do not broadcast, ``alpha`` is not in (0, 1), a
            p-value is outside [0, 1], or entries of one test carry different p-values.
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
    family = p
    if tests is not None:
        labels = np.asarray(tests)
        if labels.shape != p.shape:
            raise CalibrationError(
                f"tests {labels.shape} must name a test for each p-value {p.shape}"
            )
        _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
        family = p.ravel()[first]
        spread = np.nan_to_num(p.ravel(), nan=-1.0) != np.nan_to_num(family[inverse], nan=-1.0)
        if spread.any():
            raise CalibrationError("entries of one test carry different p-values")
    cut = bh_cut(family, alpha)
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


def _pvalues(pvalues: ArrayLike) -> FloatArray:
    p = np.asarray(pvalues, dtype=np.float64)
    finite = p[~np.isnan(p)]
    if np.any((finite < 0.0) | (finite > 1.0)):
        raise CalibrationError("p-values must lie in [0, 1] (or be NaN for no test)")
    return p

"""Drift statistics: how far the current distribution of a feature is from its reference.

Two kinds of input, both mergeable across devices so the server never needs raw data:

* Bin counts on the reference profile's bins: arrays ``[..., B]`` of counts on the same
  edges. The leading axes are anything (features, segments, devices) and broadcast
  against each other, so one call scores a whole look:
  ``psi``, ``jensen_shannon``, ``chi_square``, ``chi_square_pvalue`` return arrays of the
  broadcast leading shape. These are exact: the same numbers as on the raw data's counts.
* Quantile summaries (``edgefleet.drift.sketch.QuantileSummary``), one pair at a time:
  ``ks`` and ``wasserstein``, computed exactly on the two sketches' step CDFs. Against
  the raw data they err by the sketches' own error only (tested: KS within 0.02,
  Wasserstein within 5 % relative at the server's ``k``). Where no sketch exists
  (``datasketches`` has no wheel for the device), ``ks_from_bins`` and
  ``wasserstein_from_bins`` approximate them from the bins; the service flags those.

Usage::

    reference = np.array([[50, 30, 20], [10, 80, 10]])     # 2 features x 3 bins
    current = np.array([[[45, 30, 25], [10, 70, 20]],      # segment "all"
                        [[20, 30, 50], [11, 79, 10]]])     # segment "site=b"
    psi(reference, current)                                 # shape (2, 2): segments x features
    ks(QuantileSummary.of(ref_values), QuantileSummary.of(cur_values))

Zero counts: PSI raises shares below ``floor`` to it before taking logs (an empty bin
would give an infinite PSI otherwise); Jensen-Shannon needs no floor (an empty bin
contributes 0 by the convention 0 log 0 = 0); chi-square drops a bin empty on both sides
(it carries no information, and its expected count would be 0), which lowers the degrees
of freedom by one, as ``scipy.stats.chi2_contingency`` would on the non-empty columns.
A side with no counts at all has no distribution: ``InsufficientDataError``, never NaN.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special  # type: ignore[import-untyped]

from edgefleet.drift.errors import InsufficientDataError, SummaryError
from edgefleet.drift.sketch import QuantileSummary

__all__ = [
    "chi_square",
    "chi_square_pvalue",
    "jensen_shannon",
    "ks",
    "ks_from_bins",
    "psi",
    "wasserstein",
    "wasserstein_from_bins",
]

FloatArray = npt.NDArray[np.float64]


# --- bins -------------------------------------------------------------------------------


def _counts(name: str, counts: npt.ArrayLike) -> FloatArray:
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim == 0:
        raise SummaryError(f"{name} counts must be an array of bins, not a single number")
    if array.shape[-1] == 0:
        raise SummaryError(f"{name} counts have no bins")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise SummaryError(f"{name} counts must be finite and non-negative")
    return array


def _pair(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Both sides as float arrays of one broadcast shape ``[..., B]``.

    Raises:
        SummaryError: malformed counts, or their bins or leading shapes do not match.
        InsufficientDataError: a side has no counts at all somewhere.
    """
    ref, cur = _counts("reference", reference), _counts("current", current)
    if ref.shape[-1] != cur.shape[-1]:
        raise SummaryError(
            f"reference has {ref.shape[-1]} bins and current has {cur.shape[-1]}: "
            "counts must be on the same bins"
        )
    try:
        shape = np.broadcast_shapes(ref.shape, cur.shape)
    except ValueError as exc:
        raise SummaryError(
            f"reference {ref.shape[:-1]} and current {cur.shape[:-1]} leading shapes "
            "do not broadcast"
        ) from exc
    ref, cur = np.broadcast_to(ref, shape), np.broadcast_to(cur, shape)
    for name, side in (("reference", ref), ("current", cur)):
        empty = int(np.count_nonzero(side.sum(axis=-1) == 0))
        if empty:
            raise InsufficientDataError(
                f"{name} has no counts in {empty} of {math.prod(shape[:-1])} distributions",
                details={"side": name, "empty": empty},
            )
    return ref, cur


def _shares(counts: FloatArray) -> FloatArray:
    shares: FloatArray = counts / counts.sum(axis=-1, keepdims=True)
    return shares


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, *, floor: float = 1e-4) -> FloatArray:
    """Population stability index: sum over bins of (q - p) ln(q / p), p and q the
    reference and current shares, each first raised to at least ``floor``.

    Raises:
        SummaryError: malformed or mismatched counts, or ``floor`` outside (0, 1).
        InsufficientDataError: a side has no counts.
    """
    if not 0.0 < floor < 1.0:
        raise SummaryError(f"the PSI floor must lie in (0, 1), not {floor}")
    ref, cur = _pair(reference, current)
    p = np.maximum(_shares(ref), floor)
    q = np.maximum(_shares(cur), floor)
    result: FloatArray = np.sum((q - p) * np.log(q / p), axis=-1)
    return result


def jensen_shannon(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """Jensen-Shannon distance in base 2 (the square root of the divergence), in [0, 1]:
    0 for the same shares, 1 for shares on disjoint bins.

    Raises:
        SummaryError: malformed or mismatched counts.
        InsufficientDataError: a side has no counts.
    """
    ref, cur = _pair(reference, current)
    p, q = _shares(ref), _shares(cur)
    middle = (p + q) / 2
    # rel_entr is x log(x / y), and 0 where x is 0: an empty bin contributes nothing.
    divergence = np.sum(special.rel_entr(p, middle) + special.rel_entr(q, middle), axis=-1)
    divergence = divergence / (2 * math.log(2))
    result: FloatArray = np.sqrt(np.clip(divergence, 0.0, 1.0))
    return result


def _chi_square(ref: FloatArray, cur: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Pearson's statistic of the 2 x B table and its degrees of freedom (bins empty on
    both sides dropped)."""
    column = ref + cur
    n_ref = ref.sum(axis=-1, keepdims=True)
    n_cur = cur.sum(axis=-1, keepdims=True)
    used = column > 0
    safe = np.where(used, column, 1.0)
    expected_ref = n_ref * safe / (n_ref + n_cur)
    expected_cur = n_cur * safe / (n_ref + n_cur)
    terms = (ref - expected_ref) ** 2 / expected_ref + (cur - expected_cur) ** 2 / expected_cur
    statistic: FloatArray = np.sum(np.where(used, terms, 0.0), axis=-1)
    dof: FloatArray = np.count_nonzero(used, axis=-1).astype(np.float64) - 1.0
    return statistic, dof


def chi_square(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """Pearson's chi-square statistic of homogeneity of the 2 x B table (reference and
    current counts as rows; no continuity correction).

    Raises:
        SummaryError: malformed or mismatched counts.
        InsufficientDataError: a side has no counts.
    """
    statistic, _ = _chi_square(*_pair(reference, current))
    return statistic


def chi_square_pvalue(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """P-value of ``chi_square`` on (non-empty bins - 1) degrees of freedom, as
    ``scipy.stats.chi2_contingency(..., correction=False)`` on the non-empty columns;
    1 when a single bin holds everything (no evidence either way).

    Rows on one device are not independent, so on fleet data this p-value is too small;
    ``drift.calibrate`` simulates the null at the effective sample size instead.

    Raises:
        SummaryError: malformed or mismatched counts.
        InsufficientDataError: a side has no counts.
    """
    statistic, dof = _chi_square(*_pair(reference, current))
    result: FloatArray = np.where(dof > 0, special.chdtrc(np.maximum(dof, 1.0), statistic), 1.0)
    return result


# --- quantile summaries -----------------------------------------------------------------


def _nonempty(reference: QuantileSummary, current: QuantileSummary) -> None:
    for name, summary in (("reference", reference), ("current", current)):
        if not isinstance(summary, QuantileSummary):
            raise SummaryError(f"{name} is not a QuantileSummary but {type(summary).__name__}")
        if summary.is_empty:
            raise InsufficientDataError(
                f"the {name} quantile summary is empty", details={"side": name}
            )


def ks(reference: QuantileSummary, current: QuantileSummary) -> float:
    """Two-sample Kolmogorov-Smirnov statistic, sup |F_ref(x) - F_cur(x)|, in [0, 1].

    Exact for the two sketches: both are step functions that step only at their retained
    values, so the supremum is attained at one of them and all of them are evaluated.

    Raises:
        InsufficientDataError: a summary is empty.
        SummaryError: an argument is not a ``QuantileSummary``.
    """
    _nonempty(reference, current)
    points = np.concatenate([reference.support(), current.support()])
    return float(np.max(np.abs(reference.cdf(points) - current.cdf(points))))


def wasserstein(reference: QuantileSummary, current: QuantileSummary) -> float:
    """Wasserstein-1 (earth mover's) distance, in the feature's units.

    Computed as the integral of |F_ref - F_cur| over x, exactly for the two sketches:
    between consecutive retained values both CDFs are constant, so the integral is a
    finite sum. This is the same quantity as the integral of |Q_ref(u) - Q_cur(u)| over
    ranks, without the discretisation error a rank grid would add (largest in the tails,
    where a coarse grid misses how far out the values lie). What remains is the sketches'
    own error.

    Raises:
        InsufficientDataError: a summary is empty.
        SummaryError: an argument is not a ``QuantileSummary``.
    """
    _nonempty(reference, current)
    points = np.union1d(reference.support(), current.support())
    if points.size < 2:
        return 0.0
    gaps = np.abs(reference.cdf(points[:-1]) - current.cdf(points[:-1]))
    return float(np.dot(gaps, np.diff(points)))


# --- bins standing in for quantile summaries ----------------------------------------------


def _binned(
    edges: npt.ArrayLike, reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Edges and both sides' CDFs at them, F(e) = share of values below e.

    Bins are the profile's: interior ``edges`` e_0 < ... < e_{E-1} and E + 1 buckets,
    bucket 0 below e_0, bucket i in [e_{i-1}, e_i), the last at or above e_{E-1}.

    Raises:
        SummaryError: edges not finite and strictly increasing, counts not one-dimensional
            with one more bucket than edges, or mismatched.
        InsufficientDataError: a side has no counts.
    """
    cuts = np.asarray(edges, dtype=np.float64)
    if cuts.ndim != 1 or cuts.size == 0:
        raise SummaryError("edges must be a non-empty list of interior cut points")
    if not np.all(np.isfinite(cuts)) or np.any(np.diff(cuts) <= 0):
        raise SummaryError("edges must be finite and strictly increasing")
    ref, cur = _pair(reference_counts, current_counts)
    if ref.ndim != 1:
        raise SummaryError(f"counts must be one-dimensional here, not of shape {ref.shape}")
    if ref.size != cuts.size + 1:
        raise SummaryError(
            f"{cuts.size} edges make {cuts.size + 1} buckets, the counts have {ref.size}"
        )
    return cuts, np.cumsum(_shares(ref))[:-1], np.cumsum(_shares(cur))[:-1]


def ks_from_bins(
    edges: npt.ArrayLike, reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> float:
    """KS statistic seen through the bins: the largest CDF difference at an edge.

    A lower bound of the KS statistic of the data binned (the CDFs are known at the edges
    only, and the supremum may lie between them); close to it when bins are fine.

    Raises:
        SummaryError: malformed or mismatched edges and counts (see ``wasserstein_from_bins``).
        InsufficientDataError: a side has no counts.
    """
    _, f_ref, f_cur = _binned(edges, reference_counts, current_counts)
    return float(np.max(np.abs(f_ref - f_cur)))


def wasserstein_from_bins(
    edges: npt.ArrayLike, reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> float:
    """Wasserstein-1 distance seen through the bins: the integral of |F_ref - F_cur| over
    the edges' range, each CDF linear inside a bucket (values spread evenly in it).

    An approximation: values beyond the outermost edges count as if at those edges, so
    movement outside the profile's range is not seen, and within a bucket the values'
    positions are unknown.

    Raises:
        SummaryError: edges not finite and strictly increasing, counts not one-dimensional
            with one more bucket than edges (``len(edges) + 1``), or mismatched.
        InsufficientDataError: a side has no counts.
    """
    cuts, f_ref, f_cur = _binned(edges, reference_counts, current_counts)
    difference = f_ref - f_cur
    left, right, width = difference[:-1], difference[1:], np.diff(cuts)
    magnitude = np.abs(left) + np.abs(right)
    # |linear| integrated over a bucket: the mean of the ends where the sign holds, and
    # (a^2 + b^2) / (2 (|a| + |b|)) of the width where it crosses zero.
    crossing = left * right < 0
    safe = np.where(magnitude > 0, magnitude, 1.0)
    area = np.where(crossing, (left**2 + right**2) / (2 * safe), magnitude / 2)
    return float(np.dot(area, width))

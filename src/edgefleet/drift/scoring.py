"""Scoring a window of fleet telemetry against a reference, per segment (pure).

The drift service reads a window's drift records device by device (each summary period
whose end falls in the window, and the telemetry buckets that start in it: see
``drift.ports.DriftBucket``) and hands each device's to a :class:`WindowAccumulator`,
with the segments the device is in.
The accumulator merges them the way the issue asks, from summaries only: per feature
and segment the pooled bin counts with the mergeable dispersion sums of
``drift.calibrate.Dispersion`` (so rows of one device count as one cluster), and the
quantile summaries merged per feature and segment. :func:`score` then computes every
statistic the monitor turns on, for every feature and segment at once where the
statistic is vectorised, with calibrated p-values, and :func:`decide_all` applies one
Benjamini-Hochberg family to all of a look's tests::

    layout = Layout.of(profile_features(profile, monitor))
    window = WindowAccumulator(layout, len(plan.segments), start, end)
    for device_pk, buckets in per_device:
        window.add_device(plan.members[device_pk], buckets)
    current = window.finish()
    scored = score(layout, plan.segments, current, profile_reference(layout), rules, rng)
    decide_all([scored], alpha=monitor.look_alpha())

What is attributed to a window: a device's summary period (feature bins, quantile
summaries, ``sketch_rows``) belongs to the window its ``period_end`` falls in,
``start < period_end <= end``; the per-sample histograms (confidence, predicted
classes) to the window their bucket starts in. A bucket that does not fit (bins of
another length than the profile's, a summary that does not decode) is skipped and
counted by reason, never scored.

Against a reference profile, KS and Wasserstein come from the profile's own quantile
summaries of the reference sample (``ReferenceProfile.sketches``) when it has them and
the window has summaries too; a profile without them (older, or built without
``datasketches``) is scored from its bins, flagged ``approximate: "bins"``. Whether the
window's summaries are worth reading against a profile is ``Layout.has_summaries``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from edgefleet.drift import calibrate, stats
from edgefleet.drift.calibrate import Dispersion
from edgefleet.drift.errors import InsufficientDataError, MonitorError, SummaryError
from edgefleet.drift.monitor import Monitor
from edgefleet.drift.ports import DriftBucket
from edgefleet.drift.segments import Segment
from edgefleet.drift.sketch import HAVE_KLL, QuantileSummary
from edgefleet.registry.profile import ReferenceProfile

FloatArray = npt.NDArray[np.float64]
FeatureKind = Literal["input", "confidence", "classes"]

CONFIDENCE: Final = "confidence"
CLASSES: Final = "classes"
#: Statistics computed on bins (vectorised), and on quantile summaries (pairwise).
BIN_STATISTICS: Final = ("psi", "jensen_shannon", "chi_square")
SUMMARY_STATISTICS: Final = ("ks", "wasserstein")
#: Status of a segment.
OK: Final = "ok"
INSUFFICIENT: Final = "insufficient_data"

# Skip reasons counted in a report's ``skipped``.
BINS_MISMATCH: Final = "bins_mismatch"
SKETCH_INVALID: Final = "sketch_invalid"
#: A reference profile's summary that does not decode (that feature is scored from bins).
REFERENCE_SKETCH_INVALID: Final = "reference_sketch_invalid"
UNKNOWN_FEATURE: Final = "unknown_feature"
NOT_IN_PROFILE: Final = "not_in_profile"
NO_SPREAD: Final = "wasserstein_no_spread"

#: Devices merged before their sums are folded into the segments (bounds memory).
CHUNK: Final = 512


@dataclass(frozen=True)
class FeatureRef:
    """A feature a look scores, with its reference profile's bins.

    ``edges`` are the profile's interior cut points (``None`` for the predicted-class
    mix, which has categories, not a scale); ``counts`` the reference sample's counts;
    ``summary`` the profile's quantile summary of the reference sample's values
    (``QuantileSummary.to_text()``), when it has one.
    """

    name: str
    kind: FeatureKind
    edges: tuple[float, ...] | None
    counts: tuple[int, ...]
    summary: str | None = None

    @property
    def bins(self) -> int:
        return len(self.counts)


def profile_features(profile: ReferenceProfile, monitor: Monitor) -> list[FeatureRef]:
    """The features of ``profile`` that ``monitor`` watches, in profile order (inputs),
    then confidence and classes when the monitor asks for them and the profile has them.

    Raises:
        MonitorError: the monitor names features the profile does not have (the
            ``features`` field, the names listed).
    """
    inputs = [f for p in profile.inputs for f in p.features]
    if monitor.features == "all":
        chosen = inputs
    else:
        known = {f.name: f for f in inputs}
        missing = [name for name in monitor.features if name not in known]
        if missing:
            raise MonitorError(
                "the monitor is invalid: features: not in the reference profile: "
                + ", ".join(missing[:20])
                + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""),
                details={
                    "problems": [
                        {"field": "features", "message": f"{name!r} is not in the profile"}
                        for name in missing[:100]
                    ]
                },
            )
        wanted = set(monitor.features)
        chosen = [f for f in inputs if f.name in wanted]
    sketches = profile.sketches
    features = [
        FeatureRef(f.name, "input", tuple(f.edges), tuple(f.counts), sketches.get(f.name))
        for f in chosen
    ]
    if CONFIDENCE in monitor.outputs and profile.confidence_counts:
        features.append(
            FeatureRef(
                CONFIDENCE,
                "confidence",
                tuple(profile.confidence_edges),
                tuple(profile.confidence_counts),
                sketches.get(CONFIDENCE),
            )
        )
    if CLASSES in monitor.outputs and profile.class_counts:
        features.append(FeatureRef(CLASSES, "classes", None, tuple(profile.class_counts)))
    return features


def profile_feature_names(profile: ReferenceProfile) -> set[str]:
    """Every input feature name of a profile."""
    return {f.name for p in profile.inputs for f in p.features}


@dataclass(frozen=True)
class Layout:
    """The features of a look, grouped by number of bins so that each group is one
    array ``[segments, features, bins]``."""

    features: tuple[FeatureRef, ...]
    #: bins -> indexes (into ``features``) of the features with that many bins
    groups: Mapping[int, tuple[int, ...]]
    #: feature index -> (its group's bins, its position in the group)
    position: Mapping[int, tuple[int, int]]
    index: Mapping[str, int]

    @classmethod
    def of(cls, features: Sequence[FeatureRef]) -> Layout:
        groups: dict[int, list[int]] = {}
        for i, feature in enumerate(features):
            groups.setdefault(feature.bins, []).append(i)
        position = {i: (bins, j) for bins, members in groups.items() for j, i in enumerate(members)}
        return cls(
            tuple(features),
            {bins: tuple(members) for bins, members in groups.items()},
            position,
            {f.name: i for i, f in enumerate(features)},
        )

    def reference_counts(self, bins: int) -> FloatArray:
        """The profile's counts of a group, ``[features, bins]``."""
        return np.array([self.features[i].counts for i in self.groups[bins]], dtype=np.float64)

    @property
    def has_summaries(self) -> bool:
        """Whether the profile has a quantile summary of any of these features that can
        be read here: only then are a window's summaries of use against the profile."""
        return HAVE_KLL and any(f.summary is not None for f in self.features)


@dataclass(frozen=True)
class WindowData:
    """A window's telemetry merged per segment: the dispersion sums of each bin group
    (leading shape ``[segments, features of the group]``), the quantile summaries by
    (segment, feature index), and the rows behind the summaries per segment."""

    dispersion: Mapping[int, Dispersion]
    sketches: Mapping[tuple[int, int], QuantileSummary]
    sketch_rows: npt.NDArray[np.int64]
    skipped: Mapping[str, int]

    def n(self, feature: int, layout: Layout) -> FloatArray:
        """Rows counted in the bins of a feature, per segment."""
        bins, j = layout.position[feature]
        return self.dispersion[bins].n[:, j]

    def devices(self, feature: int, layout: Layout) -> npt.NDArray[np.int64]:
        bins, j = layout.position[feature]
        return self.dispersion[bins].devices[:, j]


class WindowAccumulator:
    """Folds devices' buckets of one window into per-segment sums (see the module
    docstring for what belongs to the window). Give each device once, all its buckets
    together: a device is one cluster of the dispersion."""

    def __init__(
        self,
        layout: Layout,
        segments: int,
        start: datetime,
        end: datetime,
        *,
        known_features: Iterable[str] = (),
        summaries: bool = True,
        chunk: int = CHUNK,
    ) -> None:
        self.layout = layout
        self.segments = segments
        self.start_s = start.timestamp()
        self.end_s = end.timestamp()
        self.start, self.end = start, end
        self.known = set(known_features) | set(layout.index)
        #: Whether quantile summaries are read at all: against a reference profile
        #: without summaries (``Layout.has_summaries``), KS and Wasserstein come from
        #: the bins either way.
        self.summaries = summaries
        self.chunk = chunk
        self.skipped: Counter[str] = Counter()
        self._sums = {
            bins: Dispersion.empty((segments, len(m)), bins) for bins, m in layout.groups.items()
        }
        self._sketches: dict[tuple[int, int], QuantileSummary] = {}
        self._sketch_rows = np.zeros(segments, dtype=np.int64)
        self._pending_counts: dict[int, list[FloatArray]] = {b: [] for b in layout.groups}
        self._pending_members: list[npt.NDArray[np.bool_]] = []
        self._pending_sketches: dict[tuple[int, int], list[QuantileSummary]] = {}

    def add_device(self, segments: Sequence[int], buckets: Iterable[DriftBucket]) -> None:
        """One device's buckets of the window; ``segments`` are the indexes of its
        segments (``SegmentPlan.members``)."""
        layout = self.layout
        # Histograms as sent, per feature: made into arrays once per bin group below.
        histograms: dict[int, list[Any]] = {}
        sketches: dict[int, list[QuantileSummary]] = {}
        rows = 0
        for bucket in buckets:
            data = bucket.data
            if self._in_period(bucket):
                rows += int(data.get("sketch_rows") or 0)
                for name, histogram in (data.get("feature_counts") or {}).items():
                    self._collect(histograms, name, histogram)
                if self.summaries:
                    self._read_summaries(data, sketches)
            if self.start <= bucket.bucket < self.end:
                for name, key in ((CONFIDENCE, "confidence_counts"), (CLASSES, "class_counts")):
                    histogram = data.get(key)
                    if histogram and name in layout.index:
                        self._collect(histograms, name, histogram)
        member = np.zeros(self.segments, dtype=np.bool_)
        member[list(segments)] = True
        self._pending_members.append(member)
        for bins, features in layout.groups.items():
            self._pending_counts[bins].append(self._group_counts(bins, features, histograms))
        for feature, parts in sketches.items():
            for segment in segments:
                self._pending_sketches.setdefault((segment, feature), []).extend(parts)
        self._sketch_rows[list(segments)] += rows
        if len(self._pending_members) >= self.chunk:
            self._fold()

    def finish(self) -> WindowData:
        """The window's sums (the accumulator may not be used after)."""
        self._fold()
        return WindowData(
            dispersion=dict(self._sums),
            sketches=dict(self._sketches),
            sketch_rows=self._sketch_rows.copy(),
            skipped=dict(self.skipped),
        )

    def _in_period(self, bucket: DriftBucket) -> bool:
        end = bucket.data.get("period_end")
        if isinstance(end, int | float) and not isinstance(end, bool):
            return self.start_s < float(end) <= self.end_s
        # Telemetry from before summary periods: the bucket's own time.
        return self.start <= bucket.bucket < self.end

    def _collect(self, histograms: dict[int, list[Any]], name: str, histogram: Any) -> None:
        """Keep a histogram of a scored feature that has the profile's number of bins."""
        feature = self.layout.index.get(name)
        if feature is None:
            if name not in self.known:
                self.skipped[UNKNOWN_FEATURE] += 1
            return
        if (
            not isinstance(histogram, list | tuple)
            or len(histogram) != self.layout.features[feature].bins
        ):
            self.skipped[BINS_MISMATCH] += 1
            return
        histograms.setdefault(feature, []).append(histogram)

    def _group_counts(
        self, bins: int, features: Sequence[int], histograms: Mapping[int, list[Any]]
    ) -> FloatArray:
        """A device's counts of one bin group, ``[features, bins]``: its histograms of
        each feature summed; one that is not counts (negative, not finite, not a
        number) is skipped as a mismatch."""
        counts = np.zeros((len(features), bins))
        rows: list[Any] = []
        where: list[int] = []
        for j, feature in enumerate(features):
            for histogram in histograms.get(feature, ()):
                rows.append(histogram)
                where.append(j)
        if not rows:
            return counts
        try:
            values = np.array(rows, dtype=np.float64)
        except (TypeError, ValueError):  # something that is not a number: one by one
            values = np.array([_numbers(row, bins) for row in rows], dtype=np.float64)
        bad = ~np.all(np.isfinite(values) & (values >= 0), axis=1)
        if bad.any():
            self.skipped[BINS_MISMATCH] += int(bad.sum())
            values[bad] = 0.0
        np.add.at(counts, np.array(where), values)
        return counts

    def _read_summaries(
        self, data: Mapping[str, Any], sketches: dict[int, list[QuantileSummary]]
    ) -> None:
        invalid = data.get("sketches_invalid")
        if isinstance(invalid, int) and invalid > 0:
            self.skipped[SKETCH_INVALID] += invalid  # left out when buckets merged
        layout = self.layout
        for name, text in (data.get("sketches") or {}).items():
            feature = layout.index.get(name)
            if feature is None or layout.features[feature].kind == "classes":
                continue
            try:
                # From the store: checked when the telemetry came in (fleet.domain).
                summary = QuantileSummary.from_text(text, trusted=True)
            except SummaryError:
                self.skipped[SKETCH_INVALID] += 1
                continue
            if not summary.is_empty:
                sketches.setdefault(feature, []).append(summary)

    def _fold(self) -> None:
        if not self._pending_members:
            return
        membership = np.stack(self._pending_members).astype(np.float64)  # [devices, segments]
        for bins, parts in self._pending_counts.items():
            x = np.stack(parts)  # [devices, features, bins]
            n_d = x.sum(axis=-1)
            safe = np.where(n_d > 0, n_d, 1.0)
            square = x * x / safe[..., None]
            devices, features = x.shape[:2]
            outer = (x[..., :, None] * x[..., None, :]).reshape(devices, -1)
            # Sums over the devices of each segment (Dispersion.of_devices, per segment).
            chunk = Dispersion(
                totals=np.einsum("ds,dfb->sfb", membership, x),
                sums_sq=np.einsum("ds,dfb->sfb", membership, square),
                cross=(membership.T @ outer).reshape(self.segments, features, bins, bins),
                n_x=np.einsum("ds,dfb->sfb", membership, n_d[..., None] * x),
                n=membership.T @ n_d,
                n_sq=membership.T @ (n_d * n_d),
                devices=(membership.T @ (n_d > 0)).astype(np.int64),
            )
            self._sums[bins] = self._sums[bins].merged(chunk)
            parts.clear()
        for key, summaries in self._pending_sketches.items():
            previous = self._sketches.get(key)
            merged = QuantileSummary.merge_all([*([previous] if previous else []), *summaries])
            self._sketches[key] = merged
        self._pending_sketches.clear()
        self._pending_members.clear()


@dataclass(frozen=True)
class ReferenceData:
    """What the window is compared with: the profile's counts and summaries (the same
    for every segment), or an earlier window's sums per segment."""

    kind: Literal["profile", "window"]
    #: bins -> counts ``[segments or 1, features, bins]``
    counts: Mapping[int, FloatArray]
    #: (segment, feature index) -> the reference's summary in that segment
    sketches: Mapping[tuple[int, int], QuantileSummary] = field(default_factory=dict)
    #: per segment, why the reference cannot serve it (a thin reference window)
    unusable: Mapping[int, str] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    #: feature index -> a summary that serves every segment (the profile's)
    shared_sketches: Mapping[int, QuantileSummary] = field(default_factory=dict)
    #: what of the reference could not be used, by reason (added to the look's skipped)
    skipped: Mapping[str, int] = field(default_factory=dict)
    #: bins -> an earlier window's dispersion sums ``[segments, features]``: its
    #: covariance is cluster-robust too (``None``: the profile's independent rows)
    dispersion: Mapping[int, Dispersion] | None = None

    def sketch(self, segment: int, feature: int) -> QuantileSummary | None:
        """The reference's summary of a feature in a segment, if it has one."""
        summary = self.sketches.get((segment, feature))
        return summary if summary is not None else self.shared_sketches.get(feature)

    def view(self) -> dict[str, Any]:
        if self.kind == "profile":
            return {"kind": "profile"}
        return {"kind": "window", "start": _iso(self.start), "end": _iso(self.end)}


def profile_reference(layout: Layout) -> ReferenceData:
    """The version's reference profile as the reference of every segment: its bins, and
    its quantile summaries of the reference sample where it has them (and
    ``datasketches`` is installed). A summary that does not decode is left out, that
    feature scored from bins, and counted (``reference_sketch_invalid``)."""
    shared: dict[int, QuantileSummary] = {}
    skipped: Counter[str] = Counter()
    if HAVE_KLL:
        for index, feature in enumerate(layout.features):
            if feature.summary is None or feature.kind == "classes":
                continue
            try:
                shared[index] = QuantileSummary.from_text(feature.summary)
            except SummaryError:
                skipped[REFERENCE_SKETCH_INVALID] += 1
    return ReferenceData(
        "profile",
        {bins: layout.reference_counts(bins)[None, ...] for bins in layout.groups},
        shared_sketches=shared,
        skipped=dict(skipped),
    )


def window_reference(
    layout: Layout,
    data: WindowData,
    rules: Rules,
    start: datetime,
    end: datetime,
) -> ReferenceData:
    """An earlier window of the same segments as the reference: its pooled counts with
    their dispersion sums (its rows are clustered by device too, and the tests take its
    cluster-robust covariance), its quantile summaries. A segment whose reference window
    is too thin for the rules is marked unusable."""
    unusable = {}
    for s in range(len(data.sketch_rows)):
        devices, rows = _segment_size(layout, data, s)
        if devices < rules.min_devices or rows < rules.min_rows:
            unusable[s] = (
                f"the reference window has {devices} devices and {rows} rows in this segment "
                f"(at least {rules.min_devices} devices and {rules.min_rows} rows needed)"
            )
    return ReferenceData(
        "window",
        {bins: dispersion.totals for bins, dispersion in data.dispersion.items()},
        dict(data.sketches),
        unusable,
        start,
        end,
        dispersion=dict(data.dispersion),
    )


@dataclass(frozen=True)
class Rules:
    """What a monitor asks of a look."""

    thresholds: Mapping[str, float]
    min_devices: int = 3
    min_rows: int = 200

    @classmethod
    def of(cls, monitor: Monitor) -> Rules:
        return cls(
            thresholds=monitor.thresholds(),
            min_devices=max(2, monitor.min_devices),
            min_rows=monitor.min_rows,
        )


@dataclass
class Scored:
    """One version's window scored: segment views and the tests, before the look's
    decision (``decide_all`` fills ``bh_cut`` and ``drifted``)."""

    segments: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    #: each score's p-value: its feature's evidence in its segment
    pvalues: list[float]
    #: each score's test (a feature in a segment): scores of one test share its p-value,
    #: and the look's Benjamini-Hochberg family counts each test once
    tests: list[int]
    phi: dict[tuple[str, str], float]
    skipped: Counter[str]
    distributions: dict[str, dict[str, dict[str, Any]]]
    reference: dict[str, Any] = field(default_factory=lambda: {"kind": "profile"})

    def drifted_features(self) -> list[str]:
        return list(dict.fromkeys(s["feature"] for s in self.scores if s["drifted"]))


def score(
    layout: Layout,
    segments: Sequence[Segment],
    current: WindowData,
    reference: ReferenceData,
    rules: Rules,
) -> Scored:
    """Every statistic of ``rules`` for every feature of every segment with enough data.

    A segment with fewer devices or rows than the rules ask (or fewer than two devices,
    which cannot show how much devices differ) is ``insufficient_data`` and not scored;
    so is a feature without rows on either side. Each statistic is an effect size, held
    against its threshold; the evidence is one test per feature and segment, on the bins
    with devices as clusters (``calibrate.bin_evidence``), which every statistic of that
    feature and segment carries. KS and Wasserstein come from the quantile summaries
    when both sides have them, else from the bins (``approximate: "bins"``);
    Wasserstein is in reference standard deviations.
    """
    skipped: Counter[str] = Counter(current.skipped)
    skipped.update(reference.skipped)
    views: list[dict[str, Any]] = []
    usable: list[int] = []
    group_phi = {bins: current.dispersion[bins].phi() for bins in layout.groups}
    for s, segment in enumerate(segments):
        devices, rows = _segment_size(layout, current, s)
        phis = [
            float(group_phi[bins][s, j])
            for bins, members in layout.groups.items()
            for j in range(len(members))
            if current.dispersion[bins].n[s, j] > 0
        ]
        reason = None
        if devices < rules.min_devices:
            reason = f"{devices} devices sent data, fewer than min_devices {rules.min_devices}"
        elif rows < rules.min_rows:
            reason = f"{rows} rows, fewer than min_rows {rules.min_rows}"
        elif s in reference.unusable:
            reason = reference.unusable[s]
        if reason is None:
            usable.append(s)
        views.append(
            {
                "segment": segment.name,
                "attribute": segment.attribute,
                "value": segment.value,
                "devices": devices,
                "rows": rows,
                "sketch_rows": int(current.sketch_rows[s]),
                "phi": round(float(np.median(phis)), 4) if phis else None,
                "status": OK if reason is None else INSUFFICIENT,
                "reason": reason,
            }
        )
    scores: list[dict[str, Any]] = []
    pvalues: list[float] = []
    tests: list[int] = []
    next_test = 0
    phi_of: dict[tuple[str, str], float] = {}
    distributions: dict[str, dict[str, dict[str, Any]]] = {}
    names = [segment.name for segment in segments]
    for bins, members in layout.groups.items():
        dispersion = current.dispersion[bins]
        phi = group_phi[bins]
        ref_all = np.broadcast_to(reference.counts[bins], (len(segments), len(members), bins))
        pairs = [
            (s, j)
            for s in usable
            for j in range(len(members))
            if dispersion.n[s, j] > 0 and ref_all[s, j].sum() > 0
        ]
        if not pairs:
            continue
        s_idx = np.array([s for s, _ in pairs])
        j_idx = np.array([j for _, j in pairs])
        ref = ref_all[s_idx, j_idx]
        cur = dispersion.totals[s_idx, j_idx]
        evidence = _evidence(layout, members, bins, dispersion, reference, (s_idx, j_idx), ref)
        for (s, j), value in zip(pairs, phi[s_idx, j_idx], strict=True):
            feature = layout.features[members[j]]
            phi_of[(names[s], feature.name)] = float(value)
            distributions.setdefault(names[s], {})[feature.name] = _distribution(
                feature, ref_all[s, j], dispersion.totals[s, j]
            )
        first_test = next_test
        next_test += len(pairs)
        effects = {
            statistic: _bin_effect(statistic, ref, cur)
            for statistic in BIN_STATISTICS
            if statistic in rules.thresholds
        }
        for i, ((s, j), p_value) in enumerate(zip(pairs, evidence, strict=True)):
            if not math.isfinite(p_value):
                continue
            feature_index = members[j]
            feature = layout.features[feature_index]
            found: list[tuple[str, float, str | None]] = [
                (statistic, float(values[i]), None) for statistic, values in effects.items()
            ]
            if feature.edges is not None and any(
                statistic in rules.thresholds for statistic in SUMMARY_STATISTICS
            ):
                measured = _summary_statistics(
                    rules,
                    feature,
                    ref[i],
                    cur[i],
                    reference.sketch(s, feature_index),
                    current.sketches.get((s, feature_index)),
                )
                if "wasserstein" in rules.thresholds and "wasserstein" not in measured:
                    skipped[NO_SPREAD] += 1
                found += [(name, value, how) for name, (value, how) in measured.items()]
            for statistic, value, approximate in found:
                if not math.isfinite(value):
                    continue
                scores.append(
                    _score(
                        names[s],
                        feature.name,
                        statistic,
                        value,
                        rules.thresholds[statistic],
                        approximate,
                    )
                )
                pvalues.append(float(p_value))
                tests.append(first_test + i)
    return Scored(views, scores, pvalues, tests, phi_of, skipped, distributions, reference.view())


def _evidence(
    layout: Layout,
    members: Sequence[int],
    bins: int,
    dispersion: Dispersion,
    reference: ReferenceData,
    index: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]],
    ref_counts: FloatArray,
) -> FloatArray:
    """The evidence of each (segment, feature) pair of a bin group at ``index``: one
    p-value per pair (``calibrate.bin_evidence``), ordered tests for features with
    edges, the unordered one alone for the class mix."""
    window = dispersion.select(index)
    past = None if reference.dispersion is None else reference.dispersion[bins].select(index)
    ordered = np.array([layout.features[members[j]].edges is not None for j in index[1]])
    p = np.full(len(ordered), np.nan)
    for flag in (True, False):
        chosen = np.flatnonzero(ordered == flag)
        if chosen.size:
            p[chosen] = calibrate.bin_evidence(
                ref_counts[chosen],
                window.select((chosen,)),
                ordered=flag,
                reference_dispersion=None if past is None else past.select((chosen,)),
            )
    return p


def decide_all(looked: Sequence[Scored], alpha: float) -> float:
    """One decision over every test of ``looked`` (a look's versions): Benjamini-Hochberg
    at ``alpha`` across all of them (each feature in each segment one test), and drift
    where a statistic has that evidence and its effect reaches its threshold. Fills each
    score's ``p_value``, ``bh_cut`` and ``drifted``; returns the cut."""
    pvalues = [p for scored in looked for p in scored.pvalues]
    if not pvalues:
        return calibrate.bh_cut(np.array([]), alpha)
    effects = [s["value"] for scored in looked for s in scored.scores]
    thresholds = [s["threshold"] for scored in looked for s in scored.scores]
    labels: list[int] = []
    offset = 0
    for scored in looked:
        labels += [offset + test for test in scored.tests]
        offset += max(scored.tests, default=-1) + 1
    decision = calibrate.decide(
        np.array(pvalues), np.array(effects), np.array(thresholds), alpha, tests=np.array(labels)
    )
    at = 0
    for scored in looked:
        for entry, p_value in zip(scored.scores, scored.pvalues, strict=True):
            entry["p_value"] = p_value
            entry["bh_cut"] = decision.cut
            entry["drifted"] = bool(decision.drifted[at])
            at += 1
    return decision.cut


def _segment_size(layout: Layout, data: WindowData, s: int) -> tuple[int, int]:
    """Devices and rows of a segment: the most over its features (the input features'
    rows when there are any, the confidence histogram's otherwise)."""
    devices = 0
    rows = 0.0
    input_rows = 0.0
    for bins, members in layout.groups.items():
        dispersion = data.dispersion[bins]
        for j, feature in enumerate(members):
            devices = max(devices, int(dispersion.devices[s, j]))
            n = float(dispersion.n[s, j])
            rows = max(rows, n)
            if layout.features[feature].kind == "input":
                input_rows = max(input_rows, n)
    return devices, int(input_rows or rows)


def _bin_effect(statistic: str, reference: FloatArray, current: FloatArray) -> FloatArray:
    """A bin statistic's effect, the value held against its threshold, per pair."""
    if statistic == "psi":
        return stats.psi(reference, current)
    # Chi-square's practical size is the Jensen-Shannon distance: its own value grows
    # with the sample, which is evidence, not size.
    return stats.jensen_shannon(reference, current)


def _summary_statistics(
    rules: Rules,
    feature: FeatureRef,
    reference_counts: FloatArray,
    current_counts: FloatArray,
    reference_sketch: QuantileSummary | None,
    current_sketch: QuantileSummary | None,
) -> dict[str, tuple[float, str | None]]:
    """KS and Wasserstein (those the rules ask for) of one feature and segment, each
    with how it was approximated (``None``, or ``"bins"`` without summaries on both
    sides); Wasserstein left out when the reference has no spread to measure it in."""
    assert feature.edges is not None
    exact = (
        reference_sketch is not None
        and current_sketch is not None
        and not reference_sketch.is_empty
        and not current_sketch.is_empty
    )
    found: dict[str, tuple[float, str | None]] = {}
    try:
        if exact:
            assert reference_sketch is not None and current_sketch is not None
            if "ks" in rules.thresholds:
                found["ks"] = (stats.ks(reference_sketch, current_sketch), None)
            if "wasserstein" in rules.thresholds:
                spread = _summary_std(reference_sketch)
                if spread > 0:
                    distance = stats.wasserstein(reference_sketch, current_sketch)
                    found["wasserstein"] = (distance / spread, None)
        else:
            if "ks" in rules.thresholds:
                distance = stats.ks_from_bins(feature.edges, reference_counts, current_counts)
                found["ks"] = (distance, "bins")
            if "wasserstein" in rules.thresholds:
                spread = _bins_std(feature.edges, reference_counts)
                if spread > 0:
                    distance = stats.wasserstein_from_bins(
                        feature.edges, reference_counts, current_counts
                    )
                    found["wasserstein"] = (distance / spread, "bins")
    except InsufficientDataError:
        return {}
    return {name: (float(value), how) for name, (value, how) in found.items()}


def _summary_std(summary: QuantileSummary) -> float:
    """Standard deviation of the values a summary stands for (its weighted sample)."""
    points = summary.support()
    weights = np.diff(np.concatenate(([0.0], summary.cdf(points))))
    mean = float(np.dot(weights, points))
    return math.sqrt(max(float(np.dot(weights, (points - mean) ** 2)), 0.0))


def _bins_std(edges: Sequence[float], counts: FloatArray) -> float:
    """Standard deviation of binned values, each at its bucket's middle (the outer
    buckets at the outer edges, as ``stats.wasserstein_from_bins`` places them)."""
    cuts = np.asarray(edges, dtype=np.float64)
    middles = np.concatenate(([cuts[0]], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1]]))
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    shares = counts / total
    mean = float(np.dot(shares, middles))
    return math.sqrt(max(float(np.dot(shares, (middles - mean) ** 2)), 0.0))


def _score(
    segment: str,
    feature: str,
    statistic: str,
    value: float,
    threshold: float,
    approximate: str | None = None,
) -> dict[str, Any]:
    return {
        "segment": segment,
        "feature": feature,
        "statistic": statistic,
        "value": float(value),
        "threshold": float(threshold),
        "p_value": None,
        "bh_cut": None,
        "drifted": False,
        "approximate": approximate,
    }


def _numbers(row: Any, bins: int) -> list[float]:
    """A histogram as numbers, or NaNs (then skipped) when an entry is not one."""
    try:
        return [float(x) for x in row]
    except (TypeError, ValueError):
        return [math.nan] * bins


def _distribution(
    feature: FeatureRef, reference: FloatArray, current: FloatArray
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "edges": list(feature.edges) if feature.edges is not None else [],
        "reference": [round(float(c), 3) for c in reference],
        "current": [round(float(c), 3) for c in current],
    }
    if feature.edges is None:
        view["labels"] = [str(i) for i in range(feature.bins)]
    return view


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")

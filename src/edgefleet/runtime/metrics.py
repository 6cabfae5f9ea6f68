"""Per-model metrics, mergeable across requests, devices and the whole fleet.

Counts on fixed buckets, so two snapshots add up: inferences, errors by kind, a latency
histogram on fixed log-spaced edges, a top-1 confidence histogram and predicted-class
counts, over each telemetry interval.

For drift, a recorder also keeps a *summary period* (``drift_period_s``, an hour by
default, aligned to multiples of it in epoch time): the input feature histograms on the
bins of the version's reference profile (for images, per-sample mean intensity and
contrast), a uniform reservoir of at most ``sketch_rows`` of the sampled input rows and
one of at most ``CONFIDENCE_ROWS`` top-1 confidences. When the period closes (checked
when the counts are taken with ``reset``), the snapshot carries the period's histograms
and one quantile summary (``edgefleet.drift.sketch.QuantileSummary``) per feature and of
confidence, built from the reservoirs. Memory is bounded by design: the reservoirs hold
``sketch_rows x features + CONFIDENCE_ROWS`` numbers whatever the traffic::

    recorder = ModelMetrics(identity, profile=profile, probabilities="probabilities")
    recorder.observe(feeds, outputs, latency_ms=0.4)
    stats = recorder.snapshot(reset=True)       # stats.sketches once the period has closed
    fleet_total = ModelStats.merge_all([device_a, device_b])
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.drift.sketch import HAVE_KLL, SERVER_K, QuantileSummary
from edgefleet.registry.profile import (
    CONFIDENCE_EDGES,
    InputProfile,
    ReferenceProfile,
    per_sample_image_stats,
)

#: Latency bucket edges in milliseconds: 0.01 ms to ~10 s, four buckets per doubling.
LATENCY_EDGES_MS: tuple[float, ...] = tuple(round(0.01 * 2 ** (i / 4), 6) for i in range(80))

#: Seconds a drift summary period lasts by default.
DRIFT_PERIOD_S = 3600.0
#: Input rows a period's reservoir keeps by default (per input of the model).
SKETCH_ROWS = 24
#: Top-1 confidences a period's reservoir keeps.
CONFIDENCE_ROWS = 128
#: The key of the top-1 confidence summary among the feature summaries.
CONFIDENCE = "confidence"
#: Uniform draws taken from the generator at a time: one numpy call per this many
#: requests instead of one per request (a scalar numpy draw costs about a microsecond).
_DRAW_BLOCK = 1024

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a prediction or a metric belongs to."""

    name: str
    version: str
    variant: str = ""

    def key(self) -> str:
        return f"{self.name}@{self.version}" + (f"/{self.variant}" if self.variant else "")


@dataclass
class _FeatureBins:
    """One input's bins in vectorised form: ``edges[f]`` padded with +inf."""

    input_name: str
    kind: str
    names: tuple[str, ...]
    edges: Array  # [features, max_edges]
    sizes: tuple[int, ...]  # buckets per feature (= real edges + 1)

    @classmethod
    def from_profile(cls, profile: InputProfile) -> _FeatureBins:
        width = max(len(f.edges) for f in profile.features)
        edges = np.full((len(profile.features), width), np.inf)
        for i, feature in enumerate(profile.features):
            edges[i, : len(feature.edges)] = feature.edges
        return cls(
            input_name=profile.name,
            kind=profile.kind,
            names=tuple(f.name for f in profile.features),
            edges=edges,
            sizes=tuple(len(f.edges) + 1 for f in profile.features),
        )

    def values(self, batch: Array) -> Array:
        """The features' values per sample, ``[n, features]``: the columns of a tabular
        input, the per-sample statistics of an image-like one."""
        if self.kind == "image_stats":
            stats = per_sample_image_stats(batch)
            return np.stack([stats["mean"], stats["contrast"]], axis=1)
        values: Array = batch.reshape(batch.shape[0], -1).astype(np.float64)
        return values

    def bucket(self, values: Array) -> Array:
        """Bucket index per sample and feature of ``values`` (from ``values``)."""
        # searchsorted(side="right") == number of edges <= value.
        buckets: Array = (values[:, :, None] >= self.edges[None, :, :]).sum(axis=2)
        return buckets


@dataclass
class ModelStats:
    """Mergeable counters of one model version (on one device, or summed).

    The fields from ``feature_counts`` on describe drift summary periods (see
    ``ModelMetrics``). In a snapshot that closed a period: its input feature histograms,
    its quantile summaries (feature name, or ``"confidence"``, to summary), the input
    rows behind the feature summaries, and when it began and ended (epoch seconds). In a
    snapshot taken without ``reset``: the open period's histograms so far. Otherwise
    empty (``period_end is None``).
    """

    inferences: int = 0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1))
    confidence_counts: list[int] = field(default_factory=lambda: [0] * (len(CONFIDENCE_EDGES) + 1))
    class_counts: list[int] = field(default_factory=list)
    feature_counts: dict[str, list[int]] = field(default_factory=dict)
    sketches: dict[str, QuantileSummary] = field(default_factory=dict)
    sketch_rows: int = 0
    period_start: float | None = None
    period_end: float | None = None

    def add(self, other: ModelStats) -> None:
        """Add ``other``'s counts into these (summaries of the same feature merge; the
        period becomes the span of both).

        Raises:
            SummaryError: two summaries of one feature cannot be merged.
        """
        self.inferences += other.inferences
        self.requests += other.requests
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.latency_counts = _add(self.latency_counts, other.latency_counts)
        self.confidence_counts = _add(self.confidence_counts, other.confidence_counts)
        self.class_counts = _add(self.class_counts, other.class_counts)
        for name, counts in other.feature_counts.items():
            self.feature_counts[name] = _add(self.feature_counts.get(name, []), counts)
        for name, summary in other.sketches.items():
            mine = self.sketches.get(name)
            self.sketches[name] = summary if mine is None else mine.merged(summary)
        self.sketch_rows += other.sketch_rows
        if other.period_start is not None:
            self.period_start = min(self.period_start or other.period_start, other.period_start)
        if other.period_end is not None:
            self.period_end = max(self.period_end or other.period_end, other.period_end)

    @classmethod
    def merge_all(cls, parts: Iterable[ModelStats]) -> ModelStats:
        total = cls()
        for part in parts:
            total.add(part)
        return total

    def latency_quantile(self, q: float) -> float | None:
        """Upper edge (ms) of the bucket holding the ``q`` quantile of latencies."""
        return latency_quantile(self.latency_counts, q)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelStats:
        """The counts ``to_dict`` wrote.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is malformed (``SummaryError``, a
                ``ValueError``, for a summary that does not decode).
        """
        period_start, period_end = data.get("period_start"), data.get("period_end")
        return cls(
            inferences=int(data["inferences"]),
            requests=int(data["requests"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            latency_counts=[int(c) for c in data["latency_counts"]],
            confidence_counts=[int(c) for c in data["confidence_counts"]],
            class_counts=[int(c) for c in data["class_counts"]],
            feature_counts={
                str(k): [int(c) for c in v] for k, v in data.get("feature_counts", {}).items()
            },
            sketches={
                str(k): QuantileSummary.from_text(str(v))
                for k, v in data.get("sketches", {}).items()
            },
            sketch_rows=int(data.get("sketch_rows", 0)),
            period_start=None if period_start is None else float(period_start),
            period_end=None if period_end is None else float(period_end),
        )

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-ready values; the summary period's fields only when the
        counts carry a closed period."""
        data: dict[str, Any] = {
            "inferences": self.inferences,
            "requests": self.requests,
            "errors": dict(self.errors),
            "latency_counts": list(self.latency_counts),
            "confidence_counts": list(self.confidence_counts),
            "class_counts": list(self.class_counts),
            "feature_counts": {k: list(v) for k, v in self.feature_counts.items()},
        }
        if self.period_end is not None:
            data["sketches"] = {name: s.to_text() for name, s in self.sketches.items()}
            data["sketch_rows"] = self.sketch_rows
            data["period_start"] = self.period_start
            data["period_end"] = self.period_end
        return data


def latency_quantile(counts: list[int], q: float, *, interpolate: bool = False) -> float | None:
    """Upper edge (ms) of the bucket of ``LATENCY_EDGES_MS`` holding the ``q`` quantile
    of a latency histogram; ``None`` when it is empty.

    With ``interpolate``, the quantile within that bucket instead, geometrically between
    its edges (the buckets are a quarter-octave wide, so the edge alone moves in steps
    of 19% however many requests a device served); the open last bucket gives its lower
    edge.
    """
    total = sum(counts)
    if not total:
        return None
    running = 0
    for index, count in enumerate(counts):
        before, running = running, running + count
        if running >= q * total:
            if not interpolate or index >= len(LATENCY_EDGES_MS):
                return LATENCY_EDGES_MS[min(index, len(LATENCY_EDGES_MS) - 1)]
            high = LATENCY_EDGES_MS[index]
            low = LATENCY_EDGES_MS[index - 1] if index else high / _EDGE_STEP
            share = (q * total - before) / count if count else 1.0
            return float(low * (high / low) ** min(max(share, 0.0), 1.0))
    return LATENCY_EDGES_MS[-1]


#: The ratio of one latency bucket's upper edge to its lower edge.
_EDGE_STEP = LATENCY_EDGES_MS[1] / LATENCY_EDGES_MS[0]


def _add(a: list[int], b: list[int]) -> list[int]:
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return [x + (shorter[i] if i < len(shorter) else 0) for i, x in enumerate(longer)]


class Uniforms:
    """Uniform draws in [0, 1) from one numpy ``Generator``, taken from it in blocks.

    A reservoir needs one draw per row offered; a scalar draw from numpy costs about a
    microsecond, a Python list pop a few tens of nanoseconds. Not thread-safe.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._block: list[float] = []

    def draw(self) -> float:
        if not self._block:
            self._block = self.rng.random(_DRAW_BLOCK).tolist()
        return self._block.pop()


class Reservoir:
    """A uniform random sample of at most ``capacity`` rows of a stream of unknown length.

    Vitter's algorithm R: the first ``capacity`` rows fill it; after that, row number
    ``t`` (from 0) replaces a uniformly chosen kept row with probability
    ``capacity / (t + 1)`` (one draw per row). After any number of rows each of them is
    kept with the same probability, and the memory is ``capacity x width`` floats
    whatever the traffic. Not thread-safe (``ModelMetrics`` calls it under its lock)::

        reservoir = Reservoir(24, width=3, uniforms=Uniforms(np.random.default_rng()))
        reservoir.offer(rows)                  # rows: [n, 3]
        reservoir.sample()                     # [min(seen, 24), 3], in no particular order

    Raises:
        ValueError: a negative capacity, or a width below 1.
    """

    def __init__(self, capacity: int, width: int, uniforms: Uniforms) -> None:
        if capacity < 0 or width < 1:
            raise ValueError(
                f"a reservoir needs capacity >= 0 and width >= 1, not {capacity}, {width}"
            )
        self.capacity = capacity
        self.width = width
        #: Rows offered so far.
        self.seen = 0
        self._rows = np.empty((capacity, width))
        self._uniforms = uniforms

    def offer_one(self, value: float) -> None:
        """Offer one value (a row of a one-column reservoir)."""
        seen = self.seen
        self.seen = seen + 1
        if seen < self.capacity:
            self._rows[seen, 0] = value
            return
        slot = int(self._uniforms.draw() * (seen + 1))
        if slot < self.capacity:
            self._rows[slot, 0] = value

    def offer(self, rows: Array) -> None:
        """Offer rows ``[n, width]``, in order."""
        seen, count = self.seen, rows.shape[0]
        self.seen = seen + count
        filled = min(count, max(0, self.capacity - seen))
        if filled:
            self._rows[seen : seen + filled] = rows[:filled]
        for index in range(filled, count):
            slot = int(self._uniforms.draw() * (seen + index + 1))
            if slot < self.capacity:
                self._rows[slot] = rows[index]

    def sample(self) -> Array:
        """A copy of the rows kept, ``[min(seen, capacity), width]``."""
        return self._rows[: min(self.seen, self.capacity)].copy()


class _Period:
    """What a recorder keeps of one drift summary period (under the recorder's lock)."""

    def __init__(
        self,
        start: float,
        closes_at: float,
        bins: list[_FeatureBins],
        rows: int,
        uniforms: Uniforms,
    ) -> None:
        self.start = start
        self.closes_at = closes_at
        self.feature_counts: dict[str, list[int]] = {}
        # Without the sketch package nothing would use the reservoirs: bins only.
        self.reservoirs = (
            [Reservoir(rows, len(b.names), uniforms) for b in bins] if HAVE_KLL and rows else []
        )
        self.confidences = Reservoir(CONFIDENCE_ROWS, 1, uniforms) if HAVE_KLL else None

    @property
    def observed(self) -> bool:
        return bool(self.feature_counts) or bool(self.confidences and self.confidences.seen)


def period_end(start: float, period_s: float) -> float:
    """When a summary period open at ``start`` (epoch seconds) closes: the next multiple
    of ``period_s`` after it, so that every device's periods share edges (an hour's
    period closes on the hour) and the server can tell which window a summary covers."""
    return (math.floor(start / period_s) + 1) * period_s


class ModelMetrics:
    """Thread-safe recorder of one model's ``ModelStats``.

    ``feature_every`` samples input features on every n-th request only: the
    histograms are for drift, where a sample suffices, and bucketing every feature of
    every request would cost more than a small model's inference.

    Drift summary period (module docstring): feature histograms of the sampled requests,
    a reservoir of at most ``sketch_rows`` of their rows (per input; 0 keeps none), and
    one of at most ``CONFIDENCE_ROWS`` top-1 confidences of every sample. Periods end at
    multiples of ``drift_period_s`` of ``clock`` (epoch seconds); ``rng`` (default: seeded
    from the OS) draws the reservoirs' replacements. Without the sketch package
    (``edgefleet.drift.sketch.HAVE_KLL`` false) no reservoir is kept: histograms only.

    Raises:
        ValueError: ``drift_period_s`` is not a positive number of seconds, or
            ``sketch_rows`` is negative.
    """

    def __init__(
        self,
        identity: ModelIdentity,
        *,
        profile: ReferenceProfile | None = None,
        probabilities: str | None = None,
        label: str | None = None,
        feature_every: int = 8,
        drift_period_s: float = DRIFT_PERIOD_S,
        sketch_rows: int = SKETCH_ROWS,
        clock: Callable[[], float] = time.time,
        rng: np.random.Generator | None = None,
    ) -> None:
        if not (math.isfinite(drift_period_s) and drift_period_s > 0):
            raise ValueError(
                f"drift_period_s must be a positive number of seconds, not {drift_period_s}"
            )
        if sketch_rows < 0:
            raise ValueError(f"sketch_rows must be 0 or more, not {sketch_rows}")
        self.identity = identity
        self.profile = profile
        self.probabilities = probabilities
        self.label = label
        self.feature_every = max(1, feature_every)
        self.drift_period_s = float(drift_period_s)
        self.sketch_rows = sketch_rows
        self._clock = clock
        self._rng = rng if rng is not None else np.random.default_rng()
        self._uniforms = Uniforms(self._rng)
        self._bins = [
            _FeatureBins.from_profile(p) for p in (profile.inputs if profile else ()) if p.features
        ]
        class_count = len(profile.class_counts) if profile and profile.class_counts else 0
        self._stats = ModelStats(class_counts=[0] * class_count)
        self._lock = threading.Lock()
        self._confidence_edges = np.asarray(CONFIDENCE_EDGES)
        self._period = self._open_period(clock())

    def _open_period(self, now: float) -> _Period:
        return _Period(
            now, period_end(now, self.drift_period_s), self._bins, self.sketch_rows, self._uniforms
        )

    def fresh(self) -> ModelMetrics:
        """A new, empty recorder for the same model (a new phase of its life, say live
        after shadow, counted apart)."""
        return ModelMetrics(
            self.identity,
            profile=self.profile,
            probabilities=self.probabilities,
            label=self.label,
            feature_every=self.feature_every,
            drift_period_s=self.drift_period_s,
            sketch_rows=self.sketch_rows,
            clock=self._clock,
            rng=self._rng.spawn(1)[0],
        )

    def observe(
        self, feeds: Mapping[str, Array], outputs: Mapping[str, Array], latency_ms: float
    ) -> None:
        """Count one successful request."""
        batch = next(iter(feeds.values())).shape[0]
        latency_bucket = bisect.bisect_right(LATENCY_EDGES_MS, latency_ms)
        classes: list[int] = []
        confidences: list[int] = []
        tops: list[float] = []
        if self.probabilities is not None:
            probs = outputs[self.probabilities]
            if batch == 1:  # the common single-sample request, without numpy's per-call overhead
                row = probs[0]
                cls = int(row.argmax())
                classes = [cls]
                tops = [float(row[cls])]
                confidences = [bisect.bisect_right(CONFIDENCE_EDGES, tops[0])]
            else:
                classes = probs.argmax(axis=1).tolist()
                maxima = probs.max(axis=1)
                tops = maxima.tolist()
                confidences = np.searchsorted(self._confidence_edges, maxima, "right").tolist()
        elif self.label is not None:
            classes = np.asarray(outputs[self.label]).reshape(-1).tolist()
        with self._lock:
            stats = self._stats
            stats.requests += 1
            stats.inferences += batch
            stats.latency_counts[latency_bucket] += 1
            for bucket in confidences:
                stats.confidence_counts[bucket] += 1
            counts = stats.class_counts
            for cls in classes:
                if cls >= len(counts):
                    counts.extend([0] * (cls + 1 - len(counts)))
                if cls >= 0:
                    counts[cls] += 1
            reservoir = self._period.confidences
            if reservoir is not None:
                for top in tops:
                    reservoir.offer_one(top)
            sample_features = (
                bool(self._bins) and stats.requests % self.feature_every == 1 % self.feature_every
            )
        if sample_features:
            self._observe_features(feeds)

    def _observe_features(self, feeds: Mapping[str, Array]) -> None:
        for index, bins in enumerate(self._bins):
            batch = feeds.get(bins.input_name)
            if batch is None:
                continue
            values = bins.values(batch)
            buckets = bins.bucket(values)
            with self._lock:
                period = self._period
                counts = period.feature_counts
                for f, name in enumerate(bins.names):
                    row = counts.setdefault(name, [0] * bins.sizes[f])
                    for bucket in buckets[:, f].tolist():
                        row[bucket] += 1
                if period.reservoirs:
                    period.reservoirs[index].offer(values)

    def error(self, kind: str) -> None:
        with self._lock:
            self._stats.errors[kind] = self._stats.errors.get(kind, 0) + 1

    def snapshot(self, *, reset: bool = False, flush: bool = False) -> ModelStats:
        """A copy of the counts (and, with ``reset``, start counting afresh).

        With ``reset``, a summary period whose end has come closes, and the copy carries
        its histograms and summaries (built here, outside the lock; a period in which
        nothing was observed carries nothing). With ``flush`` too, the open period closes
        whatever its end: a model swapped out reports what it saw at once. Without
        ``reset``, the copy carries the open period's histograms so far, no summaries.
        """
        now = self._clock()
        closed: _Period | None = None
        with self._lock:
            copy = ModelStats()
            copy.add(self._stats)
            if reset:
                self._stats = ModelStats(class_counts=[0] * len(self._stats.class_counts))
                if flush or now >= self._period.closes_at:
                    closed, self._period = self._period, self._open_period(now)
            else:
                copy.feature_counts = {
                    name: list(counts) for name, counts in self._period.feature_counts.items()
                }
        if closed is not None and closed.observed:
            self._summarise(closed, now, copy)
        return copy

    def _summarise(self, period: _Period, now: float, stats: ModelStats) -> None:
        """Put a closed period's histograms and summaries into ``stats``."""
        stats.feature_counts = period.feature_counts  # the period is no one else's now
        stats.period_start = period.start
        stats.period_end = max(now, period.start)
        for bins, reservoir in zip(self._bins, period.reservoirs, strict=False):
            rows = reservoir.sample()
            if not len(rows):
                continue
            stats.sketch_rows = max(stats.sketch_rows, len(rows))
            for f, name in enumerate(bins.names):
                stats.sketches[name] = QuantileSummary.of(rows[:, f], k=SERVER_K)
        if period.confidences is not None and period.confidences.seen:
            stats.sketches[CONFIDENCE] = QuantileSummary.of(
                period.confidences.sample()[:, 0], k=SERVER_K
            )

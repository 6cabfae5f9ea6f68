"""Per-model metrics, mergeable across requests, devices and the whole fleet.

Everything is a count on fixed buckets, so two snapshots add up: inferences, errors by
kind, a latency histogram on fixed log-spaced edges, a top-1 confidence histogram,
predicted-class counts, and input feature histograms on the bins of the version's
reference profile (for images, per-sample mean intensity and contrast)::

    stats = ModelStats.empty(profile, class_count=10)
    stats.observe(feeds, outputs, latency_ms=0.4, batch=1)
    fleet_total = ModelStats.merge_all([device_a, device_b])
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.registry.profile import (
    CONFIDENCE_EDGES,
    InputProfile,
    ReferenceProfile,
    per_sample_image_stats,
)

#: Latency bucket edges in milliseconds: 0.01 ms to ~10 s, four buckets per doubling.
LATENCY_EDGES_MS: tuple[float, ...] = tuple(round(0.01 * 2 ** (i / 4), 6) for i in range(80))

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

    def bucket(self, batch: Array) -> Array:
        """Bucket index per sample and feature: ``[n, features]``."""
        if self.kind == "image_stats":
            stats = per_sample_image_stats(batch)
            values = np.stack([stats["mean"], stats["contrast"]], axis=1)
        else:
            values = batch.reshape(batch.shape[0], -1).astype(np.float64)
        # searchsorted(side="right") == number of edges <= value.
        buckets: Array = (values[:, :, None] >= self.edges[None, :, :]).sum(axis=2)
        return buckets


@dataclass
class ModelStats:
    """Mergeable counters of one model version (on one device, or summed)."""

    inferences: int = 0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1))
    confidence_counts: list[int] = field(default_factory=lambda: [0] * (len(CONFIDENCE_EDGES) + 1))
    class_counts: list[int] = field(default_factory=list)
    feature_counts: dict[str, list[int]] = field(default_factory=dict)

    def add(self, other: ModelStats) -> None:
        """Add ``other``'s counts into these."""
        self.inferences += other.inferences
        self.requests += other.requests
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.latency_counts = _add(self.latency_counts, other.latency_counts)
        self.confidence_counts = _add(self.confidence_counts, other.confidence_counts)
        self.class_counts = _add(self.class_counts, other.class_counts)
        for name, counts in other.feature_counts.items():
            self.feature_counts[name] = _add(self.feature_counts.get(name, []), counts)

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
        """The counts ``to_dict`` wrote. Raises KeyError/TypeError/ValueError if malformed."""
        return cls(
            inferences=int(data["inferences"]),
            requests=int(data["requests"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            latency_counts=[int(c) for c in data["latency_counts"]],
            confidence_counts=[int(c) for c in data["confidence_counts"]],
            class_counts=[int(c) for c in data["class_counts"]],
            feature_counts={str(k): [int(c) for c in v] for k, v in data["feature_counts"].items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "inferences": self.inferences,
            "requests": self.requests,
            "errors": dict(self.errors),
            "latency_counts": list(self.latency_counts),
            "confidence_counts": list(self.confidence_counts),
            "class_counts": list(self.class_counts),
            "feature_counts": {k: list(v) for k, v in self.feature_counts.items()},
        }


def latency_quantile(counts: list[int], q: float) -> float | None:
    """Upper edge (ms) of the bucket of ``LATENCY_EDGES_MS`` holding the ``q`` quantile
    of a latency histogram; ``None`` when it is empty."""
    total = sum(counts)
    if not total:
        return None
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= q * total:
            return LATENCY_EDGES_MS[min(index, len(LATENCY_EDGES_MS) - 1)]
    return LATENCY_EDGES_MS[-1]


def _add(a: list[int], b: list[int]) -> list[int]:
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return [x + (shorter[i] if i < len(shorter) else 0) for i, x in enumerate(longer)]


class ModelMetrics:
    """Thread-safe recorder of one model's ``ModelStats``.

    ``feature_every`` samples input features on every n-th request only: the
    histograms are for drift, where a sample suffices, and bucketing every feature of
    every request would cost more than a small model's inference.
    """

    def __init__(
        self,
        identity: ModelIdentity,
        *,
        profile: ReferenceProfile | None = None,
        probabilities: str | None = None,
        label: str | None = None,
        feature_every: int = 8,
    ) -> None:
        self.identity = identity
        self.profile = profile
        self.probabilities = probabilities
        self.label = label
        self.feature_every = max(1, feature_every)
        self._bins = [
            _FeatureBins.from_profile(p) for p in (profile.inputs if profile else ()) if p.features
        ]
        class_count = len(profile.class_counts) if profile and profile.class_counts else 0
        self._stats = ModelStats(class_counts=[0] * class_count)
        self._lock = threading.Lock()
        self._confidence_edges = np.asarray(CONFIDENCE_EDGES)

    def fresh(self) -> ModelMetrics:
        """A new, empty recorder for the same model (a new phase of its life, say live
        after shadow, counted apart)."""
        return ModelMetrics(
            self.identity,
            profile=self.profile,
            probabilities=self.probabilities,
            label=self.label,
            feature_every=self.feature_every,
        )

    def observe(
        self, feeds: Mapping[str, Array], outputs: Mapping[str, Array], latency_ms: float
    ) -> None:
        """Count one successful request."""
        batch = next(iter(feeds.values())).shape[0]
        latency_bucket = bisect.bisect_right(LATENCY_EDGES_MS, latency_ms)
        classes: list[int] = []
        confidences: list[int] = []
        if self.probabilities is not None:
            probs = outputs[self.probabilities]
            if batch == 1:  # the common single-sample request, without numpy's per-call overhead
                row = probs[0]
                cls = int(row.argmax())
                classes = [cls]
                confidences = [bisect.bisect_right(CONFIDENCE_EDGES, float(row[cls]))]
            else:
                classes = probs.argmax(axis=1).tolist()
                confidences = np.searchsorted(
                    self._confidence_edges, probs.max(axis=1), "right"
                ).tolist()
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
            sample_features = (
                bool(self._bins) and stats.requests % self.feature_every == 1 % self.feature_every
            )
        if sample_features:
            self._observe_features(feeds)

    def _observe_features(self, feeds: Mapping[str, Array]) -> None:
        for bins in self._bins:
            batch = feeds.get(bins.input_name)
            if batch is None:
                continue
            buckets = bins.bucket(batch)
            with self._lock:
                counts = self._stats.feature_counts
                for f, name in enumerate(bins.names):
                    row = counts.setdefault(name, [0] * bins.sizes[f])
                    for index in buckets[:, f].tolist():
                        row[index] += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self._stats.errors[kind] = self._stats.errors.get(kind, 0) + 1

    def snapshot(self, *, reset: bool = False) -> ModelStats:
        """A copy of the counts (and, with ``reset``, start counting afresh)."""
        with self._lock:
            copy = ModelStats()
            copy.add(self._stats)
            if reset:
                self._stats = ModelStats(class_counts=[0] * len(self._stats.class_counts))
        return copy

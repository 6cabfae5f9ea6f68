"""Reference profiles: the bins devices summarise live data on.

At registration the registry profiles a reference sample of inputs (for the examples,
the held-out set) and the model's outputs on it. Devices count their live data into
exactly the same bins, so fleet-wide drift and rollout gates become sums of counts
rather than scans of raw data::

    edges = quantile_edges(values, bins=10)      # interior cut points
    counts = bin_counts(values, edges)           # len(edges) + 1 buckets

A value ``x`` falls in bucket ``searchsorted(edges, x, side="right")``: bucket 0 is
``x < edges[0]`` and the last bucket is ``x >= edges[-1]``, so values outside the
reference range still land somewhere and counts from many devices add up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

#: Fixed interior edges of the top-1 confidence histogram (20 buckets of 0.05).
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


class FeatureBins(BaseModel):
    """Bins of one input feature and the reference sample's counts in them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]


class InputProfile(BaseModel):
    """Profile of one input tensor.

    ``kind`` is ``features`` for tabular inputs (one entry per column) and
    ``image_stats`` for higher-rank inputs, summarised by cheap per-sample statistics
    (mean intensity, contrast) instead of per-pixel bins.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: str
    features: tuple[FeatureBins, ...]


class ReferenceProfile(BaseModel):
    """What the model saw and said on its reference sample."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_count: int = Field(ge=1)
    inputs: tuple[InputProfile, ...]
    class_counts: tuple[int, ...] = ()
    confidence_edges: tuple[float, ...] = ()
    confidence_counts: tuple[int, ...] = ()

    def class_distribution(self) -> tuple[float, ...]:
        """Class shares of the reference predictions (empty when there is no class output)."""
        total = sum(self.class_counts)
        return tuple(c / total for c in self.class_counts) if total else ()


FloatArray = npt.NDArray[np.floating]


def confidence_mean(counts: Sequence[int]) -> float | None:
    """Mean top-1 confidence of a histogram on ``CONFIDENCE_EDGES`` (bin midpoints);
    ``None`` when it is empty."""
    total = sum(counts)
    if not total:
        return None
    edges = (0.0, *CONFIDENCE_EDGES, 1.0)
    mids = [(edges[i] + edges[i + 1]) / 2 for i in range(len(edges) - 1)]
    return sum(m * c for m, c in zip(mids, counts, strict=False)) / total


def quantile_edges(values: npt.ArrayLike, bins: int) -> tuple[float, ...]:
    """Interior cut points that split ``values`` into (at most) ``bins`` equal-mass buckets.

    Repeated quantiles collapse, so a constant feature gets a single edge (two buckets:
    below the constant, and at-or-above it).
    """
    if bins < 2:
        raise ValueError("bins must be at least 2")
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise ValueError("no finite values to profile")
    quantiles = np.quantile(data, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges = np.unique(np.round(quantiles, 9))
    if edges.size == 0:  # pragma: no cover - unique of a non-empty array is non-empty
        edges = np.array([data[0]])
    return tuple(float(e) for e in edges)


def bucket_index(values: npt.ArrayLike, edges: Sequence[float]) -> npt.NDArray[np.intp]:
    """The bucket each value falls in for interior ``edges`` (see the module docstring)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values), "right")


def bin_counts(values: npt.ArrayLike, edges: Sequence[float]) -> tuple[int, ...]:
    """How many of ``values`` fall in each of the ``len(edges) + 1`` buckets."""
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    counts = np.bincount(bucket_index(data, edges), minlength=len(edges) + 1)
    return tuple(int(c) for c in counts)


def per_sample_image_stats(array: npt.ArrayLike) -> dict[str, FloatArray]:
    """Cheap per-sample statistics of an image-like batch ``[N, ...]``."""
    data = np.asarray(array, dtype=np.float64)
    flat = data.reshape(data.shape[0], -1)
    return {"mean": flat.mean(axis=1), "contrast": flat.std(axis=1)}


def profile_input(name: str, array: npt.ArrayLike, bins: int) -> InputProfile:
    """Profile one input batch ``[N, ...]``: per-column bins, or image statistics."""
    data = np.asarray(array)
    if data.ndim == 0 or data.shape[0] == 0:
        raise ValueError(f"input {name!r} has no samples")
    if data.ndim <= 2:
        columns = data.reshape(data.shape[0], -1).astype(np.float64)
        features = []
        for index in range(columns.shape[1]):
            edges = quantile_edges(columns[:, index], bins)
            features.append(
                FeatureBins(
                    name=f"{name}[{index}]",
                    edges=edges,
                    counts=bin_counts(columns[:, index], edges),
                )
            )
        return InputProfile(name=name, kind="features", features=tuple(features))
    stats = per_sample_image_stats(data)
    features = []
    for stat, values in stats.items():
        edges = quantile_edges(values, bins)
        features.append(
            FeatureBins(name=f"{name}:{stat}", edges=edges, counts=bin_counts(values, edges))
        )
    return InputProfile(name=name, kind="image_stats", features=tuple(features))


def compute_profile(
    inputs: Mapping[str, npt.ArrayLike],
    *,
    probabilities: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    class_count: int | None = None,
    bins: int = 10,
) -> ReferenceProfile:
    """Profile a reference sample and the model's outputs on it.

    Args:
        inputs: input name → batch ``[N, ...]``; every batch has the same ``N``.
        probabilities: ``[N, K]`` class probabilities, if the model outputs them.
        labels: ``[N]`` predicted class indices, used when there are no probabilities.
        class_count: number of classes ``K`` (inferred from the outputs when omitted).
        bins: buckets per input feature.

    Raises:
        ValueError: empty or inconsistent batches.
    """
    sizes = {name: int(np.asarray(a).shape[0]) for name, a in inputs.items()}
    if not sizes:
        raise ValueError("the reference sample has no inputs")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"reference inputs have different sample counts: {sizes}")
    sample_count = next(iter(sizes.values()))
    profiles = tuple(profile_input(name, a, bins) for name, a in inputs.items())

    class_counts: tuple[int, ...] = ()
    confidence_counts: tuple[int, ...] = ()
    confidence_edges: tuple[float, ...] = ()
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[0] != sample_count:
            raise ValueError(f"probabilities must be [{sample_count}, K], got {list(probs.shape)}")
        k = class_count or probs.shape[1]
        predicted = probs.argmax(axis=1)
        class_counts = tuple(int(c) for c in np.bincount(predicted, minlength=k)[:k])
        confidence_edges = CONFIDENCE_EDGES
        confidence_counts = bin_counts(probs.max(axis=1), CONFIDENCE_EDGES)
    elif labels is not None:
        predicted = np.asarray(labels).astype(np.int64).ravel()
        if predicted.size != sample_count:
            raise ValueError(f"labels must have {sample_count} entries, got {predicted.size}")
        if predicted.size and predicted.min() < 0:
            raise ValueError("labels must be class indices (non-negative)")
        k = class_count or int(predicted.max()) + 1
        class_counts = tuple(int(c) for c in np.bincount(predicted, minlength=k)[:k])
    return ReferenceProfile(
        sample_count=sample_count,
        inputs=profiles,
        class_counts=class_counts,
        confidence_edges=confidence_edges,
        confidence_counts=confidence_counts,
    )

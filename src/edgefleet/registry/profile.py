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

Where ``datasketches`` is installed, the profile also keeps a quantile summary of the
reference sample's values of every feature and of the top-1 confidence
(``ReferenceProfile.sketches``: the same names and text form as a device's telemetry
``sketches``, ``QuantileSummary.to_text()`` at ``k = SERVER_K``), so the drift service
computes KS and Wasserstein against the profile from summaries on both sides instead of
from the bins::

    profile = compute_profile({"X": reference}, probabilities=probabilities)
    summary = profile.reference_summary("X[3]")     # QuantileSummary, or None

A reference sample smaller than ``SERVER_K`` is kept whole (every value, 4 bytes each
before base64), so the summaries are exact. They are most of the profile's size: the
digits example's (540 rows, 64 features and confidence; compact JSON, as published)
grows from 5,478 bytes (1,240 gzipped) to 196,521 (26,681 gzipped). Past ``SERVER_K``
rows a summary grows with log(n) only: about 28 KB of text for 100,000 values.
Profiles written before summaries existed, or where ``datasketches`` is missing, have
none and still load; KS and Wasserstein against them come from the bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.drift.sketch import HAVE_KLL, MAX_SUMMARY_BYTES, SERVER_K, QuantileSummary

#: Fixed interior edges of the top-1 confidence histogram (20 buckets of 0.05).
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))

#: Key of the top-1 confidence's summary in ``ReferenceProfile.sketches`` (as in telemetry).
CONFIDENCE_SKETCH = "confidence"

#: Longest summary text a profile accepts: base64 of ``MAX_SUMMARY_BYTES``.
MAX_SUMMARY_TEXT = 4 * -(-MAX_SUMMARY_BYTES // 3)


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
    #: Quantile summaries of the reference sample: feature name (or ``"confidence"``)
    #: -> ``QuantileSummary.to_text()``. Empty in profiles from before summaries, or
    #: built where ``datasketches`` is not installed. Not decoded when the profile is
    #: read (a device without ``datasketches`` reads it too): ``reference_summary`` does.
    sketches: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sketches_name_what_the_profile_has(self) -> Self:
        known = {f.name for p in self.inputs for f in p.features}
        if self.confidence_counts:
            known.add(CONFIDENCE_SKETCH)
        unknown = sorted(set(self.sketches) - known)
        if unknown:
            raise ValueError(
                "sketches: not features of this profile: "
                + ", ".join(repr(name) for name in unknown[:10])
                + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            )
        too_long = [name for name, text in self.sketches.items() if len(text) > MAX_SUMMARY_TEXT]
        if too_long:
            raise ValueError(
                f"sketches: the summary of {too_long[0]!r} is over {MAX_SUMMARY_TEXT} "
                "characters, the limit of a quantile summary's text"
            )
        return self

    def class_distribution(self) -> tuple[float, ...]:
        """Class shares of the reference predictions (empty when there is no class output)."""
        total = sum(self.class_counts)
        return tuple(c / total for c in self.class_counts) if total else ()

    def reference_summary(self, name: str) -> QuantileSummary | None:
        """The quantile summary of the reference sample's values of feature ``name`` (or
        of the top-1 confidence, ``"confidence"``); ``None`` when the profile has none.

        Raises:
            SummaryError: the stored text is not a well-formed summary, or
                ``datasketches`` is not installed here.
        """
        text = self.sketches.get(name)
        return None if text is None else QuantileSummary.from_text(text)


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


def feature_values(name: str, array: npt.ArrayLike) -> tuple[str, dict[str, FloatArray]]:
    """The profile's view of one input batch ``[N, ...]``: its kind (``features`` or
    ``image_stats``) and each feature's values by feature name, in profile order.

    Raises:
        ValueError: the batch has no samples.
    """
    data = np.asarray(array)
    if data.ndim == 0 or data.shape[0] == 0:
        raise ValueError(f"input {name!r} has no samples")
    if data.ndim <= 2:
        columns = data.reshape(data.shape[0], -1).astype(np.float64)
        return "features", {f"{name}[{i}]": columns[:, i] for i in range(columns.shape[1])}
    stats = per_sample_image_stats(data)
    return "image_stats", {f"{name}:{stat}": values for stat, values in stats.items()}


def profile_input(name: str, array: npt.ArrayLike, bins: int) -> InputProfile:
    """Profile one input batch ``[N, ...]``: per-column bins, or image statistics.

    Raises:
        ValueError: the batch has no samples, or a feature no finite value.
    """
    kind, values = feature_values(name, array)
    return _input_profile(name, kind, values, bins)


def _input_profile(
    name: str, kind: str, values: Mapping[str, FloatArray], bins: int
) -> InputProfile:
    features = []
    for feature, column in values.items():
        edges = quantile_edges(column, bins)
        features.append(FeatureBins(name=feature, edges=edges, counts=bin_counts(column, edges)))
    return InputProfile(name=name, kind=kind, features=tuple(features))


def compute_profile(
    inputs: Mapping[str, npt.ArrayLike],
    *,
    probabilities: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    class_count: int | None = None,
    bins: int = 10,
    summaries: bool = True,
) -> ReferenceProfile:
    """Profile a reference sample and the model's outputs on it.

    Args:
        inputs: input name → batch ``[N, ...]``; every batch has the same ``N``.
        probabilities: ``[N, K]`` class probabilities, if the model outputs them.
        labels: ``[N]`` predicted class indices, used when there are no probabilities.
        class_count: number of classes ``K`` (inferred from the outputs when omitted).
        bins: buckets per input feature.
        summaries: also keep quantile summaries of every feature and of the top-1
            confidence (``ReferenceProfile.sketches``, k = ``SERVER_K``); skipped where
            ``datasketches`` is not installed.

    Raises:
        ValueError: empty or inconsistent batches.
    """
    sizes = {name: int(np.asarray(a).shape[0]) for name, a in inputs.items()}
    if not sizes:
        raise ValueError("the reference sample has no inputs")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"reference inputs have different sample counts: {sizes}")
    sample_count = next(iter(sizes.values()))
    summarise = summaries and HAVE_KLL
    sketches: dict[str, str] = {}
    profiles = []
    for name, array in inputs.items():
        kind, values = feature_values(name, array)
        profiles.append(_input_profile(name, kind, values, bins))
        if summarise:
            sketches.update(_summaries(values))

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
        confidence = probs.max(axis=1)
        confidence_counts = bin_counts(confidence, CONFIDENCE_EDGES)
        if summarise:
            sketches.update(_summaries({CONFIDENCE_SKETCH: confidence}))
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
        inputs=tuple(profiles),
        class_counts=class_counts,
        confidence_edges=confidence_edges,
        confidence_counts=confidence_counts,
        sketches=sketches,
    )


def _summaries(values: Mapping[str, FloatArray]) -> dict[str, str]:
    """Each feature's values as a quantile summary's text, at the k the server merges
    device summaries into (so the two sides of a KS or Wasserstein are equally exact)."""
    return {
        name: QuantileSummary.of(column, k=SERVER_K).to_text() for name, column in values.items()
    }

"""Merging telemetry into time buckets (pure).

Each device keeps one row per bucket (``BUCKET``, 5 minutes) and model version; a
sample is merged in by adding counters and histograms and accumulating health sums,
so a bucket costs the same whether the device sent one sample or fifty.

A bucket also says how long its version served: the samples that listed it first
(the serving model; the health sample is filed with it) are counted in
``served_samples``, and the first and last of their times kept (``served_first``,
``served_last``, epoch seconds). Over a device's buckets, that gives the time the
device was on the version (``served_seconds``), which turns ``restarts`` into a rate.

Drift summaries arrive once per summary period (an hour by default), in the sample that
closes it: the period's ``feature_counts``, its quantile summaries (``sketches``,
feature name to ``QuantileSummary`` text) and ``sketch_rows``. They are not merged into
the bucket (a bucket is rewritten with every later sample of its 5 minutes, and 100
features' summaries are ~25 KB of JSON): ``summaries_of`` takes them out of a batch as
one ``PeriodSummary`` per model version and period, which the store inserts once into
a table of their own, and a look reads by ``period_end``. Only feature histograms sent
without a period (agents older than summary periods) still add up in the bucket.

Buckets stored before that may hold summaries merged in: ``merge_buckets`` still merges
those (sketches per feature; one that cannot be decoded is left out and counted in
``sketches_invalid``, so that one bad row never stops a flush)::

    buckets = to_buckets(samples)        # (bucket, model, version) -> (data, samples)
    summaries = summaries_of(samples)    # [PeriodSummary(model, version, start, end, data)]
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import zip_longest
from typing import Any

from edgefleet.drift.errors import SummaryError
from edgefleet.drift.sketch import QuantileSummary
from edgefleet.fleet.domain import HealthSample, ModelMetrics, TelemetrySample

BUCKET = timedelta(minutes=5)
#: The model name and version under which samples without model metrics are kept.
NO_MODEL = ("-", "-")
HEALTH_FIELDS = tuple(HealthSample.model_fields)

#: A bucket's identity within one device: (bucket start, model, version).
BucketKey = tuple[datetime, str, str]


_BUCKET_S = int(BUCKET.total_seconds())
#: Bucket fields that merge by adding.
_SUMS = frozenset({"inferences", "restarts", "served_samples", "sketch_rows", "sketches_invalid"})


def bucket_of(at: datetime) -> datetime:
    """The start of the bucket ``at`` falls in."""
    epoch = int(at.timestamp())
    return _bucket_start(epoch - epoch % _BUCKET_S, at.tzinfo)


@functools.lru_cache(maxsize=64)
def _bucket_start(epoch: int, tz: tzinfo | None) -> datetime:
    # The server files every sample of a few minutes under the same few buckets.
    return datetime.fromtimestamp(epoch, tz=tz)


def add_counts(a: list[int], b: list[int]) -> list[int]:
    """Element-wise sum; the shorter list counts as zeros beyond its end."""
    if len(a) == len(b):  # nearly always: the same histogram's edges
        return list(map(operator.add, a, b))
    if not a or not b:  # the first of a bucket
        return list(a or b)
    return [x + y for x, y in zip_longest(a, b, fillvalue=0)]


def merge_sketches(a: Mapping[str, str], b: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """Two sets of quantile summaries (feature name to text) merged per feature, and how
    many summaries were left out because they do not decode (never raises: a feature
    whose two summaries cannot be merged keeps the one that decodes)."""
    merged = dict(a)
    invalid = 0
    for name, text in b.items():
        mine = merged.get(name)
        if mine is None:
            merged[name] = text
            continue
        parts = []
        for candidate in (mine, text):
            try:
                parts.append(QuantileSummary.from_text(candidate))
            except SummaryError:
                invalid += 1
        if len(parts) == 2:
            merged[name] = parts[0].merged(parts[1]).to_text()
        elif parts:
            merged[name] = parts[0].to_text()
        else:
            del merged[name]
    return merged, invalid


def _merge_sketches_into(merged: dict[str, Any], sketches: Mapping[str, str]) -> None:
    combined, invalid = merge_sketches(merged.get("sketches", {}), sketches)
    merged["sketches"] = combined
    if invalid:
        merged["sketches_invalid"] = merged.get("sketches_invalid", 0) + invalid


def merge(
    data: dict[str, Any],
    health: HealthSample | None,
    metrics: ModelMetrics | None,
    served_at: float | None = None,
) -> dict[str, Any]:
    """``data`` (a bucket's merged content) with one more sample added; ``served_at``
    (epoch seconds): the sample's time, when the version served in it."""
    merged = dict(data)
    if served_at is not None:
        merged["served_samples"] = merged.get("served_samples", 0) + 1
        merged["served_first"] = min(merged.get("served_first", served_at), served_at)
        merged["served_last"] = max(merged.get("served_last", served_at), served_at)
    if health is not None:
        sums = dict(merged.get("health_sum", {}))
        counts = dict(merged.get("health_n", {}))
        maxima = dict(merged.get("health_max", {}))
        for field in HEALTH_FIELDS:
            value = getattr(health, field)
            if value is None:
                continue
            sums[field] = sums.get(field, 0.0) + value
            counts[field] = counts.get(field, 0) + 1
            maxima[field] = max(maxima.get(field, value), value)
        merged |= {"health_sum": sums, "health_n": counts, "health_max": maxima}
    if metrics is not None:
        merged["inferences"] = merged.get("inferences", 0) + metrics.inferences
        if metrics.restarts:
            merged["restarts"] = merged.get("restarts", 0) + metrics.restarts
        errors = dict(merged.get("errors", {}))
        for kind, count in metrics.errors.items():
            errors[kind] = errors.get(kind, 0) + count
        merged["errors"] = errors
        for name in ("latency_counts", "confidence_counts", "class_counts"):
            merged[name] = add_counts(merged.get(name, []), getattr(metrics, name))
        if metrics.feature_counts and metrics.period_end is None:
            # Histograms without a summary period (agents from before periods): they
            # add up in the bucket; a period's go to its PeriodSummary.
            features = dict(merged.get("feature_counts", {}))
            for feature, histogram in metrics.feature_counts.items():
                features[feature] = add_counts(features.get(feature, []), histogram)
            merged["feature_counts"] = features
    return merged


def merge_buckets(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two merged buckets (or a device's buckets over a window) as one."""
    merged = dict(a)
    for key, value in b.items():
        if key not in merged:
            merged[key] = value
        elif key in _SUMS:
            merged[key] = merged[key] + value
        elif key in ("served_first", "period_start"):
            merged[key] = min(merged[key], value)
        elif key in ("served_last", "period_end"):
            merged[key] = max(merged[key], value)
        elif key == "sketches":
            _merge_sketches_into(merged, value)
        elif key in ("latency_counts", "confidence_counts", "class_counts"):
            merged[key] = add_counts(merged[key], value)
        elif key == "feature_counts":
            merged[key] = {
                name: add_counts(merged[key].get(name, []), counts)
                for name, counts in value.items()
            } | {name: counts for name, counts in merged[key].items() if name not in value}
        elif key in ("errors", "health_sum", "health_n"):
            merged[key] = {k: merged[key].get(k, 0) + v for k, v in value.items()} | {
                k: v for k, v in merged[key].items() if k not in value
            }
        elif key == "health_max":
            merged[key] = {k: max(merged[key].get(k, v), v) for k, v in value.items()} | {
                k: v for k, v in merged[key].items() if k not in value
            }
    return merged


def served_seconds(data: Mapping[str, Any]) -> float | None:
    """How long the device was on the bucket's version, from merged buckets: the span
    of the samples in which it served, plus one sample interval (a sample reports the
    interval before it), estimated from the span itself; restarts and outages within
    the span count as time on the version. ``None`` with fewer than two samples."""
    samples = int(data.get("served_samples", 0))
    if samples < 2:
        return None
    span = float(data["served_last"]) - float(data["served_first"])
    return span * samples / (samples - 1) if span > 0 else None


def frozen(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its lists as tuples, for merged buckets kept in memory for long.

    Python's garbage collector walks every list on each full collection, however long
    it has lived; a tuple of numbers, and then a dict of such tuples and numbers, it
    stops tracking after one look. A server that keeps ten thousand devices' merged
    buckets in lists pays a walk over them, interpreter lock held, several times a
    minute. ``merge`` and ``merge_buckets`` take either form and return lists.
    """
    return {key: _frozen_value(value) for key, value in data.items()}


def _frozen_value(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {key: _frozen_value(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class PeriodSummary:
    """One device's drift summary of a model version over one summary period (epoch
    seconds ``period_start`` to ``period_end``): ``data`` holds the period's
    ``feature_counts``, ``sketches`` and ``sketch_rows`` as the device sent them."""

    model: str
    version: str
    period_start: float
    period_end: float
    data: Mapping[str, Any]


def summaries_of(samples: Iterable[TelemetrySample]) -> list[PeriodSummary]:
    """The drift summaries of a batch: one per model entry that closes a summary period
    (has ``period_start`` and ``period_end``), the first where a batch repeats one."""
    found: dict[tuple[str, str, float], PeriodSummary] = {}
    for sample in samples:
        for metrics in sample.models:
            if metrics.period_start is None or metrics.period_end is None:
                continue
            key = (metrics.model, metrics.version, float(metrics.period_end))
            if key in found:
                continue
            data: dict[str, Any] = {"sketch_rows": metrics.sketch_rows}
            if metrics.feature_counts:
                data["feature_counts"] = dict(metrics.feature_counts)
            if metrics.sketches:
                data["sketches"] = dict(metrics.sketches)
            found[key] = PeriodSummary(
                metrics.model,
                metrics.version,
                float(metrics.period_start),
                float(metrics.period_end),
                data,
            )
    return list(found.values())


def to_buckets(samples: Iterable[TelemetrySample]) -> dict[BucketKey, tuple[dict[str, Any], int]]:
    """A batch of samples merged per bucket and model version: key -> (data, samples).

    Health is counted once per sample, with its first model entry (the agent lists the
    serving model first), so it is filed under what served.
    """
    buckets: dict[BucketKey, tuple[dict[str, Any], int]] = {}
    for sample in samples:
        at = sample.at if sample.at.tzinfo else sample.at.replace(tzinfo=UTC)
        bucket = bucket_of(at.astimezone(UTC))
        entries: list[ModelMetrics | None] = list(sample.models) or [None]
        for index, metrics in enumerate(entries):
            model, version = (metrics.model, metrics.version) if metrics else NO_MODEL
            key = (bucket, model, version)
            data, count = buckets.get(key, ({}, 0))
            # The first entry is the model that served (health is filed under it too).
            health, served = (sample.health, at.timestamp()) if index == 0 else (None, None)
            if metrics is None:
                served = None
            buckets[key] = (merge(data, health, metrics, served), count + 1)
    return buckets

"""The runtime's metrics in Prometheus form, read from the runtime at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from edgefleet.registry.profile import CONFIDENCE_EDGES
from edgefleet.runtime.metrics import LATENCY_EDGES_MS
from edgefleet.runtime.runtime import ModelRuntime

Metric = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


def _buckets(
    edges: tuple[float, ...], counts: list[int], scale: float = 1.0
) -> list[tuple[str, float]]:
    cumulative = 0
    out: list[tuple[str, float]] = []
    for edge, count in zip(edges, counts, strict=False):
        cumulative += count
        out.append((repr(edge * scale), cumulative))
    out.append(("+Inf", sum(counts)))
    return out


class RuntimeCollector(Collector):
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version", "variant", "role"]
        inferences = CounterMetricFamily(
            "edgefleet_runtime_inferences", "Samples inferred, per model", labels=labels
        )
        errors = CounterMetricFamily(
            "edgefleet_runtime_errors", "Failed requests by kind", labels=[*labels, "kind"]
        )
        latency = HistogramMetricFamily(
            "edgefleet_runtime_latency_seconds", "Inference latency per request", labels=labels
        )
        confidence = HistogramMetricFamily(
            "edgefleet_runtime_confidence", "Top-1 confidence per sample", labels=labels
        )
        classes = CounterMetricFamily(
            "edgefleet_runtime_predictions", "Predicted classes", labels=[*labels, "class"]
        )
        for identity, stats, role in self.runtime.metrics().values():
            values = [identity.name, identity.version, identity.variant, role]
            inferences.add_metric(values, stats.inferences)
            for kind, count in stats.errors.items():
                errors.add_metric([*values, kind], count)
            latency.add_metric(
                values, _buckets(LATENCY_EDGES_MS, stats.latency_counts, 0.001), None
            )
            confidence.add_metric(values, _buckets(CONFIDENCE_EDGES, stats.confidence_counts), None)
            for index, count in enumerate(stats.class_counts):
                classes.add_metric([*values, str(index)], count)
        yield from (inferences, errors, latency, confidence, classes)
        shadow = self.runtime.shadow_stats()
        if shadow is not None:
            gauge = GaugeMetricFamily(
                "edgefleet_runtime_shadow", "Shadow comparison counters", labels=["counter"]
            )
            for name in ("compared", "agreed", "skipped", "failed"):
                gauge.add_metric([name], getattr(shadow, name))
            yield gauge


def registry_for(runtime: ModelRuntime) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))
    return registry

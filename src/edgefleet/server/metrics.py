"""Prometheus metrics of the server, on a registry of its own (one per app)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FleetCollector(Collector):
    """Device gauges read from the database at scrape time (one grouped query each)."""

    def __init__(self, summary: Callable[[], dict[str, Any]]) -> None:
        self.summary = summary

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            data = self.summary()
        except Exception:  # a scrape must not fail because the database is busy
            return
        devices = GaugeMetricFamily(
            "edgefleet_devices", "Enrolled devices by liveness", labels=["status"]
        )
        devices.add_metric(["online"], data["online"])
        devices.add_metric(["offline"], data["offline"])
        yield devices
        by_version = GaugeMetricFamily(
            "edgefleet_devices_by_model_version",
            "Devices by the model version they report",
            labels=["model", "version"],
        )
        for entry in data["by_version"]:
            by_version.add_metric([entry["model"] or "", entry["version"] or ""], entry["devices"])
        yield by_version
        by_state = GaugeMetricFamily(
            "edgefleet_devices_by_state", "Devices by agent state", labels=["state"]
        )
        for state, count in data["by_state"].items():
            by_state.add_metric([state], count)
        yield by_state


class CheckinCacheCollector(Collector):
    """The check-in cache's counters (store/checkin.py), read at scrape time so the
    304 path counts nothing more per request."""

    def __init__(self, cache: Callable[[], Any]) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cache = self.cache()
        if cache is None:
            return
        lookups = CounterMetricFamily(
            "edgefleet_checkin_cache_lookups",
            "Device rows the check-in fast path looked up, from memory or the database",
            labels=["source"],
        )
        lookups.add_metric(["memory"], cache.hits)
        lookups.add_metric(["database"], cache.misses)
        yield lookups
        yield CounterMetricFamily(
            "edgefleet_checkin_cache_restarts",
            "Times the check-in cache started over (its change log was pruned past it)",
            value=cache.restarts,
        )
        yield GaugeMetricFamily(
            "edgefleet_checkin_cache_rows", "Device rows held in memory", value=len(cache)
        )


class DriftCollector(Collector):
    """Drift gauges read from the database at scrape time (``DriftService.gauges``):
    alarms by model and state, and per model version from its latest look the drifted
    features by segment attribute and the largest score of each statistic. Labels are
    bounded: no device, no feature, no segment value."""

    def __init__(self, gauges: Callable[[], dict[str, Any]]) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            data = self.gauges()
        except Exception:  # a scrape must not fail because the database is busy
            return
        alarms = GaugeMetricFamily(
            "edgefleet_drift_alarms", "Drift alarms by model and state", labels=["model", "state"]
        )
        for (model, state), count in sorted(data["alarms"].items()):
            alarms.add_metric([model, state], count)
        yield alarms
        drifted = GaugeMetricFamily(
            "edgefleet_drift_features_drifted",
            "Features that drifted in the model version's latest look, in the fleet "
            '(segment_attribute "all"), in the segments of one attribute, or in query '
            'segments ("query")',
            labels=["model", "version", "segment_attribute"],
        )
        for (model, version, attribute), count in sorted(data["features_drifted"].items()):
            drifted.add_metric([model, version, attribute], count)
        yield drifted
        scores = GaugeMetricFamily(
            "edgefleet_drift_score_max",
            "The largest value of a drift statistic over the features and segments of the "
            "model version's latest look",
            labels=["model", "version", "statistic"],
        )
        for (model, version, statistic), value in sorted(data["score_max"].items()):
            scores.add_metric([model, version, statistic], value)
        yield scores


class ServerMetrics:
    def __init__(
        self,
        summary: Callable[[], dict[str, Any]],
        checkin_cache: Callable[[], Any] = lambda: None,
        drift: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgefleet_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgefleet_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.checkins = Counter(
            "edgefleet_checkins",
            "Device check-ins (desired-state requests)",
            ["result"],
            registry=self.registry,
        )
        self.not_modified = self.checkins.labels("not_modified")
        self.enrollments = Counter(
            "edgefleet_enrollments", "Enrollment attempts", ["result"], registry=self.registry
        )
        self.loop_lag = Histogram(
            "edgefleet_event_loop_lag_seconds",
            "How late the server's event loop wakes a 100 ms timer (time a ready request "
            "waits while the loop runs others)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.background = Histogram(
            "edgefleet_background_task_duration_seconds",
            "How long one run of a background task took (the rollout controller's step, "
            "the check-in and telemetry flushes, ...)",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gc_pause = Histogram(
            "edgefleet_gc_pause_seconds",
            "How long a collection of Python's cyclic garbage collector held the "
            "interpreter (every thread, the event loop included, waits for it)",
            ["generation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.artifact_bytes = Counter(
            "edgefleet_artifact_bytes_served", "Bytes of TUF targets served", registry=self.registry
        )
        self.drift_looks = Counter(
            "edgefleet_drift_looks",
            "Drift looks stored (one per monitor window)",
            registry=self.registry,
        )
        self.drift_look_seconds = Histogram(
            "edgefleet_drift_look_seconds",
            "How long one drift look took: reading, merging and scoring a window's "
            "telemetry, storing the look and its alarms",
            buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 120.0),
            registry=self.registry,
        )
        self.registry.register(FleetCollector(summary))
        self.registry.register(CheckinCacheCollector(checkin_cache))
        if drift is not None:
            self.registry.register(DriftCollector(drift))
        #: (method, route, status) -> the request counter's and histogram's children
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def drift_look_done(self, seconds: float) -> None:
        """Count and time one stored drift look."""
        self.drift_looks.inc()
        self.drift_look_seconds.observe(seconds)

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count and time one answered request (``route``: its template)."""
        if method not in HTTP_METHODS:
            method = "OTHER"  # a client's made-up method is not a new series
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # Looked up once per series: ``labels`` costs more than the count itself.
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


class MetricsMiddleware:
    """Counts and times every request by route template (pure ASGI, no per-request task)."""

    def __init__(self, app: Any, metrics: Callable[[], ServerMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                metrics.request_done(scope["method"], template, status, time.perf_counter() - start)


class BodyLimitMiddleware:
    """Refuses request bodies over a cap with 413 before reading them whole."""

    def __init__(self, app: Any, limit_for: Callable[[dict[str, Any]], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _too_large(send, "malformed Content-Length", 400)
                    return
                if declared > limit:
                    await _too_large(send, f"the request body is over the {limit}-byte limit", 413)
                    return
        received = 0

        async def counting() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        try:
            await self.app(scope, counting, send)
        except BodyTooLargeError as exc:
            await _too_large(send, f"the request body is over the {exc.limit}-byte limit", 413)


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


async def _too_large(send: Any, message: str, status: int) -> None:
    import json

    body = json.dumps(
        {
            "error": {
                "code": "too_large" if status == 413 else "bad_request",
                "message": message,
                "details": {},
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

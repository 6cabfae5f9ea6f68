"""Shadow execution: a candidate model answers a sample of live requests, off the
request path.

The live request only pays for a ``put_nowait`` on a bounded queue; when the queue is
full the shadow run is skipped and counted, never waited for. A worker thread runs the
candidate and records top-1 agreement with the live answer, the mean absolute
difference of the probability outputs, and both latencies.
"""

from __future__ import annotations

import bisect
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.runtime.metrics import LATENCY_EDGES_MS, latency_quantile

Array = npt.NDArray[Any]


@dataclass
class ShadowStats:
    """What shadowing has measured so far (mergeable counts)."""

    compared: int = 0
    agreed: int = 0
    skipped: int = 0
    failed: int = 0
    distance_sum: float = 0.0
    distance_count: int = 0
    live_latency_counts: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1)
    )
    shadow_latency_counts: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1)
    )

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def runs(self) -> int:
        """Shadow runs that finished (each compared with its live answer)."""
        return sum(self.shadow_latency_counts)

    def live_p95_ms(self) -> float | None:
        return latency_quantile(self.live_latency_counts, 0.95)

    def shadow_p95_ms(self) -> float | None:
        return latency_quantile(self.shadow_latency_counts, 0.95)

    @property
    def mean_distance(self) -> float | None:
        return self.distance_sum / self.distance_count if self.distance_count else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement": self.agreement,
            "skipped": self.skipped,
            "failed": self.failed,
            "mean_distance": self.mean_distance,
            "live_latency_counts": list(self.live_latency_counts),
            "shadow_latency_counts": list(self.shadow_latency_counts),
        }


@dataclass(frozen=True)
class _Job:
    feeds: Mapping[str, Array]
    live_outputs: Mapping[str, Array]
    live_latency_ms: float


def top1(
    outputs: Mapping[str, Array], probabilities: str | None, label: str | None
) -> Array | None:
    """Predicted class per sample from a probability output, else from a label output."""
    if probabilities is not None and probabilities in outputs:
        predicted: Array = np.asarray(outputs[probabilities]).argmax(axis=1)
        return predicted
    if label is not None and label in outputs:
        labels: Array = np.asarray(outputs[label]).reshape(-1)
        return labels
    return None


class ShadowRunner:
    """Runs ``predict`` (the candidate) on a ``fraction`` of requests in a worker thread."""

    def __init__(
        self,
        predict: Callable[[Mapping[str, Array]], tuple[Mapping[str, Array], float]],
        *,
        fraction: float,
        probabilities: str | None,
        label: str | None,
        queue_size: int = 64,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("the shadow fraction must be in (0, 1]")
        self.predict = predict
        self.fraction = fraction
        self.probabilities = probabilities
        self.label = label
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._credit = 0.0
        self._stats = ShadowStats()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="edgefleet-shadow", daemon=True)
        self._thread.start()

    def offer(
        self, feeds: Mapping[str, Array], live_outputs: Mapping[str, Array], latency_ms: float
    ) -> None:
        """Called on the request path: maybe queue a shadow run; never blocks."""
        # Deterministic sampling: exactly `fraction` of requests over any long run.
        self._credit += self.fraction
        if self._credit < 1.0:
            return
        self._credit -= 1.0
        try:
            self._queue.put_nowait(_Job(feeds, live_outputs, latency_ms))
        except queue.Full:
            with self._lock:
                self._stats.skipped += 1

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                try:
                    outputs, latency_ms = self.predict(job.feeds)
                except Exception:
                    with self._lock:
                        self._stats.failed += 1
                    continue
                self._compare(job, outputs, latency_ms)
            finally:
                self._queue.task_done()

    def _compare(self, job: _Job, outputs: Mapping[str, Array], latency_ms: float) -> None:
        live = top1(job.live_outputs, self.probabilities, self.label)
        shadow = top1(outputs, self.probabilities, self.label)
        distance = None
        if self.probabilities is not None and self.probabilities in outputs:
            a, b = job.live_outputs.get(self.probabilities), outputs[self.probabilities]
            if a is not None and np.shape(a) == np.shape(b):
                distance = float(
                    np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean()
                )
        with self._lock:
            stats = self._stats
            if live is not None and shadow is not None and live.shape == shadow.shape:
                stats.compared += int(live.size)
                stats.agreed += int((live == shadow).sum())
            if distance is not None:
                stats.distance_sum += distance
                stats.distance_count += 1
            stats.live_latency_counts[
                bisect.bisect_right(LATENCY_EDGES_MS, job.live_latency_ms)
            ] += 1
            stats.shadow_latency_counts[bisect.bisect_right(LATENCY_EDGES_MS, latency_ms)] += 1

    def stats(self) -> ShadowStats:
        with self._lock:
            copy = ShadowStats(
                **{k: getattr(self._stats, k) for k in self._stats.__dataclass_fields__}
            )
            copy.live_latency_counts = list(self._stats.live_latency_counts)
            copy.shadow_latency_counts = list(self._stats.shadow_latency_counts)
        return copy

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued shadow run is done (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

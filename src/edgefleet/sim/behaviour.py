"""What a model does on a device, measured once from the real model and then sampled
cheaply for thousands of virtual devices.

``measure`` runs a model through ONNX Runtime on real inputs and keeps what the gates
look at: the latency distribution, the predicted-class mix, the top-1 confidence
histogram and the failure rate. A ``VirtualModel`` turns that profile, a device's own
noise and the number of requests in an interval into the telemetry a real agent would
send (the device API's ``ModelMetrics`` and a health sample), without running the
model::

    profile = measure(path, inputs)
    device = VirtualModel(profile, DeviceNoise.draw(rng))
    metrics, health = device.interval(requests=200, seconds=10.0, rng=rng)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from edgefleet.registry.profile import CONFIDENCE_EDGES, bin_counts
from edgefleet.runtime.metrics import LATENCY_EDGES_MS

K = TypeVar("K")

#: CPU share (percent of one core) a device spends besides inference.
IDLE_CPU_PERCENT = 4.0


@dataclass(frozen=True)
class BehaviourProfile:
    """A model's measured behaviour (per single-sample request)."""

    latencies_ms: tuple[float, ...]
    class_shares: tuple[float, ...]
    confidence_shares: tuple[float, ...]
    error_rate: float = 0.0
    ram_mb: float = 0.0
    #: The device's CPU use while it serves the model, times this (a scenario's
    #: ``cpu_factor``: the ratio a ``cpu_percent`` gate sees), and the CPU time of each
    #: of its inferences a trial probes (the ratio an ``inference_cpu`` gate sees).
    cpu_factor: float = 1.0

    @property
    def mean_latency_ms(self) -> float:
        return float(np.mean(self.latencies_ms))

    # As arrays, made once for all the devices that run the model, not from the tuples
    # on every interval of every device.
    @cached_property
    def latency_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.latencies_ms, np.float64)

    @cached_property
    def class_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.class_shares, np.float64)

    @cached_property
    def confidence_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.confidence_shares, np.float64)

    def scaled(
        self,
        *,
        latency: float = 1.0,
        error_rate: float | None = None,
        drop_class: int | None = None,
    ) -> BehaviourProfile:
        """A variant of this behaviour: slower (``latency`` times), failing more often,
        or never predicting ``drop_class`` (its share goes to the other classes)."""
        recall = None if drop_class is None else {drop_class: 0.0}
        variant = self.varied(latency=latency, recall=recall)
        return variant if error_rate is None else replace(variant, error_rate=error_rate)

    def varied(
        self,
        *,
        latency: float = 1.0,
        cpu: float = 1.0,
        memory: float = 1.0,
        confidence: float = 1.0,
        recall: Mapping[int, float] | None = None,
    ) -> BehaviourProfile:
        """This behaviour with a scenario's factors on top: every latency times
        ``latency`` (and so the CPU a request costs), the device's CPU use times ``cpu``
        besides, the memory times ``memory``, every top-1 confidence times
        ``confidence`` (at most 1, each histogram bin moved whole by its midpoint), and
        each class of ``recall`` keeping that share of its predictions (the rest spread
        over the other classes in proportion to their shares)."""
        if latency == cpu == memory == confidence == 1.0 and not recall:
            return self
        shares = np.asarray(self.class_shares, np.float64)
        if recall:
            kept = shares.copy()
            for index, share in recall.items():
                if 0 <= index < kept.size:
                    kept[index] = shares[index] * share
            lost = shares.sum() - kept.sum()
            others = np.array([i not in recall for i in range(kept.size)])
            if lost > 0 and kept[others].sum() > 0:
                kept[others] += lost * kept[others] / kept[others].sum()
            shares = kept / kept.sum()
        conf = np.asarray(self.confidence_shares, np.float64)
        if confidence != 1.0:
            edges = np.asarray((0.0, *CONFIDENCE_EDGES, 1.0))
            middles = np.minimum((edges[:-1] + edges[1:]) / 2.0 * confidence, 1.0)
            moved = np.clip(np.searchsorted(edges, middles, side="right") - 1, 0, conf.size - 1)
            conf = np.bincount(moved, weights=conf, minlength=conf.size).astype(np.float64)
        return replace(
            self,
            latencies_ms=tuple(v * latency for v in self.latencies_ms),
            class_shares=tuple(float(s) for s in shares),
            confidence_shares=tuple(float(c) for c in conf),
            ram_mb=self.ram_mb * memory,
            cpu_factor=self.cpu_factor * cpu,
        )


def measure(
    path: Path,
    inputs: Mapping[str, npt.NDArray[Any]],
    *,
    probabilities: str | None = None,
    repeats: int = 3,
) -> BehaviourProfile:
    """Run the model at ``path`` sample by sample on ``inputs`` and profile it.

    Raises:
        ModelLoadError, InferenceError (runtime errors): the model does not run.
    """
    return measure_together({path: path}, inputs, probabilities=probabilities, repeats=repeats)[
        path
    ]


def measure_together(
    paths: Mapping[K, Path],
    inputs: Mapping[str, npt.NDArray[Any]],
    *,
    probabilities: str | None = None,
    repeats: int = 3,
) -> dict[K, BehaviourProfile]:
    """Profile several models on the same ``inputs``, taking turns sample by sample.

    A request to a small model takes tens of microseconds, so whatever else the
    machine does while one model is measured moves its latency by as much as the
    difference between two models. Interleaved, every model sees the same machine,
    and the ratio of their latencies (what the fleet's gates compare) is the models'.

    Raises:
        ModelLoadError, InferenceError (runtime errors): a model does not run.
    """
    from edgefleet.runtime.backend import OnnxBackend
    from edgefleet.runtime.runtime import output_roles

    backend = OnnxBackend()
    sessions = {key: backend.load(path) for key, path in paths.items()}
    names = {
        key: probabilities or output_roles(session.outputs)[0] for key, session in sessions.items()
    }
    count = next(iter(inputs.values())).shape[0]
    latencies: dict[K, list[float]] = {key: [] for key in sessions}
    top1: dict[K, list[int]] = {key: [] for key in sessions}
    confidence: dict[K, list[float]] = {key: [] for key in sessions}
    columns: dict[K, int] = dict.fromkeys(sessions, 1)
    # Untimed first runs (thread pools, allocations), and the order alternated sample by
    # sample, as the agent's trial probes: whichever model runs first after the input
    # changed pays its cache misses, which at tens of microseconds is a third of the time.
    first = {name: batch[:1] for name, batch in inputs.items()}
    for session in sessions.values():
        for _ in range(3):
            session.run(first)
    turns = list(sessions.items())
    for repeat in range(repeats):
        for i in range(count):
            feeds = {name: batch[i : i + 1] for name, batch in inputs.items()}
            for key, session in turns if i % 2 == 0 else reversed(turns):
                start = time.perf_counter()
                outputs = session.run(feeds)
                latencies[key].append((time.perf_counter() - start) * 1000)
                probs_name = names[key]
                if repeat == 0 and probs_name is not None:
                    row = np.asarray(outputs[probs_name])[0]
                    top1[key].append(int(row.argmax()))
                    confidence[key].append(float(row.max()))
                    # Every class the model can answer counts, also one it never predicts.
                    columns[key] = int(row.shape[-1])
    profiles = {}
    for key, path in paths.items():
        classes = np.bincount(top1[key], minlength=columns[key]) if top1[key] else np.ones(1)
        conf = np.asarray(bin_counts(confidence[key], CONFIDENCE_EDGES), np.float64)
        profiles[key] = BehaviourProfile(
            latencies_ms=tuple(latencies[key]),
            class_shares=tuple(float(c) for c in classes / classes.sum()),
            confidence_shares=tuple(float(c) for c in conf / max(conf.sum(), 1.0)),
            ram_mb=path.stat().st_size / 2**20,
        )
    return profiles


@dataclass(frozen=True)
class DeviceNoise:
    """How one device differs from the profile (its hardware, its load)."""

    latency_factor: float = 1.0
    cpu_base_percent: float = IDLE_CPU_PERCENT
    cpu_jitter: float = 0.05

    @classmethod
    def draw(cls, rng: np.random.Generator, *, speed: float = 1.0) -> DeviceNoise:
        """A device around ``speed`` (2.0: twice as slow as where the profile was
        measured), with a few percent of spread."""
        return cls(
            latency_factor=float(speed * rng.lognormal(0.0, 0.08)),
            cpu_base_percent=float(IDLE_CPU_PERCENT * rng.lognormal(0.0, 0.2)),
            cpu_jitter=0.05,
        )


@dataclass(frozen=True)
class VirtualModel:
    """A model as one virtual device runs it.

    The device's latency histogram is drawn once from the profile and its noise, so an
    interval of any number of requests costs a few multinomial draws over the bins,
    not one sample per request: a simulated gateway may serve thousands a second.
    """

    profile: BehaviourProfile
    noise: DeviceNoise = DeviceNoise()
    seed: int = 0

    @cached_property
    def _latency(self) -> tuple[npt.NDArray[np.float64], float]:
        rng = np.random.default_rng(self.seed)
        base = self.profile.latency_array
        latencies = base * self.noise.latency_factor * rng.lognormal(0.0, 0.05, size=base.size)
        counts = np.asarray(bin_counts(latencies, LATENCY_EDGES_MS), np.float64)
        # The CPU a request costs: the measured times less the slowest 1%, which are the
        # measuring machine's hiccups (scheduler, page faults) more than the model.
        typical = latencies[latencies <= np.percentile(latencies, 99)]
        return counts / counts.sum(), float(typical.mean())

    def interval(
        self, *, requests: int, seconds: float, rng: np.random.Generator
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Telemetry of ``requests`` single-sample requests over ``seconds``: the
        model-metrics counts (without name and version) and a health sample."""
        profile, noise = self.profile, self.noise
        errors = int(rng.binomial(requests, profile.error_rate)) if requests else 0
        served = requests - errors
        latency_shares, mean_ms = self._latency
        # The load of the interval moves every request's latency a little together.
        load = float(rng.lognormal(0.0, 0.02))
        latency_counts = rng.multinomial(served, latency_shares).tolist()
        confidence_counts = rng.multinomial(served, profile.confidence_array).tolist()
        class_counts = rng.multinomial(served, profile.class_array).tolist()
        busy_ms = served * mean_ms * load
        cpu = noise.cpu_base_percent + 100.0 * busy_ms / max(seconds * 1000.0, 1e-9)
        cpu *= float(rng.lognormal(0.0, noise.cpu_jitter))
        cpu *= profile.cpu_factor
        metrics = {
            "inferences": served,
            "errors": {"inference_failed": errors} if errors else {},
            "latency_counts": latency_counts,
            "confidence_counts": confidence_counts,
            "class_counts": class_counts,
        }
        health = {"cpu_percent": round(min(cpu, 100.0), 3), "ram_used_mb": profile.ram_mb}
        return metrics, health


def probe_pairs(
    candidate: VirtualModel, previous: VirtualModel, count: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """``count`` latency probe pairs (seconds), as a trial on the device measures them:
    both models on the same input at the same moment.

    Profiles measured together (``measure_together``) hold their samples in the same
    order, so sample ``i`` of each is the same input measured at nearly the same time;
    the moment's load then moves both alike.
    """
    size = min(candidate.profile.latency_array.size, previous.profile.latency_array.size)
    picks = rng.integers(0, size, count)
    load = rng.lognormal(0.0, 0.05, count) / 1000.0
    ours = candidate.profile.latency_array[picks] * candidate.noise.latency_factor * load
    theirs = previous.profile.latency_array[picks] * previous.noise.latency_factor * load
    return list(zip(ours.tolist(), theirs.tolist(), strict=True))


def shares(counts: Sequence[int]) -> npt.NDArray[np.float64]:
    """Counts as shares (zeros stay zeros)."""
    data = np.asarray(counts, np.float64)
    total = data.sum()
    return data / total if total else data

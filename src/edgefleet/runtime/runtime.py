"""``ModelRuntime``: serve the active model, swap it atomically, shadow a candidate.

The active model is one immutable ``LoadedModel`` held by a single reference. A request
reads that reference once and runs on what it got, so a swap (build and warm up the new
session first, then replace the reference) can never hand a request half a model, and
in-flight requests finish on the model they started with. Every request's metrics go to
the model that answered it.

Telemetry (``telemetry(reset=True)``, taken by the agent every telemetry interval) carries
each model's counters since the last one, and, in the sample that closes a drift summary
period (``drift_period_s``, default an hour), that period's feature histograms and
quantile summaries (see ``edgefleet.runtime.metrics``)::

    runtime = ModelRuntime(drift_period_s=3600, sketch_rows=24)
    runtime.load(path, identity, profile=profile)
    entries = runtime.telemetry(reset=True)     # the device API's ModelMetrics, active first
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt

from edgefleet.registry.domain import TensorSpec
from edgefleet.registry.profile import ReferenceProfile
from edgefleet.runtime.backend import Backend, OnnxBackend, Session, zeros_for
from edgefleet.runtime.errors import InferenceRuntimeError, InvalidInputError, NoModelError
from edgefleet.runtime.metrics import (
    DRIFT_PERIOD_S,
    SKETCH_ROWS,
    ModelIdentity,
    ModelMetrics,
    ModelStats,
)
from edgefleet.runtime.shadow import ShadowRunner, ShadowStats
from edgefleet.runtime.validate import InputValidator

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Prediction:
    """A model's answer and which model gave it."""

    outputs: dict[str, Array]
    model: ModelIdentity
    latency_ms: float


@dataclass(frozen=True)
class LoadedModel:
    """A ready session with what the runtime needs to serve and measure it."""

    identity: ModelIdentity
    session: Session
    metrics: ModelMetrics
    probabilities: str | None
    label: str | None
    validate: InputValidator
    path: Path | None = None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.session.inputs


def output_roles(outputs: Sequence[TensorSpec]) -> tuple[str | None, str | None]:
    """(probabilities output, label output) guessed from the outputs' types and shapes:
    a float matrix is read as probabilities, an integer vector as labels."""
    probabilities = next((o.name for o in outputs if o.role == "probabilities"), None)
    label = next((o.name for o in outputs if o.role == "label"), None)
    if probabilities is None:
        probabilities = next(
            (o.name for o in outputs if o.dtype.startswith("float") and len(o.shape) == 2), None
        )
    if label is None:
        label = next(
            (o.name for o in outputs if o.dtype.startswith("int") and len(o.shape) == 1), None
        )
    return probabilities, label


@dataclass
class _Shadow:
    model: LoadedModel
    runner: ShadowRunner


@dataclass
class ModelRuntime:
    """Serves one active model (and optionally a shadow candidate) to applications.

    Args:
        backend: loads model files (ONNX Runtime by default).
        feature_every: sample input-feature histograms on every n-th request.
        shadow_queue: bounded queue length of pending shadow runs.
        record_inputs: keep the first sample of every ``record_every``-th request, up
            to this many (the newest), so an idle device can replay real inputs to a
            model on trial; 0 records nothing.
        drift_period_s: length of a drift summary period; periods end at multiples of
            it in epoch time (an hour's on the hour).
        sketch_rows: input rows per period and model from which the feature summaries
            are built (a uniform sample of the feature-sampled requests; 0: none).
        clock: the time in epoch seconds (periods are dated with it).

    Raises:
        ValueError: a setting out of its range (the message names it).
    """

    backend: Backend = field(default_factory=OnnxBackend)
    feature_every: int = 8
    shadow_queue: int = 64
    record_inputs: int = 0
    record_every: int = 16
    drift_period_s: float = DRIFT_PERIOD_S
    sketch_rows: int = SKETCH_ROWS
    clock: Callable[[], float] = time.time
    _active: LoadedModel | None = None
    _shadow: _Shadow | None = None
    _recorders: dict[int, ModelMetrics] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _recorded: deque[dict[str, Array]] = field(init=False)
    _served: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.record_inputs < 0 or self.record_every < 1:
            raise ValueError("record_inputs must be >= 0 and record_every >= 1")
        if not self.drift_period_s > 0 or self.sketch_rows < 0:
            raise ValueError(
                f"drift_period_s must be > 0 (not {self.drift_period_s}) and sketch_rows "
                f">= 0 (not {self.sketch_rows})"
            )
        self._recorded = deque(maxlen=self.record_inputs)

    # -- loading ----------------------------------------------------------------

    def prepare(
        self,
        path: Path,
        identity: ModelIdentity,
        *,
        profile: ReferenceProfile | None = None,
        warmup: Mapping[str, Array] | None = None,
    ) -> LoadedModel:
        """Load and warm up a model without serving it.

        Raises:
            ModelLoadError: the file does not load; InferenceError: the warm-up fails.
        """
        session = self.backend.load(path)
        probabilities, label = output_roles(session.outputs)
        session.run(dict(warmup) if warmup is not None else zeros_for(session.inputs))
        metrics = ModelMetrics(
            identity,
            profile=profile,
            probabilities=probabilities,
            label=label,
            feature_every=self.feature_every,
            drift_period_s=self.drift_period_s,
            sketch_rows=self.sketch_rows,
            clock=self.clock,
        )
        return LoadedModel(
            identity, session, metrics, probabilities, label, InputValidator(session.inputs), path
        )

    def load(
        self,
        path: Path,
        identity: ModelIdentity,
        *,
        profile: ReferenceProfile | None = None,
        warmup: Mapping[str, Array] | None = None,
    ) -> LoadedModel:
        """Load, warm up, then make a model the active one in one reference swap.

        If loading fails the previous model keeps serving.
        """
        return self.activate(self.prepare(path, identity, profile=profile, warmup=warmup))

    def activate(self, model: LoadedModel) -> LoadedModel:
        """Serve a prepared model from now on (atomic: one reference assignment)."""
        with self._lock:
            # Keep the recorder of every model that served, so requests still in flight
            # on a swapped-out model are counted too.
            self._recorders[id(model.metrics)] = model.metrics
            self._active = model
        return model

    def deactivate(self) -> None:
        """Serve nothing (a device rolled back to having no model)."""
        with self._lock:
            self._active = None

    @property
    def active(self) -> ModelIdentity | None:
        current = self._active
        return current.identity if current else None

    @property
    def active_model(self) -> LoadedModel | None:
        return self._active

    # -- serving ----------------------------------------------------------------

    def predict(self, inputs: Mapping[str, Any] | Array, *, record: bool = True) -> Prediction:
        """Run the active model on a batch (``record=False``: never keep it for replay,
        for inputs that are themselves replays).

        Raises:
            NoModelError: no model is active.
            InvalidInputError: the batch does not fit the model's inputs.
            InferenceError: the model failed; it keeps serving.
        """
        model = self._active  # read the reference once: this request uses this model
        if model is None:
            raise NoModelError("no model is active on this device yet")
        if not isinstance(inputs, Mapping):
            if len(model.inputs) != 1:
                raise InvalidInputError(
                    f"the model has {len(model.inputs)} inputs; pass a mapping of name to batch"
                )
            inputs = {model.inputs[0].name: inputs}
        try:
            feeds = model.validate(inputs)
            start = time.perf_counter()
            outputs = model.session.run(feeds)
            latency_ms = (time.perf_counter() - start) * 1000
        except InferenceRuntimeError as exc:
            model.metrics.error(exc.kind)
            raise
        model.metrics.observe(feeds, outputs, latency_ms)
        if record and self.record_inputs:
            self._served += 1  # a lost increment under a race only shifts the sampling
            if self._served % self.record_every == 0:
                self._recorded.append({name: batch[:1].copy() for name, batch in feeds.items()})
        shadow = self._shadow
        if shadow is not None:
            shadow.runner.offer(feeds, outputs, latency_ms)
        return Prediction(outputs, model.identity, latency_ms)

    def recorded_inputs(self) -> list[dict[str, Array]]:
        """The recorded application inputs, oldest first (one sample each)."""
        return list(self._recorded)

    def remember_inputs(self, samples: Sequence[Mapping[str, Array]]) -> None:
        """Add inputs recorded earlier (say, before a restart) to the recording."""
        self._recorded.extend(dict(sample) for sample in samples)

    # -- shadow -------------------------------------------------------------------

    def set_shadow(
        self,
        path: Path,
        identity: ModelIdentity,
        *,
        fraction: float,
        profile: ReferenceProfile | None = None,
    ) -> LoadedModel:
        """Run a candidate on ``fraction`` of requests in the background."""
        return self.shadow_model(self.prepare(path, identity, profile=profile), fraction=fraction)

    def shadow_model(self, candidate: LoadedModel, *, fraction: float) -> LoadedModel:
        """Run a prepared candidate on ``fraction`` of requests in the background,
        replacing any shadow already running."""

        def run(feeds: Mapping[str, Array]) -> tuple[Mapping[str, Array], float]:
            start = time.perf_counter()
            outputs = candidate.session.run(feeds)
            latency_ms = (time.perf_counter() - start) * 1000
            candidate.metrics.observe(feeds, outputs, latency_ms)
            return outputs, latency_ms

        runner = ShadowRunner(
            run,
            fraction=fraction,
            probabilities=candidate.probabilities,
            label=candidate.label,
            queue_size=self.shadow_queue,
        )
        with self._lock:
            self._recorders[id(candidate.metrics)] = candidate.metrics
            previous, self._shadow = self._shadow, _Shadow(candidate, runner)
        if previous is not None:
            previous.runner.stop()
        return candidate

    def clear_shadow(self) -> None:
        with self._lock:
            previous, self._shadow = self._shadow, None
        if previous is not None:
            previous.runner.stop()

    @property
    def shadow(self) -> ModelIdentity | None:
        current = self._shadow
        return current.model.identity if current else None

    def shadow_stats(self) -> ShadowStats | None:
        current = self._shadow
        return current.runner.stats() if current else None

    def drain_shadow(self, timeout: float = 10.0) -> None:
        current = self._shadow
        if current is not None:
            current.runner.drain(timeout)

    # -- metrics ------------------------------------------------------------------

    def metrics(self, *, reset: bool = False) -> dict[str, tuple[ModelIdentity, ModelStats, str]]:
        """Counts per model since the last reset: the active model, the shadow candidate,
        and models swapped out since (``role`` is active, shadow or retired).

        With ``reset``, each model's drift summary period closes if its end has come, and
        a swapped-out model's whatever its end (what it saw is reported at once, not
        dropped); the stats of a closed period carry its summary (``ModelStats``).
        """
        with self._lock:
            active, shadow = self._active, self._shadow
            recorders = list(self._recorders.values())
        current = {id(m.metrics) for m in (active, shadow.model if shadow else None) if m}
        result: dict[str, tuple[ModelIdentity, ModelStats, str]] = {}
        for recorder in recorders:
            retired = id(recorder) not in current
            stats = recorder.snapshot(reset=reset, flush=retired)
            key = recorder.identity.key()
            if reset and retired and stats.requests == 0 and not stats.errors:
                with self._lock:  # swapped out and quiet since the last report: forget it
                    self._recorders.pop(id(recorder), None)
            role = "retired"
            if active is not None and recorder.identity == active.identity:
                role = "active"
            elif shadow is not None and recorder.identity == shadow.model.identity:
                role = "shadow"
            if key in result:
                stats.add(result[key][1])
            result[key] = (recorder.identity, stats, role)
        return result

    def telemetry(self, *, reset: bool = False) -> list[dict[str, Any]]:
        """Per-model metrics in the shape of the device API's telemetry body, the
        active model first (the server files a sample's health under the first).

        An entry carries ``feature_counts``, ``sketches``, ``sketch_rows``,
        ``period_start`` and ``period_end`` only in the sample that closes a summary
        period (with ``reset``; ``sketches`` and ``sketch_rows`` only where the sketch
        package is installed). Without ``reset`` it carries the open period's
        ``feature_counts`` so far.
        """
        entries = []
        order = {"active": 0, "shadow": 1, "retired": 2}
        ranked = sorted(self.metrics(reset=reset).values(), key=lambda entry: order[entry[2]])
        for identity, stats, _ in ranked:
            data = stats.to_dict()
            entry = {
                "model": identity.name,
                "version": identity.version,
                "inferences": data["inferences"],
                "errors": data["errors"],
                "latency_counts": data["latency_counts"],
                "confidence_counts": data["confidence_counts"],
                "class_counts": data["class_counts"],
            }
            if data["feature_counts"]:
                entry["feature_counts"] = data["feature_counts"]
            if stats.period_start is not None and stats.period_end is not None:
                if stats.sketches:
                    entry["sketches"] = data["sketches"]
                    entry["sketch_rows"] = data["sketch_rows"]
                # Milliseconds are plenty: a period is an hour, samples are 30 s apart.
                entry["period_start"] = round(stats.period_start, 3)
                entry["period_end"] = round(stats.period_end, 3)
            entries.append(entry)
        return entries

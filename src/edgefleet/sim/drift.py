"""Drifting what the simulated devices' applications send, and what the devices make of it.

A scenario's ``drift`` changes the inputs a cohort of virtual devices sees from a moment
of the run on, at once or gradually: brightness, Gaussian noise, blur (on the digits
images) or the true classes' mix. Applying a transform to every request of a thousand
devices, and running the model on each, would cost the simulator more than the server
it tests; so each drift is prepared before the run as a *ladder*: the held-out inputs
(what ``edgefleet.examples.digits`` keeps out of training, drawn with the scenario's
class mix) transformed at ``LEVELS`` intensities from none to the drift's full one, and
the real model (the ONNX artifact each version's variant serves, in ONNX Runtime, row
by row as a device runs it) run once on every level. A device's interval then draws
rows from the *pool* of the level its drifts have reached: the inputs, the top-1
confidences and predicted classes move the way the real model makes them move, for
the cost of an index draw.

What a device makes of those rows for drift monitoring is the device runtime's own
recorder (``edgefleet.runtime.metrics.ModelMetrics``) on the version's reference
profile, fed with the rows the runtime would sample: its feature histograms, row
reservoir and quantile summaries, sent once per summary period (``DeviceSummaries``)::

    held = HeldOut.digits(scenario.traffic.class_shares)
    inputs = DriftInputs(scenario.drift, held, OnnxPredictor(paths))
    inputs.prepare(paths)                                  # every ladder, before the run
    member = inputs.membership(spec.attributes, spec.device_id)
    pool = inputs.pool(("1.1.0", "onnx-fp32"), inputs.levels(member, t=42.0))
    rows = pool.draw(500, rng)
    pool.class_counts(rows), pool.confidence_counts(rows)

Devices of a scenario without drift and without drift monitors never reach this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.errors import EdgefleetError
from edgefleet.registry.profile import CONFIDENCE_EDGES, ReferenceProfile, bucket_index
from edgefleet.runtime.metrics import SKETCH_ROWS, ModelIdentity, ModelMetrics
from edgefleet.sim.cohort import Attributes, Cohort
from edgefleet.sim.scenario import Drift

#: Intensity levels of a ladder: none, then 10 %, 20 %, ... of the drift's intensity.
LEVELS = 11
#: Blur's standard deviation (pixels) at intensity 1.
BLUR_SIGMA_PX = 2.0

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
#: A model a device serves: (version, variant).
ModelKey = tuple[str, str]
#: Each drift's level for one device, in the scenario's order.
Levels = tuple[int, ...]


class DriftInputError(EdgefleetError):
    """The drift cannot be applied to the held-out inputs (a class the model lacks, blur
    on inputs that are not square images)."""

    code = "invalid_drift"


# -- the transforms (pure) -------------------------------------------------------------


def brighten(inputs: Array, amount: float, low: float, high: float) -> FloatArray:
    """``inputs`` shifted by ``amount`` of their range ``[low, high]`` and clipped to it
    (negative ``amount`` darkens)."""
    shifted = np.asarray(inputs, np.float64) + amount * (high - low)
    return np.clip(shifted, low, high)


def add_noise(inputs: Array, amount: float, low: float, high: float, normal: Array) -> FloatArray:
    """``inputs`` plus Gaussian noise with a standard deviation of ``amount`` of their
    range, clipped to it. ``normal`` holds standard normal draws of ``inputs``' shape:
    the same draws at every level, so a ladder's noise only grows."""
    noisy = np.asarray(inputs, np.float64) + amount * (high - low) * np.asarray(normal)
    return np.clip(noisy, low, high)


def blur_matrix(side: int, sigma_px: float) -> FloatArray:
    """The ``side x side`` matrix that blurs one image axis with a Gaussian of
    ``sigma_px`` pixels, each row renormalised at the border (so a flat image stays flat);
    the identity at ``sigma_px == 0``."""
    if sigma_px <= 0:
        return np.eye(side)
    offsets = np.arange(side)[:, None] - np.arange(side)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    normalised: FloatArray = weights / weights.sum(axis=1, keepdims=True)
    return normalised


def blur(inputs: Array, amount: float, side: int) -> FloatArray:
    """Every row of ``inputs`` (a ``side x side`` image, row-major) blurred with a
    Gaussian of ``amount x BLUR_SIGMA_PX`` pixels along both axes (separable).

    Raises:
        DriftInputError: the rows are not ``side x side`` images.
    """
    data = np.asarray(inputs, np.float64)
    if data.ndim != 2 or data.shape[1] != side * side:
        raise DriftInputError(
            f"blur needs rows of {side}x{side} images, not inputs of shape {list(data.shape)}"
        )
    kernel = blur_matrix(side, amount * BLUR_SIGMA_PX)
    images = data.reshape(-1, side, side)
    blurred: FloatArray = (kernel @ images @ kernel.T).reshape(data.shape)
    return blurred


def mixed_shares(base: Array, target: Mapping[int, float], amount: float) -> FloatArray:
    """Class shares ``amount`` of the way from ``base`` to ``target`` (the classes it
    names at those shares; the others share what is left in ``base``'s proportions).

    Raises:
        DriftInputError: ``target`` names a class ``base`` does not have.
    """
    shares = np.asarray(base, np.float64)
    unknown = sorted(c for c in target if not 0 <= c < shares.size)
    if unknown:
        raise DriftInputError(f"class_mix names classes {unknown} the model does not have")
    goal = shares.copy()
    named = np.zeros(shares.size, bool)
    for cls, share in target.items():
        goal[cls] = share
        named[cls] = True
    rest = shares[~named].sum()
    left = max(0.0, 1.0 - sum(target.values()))
    goal[~named] = shares[~named] * (left / rest) if rest > 0 else left / max(1, (~named).sum())
    mixed: FloatArray = (1.0 - amount) * shares + amount * goal
    normalised: FloatArray = mixed / mixed.sum()
    return normalised


def traffic_shares(labels: Array, class_shares: Mapping[str, float]) -> FloatArray:
    """The traffic's class shares over the classes in ``labels``: those of
    ``class_shares`` as given, the rest sharing what is left evenly.

    Raises:
        DriftInputError: ``class_shares`` names a class ``labels`` lacks.
    """
    classes = int(np.max(labels)) + 1
    fixed = {int(k): v for k, v in class_shares.items()}
    unknown = sorted(set(fixed) - set(range(classes)))
    if unknown:
        raise DriftInputError(f"traffic.class_shares names classes {unknown} the model lacks")
    rest = [c for c in range(classes) if c not in fixed]
    left = max(0.0, 1.0 - sum(fixed.values()))
    shares = np.array([fixed.get(c, left / len(rest) if rest else 0.0) for c in range(classes)])
    normalised: FloatArray = shares / shares.sum()
    return normalised


def row_shares(labels: Array, shares: Array) -> FloatArray:
    """The probability of drawing each row so that its class (``labels``) comes up at
    ``shares``; rows of one class equally likely."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(shares)).astype(np.float64)
    per_row = np.asarray(shares, np.float64)[labels] / counts[labels]
    result: FloatArray = per_row / per_row.sum()
    return result


def extent(drift: Drift, t: float | None) -> float:
    """How far ``drift`` has gone at ``t`` (seconds on the drift clock, ``None``: not
    started), from 0 to 1: nothing before ``start_s``, then a linear ramp over
    ``ramp_s`` (at once when it is 0)."""
    if t is None or t < drift.start_s:
        return 0.0
    if drift.ramp_s <= 0:
        return 1.0
    return min(1.0, (t - drift.start_s) / drift.ramp_s)


def level_of(fraction: float) -> int:
    """The ladder level nearest to ``fraction`` of a drift's intensity."""
    return round(min(1.0, max(0.0, fraction)) * (LEVELS - 1))


def amount_of(drift: Drift, level: int) -> float:
    """The intensity a ladder level stands for."""
    return drift.intensity * level / (LEVELS - 1)


# -- the held-out data and the pools -------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """The held-out inputs the devices' traffic is drawn from, and its class mix."""

    #: the model input the rows are for
    input_name: str
    inputs: npt.NDArray[np.float32]
    #: true class of each row
    labels: npt.NDArray[np.int64]
    #: the traffic's share of each true class
    class_shares: FloatArray

    @classmethod
    def digits(cls, class_shares: Mapping[str, float], seed: int = 0) -> HeldOut:
        """The digits example's held-out set (``edgefleet.examples.digits.load_split``,
        the registry's reference sample too), with the traffic's ``class_shares``.

        Raises:
            DriftInputError: ``class_shares`` names a class the data lacks.
            MissingDependencyError: the examples extra is not installed.
        """
        from edgefleet.examples.digits import INPUT_NAME, load_split

        _, x_test, _, y_test = load_split(seed)
        labels = np.asarray(y_test, np.int64)
        return cls(
            INPUT_NAME,
            np.asarray(x_test, np.float32),
            labels,
            traffic_shares(labels, class_shares),
        )

    @cached_property
    def low(self) -> float:
        return float(self.inputs.min())

    @cached_property
    def high(self) -> float:
        return float(self.inputs.max())

    @cached_property
    def side(self) -> int | None:
        """The side of the square images the rows are, if they are."""
        width = int(np.prod(self.inputs.shape[1:]))
        side = math.isqrt(width)
        return side if side * side == width and self.inputs.ndim == 2 else None


@dataclass(frozen=True)
class Pool:
    """Rows a device at one drift level draws its requests from, with what the real
    model answered on each."""

    input_name: str
    inputs: npt.NDArray[np.float32]
    #: the model's class probabilities per row ``[rows, classes]``
    probabilities: npt.NDArray[np.float32]
    #: the probability of drawing each row (its class's share of the traffic)
    shares: FloatArray

    @cached_property
    def predicted(self) -> npt.NDArray[np.intp]:
        return np.asarray(self.probabilities.argmax(axis=1))

    @cached_property
    def confidence(self) -> FloatArray:
        return np.asarray(self.probabilities.max(axis=1), np.float64)

    @cached_property
    def _confidence_buckets(self) -> npt.NDArray[np.intp]:
        return bucket_index(self.confidence, CONFIDENCE_EDGES)

    @cached_property
    def _cumulative(self) -> FloatArray:
        cumulative = np.cumsum(self.shares)
        cumulative[-1] = 1.0
        return cumulative

    def draw(self, count: int, rng: np.random.Generator) -> npt.NDArray[np.intp]:
        """``count`` row indices drawn (with replacement) at the pool's row shares."""
        picked: npt.NDArray[np.intp] = np.searchsorted(
            self._cumulative, rng.random(count), side="right"
        )
        return picked

    def class_counts(self, rows: Array) -> list[int]:
        """Predicted classes of ``rows``, counted per class."""
        counts = np.bincount(self.predicted[rows], minlength=self.probabilities.shape[1])
        return [int(c) for c in counts]

    def confidence_counts(self, rows: Array) -> list[int]:
        """Top-1 confidences of ``rows`` on the reference profile's confidence bins."""
        counts = np.bincount(self._confidence_buckets[rows], minlength=len(CONFIDENCE_EDGES) + 1)
        return [int(c) for c in counts]

    def mean_confidence(self) -> float:
        """The top-1 confidence expected of a request drawn from this pool."""
        return float(self.shares @ self.confidence)

    def accuracy(self, labels: Array) -> float:
        """The share of requests drawn from this pool the model answers right."""
        return float(self.shares @ (self.predicted == np.asarray(labels)))


#: Class probabilities ``[rows, classes]`` a model (by key) gives on inputs.
Predict = Callable[[ModelKey, npt.NDArray[np.float32]], npt.NDArray[np.float32]]


class OnnxPredictor:
    """The real models in ONNX Runtime, row by row as a device runs them (a dynamically
    quantized variant's answer depends on what is batched with a row)."""

    def __init__(self, paths: Mapping[ModelKey, Path]) -> None:
        self.paths = dict(paths)
        self._sessions: dict[ModelKey, tuple[Any, str, str]] = {}

    def __call__(self, key: ModelKey, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The probabilities ``key``'s model gives on each row of ``inputs``.

        Raises:
            DriftInputError: no model for ``key``, or it has no probabilities output.
            ModelLoadError, InferenceError: the model does not load or run.
        """
        session, input_name, output = self._session(key)
        rows = [session.run({input_name: inputs[i : i + 1]})[output][0] for i in range(len(inputs))]
        return np.asarray(rows, np.float32)

    def _session(self, key: ModelKey) -> tuple[Any, str, str]:
        cached = self._sessions.get(key)
        if cached is None:
            from edgefleet.runtime.backend import OnnxBackend
            from edgefleet.runtime.runtime import output_roles

            path = self.paths.get(key)
            if path is None:
                raise DriftInputError(f"no model file for {key[0]} {key[1]}")
            session = OnnxBackend().load(path)
            probabilities, _ = output_roles(session.outputs)
            if probabilities is None:
                raise DriftInputError(
                    f"{key[0]} {key[1]} has no probabilities output: the simulator drifts "
                    "classifiers' inputs only"
                )
            cached = self._sessions[key] = (session, session.inputs[0].name, probabilities)
        return cached


@dataclass
class DriftInputs:
    """Every drift of a scenario as ladders of pools, by model and level.

    ``predict`` is the real model (``OnnxPredictor``); ``seed`` fixes the noise draws.
    Pools are made on first use and kept: ``prepare`` makes each drift's own ladder
    before the run, so the fleet's event loop does not run models; a device in two
    drifting cohorts at once meets a combination of levels, made when first needed.
    """

    drifts: Sequence[Drift]
    held: HeldOut
    predict: Predict
    seed: int = 0
    _cohorts: list[Cohort | None] = field(init=False, default_factory=list)
    _normal: dict[int, FloatArray] = field(init=False, default_factory=dict)
    _predictions: dict[tuple[ModelKey, Levels], npt.NDArray[np.float32]] = field(
        init=False, default_factory=dict
    )
    _pools: dict[tuple[ModelKey, Levels], Pool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._cohorts = [None if d.cohort is None else Cohort.parse(d.cohort) for d in self.drifts]
        for index, drift in enumerate(self.drifts):
            if drift.transform == "blur" and self.held.side is None:
                raise DriftInputError(
                    f"drift.{index}: blur needs square images, and the inputs are "
                    f"{list(self.held.inputs.shape[1:])}"
                )
            if drift.transform == "class_mix":
                mixed_shares(self.held.class_shares, _classes(drift), 1.0)  # checks classes

    def membership(self, attributes: Attributes, device_id: str = "") -> tuple[bool, ...]:
        """Which of the drifts apply to a device with these attributes."""
        return tuple(
            cohort is None or cohort.matches(attributes, device_id) for cohort in self._cohorts
        )

    def members(self, attributes: Sequence[tuple[Attributes, str]]) -> list[int]:
        """How many of the devices (attributes, device id) each drift applies to."""
        counts = [0] * len(self.drifts)
        for attrs, device_id in attributes:
            for index, member in enumerate(self.membership(attrs, device_id)):
                counts[index] += member
        return counts

    def levels(self, member: Sequence[bool], t: float | None) -> Levels:
        """A device's level in each drift at ``t`` on the drift clock (0 in drifts whose
        cohort it is not in)."""
        return tuple(
            level_of(extent(drift, t)) if inside else 0
            for drift, inside in zip(self.drifts, member, strict=True)
        )

    def prepare(self, keys: Sequence[ModelKey]) -> int:
        """Make every drift's own ladder (each drift alone at each level) for every model;
        how many pools that made."""
        before = len(self._pools)
        zero = (0,) * len(self.drifts)
        for key in keys:
            self.pool(key, zero)
            for index in range(len(self.drifts)):
                for level in range(1, LEVELS):
                    self.pool(key, (*zero[:index], level, *zero[index + 1 :]))
        return len(self._pools) - before

    def pool(self, key: ModelKey, levels: Levels) -> Pool:
        """The pool of ``key``'s model with every drift at its level in ``levels``.

        Raises:
            DriftInputError, ModelLoadError, InferenceError: as ``predict``.
        """
        cached = self._pools.get((key, levels))
        if cached is not None:
            return cached
        shares = self.held.class_shares
        for drift, level in zip(self.drifts, levels, strict=True):
            if drift.transform == "class_mix" and level:
                shares = mixed_shares(shares, _classes(drift), amount_of(drift, level))
        # Class mix moves which rows come up, not the rows: the model's answers depend on
        # the other drifts' levels only.
        seen = tuple(
            0 if drift.transform == "class_mix" else level
            for drift, level in zip(self.drifts, levels, strict=True)
        )
        inputs = self._inputs(seen)
        probabilities = self._predictions.get((key, seen))
        if probabilities is None:
            probabilities = self._predictions[(key, seen)] = self.predict(key, inputs)
        pool = Pool(
            self.held.input_name, inputs, probabilities, row_shares(self.held.labels, shares)
        )
        self._pools[(key, levels)] = pool
        return pool

    def _inputs(self, levels: Levels) -> npt.NDArray[np.float32]:
        """The held-out inputs with each drift applied at its level, in the scenario's
        order."""
        held = self.held
        data: Array = held.inputs
        for index, (drift, level) in enumerate(zip(self.drifts, levels, strict=True)):
            if not level:
                continue
            amount = amount_of(drift, level)
            if drift.transform == "brightness":
                data = brighten(data, amount, held.low, held.high)
            elif drift.transform == "noise":
                data = add_noise(data, amount, held.low, held.high, self._standard_normal(index))
            elif drift.transform == "blur":
                assert held.side is not None  # checked when made
                data = blur(data, amount, held.side)
        return np.asarray(data, np.float32)

    def _standard_normal(self, index: int) -> FloatArray:
        normal = self._normal.get(index)
        if normal is None:
            rng = np.random.default_rng([self.seed, index])
            normal = self._normal[index] = rng.standard_normal(self.held.inputs.shape)
        return normal


def _classes(drift: Drift) -> dict[int, float]:
    return {int(k): v for k, v in (drift.classes or {}).items()}


# -- what a device makes of its rows ----------------------------------------------------------


#: The telemetry fields of a closed summary period (the device API's ``ModelMetrics``).
PERIOD_FIELDS = ("feature_counts", "sketches", "sketch_rows", "period_start", "period_end")


class DeviceSummaries:
    """A virtual device's drift summary periods: the device runtime's own recorder
    (``edgefleet.runtime.metrics.ModelMetrics``) per model version it serves, on the
    version's reference profile, fed with the rows the runtime would sample.

    A real device samples the features of every ``feature_every``-th request; here each
    interval's drawn rows are requests, and every ``feature_every``-th of them (counted
    across intervals) goes to the recorder as one batch. Its top-1 confidence reservoir
    sees the same rows: a uniform sample of the requests, as the reservoir itself is.
    The recorder's own request counts are not used (the interval's telemetry counts all
    requests); only what closes a period is (``PERIOD_FIELDS``)::

        summaries = DeviceSummaries(profiles, period_s=20.0, seed=7)
        summaries.observe("digits", "1.1.0", pool, rows)
        summaries.closed("digits", "1.1.0")     # {} until a period closed, then its fields
    """

    def __init__(
        self,
        profiles: Mapping[str, ReferenceProfile],
        *,
        period_s: float,
        sketch_rows: int | None = None,
        feature_every: int = 8,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.profiles = profiles
        self.period_s = period_s
        self.sketch_rows = SKETCH_ROWS if sketch_rows is None else sketch_rows
        self.feature_every = max(1, feature_every)
        self.seed = seed
        self.clock = clock
        self._recorders: dict[tuple[str, str], ModelMetrics] = {}
        self._requests: dict[tuple[str, str], int] = {}
        #: summary periods closed so far
        self.periods = 0

    def observe(self, model: str, version: str, pool: Pool, rows: Array) -> None:
        """Requests that drew ``rows`` of ``pool`` on ``model`` ``version``."""
        key = (model, version)
        recorder = self._recorders.get(key)
        if recorder is None:
            recorder = self._recorders[key] = self._recorder(model, version)
        before = self._requests.get(key, 0)
        self._requests[key] = before + len(rows)
        # Requests number before + 1 ... after; the runtime samples those numbered
        # 1, 1 + every, 1 + 2 x every, ...
        every = self.feature_every
        first = (-before) % every
        sampled = rows[first::every]
        if len(sampled):
            recorder.observe(
                {pool.input_name: pool.inputs[sampled]},
                {"probabilities": pool.probabilities[sampled]},
                0.0,
            )

    def closed(self, model: str, version: str, *, flush: bool = False) -> dict[str, Any]:
        """The fields of ``model`` ``version``'s summary period if it has closed (with
        ``flush``: closed now, as when the device stops serving it), else ``{}``."""
        recorder = self._recorders.get((model, version))
        if recorder is None:
            return {}
        stats = recorder.snapshot(reset=True, flush=flush)
        if flush:
            del self._recorders[(model, version)]
            self._requests.pop((model, version), None)
        if stats.period_end is None:
            return {}
        self.periods += 1
        data = stats.to_dict()
        return {name: data[name] for name in PERIOD_FIELDS if name in data}

    def serving(self) -> list[tuple[str, str]]:
        """The (model, version) pairs with a recorder (a period open)."""
        return list(self._recorders)

    def _recorder(self, model: str, version: str) -> ModelMetrics:
        profile = self.profiles.get(version)
        if profile is None:
            raise DriftInputError(f"no reference profile of {model} {version} to summarise on")
        return ModelMetrics(
            ModelIdentity(model, version),
            profile=profile,
            probabilities="probabilities",
            feature_every=1,  # the rows given are the sampled ones already
            drift_period_s=self.period_s,
            sketch_rows=self.sketch_rows,
            clock=self.clock,
            rng=np.random.default_rng([self.seed, len(self._recorders)]),
        )


@dataclass
class DriftWorld:
    """What every virtual device of a drifting run shares: the pools, the versions'
    reference profiles, the drift clock, and what the drift costs the simulator."""

    inputs: DriftInputs
    #: version -> its reference profile as the server publishes it (filled by the run
    #: before any device serves)
    profiles: dict[str, ReferenceProfile]
    period_s: float
    #: the run's clock when every device served the baseline: t = 0 of ``start_s``
    clock_t: float | None = None
    #: CPU seconds the devices spent on drift in their intervals (drawing rows, counting,
    #: feeding their recorders), and in how many intervals
    cost_s: float = 0.0
    intervals: int = 0
    #: summary periods the devices closed, and the CPU seconds that took (building and
    #: encoding the quantile summaries)
    periods: int = 0
    period_cost_s: float = 0.0
    #: CPU seconds making the ladders' pools before the run, and how many it made
    prepare_s: float = 0.0
    pools: int = 0
    #: epoch seconds, which date the devices' summary periods
    clock: Callable[[], float] = time.time

    def t(self, now: float) -> float | None:
        """``now`` (the run's clock) on the drift clock; ``None`` before it started."""
        return None if self.clock_t is None else now - self.clock_t

    def summaries(self, seed: int) -> DeviceSummaries:
        """A device's summary periods, on this run's profiles and period."""
        return DeviceSummaries(self.profiles, period_s=self.period_s, seed=seed, clock=self.clock)

    @property
    def interval_cost_us(self) -> float | None:
        """Mean CPU microseconds a device spent on drift per interval."""
        return round(self.cost_s / self.intervals * 1e6, 1) if self.intervals else None

    @property
    def period_cost_us(self) -> float | None:
        """Mean CPU microseconds a device spent closing a summary period."""
        return round(self.period_cost_s / self.periods * 1e6, 1) if self.periods else None

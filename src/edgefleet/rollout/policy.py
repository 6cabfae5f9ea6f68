"""What a rollout is asked to do: the definition operators write (YAML or API body).

A rollout releases one model version to the devices a targeting query selects, wave by
wave, and gates each wave on what the new version does on the devices compared with
the devices still on the previous version. Everything here is validation and defaults;
docs/rollouts.md documents each field::

    spec = RolloutSpec.model_validate(yaml.safe_load(text))
    spec.waves[0].percent  # 1.0
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, time
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator

from edgefleet.fleet.domain import Preconditions, ShadowPolicy, TrialPolicy
from edgefleet.registry.semver import VersionText
from edgefleet.stdjson import Body

Query = Annotated[str, Field(min_length=1, max_length=4096)]
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Approval(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class WaveSpec(Body):
    """One wave: a cumulative share of the target, or an explicit cohort query."""

    percent: StrictFloat | None = Field(
        default=None, gt=0, le=100, description="cumulative share of the target"
    )
    cohort: Query | None = Field(
        default=None, description="targeting query of this wave's devices (within the target)"
    )
    bake_s: StrictFloat = Field(
        default=600.0, ge=0, description="observation time before the gates"
    )
    min_devices: StrictInt = Field(
        default=1, ge=0, description="devices that must have finished (committed or not)"
    )
    approval: Approval = Field(
        default=Approval.AUTO, description="manual: an operator approves before the wave starts"
    )
    device_timeout_s: StrictFloat = Field(
        default=3600.0, gt=0, description="after this an unfinished device counts as unreachable"
    )
    analysis_timeout_s: StrictFloat = Field(
        default=3600.0,
        gt=0,
        description="after the bake, gates still inconclusive after this long do what "
        "on_inconclusive says (default: pause)",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.percent is None) == (self.cohort is None):
            raise ValueError("a wave has either percent or cohort, not both and not neither")
        return self


def default_waves() -> list[WaveSpec]:
    return [WaveSpec(percent=p) for p in (1, 5, 25, 50, 100)]


class RateLimits(Body):
    max_assign_per_minute: StrictInt | None = Field(default=None, ge=1)
    max_concurrent_downloads: StrictInt | None = Field(
        default=None, ge=1, description="assigned devices not yet past their download"
    )


class Window(Body):
    """A daily window in which devices may be assigned, in UTC or each device's local
    time (the device attribute ``tz``, an IANA zone such as ``Europe/Berlin``)."""

    start: str = Field(description="HH:MM")
    end: str = Field(description="HH:MM; before start means the window wraps past midnight")
    timezone: Literal["UTC", "device"] = "UTC"

    @model_validator(mode="after")
    def _clock(self) -> Self:
        for value in (self.start, self.end):
            if not _CLOCK.match(value):
                raise ValueError(f"{value!r} is not a time of day HH:MM")
        return self

    def contains(self, moment: time) -> bool:
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start <= end:
            return start <= moment < end
        return moment >= start or moment < end


class Blackout(Body):
    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("a blackout ends after it starts")
        return self


class Schedule(Body):
    start_at: datetime | None = Field(default=None, description="no assignment before this")
    windows: list[Window] = Field(default_factory=list, max_length=32)
    blackouts: list[Blackout] = Field(default_factory=list, max_length=256)


class Metric(StrEnum):
    """What a gate measures. Delivery metrics count devices of the rollout; behaviour
    metrics compare telemetry of the candidate with the baseline."""

    DOWNLOAD_FAILURES = "download_failures"  # devices that ended FAILED
    ROLLBACKS = "rollbacks"  # devices that rolled the candidate back on their own
    TRIAL_FAILURES = "trial_failures"  # rollbacks because a trial or shadow check failed
    ERROR_RATE = "error_rate"  # failed inference requests over all requests
    LATENCY_P95 = "latency_p95"  # per-device latency p95, ms
    CPU = "cpu_percent"
    RAM = "ram_used_mb"
    TEMPERATURE = "temperature_c"
    MEAN_CONFIDENCE = "mean_confidence"
    RESTART_RATE = "restart_rate"  # per-device unclean restarts per hour on the version
    # The model's CPU time per inference, the candidate over the previous model on the
    # same input at the same moment (the device trial's paired probes): max_ratio only.
    INFERENCE_CPU = "inference_cpu"
    LOW_CONFIDENCE = "low_confidence_share"  # predictions with top-1 confidence < 0.5
    CLASS_DISTRIBUTION = "class_distribution"


DELIVERY = frozenset({Metric.DOWNLOAD_FAILURES, Metric.ROLLBACKS, Metric.TRIAL_FAILURES})
RATES = frozenset({Metric.ERROR_RATE, Metric.LOW_CONFIDENCE, *DELIVERY})
#: Metrics where a lower value is the worse one.
LOWER_IS_WORSE = frozenset({Metric.MEAN_CONFIDENCE})


LIMIT_KINDS = ("max", "min", "max_increase", "max_decrease", "max_ratio", "max_count", "max_change")


class GateSpec(Body):
    """A limit on one metric. Exactly one limit kind:

    - ``max`` / ``min``: an absolute bound on the candidate's value;
    - ``max_increase``: candidate minus baseline at most this (in the metric's unit; for
      mean_confidence, ``max_decrease``);
    - ``max_ratio``: candidate over baseline at most this;
    - ``max_count``: delivery metrics only, fail once more devices than this (no test);
    - ``max_change``: class_distribution only, the largest relative change of a class's
      share, e.g. 0.5: every class the fleet predicts, each tested exactly.

    ``critical_classes`` (class_distribution only): classes whose share halving fails the
    gate as soon as the evidence shows it, however little data ``min_samples`` asks for.
    """

    metric: Metric
    name: str | None = Field(default=None, max_length=64, description="default: the metric")
    max: StrictFloat | None = None
    min: StrictFloat | None = None
    max_increase: StrictFloat | None = Field(default=None, ge=0)
    max_decrease: StrictFloat | None = Field(default=None, ge=0)
    max_ratio: StrictFloat | None = Field(default=None, gt=0)
    max_count: StrictInt | None = Field(default=None, ge=0)
    max_change: StrictFloat | None = Field(default=None, gt=0)
    min_samples: StrictInt = Field(
        default=30,
        ge=1,
        description="least data for a pass: devices (delivery), requests (rates), "
        "devices (per-device means; inference_cpu: devices that probed), predictions "
        "(class distribution)",
    )
    critical_classes: list[Annotated[int, Field(strict=True, ge=0, le=100_000)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="class_distribution only: classes (indices) whose halving fails the gate",
    )
    dry_run: StrictBool = Field(default=False, description="report the verdict, never act on it")

    @property
    def label(self) -> str:
        return self.name or self.metric.value

    @property
    def limit_kind(self) -> str:
        return self._limits()[0]

    @property
    def limit(self) -> float:
        return float(getattr(self, self.limit_kind))

    def _limits(self) -> list[str]:
        return [k for k in LIMIT_KINDS if getattr(self, k) is not None]

    @model_validator(mode="after")
    def _one_limit(self) -> Self:
        kinds = self._limits()
        if len(kinds) != 1:
            raise ValueError(f"gate {self.label}: give exactly one limit, got {kinds or 'none'}")
        kind = kinds[0]
        allowed = _ALLOWED[self.metric]
        if kind not in allowed:
            raise ValueError(
                f"gate {self.label}: {kind} does not apply to {self.metric.value}; "
                f"use one of {', '.join(sorted(allowed))}"
            )
        if self.critical_classes is not None and self.metric is not Metric.CLASS_DISTRIBUTION:
            raise ValueError(f"gate {self.label}: critical_classes is for class_distribution")
        if self.metric in RATES and kind in ("max", "min") and not 0 <= getattr(self, kind) <= 1:
            raise ValueError(f"gate {self.label}: a rate limit is between 0 and 1")
        return self


_BEHAVIOUR_LIMITS = {"max", "max_increase", "max_ratio"}
_ALLOWED: dict[Metric, set[str]] = {
    Metric.DOWNLOAD_FAILURES: {"max", "max_count"},
    Metric.ROLLBACKS: {"max", "max_count"},
    Metric.TRIAL_FAILURES: {"max", "max_count"},
    Metric.ERROR_RATE: {"max", "max_increase"},
    Metric.LOW_CONFIDENCE: {"max", "max_increase"},
    Metric.LATENCY_P95: _BEHAVIOUR_LIMITS,
    Metric.CPU: _BEHAVIOUR_LIMITS,
    Metric.RAM: _BEHAVIOUR_LIMITS,
    Metric.TEMPERATURE: _BEHAVIOUR_LIMITS,
    Metric.RESTART_RATE: _BEHAVIOUR_LIMITS,
    Metric.INFERENCE_CPU: {"max_ratio"},
    Metric.MEAN_CONFIDENCE: {"min", "max_decrease"},
    Metric.CLASS_DISTRIBUTION: {"max_change"},
}


#: Metrics ``detect`` sizes a canary for: per-device means, whose spread between devices
#: the baseline shows before the rollout starts.
DETECTABLE = frozenset({Metric.LATENCY_P95, Metric.CPU, Metric.RAM, Metric.TEMPERATURE})


def wave_percent(spec: RolloutSpec, wave: int, extended: int = 0) -> float | None:
    """The cumulative share of the target wave ``wave`` holds after ``extended``
    extensions (``None``: a cohort wave): its own percent, grown by the extension's
    step each time up to its cap (never below the wave's own percent, never past 100)."""
    percent = spec.waves[wave].percent
    if percent is None or not extended:
        return percent
    cap = min(max(spec.extend.max_percent, percent), 100.0)
    return min(percent + extended * spec.extend.step_percent, cap)


def default_gates() -> list[GateSpec]:
    return [
        GateSpec(metric=Metric.DOWNLOAD_FAILURES, max=0.1, min_samples=10),
        GateSpec(metric=Metric.ROLLBACKS, max=0.05, min_samples=10),
        GateSpec(metric=Metric.ERROR_RATE, max_increase=0.01, min_samples=1000),
        GateSpec(metric=Metric.LATENCY_P95, max_ratio=1.3, min_samples=5),
        GateSpec(metric=Metric.CPU, max_ratio=1.3, min_samples=5),
        GateSpec(metric=Metric.CLASS_DISTRIBUTION, max_change=0.5, min_samples=1000),
    ]


class Extension(Body):
    """How ``on_inconclusive: extend`` grows a percentage wave whose gates stayed
    inconclusive: by ``step_percent`` of the target each time, up to ``max_percent``."""

    step_percent: StrictFloat = Field(default=5.0, gt=0, le=100)
    max_percent: StrictFloat = Field(
        default=25.0, gt=0, le=100, description="the cumulative share a wave may grow to"
    )


class RolloutSpec(Body):
    """A rollout definition."""

    name: str = Field(default="", max_length=128)
    model: str = Field(min_length=1, max_length=128)
    version: VersionText
    target: Query = Field(description="targeting query of the devices to release to")
    previous_version: VersionText | None = Field(
        default=None,
        description="what to roll back to and compare with; default: what each device runs",
    )
    waves: list[WaveSpec] = Field(default_factory=default_waves, min_length=1, max_length=64)
    rate: RateLimits = RateLimits()
    schedule: Schedule = Schedule()
    preconditions: Preconditions = Preconditions()
    trial: TrialPolicy = TrialPolicy()
    shadow: ShadowPolicy | None = None
    gates: list[GateSpec] = Field(default_factory=default_gates, max_length=64)
    on_failure: Literal["abort", "pause"] = "abort"
    on_inconclusive: Literal["pause", "abort", "extend"] = Field(
        default="pause",
        description="gates still inconclusive at a wave's analysis_timeout_s: pause; abort "
        "(roll the wave back); or extend the wave by extend.step_percent and look again, up "
        "to extend.max_percent, then pause",
    )
    extend: Extension = Extension()
    segment_by: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]] = Field(
        default_factory=list,
        max_length=8,
        description="device attributes (e.g. rev, region) whose every value the behaviour "
        "gates also test on its own, as they test each hardware kind",
    )
    detect: dict[Metric, Annotated[float, Field(strict=True, gt=1)]] | None = Field(
        default=None,
        description="metric -> the smallest ratio to the baseline the rollout must catch "
        "(e.g. {latency_p95: 1.2}): the first wave is sized for it at create "
        "(docs/rollouts.md, Power on purpose)",
    )
    alpha: StrictFloat = Field(
        default=0.05, gt=0, lt=0.5, description="false-alarm budget of each gate, all looks"
    )

    @model_validator(mode="after")
    def _waves_grow(self) -> Self:
        percents = [w.percent for w in self.waves if w.percent is not None]
        if percents and len(percents) != len(self.waves):
            raise ValueError("waves are all percentages or all cohorts, not a mix")
        if any(b <= a for a, b in itertools.pairwise(percents)):
            raise ValueError("wave percentages are cumulative and must increase")
        for metric, ratio in (self.detect or {}).items():
            self._check_detect(metric, ratio)
        if self.on_inconclusive == "extend" and not percents:
            raise ValueError("on_inconclusive: extend grows percentage waves; these are cohorts")
        labels = [g.label for g in self.gates]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"gate names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def detect_gate(self, metric: Metric) -> GateSpec | None:
        """The deciding ``max_ratio`` gate on ``metric`` (what ``detect`` sizes for)."""
        return next(
            (
                g
                for g in self.gates
                if g.metric is metric and g.max_ratio is not None and not g.dry_run
            ),
            None,
        )

    def _check_detect(self, metric: Metric, ratio: float) -> None:
        if metric not in DETECTABLE:
            raise ValueError(
                f"detect: {metric.value} is not sized; use one of "
                f"{', '.join(sorted(m.value for m in DETECTABLE))}"
            )
        gate = self.detect_gate(metric)
        if gate is None:
            raise ValueError(f"detect: {metric.value} needs a gate on it with max_ratio")
        if ratio <= gate.limit:
            raise ValueError(
                f"detect: {metric.value} {ratio} is not beyond its gate's max_ratio "
                f"{gate.limit}; an effect at the limit cannot be caught for sure"
            )

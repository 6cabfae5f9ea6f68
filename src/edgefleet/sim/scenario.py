"""Scenario files: what the simulator releases, to which fleet, with what policy, and
what must happen (documented field by field in docs/scenarios.md).

A scenario is YAML. Built-in scenarios live in ``sim/scenarios/`` and are named by
their file name; anything else is a path::

    scenario = load_scenario("cpu-spike")            # built-in
    scenario = load_scenario("my-scenario.yaml")     # a file of your own
    scenario.releases[0].version                     # "1.2.0"

Every problem is reported with the field it concerns (``ScenarioError``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import AliasChoices, Field, ValidationError, model_validator

from edgefleet.errors import EdgefleetError
from edgefleet.fleet.domain import TrialPolicy
from edgefleet.rollout.policy import GateSpec, RateLimits, RolloutSpec, WaveSpec
from edgefleet.sim.network import PROFILES as NETWORK_PROFILES
from edgefleet.stdjson import Body

#: The attribute naming the run a virtual device belongs to: every rollout of a run
#: is limited to its own devices, also on a server that has others.
RUN_ATTRIBUTE = "sim_run"


def fleet_query(run_id: str) -> str:
    """The targeting query of one run's devices."""
    return f"{RUN_ATTRIBUTE}:{run_id}"


class ScenarioError(EdgefleetError):
    """A scenario cannot be found or is invalid."""

    code = "invalid_scenario"


class DeviceKind(Body):
    """One kind of device in the fleet mix."""

    name: str = Field(min_length=1, max_length=64)
    hardware: Literal["x86_64", "aarch64", "armv7l"] = Field(
        description="the machine: decides the model variant the device gets"
    )
    revision: str = Field(
        min_length=1, max_length=64, description="hardware revision (attribute `rev`)"
    )
    profile: str = Field(default="x86-cpu", description="runtime device profile it stands for")
    speed: float = Field(
        default=1.0, gt=0, description="inference time relative to where models were measured"
    )
    firmware: str = Field(default="2.0.0", max_length=32)
    weight: float = Field(default=1.0, gt=0)


def _default_kinds() -> list[DeviceKind]:
    return [
        DeviceKind(
            name="gateway",
            hardware="x86_64",
            revision="gw-r2",
            profile="x86-cpu",
            speed=1.0,
            weight=3,
        ),
        DeviceKind(
            name="jetson",
            hardware="aarch64",
            revision="orin-a1",
            profile="jetson",
            speed=1.5,
            weight=3,
        ),
        DeviceKind(
            name="camera",
            hardware="armv7l",
            revision="rpi3-r1.2",
            profile="raspberry-pi",
            speed=6.0,
            weight=4,
        ),
    ]


class NetworkOverride(Body):
    """Numbers of a network profile to change (for compressed time, faster links)."""

    latency_s: float | None = Field(default=None, ge=0)
    jitter_s: float | None = Field(default=None, ge=0)
    loss: float | None = Field(default=None, ge=0, lt=1)
    bandwidth_bps: float | None = Field(default=None, gt=0)
    outage_every_s: float | None = Field(default=None, ge=0)
    outage_s: float | None = Field(default=None, ge=0)


class FleetSpec(Body):
    kinds: list[DeviceKind] = Field(default_factory=_default_kinds, min_length=1, max_length=64)
    regions: dict[str, float] = Field(
        default_factory=lambda: {"eu-west": 3.0, "us-east": 2.0, "ap-south": 1.0},
        min_length=1,
        description="region -> weight",
    )
    sites_per_region: int = Field(default=4, ge=1, le=10_000)
    networks: dict[str, float] = Field(
        default_factory=lambda: {"ethernet": 3.0, "wifi": 4.0, "cellular-4g": 3.0},
        min_length=1,
        description="network profile -> weight",
    )
    network_overrides: dict[str, NetworkOverride] = Field(default_factory=dict)
    checkin_interval_s: tuple[float, float] = Field(
        default=(2.0, 4.0),
        validation_alias=AliasChoices("checkin_interval_s", "poll_interval_s"),
        description="each device checks in every [low, high] seconds (poll_interval_s, its "
        "old name, is read too)",
    )
    telemetry_interval_s: float = Field(default=2.0, gt=0)
    requests_per_s: float = Field(
        default=1000.0, ge=0, description="inference requests per device per second"
    )
    max_backoff_s: float = Field(default=8.0, gt=0)
    enroll_per_s: float = Field(
        default=200.0,
        gt=0,
        description=(
            "devices that boot and enroll per second at the start: the fleet boots over "
            "devices / enroll_per_s seconds, or over the check-in interval when that is longer"
        ),
    )
    drift_period_s: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "each device's drift summary period (its feature histograms and quantile "
            "summaries are sent once per period); short in scenarios, an hour on devices"
        ),
    )

    @model_validator(mode="after")
    def _known(self) -> Self:
        unknown = sorted((set(self.networks) | set(self.network_overrides)) - set(NETWORK_PROFILES))
        if unknown:
            raise ValueError(
                f"unknown network profile(s) {', '.join(unknown)}; "
                f"known: {', '.join(NETWORK_PROFILES)}"
            )
        low, high = self.checkin_interval_s
        if not 0 < low <= high:
            raise ValueError("checkin_interval_s is [low, high] with 0 < low <= high")
        names = [k.name for k in self.kinds]
        if len(set(names)) != len(names):
            raise ValueError("device kind names must be unique")
        return self


class Traffic(Body):
    """What the devices' applications send their models."""

    class_shares: dict[str, float] = Field(
        default_factory=dict,
        description="share of requests of these classes (the rest share what is left evenly)",
    )

    @model_validator(mode="after")
    def _shares(self) -> Self:
        if any(not 0 <= v <= 1 for v in self.class_shares.values()):
            raise ValueError("class shares are between 0 and 1")
        if sum(self.class_shares.values()) > 1:
            raise ValueError("class shares add up to more than 1")
        return self


PositiveFactor = Annotated[float, Field(gt=0, le=1000)]
Factor = PositiveFactor | dict[Annotated[str, Field(min_length=1, max_length=64)], PositiveFactor]
ClassName = Annotated[str, Field(pattern=r"^[0-9]{1,5}$", description="a class index")]


class Behaviour(Body):
    """How a release misbehaves beyond what its real model does (fault injection)."""

    load_fails_on: list[str] = Field(
        default_factory=list, description="hardware revisions on which the model fails to load"
    )
    error_rate: float | None = Field(default=None, ge=0, le=1)
    restarts_per_hour: float | None = Field(
        default=None,
        ge=0,
        description=(
            "unclean restarts (a crash, as after a power loss) per hour a device serves this "
            "version; each restarts through the agent core's recovery and is reported in "
            "telemetry"
        ),
    )
    latency_factor: Factor | None = Field(
        default=None,
        description=(
            "every request's latency times this, on top of the measured model: one number "
            "fleet-wide, or by hardware revision or kind name ({rpi3-r1.2: 1.3}); the CPU "
            "each request costs grows with it"
        ),
    )
    cpu_factor: Factor | None = Field(
        default=None,
        description=(
            "the device's CPU use while it serves the release times this, idle share "
            "included (the ratio a cpu_percent gate sees), and the CPU time of each inference "
            "a trial probes (the ratio an inference_cpu gate sees); latency unchanged"
        ),
    )
    memory_factor: Factor | None = Field(default=None, description="the model's memory times this")
    confidence_factor: Factor | None = Field(
        default=None,
        description="every top-1 confidence times this (at most 1): below 1, a less sure model",
    )
    class_recall: dict[ClassName, Annotated[float, Field(ge=0, le=1)]] | None = Field(
        default=None,
        description=(
            'share of a class\'s predictions the release keeps ({"9": 0.5}; 0: never '
            "predicts it); the rest go to the other classes in proportion"
        ),
    )

    def factor(self, name: str, kind: DeviceKind) -> float:
        """The ``*_factor`` called ``name`` on a device of ``kind``: its revision's, else
        its kind's, else 1."""
        value = getattr(self, f"{name}_factor")
        if value is None:
            return 1.0
        if isinstance(value, float | int):
            return float(value)
        return float(value.get(kind.revision, value.get(kind.name, 1.0)))

    def segments(self) -> set[str]:
        """The revisions and kind names the factors name."""
        names: set[str] = set()
        for name in FACTORS:
            value = getattr(self, f"{name}_factor")
            if isinstance(value, dict):
                names |= set(value)
        return names


#: Behaviour factors (``<name>_factor``) a release can set.
FACTORS = ("latency", "cpu", "memory", "confidence")


class Offline(Body):
    """A share of the fleet that loses its network for a while."""

    share: float = Field(gt=0, le=1)
    start_s: float = Field(default=0.0, ge=0, description="after the first release starts")
    duration_s: float = Field(gt=0)


class Expect(Body):
    """What must hold when a release is over; each field given is one check."""

    state: Literal["succeeded", "aborted", "paused"] | None = None
    failed_gate: list[str] | None = Field(
        default=None, description="at least one of these gates failed"
    )
    max_wave: int | None = Field(default=None, ge=1, description="stopped by this wave (1-based)")
    committed: Literal["all"] | int | None = Field(
        default=None, description="devices committed to this version at the end"
    )
    max_exposed_share: float | None = Field(default=None, ge=0, le=1)
    serving_at_end: str | None = Field(
        default=None, description="the version every device serves at the end"
    )
    rollbacks_only_on: list[str] | None = Field(
        default=None, description="on-device rollbacks happened, and only on these revisions"
    )
    max_rollbacks: int | None = Field(
        default=None, ge=0, description="devices that rolled this version back on their own"
    )
    min_restarts: int | None = Field(
        default=None, ge=0, description="unclean restarts of devices while serving this version"
    )
    max_repeated_chunks_per_interruption: float | None = Field(default=None, ge=0)
    min_interruptions: int | None = Field(default=None, ge=0)
    min_unreachable: int | None = Field(
        default=None, ge=0, description="devices the rollout counted as unreachable"
    )
    max_time_to_detect_s: float | None = Field(default=None, gt=0)
    max_time_to_rollback_s: float | None = Field(default=None, gt=0)


Transform = Literal["brightness", "noise", "blur", "class_mix"]


class Drift(Body):
    """A change of the inputs a cohort of devices sees, from a moment of the run on.

    ``intensity`` is how far the change goes at its full extent: for ``brightness`` a
    shift by that share of the inputs' full range (negative darkens, in [-1, 1]); for
    ``noise`` Gaussian noise whose standard deviation is that share of the range; for
    ``blur`` a Gaussian blur of up to ``intensity`` x 2 pixels; for ``class_mix`` how far
    the true classes' mix moves from the traffic's towards ``classes``.
    """

    cohort: str | None = Field(
        default=None,
        min_length=1,
        max_length=3072,
        description="a targeting query over the devices' attributes (default: every device)",
    )
    transform: Transform
    intensity: float = Field(ge=-1, le=1)
    start_s: float = Field(
        default=0.0, ge=0, description="seconds after every device serves the baseline"
    )
    ramp_s: float = Field(
        default=0.0, ge=0, description="seconds to reach the full intensity (0: at once)"
    )
    classes: dict[str, float] | None = Field(
        default=None,
        description=(
            "class_mix only: the share of these true classes at full intensity (the rest "
            "share what is left in their traffic proportions)"
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.intensity == 0:
            raise ValueError("intensity 0 changes nothing: give how far the drift goes")
        if self.transform != "brightness" and self.intensity < 0:
            raise ValueError(f"a {self.transform} intensity is between 0 and 1")
        if self.transform == "class_mix":
            if not self.classes:
                raise ValueError("class_mix needs classes: the share of classes it moves to")
            if any(not k.isdigit() for k in self.classes):
                raise ValueError("classes are named by their index (0, 1, ...)")
            if any(not 0 <= v <= 1 for v in self.classes.values()):
                raise ValueError("class shares are between 0 and 1")
            if sum(self.classes.values()) > 1 + 1e-9:
                raise ValueError("class shares add up to more than 1")
        elif self.classes is not None:
            raise ValueError(f"classes is for class_mix only, not {self.transform}")
        if self.cohort is not None:
            # Imported here: scenarios without drift need no query parser.
            from edgefleet.sim.cohort import Cohort, CohortError

            try:
                Cohort.parse(self.cohort)
            except CohortError as exc:
                raise ValueError(f"cohort: {exc.message}") from exc
        return self


class AlarmOn(Body):
    """A segment (and optionally features) on which a drift alarm must open."""

    segment: str = Field(
        min_length=1,
        max_length=256,
        description='a segment as the drift report names it: "all", "site=eu-west-site-1"',
    )
    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description='features that must each alarm on it ("X[12]", "confidence", "classes")',
    )


class DriftExpect(Body):
    """What must hold of the drift alarms the run saw; each field given is one check."""

    alarm_on: list[AlarmOn] | None = Field(default=None, min_length=1)
    max_time_to_alarm_s: float | None = Field(
        default=None,
        gt=0,
        description="from the first drift's start to each alarm_on segment's first alarm",
    )
    no_alarm: bool | list[str] | None = Field(
        default=None,
        description=(
            "true: nothing may alarm in the run; or segments ('*' wildcards) that may not "
            "alarm, except those alarm_on names"
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_time_to_alarm_s is not None and not self.alarm_on:
            raise ValueError("max_time_to_alarm_s needs alarm_on: the alarms it times")
        if self.no_alarm is True and self.alarm_on:
            raise ValueError("no_alarm: true contradicts alarm_on")
        if isinstance(self.no_alarm, list) and not self.no_alarm:
            raise ValueError("no_alarm is true, or a list of at least one segment")
        return self


class Rollout(Body):
    """The rollout definition of a release, less what the release says (model, version)."""

    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=3072,
        description="a targeting query within the run's own devices (default: all of them)",
    )
    waves: list[WaveSpec] | None = None
    rate: RateLimits = RateLimits()
    trial: TrialPolicy = TrialPolicy(min_inferences=200, min_seconds=3.0)
    gates: list[GateSpec] | None = None
    on_failure: Literal["abort", "pause"] = "abort"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)

    def body(self, model: str, version: str, fleet: str) -> dict[str, Any]:
        """The rollout API's request body; ``fleet`` is the query of the run's devices."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["target"] = fleet if self.target is None else f"{fleet} AND ({self.target})"
        return {"name": f"sim {model} {version}", "model": model, "version": version, **data}


class Release(Body):
    version: str = Field(min_length=1, max_length=128)
    bad: bool = Field(default=False, description="the scenario knows this version misbehaves")
    behaviour: Behaviour = Behaviour()
    rollout: Rollout = Rollout()
    expect: Expect = Expect()
    settle_s: float = Field(
        default=120.0, gt=0, description="how long to wait for devices after the rollout ends"
    )


class ServerSettings(Body):
    """Settings of the embedded server (ignored with ``--server``)."""

    rollout_tick_s: float = Field(default=0.5, gt=0)
    rollout_analysis_interval_s: float = Field(default=1.0, ge=0)
    offline_after_intervals: float = Field(default=3.0, gt=1)
    drift_look_grace_s: float = Field(
        default=4.0,
        ge=0,
        description=(
            "how long after a drift window ends its look waits for late summaries (the "
            "server's drift_look_grace_s, ten minutes on a real server): a device sends "
            "a period's summary with its next telemetry, every telemetry_interval_s"
        ),
    )
    drift_looks_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="how often the server looks for drift windows that are due",
    )


class Scenario(Body):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=4000)
    devices: int = Field(default=200, ge=1, le=100_000)
    seed: int = 0
    model: str = Field(default="digits", description="the example model released")
    baseline: str = Field(description="version installed everywhere before the releases")
    fleet: FleetSpec = FleetSpec()
    traffic: Traffic = Traffic()
    offline: Offline | None = None
    server: ServerSettings = ServerSettings()
    releases: list[Release] = Field(default_factory=list, max_length=16)
    drift: list[Drift] = Field(default_factory=list, max_length=16)
    drift_monitors: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "drift monitors the run applies through the API (docs/drift.md's YAML), before "
            "any device starts; the server validates them, naming the field"
        ),
    )
    drift_expect: DriftExpect | None = None
    drift_watch_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "with drift monitors: how long the run watches for alarms after every device "
            "serves the baseline (and the releases are over); it ends sooner once every "
            "alarm_on has been seen"
        ),
    )
    time_limit_s: float = Field(default=600.0, gt=0, description="the whole run, at most")

    @model_validator(mode="after")
    def _drift(self) -> Self:
        if not self.releases and not self.drift_monitors:
            raise ValueError(
                "releases: List should have at least 1 item (a scenario without drift "
                "monitors must release something)"
            )
        if self.drift_expect is not None and not self.drift_monitors:
            raise ValueError("drift_expect needs drift_monitors: the monitors that alarm")
        expect = self.drift_expect
        if expect is not None and expect.max_time_to_alarm_s is not None and not self.drift:
            raise ValueError(
                "drift_expect.max_time_to_alarm_s needs drift: it times from its start"
            )
        for index, monitor in enumerate(self.drift_monitors):
            if monitor.get("model") != self.model:
                raise ValueError(
                    f"drift_monitors.{index}.model: the run's devices serve {self.model}, "
                    f"so a monitor of {monitor.get('model')!r} would see nothing"
                )
            version = monitor.get("version")
            if version is not None and str(version) not in self.versions:
                raise ValueError(
                    f"drift_monitors.{index}.version: {version!r} is none of the run's "
                    f"versions ({', '.join(self.versions)})"
                )
        return self

    @model_validator(mode="after")
    def _behaviour_segments(self) -> Self:
        known = {k.revision for k in self.fleet.kinds} | {k.name for k in self.fleet.kinds}
        for index, release in enumerate(self.releases):
            unknown = release.behaviour.segments() - known
            if unknown:
                raise ValueError(
                    f"releases.{index}.behaviour: {', '.join(sorted(unknown))} is neither a "
                    f"revision nor a kind of the fleet ({', '.join(sorted(known))})"
                )
        return self

    @property
    def drifting(self) -> bool:
        """Whether the devices summarise their inputs for drift: the scenario drifts them,
        or monitors them (devices of any other scenario pay nothing for it)."""
        return bool(self.drift or self.drift_monitors)

    @model_validator(mode="after")
    def _rollouts(self) -> Self:
        # The whole rollout definition as the server will see it, so that a bad one
        # is refused before any server starts.
        for index, release in enumerate(self.releases):
            try:
                RolloutSpec.model_validate(
                    release.rollout.body(self.model, release.version, fleet_query("check"))
                )
            except ValidationError as exc:
                raise ValueError(_problems(exc, f"releases.{index}.rollout")) from exc
        return self

    @property
    def versions(self) -> list[str]:
        """Every version the scenario uses, the baseline first."""
        seen = [self.baseline]
        for release in self.releases:
            if release.version not in seen:
                seen.append(release.version)
        return seen


def builtin_names() -> list[str]:
    """The built-in scenarios, by name."""
    folder = resources.files("edgefleet.sim") / "scenarios"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_scenario(name_or_path: str, *, devices: int | None = None) -> Scenario:
    """A built-in scenario by name, or a scenario file by path; ``devices`` overrides
    the scenario's fleet size.

    Raises:
        ScenarioError: no such scenario, unreadable, not YAML, or invalid (each
            problem with its field).
    """
    folder = resources.files("edgefleet.sim") / "scenarios"
    builtin = folder / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if builtin.is_file():
        text, source = builtin.read_text(encoding="utf-8"), f"built-in scenario {name_or_path}"
    elif path.is_file():
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    else:
        raise ScenarioError(
            f"no scenario {name_or_path!r}: not a built-in ({', '.join(builtin_names())}) "
            "and no such file",
            details={"builtin": builtin_names()},
        )
    return parse_scenario(text, source, devices=devices)


def parse_scenario(text: str, source: str = "scenario", *, devices: int | None = None) -> Scenario:
    """Validate a scenario's YAML text.

    Raises:
        ScenarioError: not YAML, not a mapping, or invalid.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{source} must be a mapping of scenario fields")
    if devices is not None:
        data["devices"] = devices
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(
            f"{source} is invalid: {_problems(exc)}", details={"errors": len(exc.errors())}
        ) from exc


def _problems(exc: ValidationError, prefix: str = "") -> str:
    """Each validation problem as ``field.path: message``."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)

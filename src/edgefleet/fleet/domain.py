"""The device twin and what devices send: desired state, reported state, events,
telemetry. These pydantic models are also the request and response bodies of the
device API, so OpenAPI documents them field by field."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from edgefleet.drift.errors import SummaryError
from edgefleet.drift.sketch import QuantileSummary
from edgefleet.stdjson import Body, JsonObject

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


def _text(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("a date and time is an ISO 8601 string, e.g. 2024-06-01T12:00:00Z")
    return value


#: A date and time a device sends: ISO 8601 text, as OpenAPI says (not also a number of
#: seconds, which pydantic would read).
Timestamp = Annotated[datetime, BeforeValidator(_text)]

#: The largest event sequence number: the largest integer a double holds exactly, so a
#: client or an OpenAPI validator comparing as doubles finds the same bound (with 2**62,
#: 2**62 + 1 compared equal to it and passed the schema, and the server refused it).
MAX_SEQ = 2**53 - 1
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN, description="device identifier")]
AttributeKey = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
# Strict numbers: a string over the length limit is refused, not read as a number
# ("000...0" was stored as 0).
AttributeValue = Annotated[str, Field(max_length=256)] | StrictInt | StrictFloat | StrictBool
#: In OpenAPI, a key the pattern does not match is refused, as pydantic refuses it.
ONLY_PATTERN_KEYS: dict[str, Any] = {"additionalProperties": False}
Attributes = Annotated[
    dict[AttributeKey, AttributeValue],
    Field(
        max_length=64,
        json_schema_extra=ONLY_PATTERN_KEYS,
        description=(
            "device attributes used by targeting queries; who may set which is in "
            "docs/security.md (a device never sets group or cohort, nor changes hw after "
            "enrollment)"
        ),
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=128)]
State = Annotated[str, Field(min_length=1, max_length=32)]


class DesiredModel(Body):
    """The model a device should run, and where its signed artifact is."""

    name: Name
    version: Name
    variant: Name
    target_path: str = Field(description="TUF target path of the artifact")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: StrictInt = Field(ge=0)
    release: StrictInt = Field(ge=1, description="signed per-model release counter")


class TrialPolicy(Body):
    """How a device judges a new model before committing to it (see the agent)."""

    min_inferences: StrictInt = Field(default=200, ge=0)
    min_seconds: StrictFloat = Field(default=60.0, ge=0)
    max_seconds: StrictFloat | None = Field(
        default=None,
        ge=0,
        description=(
            "the trial goes on past min_seconds while a paired check is inconclusive, up to "
            "this (default: min_seconds + 240); still inconclusive then, it does not fail"
        ),
    )
    max_error_rate: StrictFloat = Field(default=0.01, ge=0, le=1)
    max_latency_ratio: StrictFloat | None = Field(
        default=1.5,
        gt=0,
        validation_alias=AliasChoices("max_latency_ratio", "max_latency_p95_ratio"),
        description=(
            "the candidate's latency over the previous model's on the same input at the same "
            "moment (paired probes), at most this for most requests (null: no latency check)"
        ),
    )
    max_cpu_ratio: StrictFloat | None = Field(
        default=1.5,
        gt=0,
        description=(
            "the candidate's CPU time (the process's) over the previous model's on the same "
            "input at the same moment, at most this for most probes (null: no CPU check)"
        ),
    )
    false_rollback_rate: StrictFloat = Field(
        default=0.01,
        gt=0,
        lt=0.5,
        description=(
            "a model within max_latency_ratio and max_cpu_ratio is rolled back by those "
            "checks with at most this probability, however long the trial looks"
        ),
    )
    probe_floor_ms: StrictFloat = Field(
        default=0.002,
        ge=0,
        description="a probe's excess smaller than this (timer and cache noise) never counts",
    )
    max_cpu_percent: StrictFloat | None = Field(default=None, ge=0)
    max_ram_mb: StrictFloat | None = Field(default=None, ge=0)
    max_temperature_c: StrictFloat | None = None
    min_mean_confidence: StrictFloat | None = Field(default=None, ge=0, le=1)
    max_new_class_share: StrictFloat | None = Field(default=None, ge=0, le=1)
    max_trial_restarts: StrictInt = Field(
        default=3,
        ge=1,
        le=100,
        description=(
            "restarts of the device during one trial (power loss, a crash; a clean stop "
            "never counts) that end it: the trial resumes after fewer, and at this many the "
            "agent rolls back with trial_failed:restart_limit (1: the first restart does)"
        ),
    )

    @model_validator(mode="after")
    def _extension_after_minimum(self) -> TrialPolicy:
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise ValueError(
                f"max_seconds ({self.max_seconds}) is less than min_seconds ({self.min_seconds})"
            )
        return self

    @property
    def deadline_s(self) -> float:
        """When the trial ends at the latest, inconclusive or not."""
        return self.max_seconds if self.max_seconds is not None else self.min_seconds + 240.0


class ShadowPolicy(Body):
    """Shadow first: before the desired model goes live, the device runs it beside the
    serving model on a share of requests, compares their answers and latencies, and
    reports them; it activates the model only if the checks hold."""

    fraction: StrictFloat = Field(default=0.1, gt=0, le=1, description="share of requests shadowed")
    min_seconds: StrictFloat = Field(default=60.0, ge=0)
    min_compared: StrictInt = Field(default=100, ge=0, description="predictions compared, at least")
    min_agreement: StrictFloat | None = Field(
        default=None, ge=0, le=1, description="top-1 agreement with the serving model, at least"
    )
    max_latency_p95_ratio: StrictFloat | None = Field(
        default=None, gt=0, description="candidate p95 over the serving model's p95, at most"
    )
    max_error_rate: StrictFloat = Field(default=0.01, ge=0, le=1)


class Preconditions(Body):
    """What must hold on the device before it downloads."""

    min_free_disk_mb: StrictFloat | None = Field(default=None, ge=0)
    min_battery_percent: StrictFloat | None = Field(default=None, ge=0, le=100)
    allow_metered: StrictBool = True
    window_utc: tuple[str, str] | None = Field(
        default=None, description="allowed download window, HH:MM to HH:MM (UTC)"
    )


class DesiredState(Body):
    """The twin's desired side."""

    model: DesiredModel | None = None
    trial: TrialPolicy = TrialPolicy()
    shadow: ShadowPolicy | None = Field(
        default=None, description="shadow the model before activating it (null: activate at once)"
    )
    preconditions: Preconditions = Preconditions()
    config: JsonObject = Field(default_factory=dict)
    rollout: str | None = Field(default=None, description="rollout that set this, if any")


def desired_etag(state: DesiredState | None) -> str:
    """A stable tag of a desired state: equal states, equal tags."""
    payload = json.dumps(
        state.model_dump(mode="json") if state else None, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class SlotReport(Body):
    name: Literal["a", "b"]
    model: Name | None = None
    version: Name | None = None
    variant: Name | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    verified: StrictBool = False


class ReportedState(Body):
    """The twin's reported side: what the device actually has and does."""

    agent_state: State
    active_slot: Literal["a", "b"] | None = None
    slots: list[SlotReport] = Field(default_factory=list, max_length=2)
    model: Name | None = None
    version: Name | None = None
    firmware: str | None = Field(default=None, max_length=64)
    agent_version: str | None = Field(default=None, max_length=64)
    attributes: Attributes = Field(default_factory=dict)
    last_error: str | None = Field(default=None, max_length=2000)
    trial_restarts: StrictInt | None = Field(
        default=None,
        ge=0,
        le=100,
        description="restarts counted against the trial in progress (null: no trial)",
    )


class DeviceEvent(Body):
    """One update-state transition, numbered by the device."""

    seq: StrictInt = Field(ge=1, le=MAX_SEQ, description="per-device sequence number")
    kind: Literal["transition", "info", "error"] = "transition"
    from_state: State | None = None
    to_state: State | None = None
    reason: Annotated[str, Field(min_length=1, max_length=64)]
    model: Name | None = None
    version: Name | None = None
    at: Timestamp
    details: JsonObject = Field(default_factory=dict)


class EventBatch(Body):
    events: list[DeviceEvent] = Field(min_length=1, max_length=500)


class EventsAccepted(Body):
    accepted: StrictInt = Field(description="events stored now")
    duplicates: StrictInt = Field(description="events already stored (same sequence number)")
    last_seq: StrictInt = Field(description="highest sequence number stored for this device")


#: Bounds no device reaches, so that sums over a fleet and a day stay finite numbers
#: (a sum that overflows to infinity could not be stored as JSON).
MAX_MB = 1e12  # a petabyte
# Counters stay exact as JSON numbers read into doubles. 2**53 - 1, not 2**53: a client
# (or an OpenAPI validator) comparing as doubles reads 2**53 + 1 as 2**53, within it.
MAX_COUNT = 2**53 - 1


class HealthSample(Body):
    cpu_percent: StrictFloat | None = Field(
        default=None, ge=0, le=100_000, description="percent of one core, summed over cores"
    )
    ram_percent: StrictFloat | None = Field(default=None, ge=0, le=100)
    ram_used_mb: StrictFloat | None = Field(default=None, ge=0, le=MAX_MB)
    rss_mb: StrictFloat | None = Field(default=None, ge=0, le=MAX_MB)
    disk_free_mb: StrictFloat | None = Field(default=None, ge=0, le=MAX_MB)
    temperature_c: StrictFloat | None = Field(default=None, ge=-273.15, le=10_000)


Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
Counts = Annotated[list[Count], Field(max_length=256)]

#: Longest quantile summary text accepted. A device's summary holds at most its
#: ``sketch_rows`` values (24 by default: ~180 characters; the agent's limit of 4,096:
#: under 22,000 characters of base64).
MAX_SKETCH_TEXT = 32 * 1024
#: Latest epoch second accepted for a summary period (the year 5138: no clock reaches it,
#: and it keeps the number exact as a double).
MAX_EPOCH_S = 1e11


def _decodes(text: str) -> str:
    """A quantile summary's text as sent, once it decodes (malformed: refused, naming why)."""
    try:
        QuantileSummary.from_text(text)
    except SummaryError as exc:
        raise ValueError(f"not a quantile summary: {exc.message}") from None
    return text


SketchText = Annotated[str, Field(max_length=MAX_SKETCH_TEXT), AfterValidator(_decodes)]
EpochSeconds = Annotated[StrictFloat, Field(ge=0, le=MAX_EPOCH_S)]


class ModelMetrics(Body):
    """Mergeable per-model counters over the sample's interval."""

    model: Name
    version: Name
    inferences: Count = 0
    restarts: Count = Field(
        default=0,
        description=(
            "unclean restarts of the device (power loss, a crash) while this version served, "
            "in the interval; a clean stop does not count"
        ),
    )
    errors: dict[Annotated[str, Field(max_length=64)], Count] = Field(
        default_factory=dict, max_length=32
    )
    latency_counts: Counts = Field(default_factory=list)
    confidence_counts: Counts = Field(default_factory=list)
    class_counts: Counts = Field(default_factory=list)
    feature_counts: dict[Annotated[str, Field(max_length=128)], Counts] = Field(
        default_factory=dict,
        max_length=4096,
        description=(
            "input feature histograms on the reference profile's bins, over the summary "
            "period (period_start to period_end; sent once, in the sample that closes it)"
        ),
    )
    sketches: dict[Annotated[str, Field(max_length=128)], SketchText] = Field(
        default_factory=dict,
        max_length=4096,
        description=(
            "quantile summaries of the summary period (feature name, or 'confidence' for "
            "top-1 confidence, to QuantileSummary.to_text(): base64 of a KLL sketch); each "
            "must decode, or the sample is refused naming the feature"
        ),
    )
    sketch_rows: Count = Field(
        default=0, description="input rows (a uniform sample of the period's) behind sketches"
    )
    period_start: EpochSeconds | None = Field(
        default=None, description="when the summary period began (epoch seconds)"
    )
    period_end: EpochSeconds | None = Field(
        default=None, description="when the summary period ended (epoch seconds)"
    )

    @model_validator(mode="after")
    def _period(self) -> ModelMetrics:
        if (self.period_start is None) != (self.period_end is None):
            raise ValueError("period_start and period_end come together (or neither)")
        if self.period_start is not None and self.period_end is not None:
            if self.period_end < self.period_start:
                raise ValueError(
                    f"period_end ({self.period_end}) is before period_start ({self.period_start})"
                )
        elif self.sketches:
            raise ValueError("sketches need the period they cover: period_start and period_end")
        return self


class TelemetrySample(Body):
    at: Timestamp
    health: HealthSample | None = None
    models: list[ModelMetrics] = Field(default_factory=list, max_length=8)


class TelemetryBatch(Body):
    samples: list[TelemetrySample] = Field(min_length=1, max_length=1000)


class TelemetryAccepted(Body):
    samples: StrictInt
    buckets: StrictInt = Field(description="time buckets the samples were merged into")


class DeviceView(BaseModel):
    """A device as operators see it: identity, twin and liveness (API and CLI)."""

    device_id: str
    group: str | None
    hardware: str | None
    firmware: str | None
    attributes: dict[str, Any]
    enrolled_at: datetime
    desired: dict[str, Any] | None
    desired_etag: str
    reported: dict[str, Any] | None
    reported_at: datetime | None
    model: str | None
    version: str | None
    agent_state: str | None
    last_seen_at: datetime | None
    online: bool
    poll_interval_s: int

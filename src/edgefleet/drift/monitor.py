"""Drift monitors: what to watch on a model, written as configuration (YAML or JSON).

A monitor names the model (and optionally one version), the features and outputs to
score, the statistics with their practical-size thresholds, the look window, the
reference, the device attributes to segment by, the false-alarm rate the monitor may
spend, and when alarms resolve themselves or recommend retraining. Everything here is
validation and defaults; every problem names its field (``statistics.psi.threshold:
Input should be greater than 0``). The service stores each applied monitor as a new
version and tells changes apart by :meth:`Monitor.digest`::

    monitor = load_monitor('''
    model: digits
    statistics:
      psi: {threshold: 0.25}
      ks: {}                  # on, at its default threshold (0.1)
    window: 1h
    segments: [site, hw]
    false_alarms: {rate: 0.01, per: 7d}
    retraining: {min_features: 5, for: 6h}
    ''')
    monitor.thresholds()   # {"psi": 0.25, "ks": 0.1}
    monitor.look_alpha()   # 0.01 * 1h / 7d

Durations are a whole number and a unit: ``90s``, ``30m``, ``1h``, ``7d``, ``2w``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Final, Literal, Self

import yaml
from pydantic import (
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StrictFloat,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from edgefleet.drift.calibrate import CalibrationError, look_alpha
from edgefleet.drift.errors import MonitorError
from edgefleet.registry.domain import NAME_PATTERN
from edgefleet.registry.errors import InvalidVersionError
from edgefleet.registry.semver import SEMVER_SCHEMA, parse_version
from edgefleet.stdjson import Body

#: Practical-size thresholds of the statistics a monitor may turn on. PSI's 0.2 is the
#: industry's "significant shift"; Jensen-Shannon and KS are distances in [0, 1];
#: Wasserstein is in reference standard deviations. Chi-square's value grows with the
#: sample, so its threshold is a Jensen-Shannon distance (its practical size).
DEFAULT_THRESHOLDS: Final[Mapping[str, float]] = {
    "psi": 0.2,
    "jensen_shannon": 0.1,
    "chi_square": 0.1,
    "ks": 0.1,
    "wasserstein": 0.1,
}
#: Statistics on when a monitor does not list any.
DEFAULT_STATISTICS: Final = ("psi", "jensen_shannon", "ks", "wasserstein")
#: Outputs a monitor may watch besides the input features: top-1 confidence and the mix
#: of predicted classes.
OUTPUTS: Final = ("confidence", "classes")
#: The shortest look window; a window is a whole number of seconds. Looks read the
#: devices' summary periods by the time each ended, not telemetry buckets, so any
#: length works, but a window shorter than the devices' summary period (an hour by
#: default) sees summaries only in the windows their periods close in: most of its
#: looks find no data ("insufficient data").
MIN_WINDOW: Final = timedelta(seconds=10)
MAX_WINDOW: Final = timedelta(days=31)
#: At most this many features by name (the telemetry's limit on sketches per sample).
MAX_FEATURES: Final = 4096
MAX_SEGMENTS: Final = 16
#: The segment every look scores.
FLEET_SEGMENT: Final = "all"

_DURATION = re.compile(r"^([0-9]{1,9})(s|m|h|d|w)$")
_UNITS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
# Canonical text uses days at most: "7d" reads better than "1w".
_CANONICAL_UNITS: Final = ("d", "h", "m", "s")
_ATTRIBUTE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$"
_ATTRIBUTE = re.compile(_ATTRIBUTE_PATTERN)


#: The longest duration accepted (far beyond any window or period that makes sense,
#: and well inside what ``timedelta`` can hold).
_LONGEST_S = 3650 * 86400


def parse_duration(text: str) -> timedelta:
    """``"30m"`` -> 30 minutes: a whole number and one of s, m, h, d, w.

    Raises:
        ValueError: ``text`` is not such a duration, or is zero.
    """
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a whole number and a unit (s, m, h, d, w), "
            'such as "30m", "1h" or "7d"'
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds == 0:
        raise ValueError("a duration must be longer than zero")
    if seconds > _LONGEST_S:
        raise ValueError(f"{text!r} is too long a duration: at most 3650d (ten years)")
    return timedelta(seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """The canonical text of a duration: its largest exact unit up to days (``3600 s``
    -> ``"1h"``, two weeks -> ``"14d"``)."""
    seconds = int(duration.total_seconds())
    for unit in _CANONICAL_UNITS:
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    raise AssertionError("unreachable: 1 s divides every whole number of seconds")


def _duration_input(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        if value <= timedelta(0) or value.total_seconds() % 1:
            raise ValueError("a duration is a positive whole number of seconds")
        return value
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_input),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DURATION.pattern,
            "examples": ["30m", "1h", "7d"],
            "description": "a whole number and a unit: s, m, h, d or w",
        }
    ),
]


def _duration_default(text: str, description: str | None = None) -> Any:
    """A duration field's default, shown as written (not ISO 8601) in the JSON schema."""
    return Field(
        default=parse_duration(text),
        description=description,
        json_schema_extra={"default": text},
    )


def _version_input(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f'write the version as text in quotes, e.g. "{value}.0" (got a number)')
    if isinstance(value, str):
        try:
            return str(parse_version(value))
        except InvalidVersionError as exc:
            raise ValueError(exc.message) from exc
    return value


VersionField = Annotated[
    str, BeforeValidator(_version_input), Field(max_length=128, json_schema_extra=SEMVER_SCHEMA)
]


class StatisticSpec(Body):
    """One statistic turned on, with its practical-size threshold: an alarm needs the
    statistic at or above it (besides calibrated evidence)."""

    threshold: StrictFloat = Field(gt=0, description="practical size that counts as drift")


class DistanceSpec(Body):
    """A statistic that is a distance in [0, 1] (Jensen-Shannon, KS; chi-square's
    threshold is a Jensen-Shannon distance)."""

    threshold: StrictFloat = Field(gt=0, le=1, description="a distance in (0, 1]")


class Statistics(Body):
    """The statistics a monitor scores; a statistic left out is off. ``psi: {}`` (or
    ``psi:``) turns one on at its default threshold (:data:`DEFAULT_THRESHOLDS`)."""

    psi: StatisticSpec | None = Field(default=None, description="population stability index")
    jensen_shannon: DistanceSpec | None = Field(
        default=None, description="Jensen-Shannon distance, base 2"
    )
    chi_square: DistanceSpec | None = Field(
        default=None,
        description="chi-square homogeneity test; threshold on the Jensen-Shannon distance",
    )
    ks: DistanceSpec | None = Field(
        default=None, description="Kolmogorov-Smirnov distance (from quantile summaries)"
    )
    wasserstein: StatisticSpec | None = Field(
        default=None, description="Wasserstein-1 distance in reference standard deviations"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_thresholds(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for name, value in data.items():
            if name not in DEFAULT_THRESHOLDS:
                continue  # extra="forbid" names it
            if value is None:
                filled[name] = {"threshold": DEFAULT_THRESHOLDS[name]}
            elif isinstance(value, Mapping) and "threshold" not in value:
                filled[name] = {**value, "threshold": DEFAULT_THRESHOLDS[name]}
        return filled

    @model_validator(mode="after")
    def _some(self) -> Self:
        if not self.thresholds():
            raise ValueError("turn on at least one statistic: " + ", ".join(DEFAULT_THRESHOLDS))
        return self

    @model_serializer(mode="wrap")
    def _on_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A statistic that is off is left out, as it is written (null would mean "on").
        return {name: spec for name, spec in handler(self).items() if spec is not None}

    def thresholds(self) -> dict[str, float]:
        """Each statistic that is on, with its threshold."""
        return {
            name: spec.threshold
            for name in DEFAULT_THRESHOLDS
            if (spec := getattr(self, name)) is not None
        }


def _default_statistics() -> Statistics:
    return Statistics.model_validate(dict.fromkeys(DEFAULT_STATISTICS))


class TimeRange(Body):
    start: AwareDatetime = Field(description="ISO 8601 with a time zone, e.g. 2024-05-01T00:00Z")
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("the reference window ends after it starts")
        return self


_REFERENCE_SCHEMA = {
    "anyOf": [
        {"const": "profile", "description": "the version's reference profile"},
        {
            "type": "object",
            "properties": {
                "window": {
                    "type": "object",
                    "properties": {
                        "start": {"type": "string", "format": "date-time"},
                        "end": {"type": "string", "format": "date-time"},
                    },
                    "required": ["start", "end"],
                    "additionalProperties": False,
                }
            },
            "required": ["window"],
            "additionalProperties": False,
        },
    ]
}


class Reference(Body):
    """What the current window is compared with: ``profile`` (the version's reference
    profile, the default) or ``{window: {start, end}}`` (an earlier window of the
    fleet's own telemetry)."""

    window: TimeRange | None = None

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data: Any) -> Any:
        if data == "profile":
            return {}
        if isinstance(data, str):
            raise ValueError(f'{data!r}: write "profile" or {{window: {{start: ..., end: ...}}}}')
        return data

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> Any:
        return "profile" if self.window is None else handler(self)

    @property
    def is_profile(self) -> bool:
        return self.window is None


class Segment(Body):
    """Segments of the fleet scored on their own (besides "all"): a device attribute
    (``site``: one segment per value seen, named ``site=<value>``), or a cohort given
    by a targeting query with a name (``{query: "region:eu-west AND hw:rev2", name:
    eu-rev2}``)."""

    attribute: str | None = Field(default=None, pattern=_ATTRIBUTE_PATTERN)
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    name: str | None = Field(default=None, pattern=_ATTRIBUTE_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _attribute(cls, data: Any) -> Any:
        if isinstance(data, str):
            if not _ATTRIBUTE.match(data):
                raise ValueError(
                    f"{data!r} is not a device attribute name (a letter, then letters, "
                    "digits, '_', '-' or '.')"
                )
            return {"attribute": data}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.attribute is not None:
            if self.query is not None or self.name is not None:
                raise ValueError("a segment is an attribute name or {query, name}, not both")
        elif self.query is None or self.name is None:
            raise ValueError("a query segment needs both query and name")
        elif self.name == FLEET_SEGMENT:
            raise ValueError(f"{FLEET_SEGMENT!r} is the whole fleet's segment: name it otherwise")
        return self

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> Any:
        if self.attribute is not None:
            return self.attribute
        return {"query": self.query, "name": self.name}

    @property
    def label(self) -> str:
        """The attribute, or the query segment's name (unique within a monitor)."""
        return self.attribute if self.attribute is not None else str(self.name)


_SEGMENT_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": _ATTRIBUTE_PATTERN, "description": "a device attribute"},
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 4096},
                "name": {"type": "string", "pattern": _ATTRIBUTE_PATTERN},
            },
            "required": ["query", "name"],
            "additionalProperties": False,
        },
    ]
}


class FalseAlarms(Body):
    """The false alarms a monitor may raise when nothing drifts: ``rate`` per ``per``
    (expected count), spent evenly over the looks."""

    rate: StrictFloat = Field(default=0.01, gt=0, lt=1)
    per: Duration = _duration_default("7d")


class RetrainingRule(Body):
    """Recommend retraining when at least ``min_features`` features have each been in
    drift (an alarm open on them, in any segment) for at least ``for``."""

    min_features: StrictInt = Field(default=5, ge=1, le=MAX_FEATURES)
    for_: Duration = Field(
        default=timedelta(hours=6), alias="for", json_schema_extra={"default": "6h"}
    )


class Monitor(Body):
    """A drift monitor of one model (one version, or every version in production)."""

    model: str = Field(pattern=NAME_PATTERN, description="the model's name")
    version: VersionField | None = Field(
        default=None, description="one version; default: every version in production"
    )
    features: Literal["all"] | tuple[str, ...] = Field(
        default="all", description='"all", or profile feature names such as "input[12]"'
    )
    outputs: tuple[Literal["confidence", "classes"], ...] = Field(default=OUTPUTS)
    statistics: Statistics = Field(default_factory=_default_statistics)
    window: Duration = _duration_default("1h", "tumbling look window")
    reference: Annotated[Reference, WithJsonSchema(_REFERENCE_SCHEMA)] = Field(
        default_factory=Reference
    )
    segments: tuple[Annotated[Segment, WithJsonSchema(_SEGMENT_SCHEMA)], ...] = Field(
        default=(), max_length=MAX_SEGMENTS, description='besides "all", always scored'
    )
    false_alarms: FalseAlarms = Field(default_factory=FalseAlarms)
    min_devices: StrictInt = Field(
        default=3, ge=2, description='fewer devices in a segment: "insufficient data"'
    )
    min_rows: StrictInt = Field(default=200, ge=1)
    resolve_after: StrictInt = Field(
        default=3, ge=1, le=1000, description="looks without the finding before an alarm resolves"
    )
    retraining: RetrainingRule | None = Field(
        default=None, description="when to send retraining_recommended; default: never"
    )

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        if value == "all":
            return value
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError('write "all" or a list of feature names')
        if not value:
            raise ValueError('an empty list watches nothing: list feature names or write "all"')
        if len(value) > MAX_FEATURES:
            raise ValueError(f'at most {MAX_FEATURES} features by name (or "all")')
        for name in value:
            if not isinstance(name, str) or not name or len(name) > 256:
                raise ValueError(f"{name!r} is not a feature name (text of 1 to 256 characters)")
        _unique(value, "feature")
        return tuple(value)

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs(cls, value: Any) -> Any:
        # Only names can repeat; anything else is named by the Literal check after this.
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            _unique(value, "output")
        return value

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: tuple[Segment, ...]) -> tuple[Segment, ...]:
        _unique([segment.label for segment in value], "segment")
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if value < MIN_WINDOW or value % timedelta(seconds=1) or value > MAX_WINDOW:
            raise ValueError(
                f"a window is a whole number of seconds from {format_duration(MIN_WINDOW)} "
                f"up to {format_duration(MAX_WINDOW)}, got {format_duration(value)}"
            )
        return value

    @model_validator(mode="after")
    def _spendable(self) -> Self:
        try:
            self.look_alpha()
        except CalibrationError as exc:
            rate, per = self.false_alarms.rate, format_duration(self.false_alarms.per)
            raise ValueError(
                f"false_alarms: {rate} per {per} would give each {format_duration(self.window)} "
                "look a false-alarm probability of 1 or more: lower the rate, lengthen "
                "false_alarms.per or shorten the window"
            ) from exc
        return self

    def thresholds(self) -> dict[str, float]:
        """Each statistic that is on, with its practical-size threshold."""
        return self.statistics.thresholds()

    def look_alpha(self) -> float:
        """The false-alarm probability each look may spend (see
        :func:`edgefleet.drift.calibrate.look_alpha`)."""
        return look_alpha(
            self.false_alarms.rate,
            self.window.total_seconds(),
            self.false_alarms.per.total_seconds(),
        )

    def canonical(self) -> dict[str, Any]:
        """The monitor as JSON with every default filled in and durations, lists of
        names and segments in one order: equal for monitors that mean the same."""
        data = self.model_dump(mode="json", by_alias=True)
        if isinstance(data["features"], list):
            data["features"] = sorted(data["features"])
        data["outputs"] = sorted(data["outputs"])
        data["segments"] = sorted(
            data["segments"], key=lambda s: s if isinstance(s, str) else s["name"]
        )
        return data

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical form: changes when, and only when, the monitor
        would behave differently."""
        text = json.dumps(
            self.canonical(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _unique(values: Any, what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)


def load_monitor(source: str | Mapping[str, Any] | Monitor) -> Monitor:
    """A monitor from YAML (or JSON) text or from a parsed mapping.

    Raises:
        MonitorError: the text is not YAML, not a mapping, or a field is invalid; the
            message lists every problem as ``field.path: message`` and
            ``details["problems"]`` has them as ``{"field", "message"}``.
    """
    if isinstance(source, Monitor):
        return source
    data: Any = source
    if isinstance(source, str):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise MonitorError(
                f"the monitor is not valid YAML: {exc}", details={"problems": []}
            ) from exc
    if not isinstance(data, Mapping):
        raise MonitorError(
            "a monitor is a mapping of fields (model, statistics, window, ...), got "
            f"{type(data).__name__}",
            details={"problems": []},
        )
    try:
        return Monitor.model_validate(dict(data))
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        listed = "; ".join(
            f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems
        )
        raise MonitorError(
            f"the monitor is invalid: {listed}", details={"problems": problems}
        ) from exc


def _problem(error: Any) -> dict[str, str]:
    field = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (check its spelling)"
    return {"field": field, "message": message}

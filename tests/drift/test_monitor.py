"""Tests of drift monitors: validation naming the field, defaults, durations, canonical
form and digest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.drift.errors import DriftError, MonitorError
from edgefleet.drift.monitor import (
    DEFAULT_THRESHOLDS,
    MIN_WINDOW,
    Monitor,
    format_duration,
    load_monitor,
    parse_duration,
)

DESIGN_EXAMPLE = """
model: digits                 # required
version: "1.1.0"              # optional: default every version in production
features: all                 # or a list of feature names
outputs: [confidence, classes]
statistics:                   # per statistic: threshold (practical size); omitted = off
  psi: {threshold: 0.2}
  jensen_shannon: {threshold: 0.1}
  ks: {threshold: 0.1}
  wasserstein: {threshold: 0.1}
window: 1h                    # tumbling look window (durations: 30m, 1h, 1d)
reference: profile            # or {window: {start: ISO, end: ISO}}
segments: [site, hw]          # device attributes to segment by
false_alarms: {rate: 0.01, per: 7d}
min_devices: 3
min_rows: 200
resolve_after: 3
retraining: {min_features: 5, for: 6h}
"""


def test_the_designs_example_loads() -> None:
    monitor = load_monitor(DESIGN_EXAMPLE)
    assert monitor.model == "digits"
    assert monitor.version == "1.1.0"
    assert monitor.features == "all"
    assert monitor.thresholds() == {
        "psi": 0.2,
        "jensen_shannon": 0.1,
        "ks": 0.1,
        "wasserstein": 0.1,
    }
    assert monitor.window == timedelta(hours=1)
    assert monitor.reference.is_profile
    assert [segment.label for segment in monitor.segments] == ["site", "hw"]
    assert monitor.false_alarms.per == timedelta(days=7)
    assert monitor.look_alpha() == pytest.approx(0.01 / 168)
    assert monitor.retraining is not None
    assert monitor.retraining.min_features == 5
    assert monitor.retraining.for_ == timedelta(hours=6)


def test_defaults_of_a_minimal_monitor() -> None:
    monitor = load_monitor({"model": "digits"})
    assert monitor.version is None
    assert monitor.features == "all"
    assert monitor.outputs == ("confidence", "classes")
    assert monitor.thresholds() == {
        "psi": 0.2,
        "jensen_shannon": 0.1,
        "ks": 0.1,
        "wasserstein": 0.1,
    }
    assert monitor.window == timedelta(hours=1)
    assert monitor.reference.is_profile
    assert monitor.segments == ()
    assert (monitor.false_alarms.rate, monitor.false_alarms.per) == (0.01, timedelta(days=7))
    assert (monitor.min_devices, monitor.min_rows, monitor.resolve_after) == (3, 200, 3)
    assert monitor.retraining is None


def test_a_listed_statistic_is_on_and_an_omitted_one_off() -> None:
    monitor = load_monitor(
        "model: digits\nstatistics:\n  psi: {threshold: 0.3}\n  ks: {}\n  chi_square:\n"
    )
    assert monitor.thresholds() == {
        "psi": 0.3,
        "chi_square": DEFAULT_THRESHOLDS["chi_square"],
        "ks": 0.1,
    }
    assert monitor.statistics.ks is not None
    assert monitor.statistics.ks.threshold == 0.1
    assert monitor.statistics.wasserstein is None


def test_query_segments_and_a_reference_window() -> None:
    monitor = load_monitor(
        """
model: digits
segments: [site, {query: "region:eu-west AND hw:rev2", name: eu-rev2}]
reference: {window: {start: 2024-05-01T00:00:00Z, end: "2024-05-08T00:00:00+02:00"}}
"""
    )
    assert [segment.label for segment in monitor.segments] == ["site", "eu-rev2"]
    assert monitor.segments[1].query == "region:eu-west AND hw:rev2"
    window = monitor.reference.window
    assert window is not None
    assert window.start == datetime(2024, 5, 1, tzinfo=UTC)
    assert window.end == datetime(2024, 5, 7, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("statistics: {psi: {threshold: 0}}", "statistics.psi.threshold", "greater than 0"),
        ("statistics: {psi: {threshold: -1.5}}", "statistics.psi.threshold", "greater than 0"),
        ("statistics: {ks: {threshold: 1.5}}", "statistics.ks.threshold", "less than or equal"),
        (
            "statistics: {jensen_shannon: {threshold: '0.1'}}",
            "statistics.jensen_shannon.threshold",
            "number",
        ),
        ("statistics: {psi: {threshold: 0.2, warn: 0.1}}", "statistics.psi.warn", "unknown field"),
        ("statistics: {kl: {}}", "statistics.kl", "unknown field"),
        ("statistics: {}", "statistics", "at least one statistic"),
        ("window: 9s", "window", "from 10s"),
        ("window: 32d", "window", "up to 31d"),
        ("window: 1x", "window", "not a duration"),
        ("window: 3600", "window", "not a duration"),
        ("window: 0m", "window", "longer than zero"),
        ("version: 1.1", "version", "in quotes"),
        ("version: 1.x", "version", "not a semantic version"),
        ("model: Digits", "model", "pattern"),
        ("features: []", "features", "empty list"),
        ("features: some", "features", '"all" or a list'),
        ("features: [a, b, a]", "features", "'a' is listed twice"),
        ("features: ['']", "features", "not a feature name"),
        ("outputs: [confidence, logits]", "outputs.1", "'confidence' or 'classes'"),
        ("outputs: [classes, classes]", "outputs", "listed twice"),
        ("reference: profil", "reference", 'write "profile"'),
        ("reference: {window: {start: 2024-05-01T00:00:00Z}}", "reference.window.end", "required"),
        (
            "reference: {window: {start: 2024-05-01T00:00:00, end: 2024-05-02T00:00:00Z}}",
            "reference.window.start",
            "timezone",
        ),
        (
            "reference: {window: {start: 2024-05-02T00:00:00Z, end: 2024-05-01T00:00:00Z}}",
            "reference.window",
            "ends after it starts",
        ),
        ("segments: [site, site]", "segments", "'site' is listed twice"),
        ("segments: ['plant 7']", "segments.0", "not a device attribute name"),
        ("segments: [site, {query: 'hw:rev2'}]", "segments.1", "needs both query and name"),
        ("segments: [{query: 'hw:rev2', name: all}]", "segments.0", "whole fleet"),
        ("segments: [{attribute: site, query: 'hw:rev2', name: x}]", "segments.0", "not both"),
        ("false_alarms: {rate: 1.5}", "false_alarms.rate", "less than 1"),
        ("false_alarms: {per: 1y}", "false_alarms.per", "not a duration"),
        ("false_alarms: {rate: 0.5, per: 1h}\nwindow: 1d", "", "false_alarms: 0.5 per 1h"),
        ("min_devices: 1", "min_devices", "greater than or equal to 2"),
        ("min_devices: '3'", "min_devices", "valid integer"),
        ("min_rows: 0", "min_rows", "greater than or equal to 1"),
        ("resolve_after: 0", "resolve_after", "greater than or equal to 1"),
        ("retraining: {min_features: 0}", "retraining.min_features", "greater than or equal"),
        ("retraining: {for: soon}", "retraining.for", "not a duration"),
        ("retraining: {for_: 6h}", "retraining.for_", "unknown field"),
        ("windw: 1h", "windw", "unknown field"),
    ],
)
def test_every_problem_names_its_field(text: str, field: str, message: str) -> None:
    with pytest.raises(MonitorError) as caught:
        load_monitor("model: digits\n" + text)
    problems = caught.value.details["problems"]
    assert [p["field"] for p in problems] == [field], problems
    assert message in problems[0]["message"]
    prefix = f"{field}: " if field else ""
    assert f"{prefix}{problems[0]['message']}" in caught.value.message


def test_all_problems_are_listed_together_and_a_missing_model_is_named() -> None:
    with pytest.raises(MonitorError) as caught:
        load_monitor({"window": "5s", "min_rows": 0})
    fields = {p["field"] for p in caught.value.details["problems"]}
    assert fields == {"model", "window", "min_rows"}
    assert "model: Field required" in caught.value.message
    assert isinstance(caught.value, DriftError)
    assert caught.value.code == "drift_monitor_invalid"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("model: [digits", "not valid YAML"),
        ("- model: digits", "a mapping of fields"),
        ("", "a mapping of fields"),
    ],
)
def test_text_that_is_not_a_monitor(source: str, message: str) -> None:
    with pytest.raises(MonitorError, match=message):
        load_monitor(source)


def test_json_text_is_yaml_too() -> None:
    monitor = load_monitor(json.dumps({"model": "digits", "window": "30m"}))
    assert monitor.window == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("90s", 90, "90s"),
        ("30m", 1800, "30m"),
        ("60m", 3600, "1h"),
        ("90m", 5400, "90m"),
        ("1d", 86400, "1d"),
        ("2w", 1_209_600, "14d"),
        (" 7d ", 604_800, "7d"),
    ],
)
def test_durations(text: str, seconds: int, canonical: str) -> None:
    duration = parse_duration(text)
    assert duration.total_seconds() == seconds
    assert format_duration(duration) == canonical
    assert parse_duration(format_duration(duration)) == duration


@pytest.mark.parametrize("text", ["", "1", "h", "1.5h", "-1h", "1 h", "1H", "1y", "0s"])
def test_malformed_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_windows_are_not_tied_to_the_telemetry_bucket() -> None:
    # Looks read summary periods by their end, so a window need not hold whole buckets.
    assert load_monitor({"model": "digits", "window": "10s"}).window == MIN_WINDOW
    assert load_monitor({"model": "digits", "window": "7m"}).window == timedelta(minutes=7)


def test_canonical_form_is_json_and_loads_back_to_itself() -> None:
    monitor = load_monitor(
        DESIGN_EXAMPLE
        + "\nsegments: [site, {query: 'hw:rev2', name: rev2}]"
        + "\nreference: {window: {start: 2024-05-01T00:00:00Z, end: 2024-05-02T00:00:00Z}}"
    )
    canonical = monitor.canonical()
    assert canonical["window"] == "1h"
    assert canonical["false_alarms"] == {"rate": 0.01, "per": "7d"}
    assert canonical["retraining"] == {"min_features": 5, "for": "6h"}
    assert canonical["reference"] == {
        "window": {"start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"}
    }
    assert canonical["segments"] == [{"query": "hw:rev2", "name": "rev2"}, "site"]
    assert sorted(canonical["statistics"]) == ["jensen_shannon", "ks", "psi", "wasserstein"]
    again = load_monitor(json.loads(json.dumps(canonical)))
    assert again.canonical() == canonical
    assert again.digest() == monitor.digest()


def test_digest_is_equal_for_monitors_that_mean_the_same() -> None:
    spelled_out = load_monitor(
        """
model: digits
features: ["input[2]", "input[1]"]
outputs: [classes, confidence]
statistics: {psi: {threshold: 0.2}, ks: {threshold: 0.1}}
window: 60m
segments: [hw, site]
false_alarms: {rate: 0.01, per: 1w}
min_devices: 3
"""
    )
    short = load_monitor(
        """
model: digits
features: ["input[1]", "input[2]"]
statistics: {psi: {}, ks: }
window: 1h
segments: [site, hw]
"""
    )
    assert spelled_out.digest() == short.digest()
    assert len(short.digest()) == 64


BASE = {"model": "digits", "features": ["input[1]", "input[2]"], "statistics": {"psi": {}}}


@pytest.mark.parametrize(
    "change",
    [
        {"statistics": {"psi": {"threshold": 0.21}}},
        {"statistics": {"psi": {}, "ks": {}}},
        {"features": ["input[1]"]},
        {"features": "all"},
        {"window": "2h"},
        {"resolve_after": 4},
        {"retraining": {}},
        {"version": "1.0.0"},
        {"segments": ["site"]},
        {"false_alarms": {"rate": 0.02}},
        {"reference": {"window": {"start": "2024-05-01T00:00Z", "end": "2024-05-02T00:00Z"}}},
    ],
)
def test_digest_changes_with_behaviour(change: dict[str, object]) -> None:
    assert load_monitor({**BASE, **change}).digest() != load_monitor(BASE).digest()


def test_json_schema_documents_durations_and_the_union_fields() -> None:
    schema = Monitor.model_json_schema()
    window = schema["properties"]["window"]
    assert (window["type"], window["default"]) == ("string", "1h")
    reference = schema["properties"]["reference"]["anyOf"]
    assert {"const": "profile", "description": "the version's reference profile"} in reference
    segments = schema["properties"]["segments"]["items"]["anyOf"]
    assert segments[0]["type"] == "string"
    assert segments[1]["required"] == ["query", "name"]


def test_a_monitor_passes_through_load_monitor() -> None:
    monitor = load_monitor("model: digits")
    assert load_monitor(monitor) is monitor


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("window", "999999999w", "too long a duration"),
        ("outputs", [{}], "outputs"),
    ],
)
def test_absurd_values_are_refused_with_the_field_not_a_crash(field, value, expected):
    with pytest.raises(MonitorError, match=expected):
        load_monitor({"model": "digits", field: value})

"""Merged telemetry kept in memory as tuples (fleet/telemetry.py ``frozen``): merges
the same, and Python's collector stops tracking it."""

import gc
import json
from datetime import UTC, datetime

from edgefleet.fleet.domain import TelemetrySample
from edgefleet.fleet.telemetry import frozen, merge_buckets, served_seconds, to_buckets

AT = datetime(2026, 12, 3, 12, 1, tzinfo=UTC)


def _bucket(inferences: int) -> dict:
    sample = TelemetrySample.model_validate(
        {
            "at": AT.isoformat(),
            "health": {"cpu_percent": 20.0, "temperature_c": 50.0},
            "models": [
                {
                    "model": "digits",
                    "version": "1.0.0",
                    "inferences": inferences,
                    "errors": {"runtime": 1},
                    "latency_counts": [0, inferences, 2],
                    "class_counts": [inferences, 1],
                    "feature_counts": {"f0": [1, 2, 3]},
                }
            ],
        }
    )
    ((data, _),) = to_buckets([sample]).values()
    return data


def test_frozen_buckets_merge_as_lists_do_and_encode_the_same():
    a, b = _bucket(10), _bucket(5)
    as_lists = merge_buckets(a, b)
    assert merge_buckets(frozen(a), b) == as_lists
    assert merge_buckets(frozen(a), frozen(b)) == as_lists
    assert json.loads(json.dumps(frozen(as_lists))) == as_lists
    assert as_lists["latency_counts"] == [0, 15, 4]
    assert a["latency_counts"] == [0, 10, 2]  # the inputs are left as they were


def test_the_collector_stops_tracking_a_frozen_bucket():
    data = frozen(_bucket(10))
    assert isinstance(data["latency_counts"], tuple)
    assert isinstance(data["feature_counts"]["f0"], tuple)
    gc.collect()  # tuples and dicts of atomic values are untracked when first examined
    assert not gc.is_tracked(data["latency_counts"])
    assert not gc.is_tracked(data["errors"])
    assert gc.is_tracked(_bucket(10)["latency_counts"])  # a list always is


def _serving(at: datetime, restarts: int, *, shadow: bool = False) -> TelemetrySample:
    entry = {"model": "digits", "version": "1.1.0", "inferences": 5, "restarts": restarts}
    other = {"model": "digits", "version": "1.0.0", "inferences": 5}
    return TelemetrySample.model_validate(
        {"at": at.isoformat(), "models": [other, entry] if shadow else [entry, other]}
    )


def test_restarts_add_up_and_the_serving_time_spans_the_samples_that_served():
    samples = [_serving(AT.replace(minute=1, second=s), 1) for s in (0, 30)]
    samples.append(_serving(AT.replace(minute=7), 2))  # the next bucket
    samples.append(_serving(AT.replace(minute=8), 0, shadow=True))  # listed, not serving
    buckets = to_buckets(samples)
    served = [data for (_, _, version), (data, _) in buckets.items() if version == "1.1.0"]
    merged = merge_buckets(frozen(served[0]), served[1])
    assert merged["restarts"] == 4
    assert merged["served_samples"] == 3
    assert merged["served_last"] - merged["served_first"] == 6 * 60
    # three samples over six minutes: each stands for three minutes
    assert served_seconds(merged) == 9 * 60
    assert served_seconds(served[0]) == 60
    assert served_seconds(served[1]) is None  # one sample: no span to go by
    previous = [data for (_, _, version), (data, _) in buckets.items() if version == "1.0.0"]
    assert "restarts" not in previous[0]  # none counted: a bucket stays as small as before

"""Drift summaries in device telemetry: what the device API accepts, and how buckets merge
them (fleet/domain.py ModelMetrics, fleet/telemetry.py; issue #19 part 1)."""

from __future__ import annotations

import base64
import gc
import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edgefleet.drift.sketch import QuantileSummary
from edgefleet.fleet.domain import MAX_SKETCH_TEXT, ModelMetrics, TelemetryBatch, TelemetrySample
from edgefleet.fleet.telemetry import (
    frozen,
    merge_buckets,
    merge_sketches,
    summaries_of,
    to_buckets,
)

AT = datetime(2026, 12, 3, 12, 1, tzinfo=UTC)
START = AT.timestamp() - 3600
#: How the device fast path parses a telemetry body (server/hotpath.py BODY_ROUTES).
FAST_PATH = TypeAdapter(TelemetryBatch)


def _entry(sketches: dict[str, QuantileSummary], **extra) -> dict:
    return {
        "model": "digits",
        "version": "1.1.0",
        "inferences": 10,
        "feature_counts": {"input[3]": [1, 2, 3]},
        "sketches": {name: s.to_text() for name, s in sketches.items()},
        "sketch_rows": 24,
        "period_start": START,
        "period_end": AT.timestamp(),
    } | extra


def _sample(entry: dict, at: datetime = AT) -> TelemetrySample:
    return TelemetrySample.model_validate({"at": at.isoformat(), "models": [entry]})


def _problems(body: dict) -> list[tuple[str, str]]:
    """(location, message) of each refusal, as the fast path meets them."""
    with pytest.raises(ValidationError) as info:
        FAST_PATH.validate_json(json.dumps(body))
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


# -- what the device API accepts ----------------------------------------------------------


def test_a_closed_period_is_accepted_as_the_runtime_sends_it():
    rng = np.random.default_rng(0)
    entry = _entry(
        {
            "input[3]": QuantileSummary.of(rng.normal(size=24)),
            "confidence": QuantileSummary.of(rng.uniform(size=128)),
        }
    )
    batch = FAST_PATH.validate_json(
        json.dumps({"samples": [{"at": AT.isoformat(), "models": [entry]}]})
    )
    metrics = batch.samples[0].models[0]
    assert metrics.sketch_rows == 24 and metrics.period_end == AT.timestamp()
    assert QuantileSummary.from_text(metrics.sketches["confidence"]).n == 128
    # integral epoch seconds are numbers of seconds too
    assert ModelMetrics.model_validate(entry | {"period_start": 1_000, "period_end": 2_000})


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"EFQ\x01garbage").decode(), "truncated"),
        (base64.b64encode(b"hello, world").decode(), "does not start with EFQ"),
    ],
)
def test_a_malformed_sketch_is_refused_naming_the_feature(text, why):
    good = QuantileSummary.of(np.arange(24.0))
    entry = _entry({"input[0]": good}) | {
        "sketches": {"input[0]": good.to_text(), "input[7]": text}
    }
    problems = _problems({"samples": [{"at": AT.isoformat(), "models": [entry]}]})
    ((location, message),) = problems
    assert location == "samples.0.models.0.sketches.input[7]"
    assert message.startswith("Value error, not a quantile summary: ") and why in message


def test_limits_on_sketches_and_periods():
    good = QuantileSummary.of(np.arange(24.0)).to_text()
    base = _entry({})
    cases = {
        f"String should have at most {MAX_SKETCH_TEXT} characters": {
            "sketches": {"input[0]": "A" * (MAX_SKETCH_TEXT + 4)}
        },
        "Dictionary should have at most 4096 items": {
            "sketches": {f"input[{i}]": good for i in range(4097)}
        },
        "greater than or equal to 0": {"sketch_rows": -1},
        "period_end (10.0) is before period_start (20.0)": {
            "period_start": 20.0,
            "period_end": 10.0,
        },
        "period_start and period_end come together": {"period_end": None},
        "sketches need the period they cover": {
            "sketches": {"input[0]": good},
            "period_start": None,
            "period_end": None,
        },
        "finite number": {"period_end": float("inf")},
    }
    for expected, change in cases.items():
        with pytest.raises(ValidationError, match=re.escape(expected)):
            ModelMetrics.model_validate(base | change)
    # a sample of counters alone, as between periods, needs none of it
    assert ModelMetrics.model_validate({"model": "m", "version": "1"}).period_start is None


# -- merging --------------------------------------------------------------------------------


def test_a_closed_period_is_a_summary_of_its_own_and_not_merged_into_the_bucket():
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 5000), rng.normal(1, 2, 3000)
    first = _sample(_entry({"x": QuantileSummary.of(a)}, sketch_rows=5000))
    second = _sample(
        _entry(
            {"x": QuantileSummary.of(b)},
            sketch_rows=3000,
            period_start=START + 600,
            period_end=AT.timestamp() + 60,
        ),
        at=AT.replace(minute=2),
    )
    resent = _sample(_entry({"x": QuantileSummary.of(b[:10])}, sketch_rows=10))
    ((data, count),) = to_buckets([first, second, resent]).values()  # one 5-minute bucket
    assert count == 3 and data["inferences"] == 30
    assert not {"sketches", "feature_counts", "sketch_rows", "period_end"} & set(data)
    summaries = summaries_of([first, second, resent])
    # One per period, the first of a period that is sent twice.
    assert [(s.period_start, s.period_end) for s in summaries] == [
        (START, AT.timestamp()),
        (START + 600, AT.timestamp() + 60),
    ]
    assert [s.data["sketch_rows"] for s in summaries] == [5000, 3000]
    assert all(s.data["feature_counts"] == {"input[3]": [1, 2, 3]} for s in summaries)
    assert QuantileSummary.from_text(summaries[1].data["sketches"]["x"]).n == 3000
    assert (summaries[0].model, summaries[0].version) == ("digits", "1.1.0")


def test_feature_counts_without_a_period_still_add_up_in_the_bucket():
    entry = _entry({}) | {"sketches": {}, "period_start": None, "period_end": None}
    ((data, _),) = to_buckets([_sample(entry), _sample(entry)]).values()
    assert data["feature_counts"] == {"input[3]": [2, 4, 6]}
    assert summaries_of([_sample(entry)]) == []


def _stored_bucket(entry: dict) -> dict:
    """A bucket as stored before summaries had a table of their own."""
    keys = ("feature_counts", "sketches", "sketch_rows", "period_start", "period_end")
    ((data, _),) = to_buckets([_sample(entry)]).values()
    return data | {key: entry[key] for key in keys}


def test_stored_buckets_merge_sketches_per_feature_and_keep_the_span_of_their_periods():
    rng = np.random.default_rng(12)
    values = {name: rng.normal(size=24) for name in ("x", "y", "z")}
    early = _entry({"x": QuantileSummary.of(values["x"]), "y": QuantileSummary.of(values["y"])})
    late = _entry(
        {"x": QuantileSummary.of(values["z"]), "confidence": QuantileSummary.of([0.9])},
        sketch_rows=10,
        period_start=START + 3600,
        period_end=AT.timestamp() + 3600,
    )
    a, b = _stored_bucket(early), _stored_bucket(late)
    merged = merge_buckets(a, b)
    assert (
        merge_buckets(frozen(a), frozen(b))
        == merged
        == merge_buckets(b, a) | {"sketches": merged["sketches"]}
    )
    sketches = {name: QuantileSummary.from_text(text) for name, text in merged["sketches"].items()}
    assert {name: s.n for name, s in sketches.items()} == {"x": 48, "y": 24, "confidence": 1}
    both = np.concatenate([values["x"], values["z"]]).astype(np.float32)
    assert (sketches["x"].min, sketches["x"].max) == (both.min(), both.max())
    assert merged["sketch_rows"] == 34
    assert (merged["period_start"], merged["period_end"]) == (START, AT.timestamp() + 3600)
    assert "sketches_invalid" not in merged
    assert a["sketches"]["x"] == early["sketches"]["x"]  # inputs left as they were


def test_a_frozen_bucket_with_sketches_is_not_tracked_by_the_collector():
    data = _stored_bucket(_entry({"x": QuantileSummary.of([1.0, 2.0])}))
    kept = frozen(data)
    gc.collect()
    assert not gc.is_tracked(kept["sketches"])
    assert json.loads(json.dumps(kept)) == data


def test_a_summary_that_does_not_decode_is_left_out_of_a_merge_and_counted():
    good = QuantileSummary.of(np.arange(10.0)).to_text()
    other = QuantileSummary.of(np.arange(10.0, 20.0)).to_text()
    merged, invalid = merge_sketches(
        {"x": "broken", "y": good, "w": "bad"}, {"x": good, "y": other, "w": "worse"}
    )
    assert invalid == 3
    assert merged["x"] == good and "w" not in merged
    assert QuantileSummary.from_text(merged["y"]).n == 20
    stored = {"inferences": 1, "sketches": {"x": "broken"}, "sketches_invalid": 2}
    bucket = merge_buckets(stored, {"inferences": 2, "sketches": {"x": good}})
    assert bucket["sketches"] == {"x": good} and bucket["sketches_invalid"] == 3


def test_the_largest_summary_an_agent_may_be_configured_to_send_is_accepted():
    """The agent's sketch_rows goes up to 4,096: such a summary is over 16 KiB of text."""
    import numpy as np

    from edgefleet.agent.config import AgentConfig
    from edgefleet.drift.sketch import QuantileSummary

    most = AgentConfig.model_fields["sketch_rows"].metadata
    assert any(getattr(m, "le", None) == 4096 for m in most)
    values = np.random.default_rng(7).normal(size=4096).astype(np.float32)
    text = QuantileSummary.of(values).to_text()
    assert len(text) > 16 * 1024
    metrics = ModelMetrics(
        model="m",
        version="1",
        sketches={"input[0]": text},
        sketch_rows=4096,
        period_start=0.0,
        period_end=60.0,
    )
    assert metrics.sketches["input[0]"] == text

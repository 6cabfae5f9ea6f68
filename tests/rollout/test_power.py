"""Sizing a canary for the regression it must catch (``detect``, issue #21): the
estimate from the baseline's spread, checked against the gate itself on simulated
canaries of that size, and the first wave grown to hold it."""

import numpy as np
import pytest
from pydantic import ValidationError

from edgefleet.rollout.gates import Delivery, DeviceSummary, Evidence, Verdict, evaluate
from edgefleet.rollout.policy import GateSpec, Metric, RolloutSpec
from edgefleet.rollout.power import POWER, size_canary, sized_first_wave

ALPHA = 0.05
CPU = GateSpec(metric=Metric.CPU, max_ratio=1.2, min_samples=5)


def devices(n, mean, *, seed, spread=0.25, kind="gateway"):
    rng = np.random.default_rng(seed)
    values = mean * rng.lognormal(0.0, spread, n)
    return [
        DeviceSummary(f"{kind}-{seed}-{i}", kind, health={"cpu_percent": float(v)})
        for i, v in enumerate(values)
    ]


def failure_rate(n, ratio, baseline, runs=200):
    failed = 0
    for run in range(runs):
        candidate = devices(n, 20.0 * ratio, seed=1000 + run)
        result = evaluate(CPU, Evidence(Delivery(), candidate, baseline), ALPHA, look=1)
        failed += result.verdict is Verdict.FAIL
    return failed / runs


def test_a_canary_of_the_estimated_size_catches_the_regression_about_as_often_as_promised():
    baseline = devices(300, 20.0, seed=1)
    values = {"gateway": [d.health["cpu_percent"] for d in baseline]}
    sizing = size_canary(CPU, 1.4, values, ALPHA, target=2000)
    assert sizing.devices is not None and 5 < sizing.devices < 100
    assert sizing.spread == pytest.approx(0.25, rel=0.15)
    # The gate, on canaries of that size, fails a 1.4x candidate at least about POWER of
    # the time, and a third of them far less often: the size is what the power needs.
    assert failure_rate(sizing.devices, 1.4, baseline) >= POWER - 0.1
    assert failure_rate(max(2, sizing.devices // 3), 1.4, baseline) < POWER - 0.2
    # A milder regression needs more devices; one beyond the target cannot be had.
    assert size_canary(CPU, 1.3, values, ALPHA, target=2000).devices > sizing.devices
    # Segments by attribute share the alpha: a few more devices for the same power.
    split = size_canary(CPU, 1.4, values, ALPHA, target=2000, attribute_segments=6)
    assert split.devices > sizing.devices
    far = size_canary(CPU, 1.21, values, ALPHA, target=200)
    assert far.devices is None and "more devices than the target's 200" in far.note


def test_too_little_baseline_gives_no_estimate():
    sizing = size_canary(CPU, 1.4, {"gateway": [20.0, 21.0]}, ALPHA, target=100)
    assert sizing.devices is None and sizing.note == "too few baseline devices to estimate"


def spec(**changes):
    body = {
        "model": "m",
        "version": "2.0.0",
        "target": "*",
        "waves": [{"percent": 5}, {"percent": 25}, {"percent": 100}],
        "gates": [{"metric": "cpu_percent", "max_ratio": 1.2}],
        "detect": {"cpu_percent": 1.4},
    }
    return RolloutSpec.model_validate(body | changes)


def test_the_first_wave_grows_to_hold_the_canary_but_not_past_the_second():
    values = {"gateway": [d.health["cpu_percent"] for d in devices(300, 20.0, seed=1)]}
    sizing = size_canary(CPU, 1.4, values, ALPHA, target=400)
    grown, found = sized_first_wave(spec(), [sizing], total=400)
    assert grown.waves[0].percent * 4 >= sizing.devices > 20  # 5% of 400 was too few
    assert found["first_wave"].startswith("grown from 5% to")
    assert found["detect"][0]["devices"] == sizing.devices
    small, found = sized_first_wave(spec(), [sizing], total=60)
    assert small.waves[0].percent == 5 and "more than wave 1 may grow to" in found["first_wave"]
    enough, found = sized_first_wave(spec(), [sizing], total=100_000)
    assert enough.waves[0].percent == 5 and "first_wave" not in found


@pytest.mark.parametrize(
    ("detect", "gates", "message"),
    [
        ({"class_distribution": 1.5}, None, "class_distribution is not sized"),
        ({"latency_p95": 1.5}, None, "latency_p95 needs a gate on it with max_ratio"),
        ({"cpu_percent": 1.1}, None, "1.1 is not beyond its gate's max_ratio 1.2"),
        (
            {"cpu_percent": 1.5},
            [{"metric": "cpu_percent", "max_ratio": 1.2, "dry_run": True}],
            "needs a gate on it",
        ),
        ({"cpu_percent": 0.9}, None, "greater than 1"),
    ],
)
def test_detect_is_checked_against_the_gates(detect, gates, message):
    changes = {"detect": detect} | ({"gates": gates} if gates else {})
    with pytest.raises(ValidationError, match=message):
        spec(**changes)

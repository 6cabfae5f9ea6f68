"""Behaviour gates judge each hardware kind as well as the fleet (issue #21): a
regression on one kind fails the gate even when the fleet's average hides it, the
false-alarm budget is split so the gate's alpha still holds, a kind that looks worse
but is not yet significant holds the pass, and every look says the smallest effect it
could have detected."""

from dataclasses import replace

import numpy as np
import pytest

from edgefleet.rollout.gates import (
    Delivery,
    DeviceSummary,
    Evidence,
    Verdict,
    evaluate,
    segment_alpha,
)
from edgefleet.rollout.policy import GateSpec, Metric

ALPHA = 0.05
CPU = GateSpec(metric=Metric.CPU, max_ratio=1.2, min_samples=5)


def devices(n, cpu, *, kind, seed, spread=0.05, errors=0, inferences=1000):
    rng = np.random.default_rng(seed)
    return [
        DeviceSummary(
            f"{kind}-{seed}-{i}",
            kind,
            inferences=inferences,
            errors=errors,
            health={"cpu_percent": float(rng.normal(cpu, cpu * spread))},
        )
        for i in range(n)
    ]


def baseline(seed=1):
    return devices(150, 20.0, kind="gateway", seed=seed) + devices(
        30, 20.0, kind="camera", seed=seed + 1
    )


def test_a_regression_on_one_kind_fails_where_the_fleet_average_hides_it():
    candidate = devices(10, 20.0, kind="gateway", seed=3) + devices(4, 30.0, kind="camera", seed=4)
    result = evaluate(CPU, Evidence(Delivery(), candidate, baseline()), ALPHA, look=1)
    numbers = result.numbers
    assert result.verdict is Verdict.FAIL
    assert numbers["segment"] == "hardware=camera"
    # The fleet's own stratified interval does not exclude the limit: the cameras are
    # 4 of 14 canaries, diluted into the average.
    fleet_margin = 0.2 * numbers["baseline_mean"]
    assert numbers["low"] < fleet_margin
    cameras = {s["segment"]: s for s in numbers["segments"]}["hardware=camera"]
    assert cameras["ratio"] == pytest.approx(1.5, rel=0.05)
    assert cameras["low"] > 0.2 * cameras["baseline_mean"]
    assert cameras["devices"] == 4 and cameras["baseline_devices"] == 30


def test_a_good_release_on_every_kind_passes():
    candidate = devices(10, 20.0, kind="gateway", seed=5) + devices(6, 20.0, kind="camera", seed=6)
    result = evaluate(CPU, Evidence(Delivery(), candidate, baseline()), ALPHA, look=1)
    assert result.verdict is Verdict.PASS
    assert "segment" not in result.numbers
    assert {s["segment"] for s in result.numbers["segments"]} == {
        "hardware=camera",
        "hardware=gateway",
    }


def test_the_alpha_is_split_over_the_fleet_and_each_kind():
    assert segment_alpha(0.05, 1) == 0.05  # one kind is the fleet itself
    assert segment_alpha(0.05, 2) == pytest.approx(0.05 / 3)
    assert segment_alpha(0.05, 4) == pytest.approx(0.01)
    candidate = devices(10, 20.0, kind="gateway", seed=7) + devices(6, 20.0, kind="camera", seed=8)
    result = evaluate(CPU, Evidence(Delivery(), candidate, baseline()), ALPHA, look=1)
    assert result.numbers["alpha_per_segment"] == pytest.approx(ALPHA / 3, rel=1e-4)
    # One kind: no segments, the whole alpha for the fleet's test.
    alone = evaluate(
        CPU,
        Evidence(
            Delivery(),
            devices(10, 20.0, kind="gateway", seed=9),
            devices(100, 20.0, kind="gateway", seed=10),
        ),
        ALPHA,
        look=1,
    )
    assert "segments" not in alone.numbers and "alpha_per_segment" not in alone.numbers


def test_a_kind_that_looks_worse_but_is_not_yet_significant_holds_the_pass():
    # Two noisy camera canaries at about 1.4x: beyond the 1.2x limit on the point estimate,
    # not significant on two devices; the gateways alone would pass.
    candidate = [
        *devices(12, 20.0, kind="gateway", seed=11),
        DeviceSummary("cam-a", "camera", health={"cpu_percent": 18.0}),
        DeviceSummary("cam-b", "camera", health={"cpu_percent": 38.0}),
    ]
    noisy_cameras = devices(150, 20.0, kind="gateway", seed=12) + devices(
        30, 20.0, kind="camera", seed=13, spread=0.4
    )
    result = evaluate(CPU, Evidence(Delivery(), candidate, noisy_cameras), ALPHA, look=1)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.numbers["segment"] == "hardware=camera"
    assert "not yet significant" in result.numbers["waiting_for"]


def test_each_look_says_the_smallest_effect_it_could_detect():
    def mde_ratio(canaries: int) -> float:
        candidate = devices(canaries, 20.0, kind="gateway", seed=14)
        base = devices(150, 20.0, kind="gateway", seed=15)
        numbers = evaluate(CPU, Evidence(Delivery(), candidate, base), ALPHA, look=1).numbers
        assert numbers["mde"] == pytest.approx(
            0.2 * numbers["baseline_mean"] + (numbers["high"] - numbers["low"]) / 2, rel=1e-3
        )
        return numbers["mde_ratio"]

    few, many = mde_ratio(3), mde_ratio(40)
    assert few > many > 1.2  # always beyond the limit, closer to it with more devices


def test_a_rate_gate_fails_on_the_kind_whose_errors_went_up():
    gate = GateSpec(metric=Metric.ERROR_RATE, max_increase=0.01, min_samples=1000)
    candidate = devices(20, 20.0, kind="gateway", seed=16, errors=1) + devices(
        3, 20.0, kind="camera", seed=17, errors=60
    )
    base = devices(150, 20.0, kind="gateway", seed=18, errors=1) + devices(
        30, 20.0, kind="camera", seed=19, errors=1
    )
    result = evaluate(gate, Evidence(Delivery(), candidate, base), ALPHA, look=1)
    assert result.verdict is Verdict.FAIL
    assert result.numbers["segment"] == "hardware=camera"
    cameras = {s["segment"]: s for s in result.numbers["segments"]}["hardware=camera"]
    assert cameras["events"] == 180 and cameras["trials"] == 3 * 1060
    assert cameras["low"] > 0.01


def in_region(found, region):
    return [replace(d, attributes={"region": region}) for d in found]


def test_segment_by_an_attribute_finds_a_regression_in_one_region_across_kinds():
    # Devices in ap-south run 1.5x the CPU on the candidate, on both kinds; ap-south is
    # 4 of 14 canaries, so the fleet's average and each kind's dilute it.
    candidate = [
        *in_region(devices(5, 20.0, kind="gateway", seed=3), "eu-west"),
        *in_region(devices(5, 20.0, kind="camera", seed=4), "eu-west"),
        *in_region(devices(2, 30.0, kind="gateway", seed=5), "ap-south"),
        *in_region(devices(2, 30.0, kind="camera", seed=6), "ap-south"),
    ]
    base = [
        *in_region(devices(100, 20.0, kind="gateway", seed=7), "eu-west"),
        *in_region(devices(50, 20.0, kind="gateway", seed=8), "ap-south"),
        *in_region(devices(20, 20.0, kind="camera", seed=9), "eu-west"),
        *in_region(devices(10, 20.0, kind="camera", seed=10), "ap-south"),
    ]
    plain = evaluate(CPU, Evidence(Delivery(), candidate, base), ALPHA, look=1)
    assert plain.verdict is not Verdict.FAIL
    by_region = Evidence(Delivery(), candidate, base, segment_by=("region",))
    result = evaluate(CPU, by_region, ALPHA, look=1)
    assert result.verdict is Verdict.FAIL and result.numbers["segment"] == "region=ap-south"
    # The fleet, two kinds and two regions: alpha over five.
    assert result.numbers["alpha_per_segment"] == pytest.approx(ALPHA / 5, rel=1e-4)
    named = {s["segment"] for s in result.numbers["segments"]}
    assert named == {"hardware=camera", "hardware=gateway", "region=ap-south", "region=eu-west"}
    # An attribute with one value is the fleet: no segment of its own.
    one = Evidence(
        Delivery(), in_region(candidate, "eu"), in_region(base, "eu"), segment_by=("region",)
    )
    assert evaluate(CPU, one, ALPHA, look=1).numbers["alpha_per_segment"] == pytest.approx(
        ALPHA / 3, rel=1e-4
    )


def test_segment_by_splits_rate_gates_too():
    gate = GateSpec(metric=Metric.ERROR_RATE, max_increase=0.01, min_samples=1000)
    candidate = [
        *in_region(devices(6, 20.0, kind="gateway", seed=3, errors=2), "eu-west"),
        *in_region(devices(4, 20.0, kind="gateway", seed=4, errors=100), "ap-south"),
    ]
    base = [
        *in_region(devices(60, 20.0, kind="gateway", seed=5, errors=2), "eu-west"),
        *in_region(devices(40, 20.0, kind="gateway", seed=6, errors=2), "ap-south"),
    ]
    result = evaluate(gate, Evidence(Delivery(), candidate, base, segment_by=("region",)), ALPHA, 1)
    assert result.verdict is Verdict.FAIL and result.numbers["segment"] == "region=ap-south"

"""Gate verdicts on evidence built by hand: each metric fails a bad candidate, passes a
good one with enough data, and says inconclusive without it."""

import numpy as np
import pytest

from edgefleet.rollout.gates import Delivery, DeviceSummary, Evidence, Verdict, combine, evaluate
from edgefleet.rollout.policy import GateSpec, Metric

ALPHA = 0.05


def fleet(n: int, cpu: float, *, seed: int, hardware: str = "rev2", classes=None, errors=0):
    rng = np.random.default_rng(seed)
    classes = classes or [100] * 10
    return [
        DeviceSummary(
            f"{hardware}-{seed}-{i}",
            hardware,
            inferences=1000,
            errors=errors,
            latency_counts=tuple([0] * 40 + [900, 100]),
            confidence_counts=tuple([0] * 15 + [100, 200, 300, 200, 200]),
            class_counts=tuple(classes),
            health={"cpu_percent": float(rng.normal(cpu, cpu * 0.05))},
        )
        for i in range(n)
    ]


CPU = GateSpec(metric=Metric.CPU, max_ratio=1.3, min_samples=5)


def test_a_model_using_twice_the_cpu_fails_on_two_canary_devices():
    evidence = Evidence(Delivery(), fleet(2, 40.0, seed=1), fleet(198, 20.0, seed=2))
    result = evaluate(CPU, evidence, ALPHA, look=1)
    assert result.verdict is Verdict.FAIL
    assert result.numbers["ratio"] == pytest.approx(2.0, rel=0.1)
    assert result.numbers["low"] > 0.3 * 20.0  # beyond the allowed increase for sure


def test_the_same_cpu_passes_with_enough_devices_and_is_inconclusive_with_too_few():
    same = Evidence(Delivery(), fleet(10, 20.0, seed=3), fleet(190, 20.0, seed=4))
    assert evaluate(CPU, same, ALPHA, look=1).verdict is Verdict.PASS
    few = Evidence(Delivery(), fleet(2, 20.0, seed=5), fleet(190, 20.0, seed=6))
    assert evaluate(CPU, few, ALPHA, look=1).verdict is Verdict.INCONCLUSIVE
    nothing = Evidence(Delivery(), [], fleet(190, 20.0, seed=7))
    assert evaluate(CPU, nothing, ALPHA, look=1).verdict is Verdict.INCONCLUSIVE
    no_baseline = Evidence(Delivery(), fleet(10, 20.0, seed=8), [])
    assert evaluate(CPU, no_baseline, ALPHA, look=1).verdict is Verdict.INCONCLUSIVE


def test_baselines_are_matched_by_hardware():
    # rev3 devices run hotter whatever the model: a canary of rev3 devices compared with
    # a rev2-heavy fleet must not fail, because it is compared with rev3 baselines.
    canary = fleet(6, 30.0, seed=9, hardware="rev3")
    baseline = fleet(150, 20.0, seed=10) + fleet(20, 30.0, seed=11, hardware="rev3")
    result = evaluate(CPU, Evidence(Delivery(), canary, baseline), ALPHA, look=1)
    assert result.verdict is Verdict.PASS and abs(result.numbers["estimate"]) < 2


def test_a_missing_class_is_caught_by_the_class_distribution_gate():
    gate = GateSpec(metric=Metric.CLASS_DISTRIBUTION, max_change=0.5, min_samples=1000)
    baseline = fleet(100, 20, seed=12, classes=[1089] * 9 + [200])  # class 9 about 2%
    missing = fleet(4, 20, seed=13, classes=[1111] * 9 + [0])
    result = evaluate(gate, Evidence(Delivery(), missing, baseline), ALPHA, look=3)
    assert result.verdict is Verdict.FAIL
    assert result.numbers["class"] == 9 and result.numbers["max_change"] == 1.0
    assert result.numbers["p_value"] < result.numbers["alpha_spent_this_look"]
    same = fleet(4, 20, seed=14, classes=[1089] * 9 + [200])
    assert evaluate(gate, Evidence(Delivery(), same, baseline), ALPHA, 3).verdict is Verdict.PASS


def test_delivery_gates_count_devices():
    rollbacks = GateSpec(metric=Metric.ROLLBACKS, max=0.05, min_samples=10)
    assert evaluate(rollbacks, Evidence(Delivery(finished=2, rolled_back=2)), ALPHA, 1).verdict is (
        Verdict.FAIL
    )
    one_of_two = Evidence(Delivery(finished=2, rolled_back=1))
    assert evaluate(rollbacks, one_of_two, ALPHA, 1).verdict is Verdict.INCONCLUSIVE
    clean = Evidence(Delivery(finished=40))
    assert evaluate(rollbacks, clean, ALPHA, 1).verdict is Verdict.PASS
    strict = GateSpec(metric=Metric.TRIAL_FAILURES, max_count=0, min_samples=1)
    assert evaluate(strict, Evidence(Delivery(finished=1, trial_failed=1)), ALPHA, 1).verdict is (
        Verdict.FAIL
    )


def test_error_rate_against_the_baseline_and_dry_runs():
    gate = GateSpec(metric=Metric.ERROR_RATE, max_increase=0.01, min_samples=1000)
    bad = Evidence(Delivery(), fleet(5, 20, seed=15, errors=80), fleet(100, 20, seed=16, errors=5))
    assert evaluate(gate, bad, ALPHA, 1).verdict is Verdict.FAIL
    good = Evidence(Delivery(), fleet(5, 20, seed=17, errors=5), fleet(100, 20, seed=18, errors=5))
    assert evaluate(gate, good, ALPHA, 1).verdict is Verdict.PASS
    dry = GateSpec(metric=Metric.ERROR_RATE, max_increase=0.01, dry_run=True)
    results = [evaluate(dry, bad, ALPHA, 1), evaluate(gate, good, ALPHA, 1)]
    assert results[0].verdict is Verdict.FAIL and combine(results) is Verdict.PASS

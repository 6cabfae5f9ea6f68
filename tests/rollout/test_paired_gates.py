"""Gates on the trials' paired probes (issue #21): each device's trial times the
candidate and the previous model on the same input at the same moment, so the spread
between devices, which hides a mild regression from a comparison of per-device means at
canary size, is not in the comparison. The reports are the agent's own numbers."""

import numpy as np
import pytest
from pydantic import ValidationError

from edgefleet.agent.trial import PairedProbes
from edgefleet.registry.profile import bin_counts
from edgefleet.rollout.gates import (
    Delivery,
    DeviceSummary,
    Evidence,
    PairedTrial,
    Verdict,
    evaluate,
)
from edgefleet.rollout.policy import GateSpec, Metric
from edgefleet.runtime.metrics import LATENCY_EDGES_MS

ALPHA = 0.05
LATENCY = GateSpec(metric=Metric.LATENCY_P95, max_ratio=1.2, min_samples=5)
INFERENCE_CPU = GateSpec(metric=Metric.INFERENCE_CPU, max_ratio=1.2, min_samples=5)


def report(ratio, *, seed, pairs=200, noise=0.1):
    """An agent trial's event details: ``pairs`` probes of a candidate ``ratio`` times as
    costly, each pair's ratio varying by ``noise`` (log scale)."""
    rng = np.random.default_rng(seed)
    latency = PairedProbes("latency", max_ratio=3.0, floor_s=2e-6)
    cpu = PairedProbes("cpu", max_ratio=3.0, floor_s=2e-6)
    for _ in range(pairs):
        base = 200e-6 * rng.lognormal(0.0, 0.3)
        ours = base * ratio * rng.lognormal(0.0, noise)
        latency.add(ours, base)
        cpu.add(ours, base)
    return latency.numbers() | cpu.numbers()


def trials(n, ratio, *, kind, seed, **kw):
    return [
        PairedTrial.from_details(f"{kind}-{seed}-{i}", kind, report(ratio, seed=seed + i, **kw))
        for i in range(n)
    ]


def devices(n, p95_ms, *, kind, seed, spread=0.3):
    """Devices whose own latency p95 varies by ``spread`` (log scale) around ``p95_ms``:
    hardware and load differ from device to device far more than a mild regression."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        level = p95_ms * rng.lognormal(0.0, spread) / 1.6
        samples = level * rng.lognormal(0.0, 0.3, 2000)
        out.append(
            DeviceSummary(
                f"{kind}-{seed}-{i}", kind, 2000, 0, tuple(bin_counts(samples, LATENCY_EDGES_MS))
            )
        )
    return out


def fleet(candidate_camera_factor, seed=0):
    """10 canaries (6 gateways, 4 cameras) against 150 baseline devices."""
    baseline = devices(100, 2.0, kind="gateway", seed=seed) + devices(
        50, 12.0, kind="camera", seed=seed + 1
    )
    candidate = devices(6, 2.0, kind="gateway", seed=seed + 2) + devices(
        4, 12.0 * candidate_camera_factor, kind="camera", seed=seed + 3
    )
    paired = trials(6, 1.0, kind="gateway", seed=seed + 4) + trials(
        4, candidate_camera_factor, kind="camera", seed=seed + 5
    )
    return Evidence(Delivery(), candidate, baseline, paired)


def test_a_slowdown_on_one_kind_fails_on_its_paired_probes_at_canary_size():
    evidence = fleet(1.3)
    without = evaluate(
        LATENCY, Evidence(Delivery(), evidence.candidate, evidence.baseline), ALPHA, 1
    )
    assert without.verdict is not Verdict.FAIL  # per-device p95s alone cannot tell yet
    result = evaluate(LATENCY, evidence, ALPHA, look=1)
    assert result.verdict is Verdict.FAIL
    assert result.numbers["segment"] == "hardware=camera"
    cameras = {s["segment"]: s for s in result.numbers["segments"]}["hardware=camera"]
    assert cameras["paired"]["devices"] == 4 and cameras["paired"]["over_share"] > 0.6
    # Two tests per segment, each at half its share of alpha.
    assert result.numbers["alpha_per_test"] == pytest.approx(ALPHA / 3 / 2, rel=1e-4)


def test_a_release_as_fast_passes_with_its_paired_probes():
    result = evaluate(LATENCY, fleet(1.0, seed=10), ALPHA, look=1)
    assert result.verdict is Verdict.PASS
    assert result.numbers["paired"]["over_share"] < 0.1


def test_a_release_at_the_limit_fails_at_most_alpha_of_the_time():
    # Every pair is over the limit with probability one half: the worst a release that
    # keeps the limit can be. Looked at as devices arrive, it must fail at most alpha.
    rng = np.random.default_rng(7)
    failed = 0
    runs = 400
    for run in range(runs):
        arrived = []
        for look in range(1, 11):
            pairs = int(rng.integers(50, 400))
            over = int(rng.binomial(pairs, 0.5))
            arrived.append(PairedTrial(f"d{run}-{look}", "gateway", {"cpu": (pairs, {1.2: over})}))
            verdict = evaluate(INFERENCE_CPU, Evidence(Delivery(), trials=arrived), ALPHA, look)
            if verdict.verdict is Verdict.FAIL:
                failed += 1
                break
    assert failed / runs <= ALPHA


def test_one_odd_device_does_not_fail_the_gate():
    odd = trials(1, 3.0, kind="gateway", seed=1, pairs=2000) + trials(
        5, 1.0, kind="gateway", seed=2
    )
    result = evaluate(INFERENCE_CPU, Evidence(Delivery(), trials=odd), ALPHA, look=1)
    assert result.verdict is not Verdict.FAIL
    assert result.numbers["devices_mostly_over"] == 1


def test_inference_cpu_creep_fails_on_ten_canaries_and_waits_without_probes():
    creep = trials(10, 1.25, kind="gateway", seed=3, noise=0.05)
    result = evaluate(INFERENCE_CPU, Evidence(Delivery(), trials=creep), ALPHA, look=1)
    assert result.verdict is Verdict.FAIL
    assert result.numbers["devices_mostly_over"] >= 8
    assert result.numbers["ratio"] == pytest.approx(1.25, rel=0.02)  # median pair ratio
    none = evaluate(INFERENCE_CPU, Evidence(Delivery()), ALPHA, look=1)
    assert none.verdict is Verdict.INCONCLUSIVE
    assert none.numbers["test"] == "no paired probes yet"
    good = evaluate(
        INFERENCE_CPU,
        Evidence(Delivery(), trials=trials(10, 1.0, kind="gateway", seed=4)),
        ALPHA,
        1,
    )
    assert good.verdict is Verdict.PASS


def test_inference_cpu_takes_only_a_ratio():
    with pytest.raises(ValidationError, match="max_increase does not apply to inference_cpu"):
        GateSpec(metric=Metric.INFERENCE_CPU, max_increase=0.5)


def test_the_count_is_read_at_the_nearest_ratio_at_or_above_the_limit():
    trial = PairedTrial("d", "gateway", {"latency": (100, {1.2: 60, 1.25: 40, 3.0: 1})})
    assert trial.over("latency", 1.2) == (100, 60)
    assert trial.over("latency", 1.22) == (100, 40)  # never more than over 1.22 itself
    assert trial.over("latency", 4.0) is None
    assert trial.over("cpu", 1.2) is None


@pytest.mark.parametrize(
    "details",
    [
        {"latency_pairs": 10, "latency_over_at": {"1.2": 11}},  # more over than pairs
        {"latency_pairs": 10, "latency_over_at": {"1.2": -1}},
        {"latency_pairs": 10, "latency_over_at": {"fast": 1}},
        {"latency_pairs": 10, "latency_over_at": {"1.2": True}},
        {"latency_pairs": 10, "latency_over_at": {"nan": 1}},
        {"latency_pairs": "10", "latency_over_at": {"1.2": 1}},
        {"latency_pairs": 0, "latency_over_at": {}},
        {"latency_pairs": 10, "latency_over_at": [1, 2]},
    ],
)
def test_reports_that_do_not_add_up_are_no_evidence(details):
    assert PairedTrial.from_details("d", None, details).measures == {}


def test_the_agent_counts_its_pairs_at_each_ratio():
    numbers = report(1.3, seed=1, pairs=100, noise=0.0)
    assert numbers["latency_pairs"] == 100
    over = numbers["latency_over_at"]
    assert over["1.25"] == 100 and over["1.4"] == 0
    trial = PairedTrial.from_details("d", "gateway", numbers)
    assert trial.over("latency", 1.2) == (100, 100)


def test_a_p95_that_is_not_a_number_leaves_the_counts():
    trial = PairedTrial.from_details(
        "d", "gateway", {"cpu_pairs": 10, "cpu_over_at": {"1.2": 1}, "cpu_p95_ms": "fast"}
    )
    assert trial.over("cpu", 1.2) == (10, 1) and trial.p95_ratios == {}


def test_one_slow_device_of_a_kind_holds_no_pass_so_the_next_wave_can_tell():
    # A kind with one canary: its pairs cannot fail the gate (one device is not the
    # release) and must not hold the wave either, or the rollout would pause on it
    # instead of bringing the kind's next devices in the next wave.
    evidence = fleet(1.0, seed=20)
    odd = trials(1, 2.0, kind="camera", seed=21)
    gateways = [t for t in evidence.trials if t.hardware == "gateway"]
    cameras = [d for d in evidence.candidate if d.hardware == "camera"][:1]
    others = [d for d in evidence.candidate if d.hardware == "gateway"]
    one = Evidence(Delivery(), [*others, *cameras], evidence.baseline, [*gateways, *odd])
    result = evaluate(LATENCY, one, ALPHA, look=1)
    assert result.verdict is Verdict.PASS

"""The restart_rate gate: each device's unclean restarts per hour on the version, the
wave's devices against the concurrent baseline, like the other per-device means."""

import numpy as np
import pytest
from pydantic import ValidationError

from edgefleet.rollout.gates import Delivery, DeviceSummary, Evidence, Verdict, evaluate
from edgefleet.rollout.policy import GateSpec, Metric

ALPHA = 0.05
HOUR = 3600.0
GATE = GateSpec(metric=Metric.RESTART_RATE, max_increase=1.0, min_samples=10)


def devices(n: int, per_hour: float, hours: float, *, seed: int, hardware: str = "rev2"):
    """``n`` devices on a version for ``hours``, restarting ``per_hour`` on average."""
    rng = np.random.default_rng(seed)
    return [
        DeviceSummary(
            f"{hardware}-{seed}-{i}",
            hardware,
            inferences=1000,
            restarts=int(rng.poisson(per_hour * hours)),
            served_s=hours * HOUR,
        )
        for i in range(n)
    ]


def test_a_release_that_makes_devices_restart_fails_on_a_small_wave():
    # Each device restarts a few times an hour: under any one device's trial limit,
    # clearly more than the fleet beside it.
    candidate = devices(10, 3.0, 1.0, seed=1)
    baseline = devices(200, 0.05, 2.0, seed=2)
    result = evaluate(GATE, Evidence(Delivery(), candidate, baseline), ALPHA, look=1)
    assert result.verdict is Verdict.FAIL
    assert result.numbers["candidate_mean"] == pytest.approx(3.0, abs=1.5)
    assert result.numbers["low"] > 1.0


def test_the_same_restart_rate_passes_with_enough_devices():
    candidate = devices(20, 0.05, 1.0, seed=3)
    baseline = devices(200, 0.05, 2.0, seed=4)
    result = evaluate(GATE, Evidence(Delivery(), candidate, baseline), ALPHA, look=1)
    assert result.verdict is Verdict.PASS
    none_anywhere = Evidence(Delivery(), devices(20, 0.0, 1.0, seed=5), devices(50, 0.0, 1, seed=6))
    assert evaluate(GATE, none_anywhere, ALPHA, look=1).verdict is Verdict.PASS


def test_too_little_data_is_inconclusive():
    few = Evidence(Delivery(), devices(3, 0.05, 1.0, seed=7), devices(200, 0.05, 2.0, seed=8))
    assert evaluate(GATE, few, ALPHA, look=1).verdict is Verdict.INCONCLUSIVE
    # One device restarting a lot is not evidence against the version yet.
    one = Evidence(Delivery(), devices(1, 20.0, 0.5, seed=9), devices(200, 0.05, 2.0, seed=10))
    assert evaluate(GATE, one, ALPHA, look=1).verdict is Verdict.INCONCLUSIVE
    # Devices whose time on the version is not known yet (a single report) do not count.
    unknown = [DeviceSummary(f"d{i}", "rev2", restarts=1) for i in range(20)]
    blind = Evidence(Delivery(), unknown, devices(200, 0.05, 2.0, seed=11))
    result = evaluate(GATE, blind, ALPHA, look=1)
    assert result.verdict is Verdict.INCONCLUSIVE and result.numbers["devices"] == 0


def test_a_ratio_to_a_baseline_without_restarts_is_inconclusive_not_a_pass():
    ratio = GateSpec(metric=Metric.RESTART_RATE, max_ratio=2.0, min_samples=10)
    evidence = Evidence(Delivery(), devices(20, 0.0, 1.0, seed=12), devices(50, 0.0, 1.0, seed=13))
    result = evaluate(ratio, evidence, ALPHA, look=1)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "max_increase" in result.numbers["test"]


def test_a_device_summary_reads_restarts_and_its_time_on_the_version_from_buckets():
    data = {"restarts": 2, "served_samples": 5, "served_first": 1000.0, "served_last": 1240.0}
    summary = DeviceSummary.from_bucket("d1", "rev2", data)
    assert summary.restarts == 2 and summary.served_s == 300.0
    assert summary.value(Metric.RESTART_RATE) == 24.0  # 2 in five minutes
    assert DeviceSummary.from_bucket("d2", "rev2", {}).value(Metric.RESTART_RATE) is None


def test_restart_rate_takes_the_limits_of_a_per_device_mean():
    with pytest.raises(ValidationError, match="use one of max, max_increase, max_ratio"):
        GateSpec(metric=Metric.RESTART_RATE, max_change=0.5)


def test_a_candidate_at_its_limit_is_rarely_ever_failed_over_many_looks():
    # Restarts as a Poisson process per device; 12 looks, ten minutes apart, at a wave of
    # 10 devices restarting exactly max_increase more often than 200 baseline devices.
    rng = np.random.default_rng(2026)
    looks = np.arange(1, 13) * 600.0
    failed = 0
    for _ in range(100):
        end = looks[-1] + HOUR  # the baseline was watched since before the wave
        ours = [rng.uniform(0, looks[-1], rng.poisson(1.1 * looks[-1] / HOUR)) for _ in range(10)]
        theirs = [rng.uniform(0, end, rng.poisson(0.1 * end / HOUR)) for _ in range(200)]
        for look, at in enumerate(looks, 1):
            candidate = [
                DeviceSummary(f"c{i}", "rev2", restarts=int((t <= at).sum()), served_s=at)
                for i, t in enumerate(ours)
            ]
            baseline = [
                DeviceSummary(
                    f"b{i}", "rev2", restarts=int((t <= at + HOUR).sum()), served_s=at + HOUR
                )
                for i, t in enumerate(theirs)
            ]
            if evaluate(GATE, Evidence(Delivery(), candidate, baseline), ALPHA, look).verdict is (
                Verdict.FAIL
            ):
                failed += 1
                break
    assert failed / 100 <= ALPHA  # measured: 2-3% (naive tests: far more)


def test_one_device_that_restarts_alone_on_its_hardware_is_no_failure():
    # Three kinds of device, two canaries each, none of the fleet restarting: one canary
    # that restarts ten times (its power supply, say) is not a bad release, and its
    # stratum of one device must not claim an interval of no width.
    baseline = [
        d for kind in ("a", "b", "c") for d in devices(30, 0.0, 2.0, seed=14, hardware=kind)
    ]
    canaries = [d for kind in ("a", "b", "c") for d in devices(2, 0.0, 0.5, seed=15, hardware=kind)]
    canaries[0] = DeviceSummary("looping", "a", restarts=10, served_s=0.5 * HOUR)
    result = evaluate(GATE, Evidence(Delivery(), canaries, baseline), ALPHA, look=1)
    assert result.verdict is not Verdict.FAIL and result.numbers["devices_restarted"] == 1
    # Every canary of two kinds restarting that often is a release problem.
    for index, kind in ((1, "a"), (2, "b"), (3, "b")):
        canaries[index] = DeviceSummary(f"looping-{index}", kind, restarts=10, served_s=0.5 * HOUR)
    result = evaluate(GATE, Evidence(Delivery(), canaries, baseline), ALPHA, look=1)
    assert result.verdict is Verdict.FAIL

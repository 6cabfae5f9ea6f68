"""The class-distribution gate on every class: exact per-class tests that hold for rare
classes, critical classes, and devices whose class mix differs more than sampling."""

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats as scipy_stats

from edgefleet.rollout.gates import Delivery, DeviceSummary, Evidence, Verdict, evaluate
from edgefleet.rollout.policy import GateSpec, Metric
from edgefleet.rollout.stats import class_dispersion, share_ratio_pvalue

ALPHA = 0.05
#: Ten classes, the last one rare (0.3% of predictions).
SHARES = np.array([0.997 / 9] * 9 + [0.003])


def devices(n, shares, *, seed, per_device=10_000, prefix="d"):
    rng = np.random.default_rng(seed)
    return [
        DeviceSummary(
            f"{prefix}-{seed}-{i}",
            "rev2",
            inferences=per_device,
            class_counts=tuple(int(c) for c in rng.multinomial(per_device, shares)),
        )
        for i in range(n)
    ]


def gate(**extra):
    return GateSpec(metric=Metric.CLASS_DISTRIBUTION, max_change=0.5, min_samples=5000, **extra)


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_b", "n_b", "ratio"),
    [(0, 1000, 30, 10_000, 0.5), (3, 500, 40, 9000, 1.0), (12, 2000, 15, 3000, 0.5)],
)
def test_the_share_test_is_the_conditional_binomial(x_c, n_c, x_b, n_b, ratio):
    pi = n_c * ratio / (n_c * ratio + n_b)
    t = x_c + x_b
    lower = share_ratio_pvalue((x_c, n_c), (x_b, n_b), ratio, lower=True)
    upper = share_ratio_pvalue((x_c, n_c), (x_b, n_b), ratio, lower=False)
    assert lower == pytest.approx(scipy_stats.binom.cdf(x_c, t, pi), rel=1e-9)
    assert upper == pytest.approx(scipy_stats.binom.sf(x_c - 1, t, pi), rel=1e-9)
    # Overdispersed counts weigh as that many fewer independent predictions.
    thrice = share_ratio_pvalue((3 * x_c, n_c), (3 * x_b, n_b), ratio, lower=True, dispersion=3.0)
    assert thrice == pytest.approx(lower, rel=1e-9)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="not counts"):
        share_ratio_pvalue((5, 3), (1, 10), 0.5, lower=True)
    with pytest.raises(ValueError, match="dispersion"):
        share_ratio_pvalue((1, 3), (1, 10), 0.5, lower=True, dispersion=0.5)


def test_a_class_at_a_third_of_a_percent_that_disappears_fails_on_ten_canaries():
    baseline = devices(190, SHARES, seed=1)
    gone = SHARES.copy()
    gone[9] = 0.0
    canary = devices(10, gone / gone.sum(), seed=2, per_device=1000)
    result = evaluate(gate(), Evidence(Delivery(), canary, baseline), ALPHA, look=1)
    assert result.verdict is Verdict.FAIL
    assert result.numbers["class"] == 9 and result.numbers["max_change"] == 1.0
    assert result.numbers["p_value"] < result.numbers["alpha_per_test"]


def test_a_critical_class_fails_on_halving_before_min_samples_and_others_do_not():
    halved = SHARES.copy()
    halved[9] /= 4
    halved /= halved.sum()
    baseline = devices(190, SHARES, seed=3)
    canary = devices(2, halved, seed=4, per_device=2000)  # 4000 < min_samples 5000
    plain = evaluate(gate(), Evidence(Delivery(), canary, baseline), ALPHA, look=1)
    assert plain.verdict is Verdict.INCONCLUSIVE  # 75% lower, not yet significant
    critical = evaluate(
        gate(critical_classes=[9]),
        Evidence(Delivery(), devices(2, halved, seed=4, per_device=20_000), baseline),
        ALPHA,
        look=1,
    )
    assert critical.verdict is Verdict.FAIL
    assert any(c["limit"] == "critical" for c in critical.numbers["classes_beyond"])


def test_good_releases_fail_less_often_than_alpha():
    baseline = devices(190, SHARES, seed=5)
    failed = 0
    for seed in range(300):
        canary = devices(10, SHARES, seed=100 + seed, per_device=1000)
        failed += (
            evaluate(
                gate(critical_classes=[9]), Evidence(Delivery(), canary, baseline), ALPHA, look=1
            ).verdict
            is Verdict.FAIL
        )
    assert failed / 300 <= ALPHA


def test_devices_whose_class_mix_differs_weigh_as_the_spread_they_show():
    rng = np.random.default_rng(6)

    def site_devices(n, seed, prefix):
        # Each device's share of the rare class is its site's: 0.1% to 0.9%.
        out = []
        for i in range(n):
            shares = SHARES.copy()
            shares[9] = rng.uniform(0.001, 0.009)
            shares[:9] = (1 - shares[9]) / 9
            out += devices(1, shares, seed=seed * 1000 + i, prefix=prefix)
        return out

    baseline, canary = site_devices(190, 7, "b"), site_devices(10, 8, "c")
    counts = [
        np.array([d.class_counts for d in canary], float),
        np.array([d.class_counts for d in baseline], float),
    ]
    dispersion = class_dispersion(counts)
    assert dispersion[9] > 3.0 and dispersion[0] < 2.0
    result = evaluate(gate(), Evidence(Delivery(), canary, baseline), ALPHA, look=1)
    assert result.verdict is not Verdict.FAIL


def test_critical_classes_belong_to_the_class_distribution_gate():
    with pytest.raises(ValidationError, match="critical_classes is for class_distribution"):
        GateSpec(metric=Metric.CPU, max_ratio=1.2, critical_classes=[1])
    with pytest.raises(ValidationError):
        gate(critical_classes=[-1])

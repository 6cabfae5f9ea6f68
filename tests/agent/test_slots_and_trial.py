"""Slot storage (crash-safe files, pointer reconciliation) and trial judging."""

import bisect

import pytest

from edgefleet.agent.slots import CorruptStateError, SlotStore
from edgefleet.agent.statemachine import AgentState, SlotContent, State, Target
from edgefleet.agent.trial import (
    HealthMax,
    judge,
    judge_shadow,
    mean_confidence,
    new_class_share,
    worst,
)
from edgefleet.fleet.domain import ShadowPolicy, TrialPolicy
from edgefleet.runtime.metrics import LATENCY_EDGES_MS, ModelStats
from edgefleet.runtime.shadow import ShadowStats

TARGET = Target("digits", "1.1.0", "onnx-fp32", "p", "b" * 64, 10, 2)
A = SlotContent("digits", "1.0.0", "onnx-fp32", "a" * 64, True)


def test_state_round_trips_and_pointer_follows_the_state(tmp_path):
    store = SlotStore(tmp_path)
    assert store.load() == AgentState.initial()
    state = AgentState(state=State.COMMITTED, active="a", slots={"a": A, "b": None}, seq=7)
    store.save(state)
    store.write_pointer("b")  # a crash left the pointer ahead of a settled state
    loaded = store.load()
    assert loaded == state
    assert store.read_pointer() == "a"  # the settled state wins and the pointer is fixed
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_while_activating_the_pointer_is_the_truth(tmp_path):
    store = SlotStore(tmp_path)
    activating = AgentState(
        state=State.ACTIVATING,
        active="a",
        previous="a",
        target=TARGET,
        slots={"a": A, "b": SlotContent("digits", "1.1.0", "onnx-fp32", "b" * 64, True)},
        seq=5,
    )
    store.save(activating)
    store.write_pointer("b")
    assert store.load().active == "b"
    store.write_pointer("a")
    assert store.load().active == "a"


def test_a_corrupt_state_file_is_kept_aside(tmp_path):
    store = SlotStore(tmp_path)
    store.state_file.write_text("{not json")
    with pytest.raises(CorruptStateError, match="unreadable state file"):
        store.load()
    assert (tmp_path / "state.json.corrupt").exists()
    assert store.load() == AgentState.initial()


def test_the_serving_slot_is_never_cleared(tmp_path):
    store = SlotStore(tmp_path)
    store.model_file("b").write_bytes(b"model")
    with pytest.raises(ValueError, match="never written to"):
        store.clear("b", active="b")
    store.clear("b", active="a")
    assert list(store.slot_dir("b").iterdir()) == []


def stats(
    requests=300, errors=0, latency_ms=1.0, classes=(30,) * 10, confidence_bucket=19
) -> ModelStats:
    s = ModelStats(inferences=requests, requests=requests)
    if errors:
        s.errors = {"inference": errors}
    import bisect

    s.latency_counts[bisect.bisect_right(LATENCY_EDGES_MS, latency_ms)] = requests
    s.class_counts = list(classes)
    s.confidence_counts[confidence_bucket] = sum(classes)
    return s


POLICY = TrialPolicy(
    min_inferences=200,
    min_seconds=0,
    max_error_rate=0.01,
    max_latency_p95_ratio=1.5,
    max_cpu_percent=90,
    max_ram_mb=500,
    max_temperature_c=80,
    min_mean_confidence=0.6,
    max_new_class_share=0.05,
)


def test_a_good_candidate_passes_with_its_numbers():
    verdict = judge(POLICY, stats(), stats(), HealthMax(40, 100, 50), elapsed_s=60)
    assert verdict.passed is True
    assert verdict.numbers["latency_p95_ratio"] == 1.0
    assert verdict.numbers["mean_confidence"] == pytest.approx(0.975)


def test_the_trial_waits_for_enough_traffic_and_time():
    assert judge(POLICY, stats(requests=50), stats(), HealthMax(), elapsed_s=60).passed is None
    slow = POLICY.model_copy(update={"min_seconds": 120})
    assert judge(slow, stats(), stats(), HealthMax(), elapsed_s=60).passed is None


@pytest.mark.parametrize(
    ("candidate", "health", "check"),
    [
        (stats(errors=10), HealthMax(), "error_rate"),
        (stats(latency_ms=4.0), HealthMax(), "latency_p95"),
        (stats(), HealthMax(cpu_percent=95), "cpu_percent"),
        (stats(), HealthMax(ram_used_mb=800), "ram_mb"),
        (stats(), HealthMax(temperature_c=85), "temperature_c"),
        (stats(confidence_bucket=5), HealthMax(), "mean_confidence"),
        (stats(classes=(20,) * 9 + (120,)), HealthMax(), "class_mix"),
    ],
)
def test_each_check_fails_a_bad_candidate(candidate, health, check):
    baseline = stats(classes=(33,) * 9 + (1,))  # class 9 is rare for the previous model
    verdict = judge(POLICY, candidate, baseline, health, elapsed_s=60)
    assert verdict.passed is False and verdict.check == check


def test_errors_fail_early_once_the_budget_is_spent():
    early = stats(requests=20, errors=3)  # 3 errors already exceed 1% of 200
    verdict = judge(POLICY, early, stats(), HealthMax(), elapsed_s=1)
    assert verdict.passed is False and verdict.check == "error_rate"


def test_helpers():
    assert mean_confidence(ModelStats()) is None
    assert new_class_share(stats(), None) is None
    assert worst(
        [{"cpu_percent": 10.0, "temperature_c": None}, {"cpu_percent": 30.0}]
    ) == HealthMax(30.0, None, None)


def shadow_stats(runs=200, agreed=None, failed=0, live_ms=1.0, shadow_ms=1.0) -> ShadowStats:
    stats = ShadowStats(failed=failed)
    stats.compared = runs
    stats.agreed = runs if agreed is None else agreed
    stats.live_latency_counts[bisect.bisect_right(LATENCY_EDGES_MS, live_ms)] += runs
    stats.shadow_latency_counts[bisect.bisect_right(LATENCY_EDGES_MS, shadow_ms)] += runs
    return stats


SHADOW = ShadowPolicy(
    min_seconds=10, min_compared=100, min_agreement=0.9, max_latency_p95_ratio=1.5
)


def test_shadow_waits_for_enough_comparisons_and_time():
    assert judge_shadow(SHADOW, shadow_stats(runs=50), 60).passed is None
    assert judge_shadow(SHADOW, shadow_stats(), 5).passed is None
    verdict = judge_shadow(SHADOW, shadow_stats(agreed=190), 10)
    assert verdict.passed is True
    assert verdict.numbers["agreement"] == 0.95 and verdict.numbers["compared"] == 200
    assert verdict.numbers["latency_p95_ratio"] == 1.0


@pytest.mark.parametrize(
    ("stats", "check"),
    [
        (shadow_stats(agreed=150), "agreement"),
        (shadow_stats(live_ms=1.0, shadow_ms=8.0), "latency_p95"),
        (shadow_stats(runs=100, failed=5), "errors"),
    ],
)
def test_each_shadow_check_fails_a_bad_candidate(stats, check):
    verdict = judge_shadow(SHADOW, stats, 30)
    assert verdict.passed is False and verdict.check == check


def test_shadow_errors_fail_early_and_no_limits_means_agreement_is_only_reported():
    # 3 failures out of a planned 100 comparisons already exceed 1%.
    assert judge_shadow(SHADOW, shadow_stats(runs=10, failed=3), 0).check == "errors"
    lenient = ShadowPolicy(min_seconds=0, min_compared=10)
    verdict = judge_shadow(lenient, shadow_stats(runs=10, agreed=1, shadow_ms=50), 0)
    assert verdict.passed is True and verdict.numbers["agreement"] == 0.1

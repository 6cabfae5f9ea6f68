"""Slot storage (crash-safe files, pointer reconciliation) and trial judging."""

import bisect

import numpy as np
import pytest

from edgefleet.agent.slots import CorruptStateError, SlotStore
from edgefleet.agent.statemachine import AgentState, DesiredModel, SlotContent, State
from edgefleet.agent.trial import (
    HealthMax,
    PairedProbes,
    TrialRun,
    judge,
    judge_shadow,
    log_evidence,
    mean_confidence,
    new_class_share,
    worst,
)
from edgefleet.fleet.domain import ShadowPolicy, TrialPolicy
from edgefleet.runtime.metrics import LATENCY_EDGES_MS, ModelStats
from edgefleet.runtime.shadow import ShadowStats

TARGET = DesiredModel("digits", "1.1.0", "onnx-fp32", "p", "b" * 64, 10, 2)
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
    max_latency_ratio=1.5,
    max_cpu_percent=90,
    max_ram_mb=500,
    max_temperature_c=80,
    min_mean_confidence=0.6,
    max_new_class_share=0.05,
)


def probes(
    ratio: float, pairs: int = 100, baseline_s: float = 20e-6, cpu_ratio: float | None = None
) -> list[PairedProbes]:
    latency = PairedProbes("latency", max_ratio=1.5, floor_s=2e-6)
    cpu = PairedProbes("cpu", max_ratio=1.5, floor_s=2e-6)
    for i in range(pairs):
        wobble = 1 + 0.1 * ((i % 7) - 3) / 3  # +-10%, the same for both models of a pair
        latency.add(baseline_s * ratio * wobble, baseline_s * wobble)
        cpu.add(baseline_s * (cpu_ratio or ratio) * wobble, baseline_s * wobble)
    return [latency, cpu]


def test_a_good_candidate_passes_with_its_numbers():
    verdict = judge(POLICY, stats(), stats(), HealthMax(40, 100, 50), 60, probes(1.0))
    assert verdict.passed is True
    assert verdict.numbers["latency_ratio_median"] == 1.0
    assert verdict.numbers["probe_pairs"] == 100 and verdict.numbers["latency_probes_over"] == 0
    assert verdict.numbers["cpu_ratio_median"] == 1.0
    assert verdict.numbers["latency_p50_ms"] == pytest.approx(0.02)
    assert verdict.numbers["mean_confidence"] == pytest.approx(0.975)


def test_the_trial_waits_for_enough_traffic_and_time():
    assert judge(POLICY, stats(requests=50), stats(), HealthMax(), elapsed_s=60).passed is None
    slow = POLICY.model_copy(update={"min_seconds": 120})
    assert judge(slow, stats(), stats(), HealthMax(), elapsed_s=60).passed is None


@pytest.mark.parametrize(
    ("candidate", "health", "check"),
    [
        (stats(errors=10), HealthMax(), "error_rate"),
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


def test_a_slower_candidate_fails_on_latency_before_the_trial_is_over():
    verdict = judge(POLICY, stats(requests=10), stats(), HealthMax(), 1, probes(2.0, pairs=30))
    assert verdict.passed is False and verdict.check == "latency"
    assert verdict.numbers["latency_ratio_median"] == pytest.approx(2.0)
    assert verdict.numbers["latency_over_share"] == 1.0


def test_a_candidate_as_fast_but_costlier_in_cpu_fails_on_cpu():
    # Same wall time, twice the CPU: e.g. a model that spreads over more threads.
    verdict = judge(POLICY, stats(), None, HealthMax(), 60, probes(1.0, cpu_ratio=2.0))
    assert verdict.passed is False and verdict.check == "cpu"
    assert verdict.numbers["cpu_ratio_median"] == pytest.approx(2.0)
    assert verdict.numbers["latency_ratio_median"] == pytest.approx(1.0)


def test_a_difference_under_the_floor_is_not_acted_on_but_a_fast_models_2x_is():
    # 1 us against 0.4 us: 2.5 times slower, but within timer and cache noise.
    assert judge(POLICY, stats(), None, HealthMax(), 60, probes(2.5, baseline_s=4e-7)).passed
    # A 10 us model twice as slow is 10 us slower: acted on.
    verdict = judge(POLICY, stats(), None, HealthMax(), 60, probes(2.0, baseline_s=10e-6))
    assert verdict.passed is False and verdict.check == "latency"


def test_the_trial_is_extended_while_the_latency_is_inconclusive():
    # Half the pairs over the limit, half under: no evidence either way.
    mixed = PairedProbes("latency", max_ratio=1.5, floor_s=0.0)
    for i in range(200):
        mixed.add(2.0e-5 if i % 2 else 1.0e-5, 1.0e-5)
    waiting = judge(POLICY, stats(), stats(), HealthMax(), 60, [mixed])
    assert waiting.passed is None and waiting.numbers["extended_for"] == "latency"
    at_deadline = judge(POLICY, stats(), stats(), HealthMax(), POLICY.deadline_s, [mixed])
    assert at_deadline.passed is True and at_deadline.numbers["latency"] == "inconclusive"


def test_without_a_previous_model_the_latency_is_not_compared():
    verdict = judge(POLICY, stats(), None, HealthMax(), 60, None)
    assert verdict.passed is True and verdict.numbers["latency"] == "not_compared"


def test_the_latency_test_holds_its_false_rollback_rate_at_the_limit():
    # A model exactly at the limit: each pair is over with probability 1/2. Looked at
    # after every pair for 2,000 pairs, the test may call it slower in at most alpha of
    # the trials (Ville's inequality); a fixed-sample test looked at that often would
    # do so far more often.
    alpha = 0.01
    over = np.random.default_rng(7).random((2000, 2000)) < 0.5
    hits = np.cumsum(over, axis=1)
    evidence = log_evidence(hits, np.arange(1, 2001))
    wrongly_slower = (evidence >= np.log(1 / alpha)).any(axis=1).mean()
    assert wrongly_slower <= alpha
    # And it does find a model over the limit on 60% of pairs.
    slower = np.cumsum(np.random.default_rng(8).random((200, 2000)) < 0.6, axis=1)
    found = (log_evidence(slower, np.arange(1, 2001)) >= np.log(1 / alpha)).any(axis=1)
    assert found.mean() > 0.9


def test_a_trial_run_keeps_the_health_maxima_and_the_probes():
    run = TrialRun(POLICY, started_s=100.0, baseline=stats(), compare_latency=True)
    run.add_health({"cpu_percent": 30.0, "ram_used_mb": None})
    run.add_health({"cpu_percent": 20.0, "ram_used_mb": 120.0})
    for _ in range(50):
        run.add_probe(2.1e-5, 2.0e-5, 2.0e-5, 2.0e-5)
    assert run.health == HealthMax(30.0, 120.0, None)
    assert run.verdict(stats(), now_s=100.0 + 60).passed is True
    assert run.pairs == 50 and [c.measure for c in run.probes or []] == ["latency", "cpu"]
    no_latency = POLICY.model_copy(update={"max_latency_ratio": None})
    only_cpu = TrialRun(no_latency, started_s=0, baseline=None, compare_latency=True).probes
    assert [c.measure for c in only_cpu or []] == ["cpu"]
    assert TrialRun(POLICY, started_s=0, baseline=None, compare_latency=False).probes is None


def test_the_old_name_of_the_latency_limit_is_still_read():
    assert TrialPolicy.model_validate({"max_latency_p95_ratio": 3.0}).max_latency_ratio == 3.0
    with pytest.raises(ValueError, match="max_seconds"):
        TrialPolicy(min_seconds=60, max_seconds=30)


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


def test_a_trials_evidence_survives_a_restart():
    policy = TrialPolicy(min_inferences=1000, min_seconds=60, max_latency_ratio=None)
    before = TrialRun(policy, started_s=500.0, baseline=None, compare_latency=False)
    first = stats(requests=700)
    saved = before.progress(first, now_s=500.0 + 40)
    assert saved["serving_s"] == 40.0 and saved["stats"]["inferences"] == 700
    assert before.verdict(first, now_s=540.0).passed is None  # 700 of 1,000, 40 of 60 s
    # After the restart (downtime not counted): the counts and the serving time add up.
    after = TrialRun(policy, started_s=9.0, baseline=None, compare_latency=False, progress=saved)
    more = stats(requests=300)
    assert after.verdict(more, now_s=9.0 + 10).passed is None  # 50 of 60 s served
    verdict = after.verdict(more, now_s=9.0 + 20)
    assert verdict.passed is True
    assert verdict.numbers["inferences"] == 1000 and verdict.numbers["elapsed_s"] == 60.0
    again = after.progress(more, now_s=29.0)
    assert again["serving_s"] == 60.0 and again["stats"]["inferences"] == 1000
    # Errors before the restart still count against the model.
    bad = before.progress(stats(requests=100, errors=50), now_s=510.0)
    failing = TrialRun(policy, started_s=0.0, baseline=None, compare_latency=False, progress=bad)
    assert failing.verdict(stats(requests=10), now_s=1.0).passed is False


def test_events_queued_past_the_saved_state_are_dropped(tmp_path):
    from edgefleet.agent.outbox import Outbox

    outbox = Outbox(tmp_path / "outbox", max_telemetry=10)
    outbox.add_events([{"seq": n, "reason": "x"} for n in (4, 5, 6)])
    assert outbox.drop_events_after(5) == 1
    assert [e["seq"] for e in outbox.events()] == [4, 5]
    assert outbox.drop_events_after(5) == 0

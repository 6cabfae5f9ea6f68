"""Judging a new model on live traffic against the previous one (pure).

The trial ends when the candidate has answered ``min_inferences`` samples and
``min_seconds`` have passed; then every check of the policy must hold:

- error rate (failed requests over all requests) at most ``max_error_rate``;
- latency p95 at most ``max_latency_p95_ratio`` times the previous model's p95 on this
  device (measured before the switch);
- CPU, RAM and temperature maxima over the trial within the limits;
- mean top-1 confidence at least ``min_mean_confidence``;
- the share of predictions in classes the previous model rarely predicted (under 1%)
  at most ``max_new_class_share``.

A check fails early when it cannot recover (the error budget of the whole trial is
already spent), so a bad model does not serve the full trial.

``judge_shadow`` does the same for a shadow-first period, on what the shadow runner
measured: the candidate's failure rate, its top-1 agreement with the serving model
and its latency p95 over the serving model's p95 on the same requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgefleet.fleet.domain import ShadowPolicy, TrialPolicy
from edgefleet.registry.profile import confidence_mean
from edgefleet.runtime.metrics import ModelStats
from edgefleet.runtime.shadow import ShadowStats

RARE_CLASS_SHARE = 0.01


@dataclass(frozen=True)
class HealthMax:
    """Highest readings seen during the trial (``None``: not exposed)."""

    cpu_percent: float | None = None
    ram_used_mb: float | None = None
    temperature_c: float | None = None


@dataclass(frozen=True)
class Verdict:
    """``passed`` is ``None`` while the trial is still running."""

    passed: bool | None
    check: str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)


def mean_confidence(stats: ModelStats) -> float | None:
    return confidence_mean(stats.confidence_counts)


def error_rate(stats: ModelStats) -> float:
    errors = sum(stats.errors.values())
    attempts = stats.requests + errors
    return errors / attempts if attempts else 0.0


def new_class_share(candidate: ModelStats, baseline: ModelStats | None) -> float | None:
    if baseline is None or not sum(baseline.class_counts) or not sum(candidate.class_counts):
        return None
    base_total = sum(baseline.class_counts)
    rare = {
        i
        for i in range(max(len(baseline.class_counts), len(candidate.class_counts)))
        if (baseline.class_counts[i] if i < len(baseline.class_counts) else 0) / base_total
        < RARE_CLASS_SHARE
    }
    total = sum(candidate.class_counts)
    return sum(c for i, c in enumerate(candidate.class_counts) if i in rare) / total


def judge(
    policy: TrialPolicy,
    candidate: ModelStats,
    baseline: ModelStats | None,
    health: HealthMax,
    elapsed_s: float,
) -> Verdict:
    """The verdict on a trial so far."""
    numbers: dict[str, Any] = {
        "inferences": candidate.inferences,
        "requests": candidate.requests,
        "elapsed_s": round(elapsed_s, 3),
    }
    rate = error_rate(candidate)
    numbers["error_rate"] = round(rate, 6)
    # Early failure: even if every remaining request succeeded, the budget is spent.
    errors = sum(candidate.errors.values())
    planned = max(policy.min_inferences, candidate.requests + errors)
    if planned and errors / planned > policy.max_error_rate:
        return Verdict(False, "error_rate", numbers | {"max_error_rate": policy.max_error_rate})
    finished = candidate.inferences >= policy.min_inferences and elapsed_s >= policy.min_seconds
    if not finished:
        return Verdict(None, None, numbers)
    if rate > policy.max_error_rate:
        return Verdict(False, "error_rate", numbers | {"max_error_rate": policy.max_error_rate})
    p95 = candidate.latency_quantile(0.95)
    base_p95 = baseline.latency_quantile(0.95) if baseline else None
    numbers["latency_p95_ms"] = p95
    numbers["baseline_latency_p95_ms"] = base_p95
    if p95 is not None and base_p95:
        ratio = p95 / base_p95
        numbers["latency_p95_ratio"] = round(ratio, 4)
        if ratio > policy.max_latency_p95_ratio:
            return Verdict(
                False, "latency_p95", numbers | {"max_ratio": policy.max_latency_p95_ratio}
            )
    limits = (
        ("cpu_percent", health.cpu_percent, policy.max_cpu_percent),
        ("ram_mb", health.ram_used_mb, policy.max_ram_mb),
        ("temperature_c", health.temperature_c, policy.max_temperature_c),
    )
    for name, value, limit in limits:
        numbers[f"max_{name}_seen"] = value
        if limit is not None and value is not None and value > limit:
            return Verdict(False, name, numbers | {"limit": limit})
    confidence = mean_confidence(candidate)
    numbers["mean_confidence"] = round(confidence, 4) if confidence is not None else None
    if (
        policy.min_mean_confidence is not None
        and confidence is not None
        and confidence < policy.min_mean_confidence
    ):
        return Verdict(False, "mean_confidence", numbers | {"min": policy.min_mean_confidence})
    share = new_class_share(candidate, baseline)
    numbers["new_class_share"] = round(share, 4) if share is not None else None
    if (
        policy.max_new_class_share is not None
        and share is not None
        and share > policy.max_new_class_share
    ):
        return Verdict(False, "class_mix", numbers | {"max": policy.max_new_class_share})
    return Verdict(True, None, numbers)


def worst(samples: Sequence[dict[str, float | None]]) -> HealthMax:
    """The maxima of health samples (``Health.to_dict()`` form)."""

    def peak(key: str) -> float | None:
        values = [s[key] for s in samples if s.get(key) is not None]
        return max(values) if values else None  # type: ignore[type-var]

    return HealthMax(peak("cpu_percent"), peak("ram_used_mb"), peak("temperature_c"))


def judge_shadow(policy: ShadowPolicy, stats: ShadowStats, elapsed_s: float) -> Verdict:
    """The verdict on a shadow-first period so far."""
    agreement = stats.agreement
    live_p95, shadow_p95 = stats.live_p95_ms(), stats.shadow_p95_ms()
    numbers: dict[str, Any] = {
        "shadow_runs": stats.runs,
        "compared": stats.compared,
        "agreement": round(agreement, 4) if agreement is not None else None,
        "mean_distance": round(stats.mean_distance, 6) if stats.mean_distance is not None else None,
        "shadow_failed": stats.failed,
        "shadow_skipped": stats.skipped,
        "live_latency_p95_ms": live_p95,
        "shadow_latency_p95_ms": shadow_p95,
        "elapsed_s": round(elapsed_s, 3),
    }
    attempts = stats.runs + stats.failed
    planned = max(policy.min_compared, attempts)
    if planned and stats.failed / planned > policy.max_error_rate:
        return Verdict(False, "errors", numbers | {"max_error_rate": policy.max_error_rate})
    if stats.compared < policy.min_compared or elapsed_s < policy.min_seconds:
        return Verdict(None, None, numbers)
    if attempts and stats.failed / attempts > policy.max_error_rate:
        return Verdict(False, "errors", numbers | {"max_error_rate": policy.max_error_rate})
    if policy.min_agreement is not None and (agreement is None or agreement < policy.min_agreement):
        return Verdict(False, "agreement", numbers | {"min_agreement": policy.min_agreement})
    if live_p95 and shadow_p95 is not None:
        ratio = shadow_p95 / live_p95
        numbers["latency_p95_ratio"] = round(ratio, 4)
        if policy.max_latency_p95_ratio is not None and ratio > policy.max_latency_p95_ratio:
            return Verdict(
                False, "latency_p95", numbers | {"max_ratio": policy.max_latency_p95_ratio}
            )
    return Verdict(True, None, numbers)

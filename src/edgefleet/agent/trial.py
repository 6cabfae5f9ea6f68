"""Judging a new model on live traffic against the previous one (pure).

The trial ends when the candidate has answered ``min_inferences`` samples and
``min_seconds`` have passed, and every check has an answer; then every check must hold:

- error rate (failed requests over all requests) at most ``max_error_rate``;
- latency and CPU: the candidate against the previous model *on the same input at the
  same moment* (``PairedProbes``); each fails when most probes find the candidate more
  than ``max_latency_ratio`` (``max_cpu_ratio``) times as costly in wall time (in the
  process's CPU time), and costlier by more than ``probe_floor_ms``;
- CPU, RAM and temperature maxima over the trial within the limits;
- mean top-1 confidence at least ``min_mean_confidence``;
- the share of predictions in classes the previous model rarely predicted (under 1%)
  at most ``max_new_class_share``.

Each paired check is a sequential sign test: each probe pair either counts as *over*
(candidate costlier than the limit) or not, and the test asks whether most pairs are
over. Its evidence is an e-value, a nonnegative supermartingale under "at most half the
pairs are over", so by Ville's inequality it reaches ``1 / alpha`` with probability at
most ``alpha`` however often the trial looks; each check gets ``alpha`` =
``false_rollback_rate`` over the number of checks, so a model within both limits is
rolled back by them with at most that probability. While a check has no evidence either
way, the trial goes on, up to ``max_seconds``.

A check fails early when it cannot recover (the error budget of the whole trial is
already spent, or the latency evidence is in), so a bad model does not serve the whole
trial. ``TrialRun`` keeps what a shell measured during one trial and judges it; the
agent and the simulator both drive one, so they judge alike::

    run = TrialRun(policy, started_s=clock(), baseline=previous_stats, compare_latency=True)
    run.add_probe(0.000041, 0.000020, 0.000040, 0.000019)  # wall and CPU seconds
    run.add_health({"cpu_percent": 31.0})
    verdict = run.verdict(candidate_stats, now_s=clock())  # passed: None while running

``judge_shadow`` does the same for a shadow-first period, on what the shadow runner
measured: the candidate's failure rate, its top-1 agreement with the serving model
and its latency p95 over the serving model's p95 on the same requests.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.fleet.domain import ShadowPolicy, TrialPolicy
from edgefleet.registry.profile import confidence_mean
from edgefleet.runtime.metrics import ModelStats
from edgefleet.runtime.shadow import ShadowStats

RARE_CLASS_SHARE = 0.01
#: The share of probe pairs over the limit that the latency test's mixture weighs
#: against one half (equal weights): from barely more than half to nearly all.
OVER_SHARE_ALTERNATIVES = (0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Probe latencies kept for the quantiles an event reports (the test needs only counts).
PROBES_KEPT = 4096
#: The ratios at which an event counts the probe pairs over (``{measure}_over_at``): the
#: server's gates test a rollout's own limit against the device's pairs with these
#: counts (rollout.gates, paired evidence), at the smallest of them at or above it.
OVER_AT_RATIOS = (1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0)


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


def log_evidence(hits: npt.ArrayLike, trials: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The log of the e-value against "each trial hits with probability at most 1/2"
    after ``hits`` hits in ``trials`` (element-wise on arrays).

    The e-value is the mean, over ``OVER_SHARE_ALTERNATIVES`` p, of the likelihood ratio
    (2p)^hits (2(1-p))^misses. For each p > 1/2 that ratio is a nonnegative
    supermartingale under any hit probability up to 1/2, and so is their mean: it ever
    reaches 1/alpha with probability at most alpha (Ville's inequality).
    """
    hits = np.asarray(hits, np.float64)
    misses = np.asarray(trials, np.float64) - hits
    logs = [
        hits * math.log(2 * p) + misses * math.log(2 * (1 - p)) for p in OVER_SHARE_ALTERNATIVES
    ]
    combined: npt.NDArray[np.float64] = np.logaddexp.reduce(logs, axis=0)
    return combined - math.log(len(OVER_SHARE_ALTERNATIVES))


@dataclass
class PairedProbes:
    """Paired probes of one measure (``latency``: wall time; ``cpu``: the process's CPU
    time) of a trial: the candidate and the previous model run on the same input one
    right after the other (the order alternating), so both see the same caches, clock
    speed and load. A pair is *over* when the candidate took more than ``max_ratio``
    times as much as the previous model and more than ``floor_s`` more.
    """

    measure: str
    max_ratio: float
    floor_s: float
    pairs: int = 0
    over: int = 0
    over_at: list[int] = field(default_factory=lambda: [0] * len(OVER_AT_RATIOS))
    candidate_s: deque[float] = field(default_factory=lambda: deque(maxlen=PROBES_KEPT))
    baseline_s: deque[float] = field(default_factory=lambda: deque(maxlen=PROBES_KEPT))

    def add(self, candidate_s: float, baseline_s: float) -> None:
        """Count one pair (seconds each)."""
        self.pairs += 1
        if candidate_s > self.max_ratio * baseline_s and candidate_s - baseline_s > self.floor_s:
            self.over += 1
        if candidate_s - baseline_s > self.floor_s:
            for i, ratio in enumerate(OVER_AT_RATIOS):
                if candidate_s <= ratio * baseline_s:
                    break
                self.over_at[i] += 1
        self.candidate_s.append(candidate_s)
        self.baseline_s.append(baseline_s)

    def decided(self, alpha: float) -> bool | None:
        """``True``: the candidate costs more than the limit; ``False``: it does not;
        ``None``: not enough evidence either way yet."""
        threshold = math.log(1 / alpha)
        if float(log_evidence(self.over, self.pairs)) >= threshold:
            return True
        if float(log_evidence(self.pairs - self.over, self.pairs)) >= threshold:
            return False
        return None

    def numbers(self) -> dict[str, Any]:
        """What an event reports, named for the measure: the pairs, those over the limit
        and their share, those over each of ``OVER_AT_RATIOS`` (with the same floor),
        the median ratio and each model's p50 and p95 (ms)."""
        m = self.measure
        numbers: dict[str, Any] = {
            "probe_pairs": self.pairs,
            f"{m}_pairs": self.pairs,
            f"{m}_probes_over": self.over,
            f"max_{m}_ratio": self.max_ratio,
        }
        if not self.pairs:
            return numbers
        candidate = np.asarray(self.candidate_s) * 1000
        baseline = np.asarray(self.baseline_s) * 1000
        ratios = candidate / np.maximum(baseline, 1e-12)
        numbers |= {
            f"{m}_over_share": round(self.over / self.pairs, 4),
            f"{m}_over_at": {str(r): n for r, n in zip(OVER_AT_RATIOS, self.over_at, strict=True)},
            f"{m}_ratio_median": round(float(np.median(ratios)), 4),
            f"{m}_p50_ms": round(float(np.quantile(candidate, 0.5)), 6),
            f"{m}_p95_ms": round(float(np.quantile(candidate, 0.95)), 6),
            f"baseline_{m}_p50_ms": round(float(np.quantile(baseline, 0.5)), 6),
            f"baseline_{m}_p95_ms": round(float(np.quantile(baseline, 0.95)), 6),
        }
        return numbers


def judge(
    policy: TrialPolicy,
    candidate: ModelStats,
    baseline: ModelStats | None,
    health: HealthMax,
    elapsed_s: float,
    probes: Sequence[PairedProbes] | None = None,
) -> Verdict:
    """The verdict on a trial so far.

    ``baseline`` is the previous model's stats (for the class mix); ``probes`` the paired
    checks, latency first (``None``: not compared, e.g. no previous model). Each is
    decided at ``false_rollback_rate`` over their number, so together they roll a model
    within the limits back with at most that probability.
    """
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
    undecided: list[str] = []
    if probes is not None:
        numbers["probe_floor_ms"] = policy.probe_floor_ms
        alpha = policy.false_rollback_rate / max(len(probes), 1)
        for check in probes:
            numbers |= check.numbers()
            costlier = check.decided(alpha)
            if costlier:
                # Valid at any look: no need to serve a slow model to the end of the trial.
                stated = {"false_rollback_rate": policy.false_rollback_rate}
                return Verdict(False, check.measure, numbers | stated)
            if costlier is None:
                undecided.append(check.measure)
    elif policy.max_latency_ratio is not None or policy.max_cpu_ratio is not None:
        numbers["latency"] = "not_compared"
    finished = candidate.inferences >= policy.min_inferences and elapsed_s >= policy.min_seconds
    if not finished:
        return Verdict(None, None, numbers)
    if rate > policy.max_error_rate:
        return Verdict(False, "error_rate", numbers | {"max_error_rate": policy.max_error_rate})
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
    if undecided:
        if elapsed_s < policy.deadline_s:
            return Verdict(None, None, numbers | {"extended_for": ", ".join(undecided)})
        # No evidence either way by the deadline: the difference is too close to the
        # limit to tell, and a rollback needs evidence.
        for measure in undecided:
            numbers[measure] = "inconclusive"
    return Verdict(True, None, numbers)


class TrialRun:
    """One trial in progress: the measurements a shell feeds it, judged on demand.

    Pure: the shell owns the clock, the models and the probing; this keeps the health
    maxima and the probe pairs and calls ``judge``.
    """

    def __init__(
        self,
        policy: TrialPolicy,
        *,
        started_s: float,
        baseline: ModelStats | None,
        compare_latency: bool,
        progress: Mapping[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.started_s = started_s
        self.baseline = baseline
        # What the trial had seen before a restart (``progress()``): its serving time
        # and the candidate's counts. Probe pairs start again: they compare the two
        # models at one moment, and the moments before the restart are gone.
        self.carried_s = float(progress["serving_s"]) if progress else 0.0
        self.carried = ModelStats.from_dict(progress["stats"]) if progress else ModelStats()
        self.health = HealthMax()
        limits = (("latency", policy.max_latency_ratio), ("cpu", policy.max_cpu_ratio))
        self.probes: list[PairedProbes] | None = (
            [
                PairedProbes(measure, limit, policy.probe_floor_ms / 1000)
                for measure, limit in limits
                if limit is not None
            ]
            if compare_latency
            else None
        )

    def add_health(self, sample: Mapping[str, float | None]) -> None:
        """Take one health sample (``Health.to_dict()`` form) into the maxima."""
        self.health = worst(
            [
                {
                    "cpu_percent": self.health.cpu_percent,
                    "ram_used_mb": self.health.ram_used_mb,
                    "temperature_c": self.health.temperature_c,
                },
                dict(sample),
            ]
        )

    def add_probe(
        self,
        candidate_s: float,
        baseline_s: float,
        candidate_cpu_s: float | None = None,
        baseline_cpu_s: float | None = None,
    ) -> None:
        """One probe pair: the candidate's and the previous model's time on one input
        (wall time, and the process's CPU time where measured)."""
        for check in self.probes or ():
            if check.measure == "latency":
                check.add(candidate_s, baseline_s)
            elif candidate_cpu_s is not None and baseline_cpu_s is not None:
                check.add(candidate_cpu_s, baseline_cpu_s)

    @property
    def pairs(self) -> int:
        """Probe pairs taken so far."""
        return max((check.pairs for check in self.probes or ()), default=0)

    def verdict(self, candidate: ModelStats, now_s: float) -> Verdict:
        """The verdict on what the candidate did so far (``candidate``: its live stats
        since this run started)."""
        return judge(
            self.policy,
            ModelStats.merge_all([self.carried, candidate]),
            self.baseline,
            self.health,
            self.carried_s + now_s - self.started_s,
            self.probes,
        )

    def progress(self, candidate: ModelStats, now_s: float) -> dict[str, Any]:
        """The evidence to keep across a restart: serving seconds (downtime does not
        count) and the candidate's counts, in the form ``progress=`` takes."""
        return {
            "serving_s": round(self.carried_s + now_s - self.started_s, 3),
            "stats": ModelStats.merge_all([self.carried, candidate]).to_dict(),
        }


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

"""Gate verdicts (pure): is the candidate within its limits, on the evidence so far?

The controller looks again at every analysis tick, so a verdict must stay honest
under repeated looks (docs/rollouts.md):

- ``fail`` only when an always-valid confidence sequence (``stats``) puts the metric
  beyond its limit: the chance that a candidate as good as its limit ever fails,
  over any number of looks, is at most ``alpha``. The class distribution uses a
  chi-square test at an alpha-spending level, ``alpha / (k (k + 1))`` at look k.
- ``pass`` once the gate has ``min_samples`` and the point estimate is within the
  limit.
- ``inconclusive`` otherwise: too little data, or an estimate beyond the limit that is
  not yet significant. No data is never a pass.

Delivery metrics count the rollout's devices that finished (committed, rolled back or
failed). Behaviour metrics compare per-device telemetry of the candidate with the
baseline (devices on the previous version), matched by hardware: means are compared
per device, rates per request. ``restart_rate`` is a per-device mean too: each device's
unclean restarts on the version per hour it was on it (``DeviceSummary.value``)::

    result = evaluate(GateSpec(metric=Metric.CPU, max_ratio=1.3), evidence, 0.05, look=3)
    result.verdict, result.numbers["estimate"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeGuard

import numpy as np

from edgefleet.agent.trial import log_evidence
from edgefleet.fleet.telemetry import served_seconds
from edgefleet.registry.profile import CONFIDENCE_EDGES, confidence_mean
from edgefleet.rollout.policy import LOWER_IS_WORSE, GateSpec, Metric
from edgefleet.rollout.stats import (
    Interval,
    Moments,
    Stratum,
    beta_binomial_cs,
    chi_square,
    class_dispersion,
    jensen_shannon,
    mean_difference_cs,
    normal_mixture_radius,
    rate_difference_cs,
    share_ratio_pvalue,
    spent_alpha,
)
from edgefleet.rollout.status import FINAL_STATUSES, DeviceStatus, Tally
from edgefleet.runtime.metrics import latency_quantile

#: Rollback reasons that count as a failed trial (``trial_failures``).
TRIAL_FAILURES = ("trial_failed", "shadow_failed")
#: Predictions of a class due on the candidate (at the baseline's share) before its
#: share beyond the limit holds a pass: fewer are as likely noise as not.
MIN_EXPECTED = 10.0
MIN_EXPECTED_CRITICAL = 3.0
LOW_CONFIDENCE = 0.5
#: Per-device means need at least this many candidate devices before a gate may fail.
MIN_DEVICES_TO_FAIL = 2
SECONDS_PER_HOUR = 3600.0
#: Gates whose ratio a device's trial measures within the device, the candidate and the
#: previous model on the same input at the same moment (``PairedTrial``): the measure.
PAIRED_MEASURES = {Metric.LATENCY_P95: "latency", Metric.INFERENCE_CPU: "cpu"}


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class DeviceSummary:
    """One device's telemetry on one version over the analysis window."""

    device_id: str
    hardware: str
    inferences: int = 0
    errors: int = 0
    latency_counts: tuple[int, ...] = ()
    confidence_counts: tuple[int, ...] = ()
    class_counts: tuple[int, ...] = ()
    health: Mapping[str, float] = field(default_factory=dict)
    restarts: int = 0
    #: Seconds the device was on the version (``fleet.telemetry.served_seconds``).
    served_s: float | None = None
    #: The device's attributes the rollout segments by (``Evidence.segment_by``).
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_bucket(
        cls, device_id: str, hardware: str | None, data: Mapping[str, Any]
    ) -> DeviceSummary:
        """From merged telemetry buckets (``fleet.telemetry.merge`` form)."""
        sums, counts = data.get("health_sum", {}), data.get("health_n", {})
        return cls(
            device_id,
            hardware or "unknown",
            int(data.get("inferences", 0)),
            int(sum(data.get("errors", {}).values())),
            tuple(data.get("latency_counts", ())),
            tuple(data.get("confidence_counts", ())),
            tuple(data.get("class_counts", ())),
            {k: sums[k] / counts[k] for k in sums if counts.get(k)},
            int(data.get("restarts", 0)),
            served_seconds(data),
        )

    def value(self, metric: Metric) -> float | None:
        """The device's value of a per-device metric (``None``: no data)."""
        if metric is Metric.LATENCY_P95:
            return latency_quantile(list(self.latency_counts), 0.95, interpolate=True)
        if metric is Metric.MEAN_CONFIDENCE:
            return confidence_mean(self.confidence_counts)
        if metric is Metric.RESTART_RATE:
            # Restarts per hour on the version. Each device's own rate, so a device on
            # the version for a short while weighs as much as one on it for long: a
            # mean of per-device rates is unbiased for the fleet's rate either way,
            # and a few restart-looping devices show as the spread they are.
            if not self.served_s:
                return None
            return self.restarts * SECONDS_PER_HOUR / self.served_s
        return self.health.get(metric.value)

    def rate(self, metric: Metric) -> tuple[int, int]:
        """(events, trials) of a per-request rate."""
        if metric is Metric.ERROR_RATE:
            return self.errors, self.inferences + self.errors
        low = sum(
            c
            for edge, c in zip(CONFIDENCE_EDGES, self.confidence_counts, strict=False)
            if edge <= LOW_CONFIDENCE
        )
        return low, sum(self.confidence_counts)


@dataclass(frozen=True)
class Delivery:
    """How the rollout's devices ended so far."""

    finished: int = 0
    failed: int = 0
    rolled_back: int = 0
    trial_failed: int = 0

    @classmethod
    def of(cls, tally: Tally) -> Delivery:
        """The counts of the rollout's devices: finished (a final status), failed,
        rolled back, and rolled back because a trial or shadow check failed."""
        finished = failed = rolled_back = trial_failed = 0
        for (_, status, detail), n in tally.counts.items():
            if status in FINAL_STATUSES:
                finished += n
            if status is DeviceStatus.FAILED:
                failed += n
            if status is DeviceStatus.ROLLED_BACK:
                rolled_back += n
                if detail.startswith(TRIAL_FAILURES):
                    trial_failed += n
        return cls(finished, failed, rolled_back, trial_failed)

    def count(self, metric: Metric) -> int:
        return {
            Metric.DOWNLOAD_FAILURES: self.failed,
            Metric.ROLLBACKS: self.rolled_back,
            Metric.TRIAL_FAILURES: self.trial_failed,
        }[metric]


#: Behaviour gates read the telemetry of at most about this many devices per arm: a fixed
#: sample by device key beyond it. The intervals narrow with the square root of the
#: devices, so 2,000 against 5,000 widens them by at most ~1.6x, and then only when
#: both arms are that large (the late waves); the first waves' candidate arm is far
#: smaller, and it is what sets their width. Reading every bucket of a large fleet at
#: every analysis was the largest cost of the server at 10,000 devices
#: (benchmarks/fleet.py).
MAX_ANALYSED_DEVICES = 2000


def sample_every(devices: int) -> int:
    """Every how many-th device (by key) the telemetry of an arm of ``devices`` devices
    is read from."""
    return max(1, -(-devices // MAX_ANALYSED_DEVICES))


@dataclass(frozen=True)
class PairedTrial:
    """What one device's trial of the candidate measured in paired probes (from its last
    event, ``trial_passed`` or ``trial_failed:...``): per measure, the pairs and how many
    of them found the candidate costlier than each ratio the agent counts at
    (``agent.trial.OVER_AT_RATIOS``), and the candidate's p95 over the previous model's
    on those pairs."""

    device_id: str
    hardware: str
    measures: Mapping[str, tuple[int, Mapping[float, int]]] = field(default_factory=dict)
    p95_ratios: Mapping[str, float] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: the median of the pairs' ratios (candidate over previous model), per measure
    median_ratios: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_details(
        cls, device_id: str, hardware: str | None, details: Mapping[str, Any]
    ) -> PairedTrial:
        """From an event's details. A measure whose numbers do not add up (not counts,
        more over than pairs) is left out: a peer's bad input is no evidence."""
        measures: dict[str, tuple[int, Mapping[float, int]]] = {}
        p95_ratios: dict[str, float] = {}
        medians: dict[str, float] = {}
        for measure in set(PAIRED_MEASURES.values()):
            pairs, over = details.get(f"{measure}_pairs"), details.get(f"{measure}_over_at")
            if not _count(pairs) or not pairs or not isinstance(over, Mapping):
                continue
            try:
                counts = {float(ratio): n for ratio, n in over.items()}
            except (TypeError, ValueError):
                continue
            if not all(
                math.isfinite(r) and r > 0 and _count(n) and n <= pairs for r, n in counts.items()
            ):
                continue
            measures[measure] = (pairs, counts)
            ours, theirs = (
                details.get(f"{measure}_p95_ms"),
                details.get(f"baseline_{measure}_p95_ms"),
            )
            if _positive(ours) and _positive(theirs):
                p95_ratios[measure] = ours / theirs
            if _positive(median := details.get(f"{measure}_ratio_median")):
                medians[measure] = median
        return cls(device_id, hardware or "unknown", measures, p95_ratios, median_ratios=medians)

    def over(self, measure: str, ratio: float) -> tuple[int, int] | None:
        """(pairs, pairs over ``ratio``), the latter counted at the smallest ratio the
        device counted at that is at least ``ratio`` (no more than over ``ratio`` itself:
        the count errs towards the candidate). ``None``: not measured that far."""
        if measure not in self.measures:
            return None
        pairs, counts = self.measures[measure]
        at = min((r for r in counts if r >= ratio - 1e-9), default=None)
        return None if at is None else (pairs, counts[at])


def _positive(value: Any) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Evidence:
    delivery: Delivery
    candidate: Sequence[DeviceSummary] = ()
    baseline: Sequence[DeviceSummary] = ()
    #: The candidate's trials on the rollout's devices (paired probes).
    trials: Sequence[PairedTrial] = ()
    #: Device attributes whose values are segments of their own (``segment_by``).
    segment_by: Sequence[str] = ()

    def by_attribute(self) -> dict[str, Evidence]:
        """The evidence of each value of each ``segment_by`` attribute that takes more
        than one value, named ``attribute=value``."""
        found: dict[str, Evidence] = {}
        everyone: list[DeviceSummary | PairedTrial] = [
            *self.candidate,
            *self.baseline,
            *self.trials,
        ]
        for name in self.segment_by:
            values = sorted({d.attributes[name] for d in everyone if name in d.attributes})
            if len(values) < 2:
                continue  # one value: the segment is the fleet
            for value in values:
                found[f"{name}={value}"] = replace(
                    self,
                    candidate=[d for d in self.candidate if d.attributes.get(name) == value],
                    baseline=[d for d in self.baseline if d.attributes.get(name) == value],
                    trials=[t for t in self.trials if t.attributes.get(name) == value],
                )
        return found


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    verdict: Verdict
    dry_run: bool
    numbers: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "metric": self.metric,
            "verdict": self.verdict.value,
            "dry_run": self.dry_run,
            "numbers": self.numbers,
        }


def evaluate(gate: GateSpec, evidence: Evidence, alpha: float, look: int) -> GateResult:
    """The gate's verdict on the evidence at the ``look``-th analysis (1-based)."""
    numbers: dict[str, Any] = {"limit": {gate.limit_kind: gate.limit}, "alpha": alpha}
    if gate.metric in (Metric.DOWNLOAD_FAILURES, Metric.ROLLBACKS, Metric.TRIAL_FAILURES):
        verdict = _delivery(gate, evidence.delivery, alpha, numbers)
    elif gate.metric is Metric.CLASS_DISTRIBUTION:
        verdict = _classes(gate, evidence, alpha, look, numbers)
    elif gate.metric in (Metric.ERROR_RATE, Metric.LOW_CONFIDENCE):
        verdict = _rate(gate, evidence, alpha, numbers)
    else:
        verdict = _mean(gate, evidence, alpha, numbers)
    return GateResult(gate.label, gate.metric.value, verdict, gate.dry_run, _rounded(numbers))


def combine(results: Sequence[GateResult]) -> Verdict:
    """A wave's verdict: fail if any deciding gate fails, pass if all pass."""
    deciding = [r.verdict for r in results if not r.dry_run]
    if Verdict.FAIL in deciding:
        return Verdict.FAIL
    if all(v is Verdict.PASS for v in deciding):
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def _decide(worse_than_limit: bool, significant: bool, enough: bool) -> Verdict:
    if significant:
        return Verdict.FAIL
    if enough and not worse_than_limit:
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def _delivery(gate: GateSpec, delivery: Delivery, alpha: float, numbers: dict[str, Any]) -> Verdict:
    count, finished = delivery.count(gate.metric), delivery.finished
    numbers |= {"count": count, "finished": finished}
    enough = finished >= gate.min_samples
    if gate.max_count is not None:
        return _decide(False, count > gate.max_count, enough)
    limit = gate.limit
    interval = beta_binomial_cs(count, finished, alpha)
    numbers |= _interval(interval, "beta-binomial mixture confidence sequence")
    estimate = count / finished if finished else 0.0
    return _decide(estimate > limit, interval.low > limit, enough)


@dataclass(frozen=True)
class _Check:
    """One segment's test of a behaviour gate: its verdict, numbers, and whether its
    point estimate is beyond the limit on enough candidate devices to hold a pass."""

    verdict: Verdict
    numbers: dict[str, Any]
    holds_pass: bool = False


def segment_alpha(alpha: float, kinds: int, attribute_segments: int = 0) -> float:
    """Each segment's share of a gate's ``alpha`` when it is tested on the fleet, on
    each of ``kinds`` hardware kinds and on ``attribute_segments`` attribute values
    (Bonferroni: the chance that any of them raises a false alarm, over all looks, stays
    at most ``alpha``). One kind is the fleet."""
    segments = (kinds if kinds > 1 else 0) + attribute_segments
    return alpha / (segments + 1)


def _segmented(fleet: _Check, segments: Mapping[str, _Check], numbers: dict[str, Any]) -> Verdict:
    """The gate's verdict from the fleet's test and each hardware kind's: fail when any
    of them fails (the log names it), pass when the fleet passes and no kind has an
    estimate beyond its limit on enough devices, inconclusive otherwise."""
    numbers |= fleet.numbers
    if segments:
        numbers["segments"] = [{"segment": name, **c.numbers} for name, c in segments.items()]
    failed = [name for name, c in segments.items() if c.verdict is Verdict.FAIL]
    if fleet.verdict is Verdict.FAIL or failed:
        # The narrowest segment that failed: the fleet's own test may fail on what only
        # some kinds show, or only one has evidence of yet. "all": the fleet's test
        # failed and no segment's, or every one of two or more.
        local = failed and (len(failed) < len(segments) or len(segments) == 1)
        numbers["segment"] = failed[0] if local or fleet.verdict is not Verdict.FAIL else "all"
        return Verdict.FAIL
    holding = [name for name, c in segments.items() if c.holds_pass]
    if fleet.verdict is Verdict.PASS and holding:
        numbers["segment"] = holding[0]
        numbers["waiting_for"] = f"{holding[0]}: estimate beyond the limit, not yet significant"
        return Verdict.INCONCLUSIVE
    return fleet.verdict


def _rate(gate: GateSpec, evidence: Evidence, alpha: float, numbers: dict[str, Any]) -> Verdict:
    metric = gate.metric
    events = sum(d.rate(metric)[0] for d in evidence.candidate)
    trials = sum(d.rate(metric)[1] for d in evidence.candidate)
    numbers |= {"events": events, "trials": trials}
    enough = trials >= gate.min_samples
    if gate.max is not None:
        interval = beta_binomial_cs(events, trials, alpha)
        numbers |= _interval(interval, "beta-binomial mixture confidence sequence")
        return _decide(interval.estimate > gate.max, interval.low > gate.max, enough)
    margin = gate.limit
    strata = _rate_strata(evidence, metric)
    base_events = sum(d.rate(metric)[0] for d in evidence.baseline)
    base_trials = sum(d.rate(metric)[1] for d in evidence.baseline)
    numbers |= {"baseline_events": base_events, "baseline_trials": base_trials}
    by_attribute = evidence.by_attribute()
    level = segment_alpha(alpha, len(strata), len(by_attribute))
    if len(strata) > 1 or by_attribute:
        numbers["alpha_per_segment"] = level

    def check(parts: Sequence[tuple[int, int, int, int]], enough: bool) -> _Check:
        diff = rate_difference_cs(parts, level, tau=max(margin, 1e-3))
        if diff is None:
            return _Check(Verdict.INCONCLUSIVE, {"test": "no baseline on the same hardware"})
        found = _interval(diff, "stratified rate difference, normal-mixture confidence sequence")
        found["mde"] = _mde(diff, margin)
        worse = diff.estimate > margin
        return _Check(_decide(worse, diff.low > margin, enough), found, worse and enough)

    def segment(parts: Sequence[tuple[int, int, int, int]]) -> _Check:
        events, trials = sum(p[0] for p in parts), sum(p[1] for p in parts)
        found = check(parts, trials >= gate.min_samples)
        found.numbers.update(events=events, trials=trials)
        return found

    fleet = check(list(strata.values()), enough)
    segments = {}
    if len(strata) > 1:
        for hardware, part in strata.items():
            if part[1] and part[3]:
                segments[f"hardware={hardware}"] = segment([part])
    for name, part_evidence in by_attribute.items():
        parts = [p for p in _rate_strata(part_evidence, metric).values() if p[1] and p[3]]
        if parts:
            segments[name] = segment(parts)
    return _segmented(fleet, segments, numbers)


def _rate_strata(evidence: Evidence, metric: Metric) -> dict[str, tuple[int, int, int, int]]:
    """Per hardware kind: the candidate's events and trials, the baseline's."""
    strata: dict[str, tuple[int, int, int, int]] = {}
    for hardware in _hardware(evidence):
        c = [d.rate(metric) for d in evidence.candidate if d.hardware == hardware]
        b = [d.rate(metric) for d in evidence.baseline if d.hardware == hardware]
        strata[hardware] = (
            sum(e for e, _ in c),
            sum(n for _, n in c),
            sum(e for e, _ in b),
            sum(n for _, n in b),
        )
    return strata


def _mean(gate: GateSpec, evidence: Evidence, alpha: float, numbers: dict[str, Any]) -> Verdict:
    """A per-device mean, tested on the fleet, on each hardware kind and on each value of
    the attributes the rollout segments by. A ``max_ratio`` on latency also tests the
    trials' paired probes (``_paired_check``), each test at half the segment's alpha;
    ``inference_cpu`` has only those."""
    metric = gate.metric
    paired_only = metric is Metric.INFERENCE_CPU
    measure = PAIRED_MEASURES.get(metric) if gate.max_ratio is not None else None

    def arms(
        part: Evidence,
    ) -> tuple[list[PairedTrial], dict[str, list[float]], dict[str, list[float]]]:
        trials = [t for t in part.trials if measure in t.measures] if measure else []
        if paired_only:
            return trials, {}, {}
        return (
            trials,
            values_by_hardware(part.candidate, metric),
            values_by_hardware(part.baseline, metric),
        )

    trials, candidate, baseline = arms(evidence)
    kinds = sorted(set(candidate) | set(baseline) | {t.hardware for t in trials})
    by_attribute = evidence.by_attribute()
    level = segment_alpha(alpha, len(kinds), len(by_attribute))
    if len(kinds) > 1 or by_attribute:
        numbers["alpha_per_segment"] = level
    if trials and not paired_only:
        level /= 2  # two tests per segment
        numbers["alpha_per_test"] = level

    def check(
        part: Evidence,
        segment: Sequence[str],
        trials: Sequence[PairedTrial],
        candidate: Mapping[str, list[float]],
        baseline: Mapping[str, list[float]],
    ) -> _Check:
        paired = _paired_check(gate, trials, segment, level) if measure else None
        if paired_only:
            return paired or _Check(Verdict.INCONCLUSIVE, {"test": "no paired probes yet"})
        return _with_paired(_mean_check(gate, part, segment, candidate, baseline, level), paired)

    fleet = check(evidence, kinds, trials, candidate, baseline)
    segments = {}
    if len(kinds) > 1:
        for hardware in kinds:
            if candidate.get(hardware) or any(t.hardware == hardware for t in trials):
                segments[f"hardware={hardware}"] = check(
                    evidence, [hardware], trials, candidate, baseline
                )
    for name, part in by_attribute.items():
        part_trials, part_candidate, part_baseline = arms(part)
        if part_candidate or part_trials:
            part_kinds = sorted(
                set(part_candidate) | set(part_baseline) | {t.hardware for t in part_trials}
            )
            segments[name] = check(part, part_kinds, part_trials, part_candidate, part_baseline)
    return _segmented(fleet, segments, numbers)


def _paired_check(
    gate: GateSpec, trials: Sequence[PairedTrial], kinds: Sequence[str], alpha: float
) -> _Check | None:
    """The paired probes of the devices of ``kinds``: is the candidate costlier than
    ``max_ratio`` on most pairs? A sign test on all their pairs (``log_evidence``, the
    e-value the device trial uses): under "on every device, a pair is over the limit
    with probability at most one half" it reaches ``1 / alpha`` with probability at most
    ``alpha``, at any look. Probes pair the two models on one device at one moment, so
    the spread between devices, which sets the width of a comparison of per-device
    means, is not in them. To fail, at least ``MIN_DEVICES_TO_FAIL`` devices must each
    find most of their own pairs over: one odd device is not the release. A median
    over the limit is a p95 over it too where a model is slower throughout; a slower
    tail alone is for the comparison of per-device p95s to find. ``None``: no pairs."""
    measure = PAIRED_MEASURES[gate.metric]
    found = [
        (t, counted)
        for t in trials
        if t.hardware in kinds and (counted := t.over(measure, gate.limit)) is not None
    ]
    if not found:
        return None
    pairs, over = sum(p for _, (p, _) in found), sum(o for _, (_, o) in found)
    mostly_over = sum(1 for _, (p, o) in found if 2 * o > p)
    tails = [t.p95_ratios[measure] for t, _ in found if measure in t.p95_ratios]
    p95_ratio = float(np.median(tails)) if tails else None
    medians = [t.median_ratios[measure] for t, _ in found if measure in t.median_ratios]
    evidence = float(log_evidence(over, pairs))
    threshold = math.log(1 / alpha)
    numbers = {
        "devices": len(found),
        "pairs": pairs,
        "over": over,
        "over_share": over / pairs,
        "devices_mostly_over": mostly_over,
        "log_evidence": evidence,
        "log_threshold": threshold,
        # The median device's median pair ratio: the sign test's own estimate.
        "ratio": float(np.median(medians)) if medians else None,
        "p95_ratio_median": p95_ratio,
        "test": "paired probes within each device, sign test (e-value) of most pairs over "
        "the limit",
    }
    # Two devices at least, as a failure needs: one device alone holds nothing, so the
    # next wave brings the evidence. The probes' p95 ratio is reported, not judged: on
    # real devices the probes' own tails are timer and scheduler noise (two agents here,
    # a same-speed release: median pair ratio 1.00, p95 ratio 1.66).
    worse = 2 * over > pairs and mostly_over >= MIN_DEVICES_TO_FAIL
    if worse and evidence >= threshold:
        return _Check(Verdict.FAIL, numbers, True)
    if len(found) >= gate.min_samples and not worse:
        return _Check(Verdict.PASS, numbers)
    return _Check(Verdict.INCONCLUSIVE, numbers, worse)


def _with_paired(between: _Check, paired: _Check | None) -> _Check:
    """A segment's verdict from its comparison of per-device means and its paired
    probes: fail when either fails; pass when the pairs pass (most of them within the
    limit: sharper than the comparison, whose estimate at canary size is mostly the
    spread between devices), or the comparison passes and the pairs do not hold it;
    inconclusive otherwise."""
    if paired is None:
        return between
    numbers = between.numbers | {"paired": paired.numbers}
    if Verdict.FAIL in (between.verdict, paired.verdict):
        return _Check(Verdict.FAIL, numbers, True)
    if paired.verdict is Verdict.PASS:
        return _Check(Verdict.PASS, numbers)
    if between.verdict is Verdict.PASS and not paired.holds_pass:
        return _Check(Verdict.PASS, numbers)
    # Held by the pairs alone: where they are within the limit, an estimate of the
    # comparison beyond it is the spread between devices, not yet evidence.
    return _Check(Verdict.INCONCLUSIVE, numbers, paired.holds_pass)


def _mean_check(
    gate: GateSpec,
    evidence: Evidence,
    kinds: Sequence[str],
    candidate: Mapping[str, list[float]],
    baseline: Mapping[str, list[float]],
    alpha: float,
) -> _Check:
    """The test of a per-device mean on the devices of ``kinds`` (all of them: the fleet,
    stratified by kind; one: that kind's segment) at ``alpha``."""
    metric = gate.metric
    sign = -1.0 if metric in LOWER_IS_WORSE else 1.0  # work on "higher is worse"
    c_values = [v for h in kinds for v in candidate.get(h, [])]
    b_values = [v for h in kinds for v in baseline.get(h, [])]
    all_c, all_b = Moments.of(c_values), Moments.of(b_values)
    numbers: dict[str, Any] = {
        "devices": all_c.n,
        "candidate_mean": all_c.mean if all_c.n else None,
        "baseline_devices": all_b.n,
        "baseline_mean": all_b.mean if all_b.n else None,
    }
    enough = all_c.n >= gate.min_samples
    can_fail = all_c.n >= MIN_DEVICES_TO_FAIL
    if gate.max is not None or gate.min is not None:
        bound = gate.limit
        if all_c.n < 2:
            return _Check(Verdict.INCONCLUSIVE, numbers)
        tau = max(abs(bound) * 0.1, math.sqrt(all_c.variance) or 1e-6)
        radius = normal_mixture_radius(all_c.variance / all_c.n, alpha, tau**2)
        interval = Interval(all_c.mean, all_c.mean - radius, all_c.mean + radius)
        numbers |= _interval(interval, "normal-mixture confidence sequence, per-device means")
        if gate.max is not None:
            worse = all_c.mean > bound
            verdict = _decide(worse, interval.low > bound, enough)
        else:
            worse = all_c.mean < bound
            verdict = _decide(worse, interval.high < bound, enough)
        return _Check(verdict, numbers, worse and can_fail)
    strata = [
        Stratum(Moments.of(candidate.get(h, [])), Moments.of(baseline.get(h, []))) for h in kinds
    ]
    if metric is Metric.RESTART_RATE:
        strata = [_with_poisson_floor(s, h, evidence) for s, h in zip(strata, kinds, strict=True)]
    if gate.max_ratio is not None:
        if not all_b.n or all_b.mean <= 0:
            # A healthy fleet's restart rate is often 0, and no ratio to 0 is a limit.
            numbers["test"] = (
                "no baseline" if not all_b.n else "baseline mean is 0: use max_increase"
            )
            return _Check(Verdict.INCONCLUSIVE, numbers)
        margin = (gate.max_ratio - 1.0) * all_b.mean
        numbers["ratio"] = all_c.mean / all_b.mean if all_c.n else None
    else:
        margin = gate.limit
    tau = max(abs(margin), 1e-6)
    diff = mean_difference_cs(strata, alpha, tau)
    if diff is None:
        numbers["test"] = "no baseline on the same hardware"
        return _Check(Verdict.INCONCLUSIVE, numbers)
    numbers |= _interval(
        diff, "stratified difference of per-device means, normal-mixture confidence sequence"
    )
    mde = _mde(diff, margin)
    numbers["mde"] = mde
    if gate.max_ratio is not None:
        numbers["mde_ratio"] = 1.0 + mde / all_b.mean
    oriented = Interval(
        sign * diff.estimate,
        min(sign * diff.low, sign * diff.high),
        max(sign * diff.low, sign * diff.high),
    )
    beyond = oriented.estimate > margin
    if not can_fail:
        # One device's value against a fleet is not evidence enough either way (the
        # interval's normal approximation needs a few values per arm).
        return _Check(Verdict.INCONCLUSIVE, numbers)
    if metric is Metric.RESTART_RATE:
        restarted = sum(
            1 for d in evidence.candidate if d.hardware in kinds and d.restarts and d.served_s
        )
        numbers["devices_restarted"] = restarted
        if restarted < MIN_DEVICES_TO_FAIL:
            # Nor is one device that restarted, however often: a bad power supply is
            # not a bad release.
            return _Check(_decide(beyond, False, enough), numbers, False)
    return _Check(_decide(beyond, oriented.low > margin, enough), numbers, beyond)


def _mde(interval: Interval, margin: float) -> float:
    """The minimum detectable effect of this look: the smallest difference whose estimate
    would put the whole interval beyond ``margin`` (the limit plus the interval's
    half-width). Effects smaller than this cannot fail the gate on the data so far."""
    half = (interval.high - interval.low) / 2.0
    return margin + half if math.isfinite(half) else math.inf


def _classes(
    gate: GateSpec, evidence: Evidence, alpha: float, look: int, numbers: dict[str, Any]
) -> Verdict:
    """Every class's share on the candidate against the baseline, each tested exactly
    (``share_ratio_pvalue``) against ``max_change`` and, for a critical class, against
    halving; the look's spent alpha is split among the tests (Bonferroni), and each
    class's counts are weighed down by how much more its share differs from device to
    device than sampling explains (``class_dispersion``)."""
    width = max((len(d.class_counts) for d in (*evidence.candidate, *evidence.baseline)), default=0)
    arms = [_count_matrix(evidence.candidate, width), _count_matrix(evidence.baseline, width)]
    candidate, baseline = arms[0].sum(axis=0), arms[1].sum(axis=0)
    total_c, total_b = float(candidate.sum()), float(baseline.sum())
    statistic, dof, chi_p = chi_square(candidate.tolist(), baseline.tolist())
    dispersion = class_dispersion(arms)
    critical = [k for k in gate.critical_classes or () if k < width and baseline[k] > 0]
    tested = [k for k in range(width) if candidate[k] + baseline[k] > 0]
    level = spent_alpha(alpha, look)
    per_test = level / max(len(tested) + len(critical), 1)
    limit = gate.limit
    beyond: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    holding = False
    # The largest change of a class the baseline predicts, reported when none is beyond.
    largest: tuple[float | None, int | None] = (None, None)
    for k in tested:
        share_c = candidate[k] / total_c if total_c else 0.0
        share_b = baseline[k] / total_b if total_b else 0.0
        change = abs(share_c - share_b) / share_b if share_b else math.inf
        if total_c and share_b and (largest[0] is None or change > largest[0]):
            largest = (change, k)
        expected = total_c * share_b
        tests = []
        if change > limit and share_c < share_b and limit < 1.0:
            tests.append(("max_change", 1.0 - limit, True))
        elif change > limit and share_c > share_b:
            tests.append(("max_change", 1.0 + limit, False))
        if k in critical and share_c <= share_b / 2:
            tests.append(("critical", 0.5, True))
        for reason, ratio, lower in tests:
            p = share_ratio_pvalue(
                (float(candidate[k]), total_c),
                (float(baseline[k]), total_b),
                ratio,
                lower=lower,
                dispersion=float(dispersion[k]),
            )
            found = {"class": k, "change": change, "p_value": p, "limit": reason}
            beyond.append(found)
            if p < per_test:
                failed.append(found)
            # A class too rare for its count here to mean much does not hold a pass; a
            # critical one does as soon as a few predictions of it were due.
            holding |= expected >= (MIN_EXPECTED_CRITICAL if reason == "critical" else MIN_EXPECTED)
    worst = min(failed or beyond, key=lambda f: f["p_value"], default=None)
    numbers |= {
        "predictions": int(total_c),
        "baseline_predictions": int(total_b),
        "chi_square": statistic,
        "dof": dof,
        "chi_square_p_value": chi_p,
        "alpha_spent_this_look": level,
        "alpha_per_test": per_test,
        "look": look,
        "jensen_shannon": jensen_shannon(candidate.tolist(), baseline.tolist()),
        "max_change": worst["change"] if worst else largest[0],
        "class": worst["class"] if worst else largest[1],
        "p_value": worst["p_value"] if worst else None,
        "test": "exact conditional binomial per class, quasi-binomial dispersion, Bonferroni "
        "over classes, alpha spending alpha/(k(k+1))",
    }
    if beyond:
        numbers["classes_beyond"] = beyond
    if failed:
        return Verdict.FAIL
    enough = min(total_c, total_b) >= gate.min_samples
    return _decide(holding, False, enough)


def _count_matrix(devices: Sequence[DeviceSummary], width: int) -> np.ndarray:
    counts = np.zeros((len(devices), width))
    for row, device in enumerate(devices):
        counts[row, : len(device.class_counts)] = device.class_counts
    return counts


def _with_poisson_floor(stratum: Stratum, hardware: str, evidence: Evidence) -> Stratum:
    """``stratum`` of per-device restart rates with each arm's Poisson noise as its
    least variance: ``rate * mean(1 / hours)`` of the arm's devices, ``rate`` the
    stratum's pooled restarts per hour, at least half a restart over all its hours (as
    the rate gates keep a pooled rate off 0). Devices that all happen to show 0, or one
    device alone in its arm, cannot then claim an interval of no width."""

    def arm(devices: Sequence[DeviceSummary]) -> list[tuple[int, float]]:
        return [
            (d.restarts, d.served_s / SECONDS_PER_HOUR)
            for d in devices
            if d.hardware == hardware and d.served_s
        ]

    ours, theirs = arm(evidence.candidate), arm(evidence.baseline)
    hours = sum(h for _, h in ours) + sum(h for _, h in theirs)
    if not hours:
        return stratum
    rate = max(sum(r for r, _ in ours) + sum(r for r, _ in theirs), 0.5) / hours

    def floor(devices: list[tuple[int, float]]) -> float:
        return rate * sum(1.0 / h for _, h in devices) / len(devices) if devices else 0.0

    return replace(stratum, candidate_floor=floor(ours), baseline_floor=floor(theirs))


def values_by_hardware(devices: Sequence[DeviceSummary], metric: Metric) -> dict[str, list[float]]:
    """Each device's value of a per-device metric, by hardware kind (no data: left out)."""
    by_hardware: dict[str, list[float]] = {}
    for device in devices:
        value = device.value(metric)
        if value is not None:
            by_hardware.setdefault(device.hardware, []).append(value)
    return by_hardware


def _hardware(evidence: Evidence) -> list[str]:
    return sorted(
        {d.hardware for d in evidence.candidate} | {d.hardware for d in evidence.baseline}
    )


def _interval(interval: Interval, test: str) -> dict[str, Any]:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high, "test": test}


def _rounded(numbers: dict[str, Any]) -> dict[str, Any]:
    def tidy(value: Any) -> Any:
        if isinstance(value, float):
            if math.isinf(value) or math.isnan(value):
                return None
            return round(value, 6)
        if isinstance(value, dict):
            return {k: tidy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [tidy(v) for v in value]
        return value

    return {k: tidy(v) for k, v in numbers.items()}

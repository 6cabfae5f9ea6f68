"""The rollout controller's decisions and their effects (pure, sans-I/O).

Each tick the service gathers a ``Snapshot`` of one running rollout (where its current
wave is, how its devices are doing, the gate verdicts, how many devices the rate limits
and the schedule allow now) and ``decide`` returns the one thing to do next. ``apply``
says what that decision does to the rollout (``lifecycle.Change``): its new
``RolloutProgress``, the decision log entry and the webhook notices. The service carries
out the I/O (assigning, reverting), stores the change and takes the next snapshot, so a
restart continues from the state in the database::

    decision = decide(snapshot)
    if decision.kind is Kind.ASSIGN: ...  # assign decision.assign more devices
    change = apply(rollout.progress, decision, now, done={"assigned": 5})
    change.progress, change.entries, change.notices

A failing gate acts at any phase once devices run the candidate; passing needs the
bake. Gates are evaluated when ``analysis_due``; each analysis is one more look.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from edgefleet.rollout.gates import GateResult, Verdict, combine
from edgefleet.rollout.lifecycle import (
    Change,
    Entry,
    Kind,
    Notice,
    Phase,
    RolloutProgress,
    RolloutState,
    end,
    next_wave,
)
from edgefleet.rollout.policy import Approval, RolloutSpec, wave_percent
from edgefleet.rollout.status import FINAL_STATUSES, IN_PROGRESS, DeviceStatus, count

#: The snapshot and decision speak the lifecycle's words (a tick's state, phase, kind).
__all__ = [
    "Decision",
    "Kind",
    "Phase",
    "RolloutState",
    "Snapshot",
    "analysed",
    "analysis_due",
    "apply",
    "decide",
]


@dataclass(frozen=True)
class Snapshot:
    spec: RolloutSpec
    state: RolloutState
    wave: int
    phase: Phase
    phase_started_at: datetime
    now: datetime
    #: devices the current wave holds now, and how many of them are not assigned yet
    members: int
    unassigned: int
    #: how many more devices the rate limits and the schedule allow now
    may_assign: int
    #: statuses of every device of the rollout so far (cumulative over waves)
    counts: dict[DeviceStatus, int] = field(default_factory=dict)
    #: gate verdicts, when the service evaluated them on this tick
    gates: list[GateResult] | None = None
    #: times the current wave was extended (``RolloutProgress.extended``)
    extended: int = 0


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str = ""
    assign: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def decide(snap: Snapshot) -> Decision:
    """What a running rollout does next: one decision a tick."""
    if snap.state is not RolloutState.RUNNING or snap.phase is Phase.AWAITING_APPROVAL:
        return Decision(Kind.WAIT)
    wave = snap.spec.waves[snap.wave]
    elapsed = (snap.now - snap.phase_started_at).total_seconds()
    if snap.gates is not None:
        failed = [g for g in snap.gates if g.verdict is Verdict.FAIL and not g.dry_run]
        if failed:
            kind = Kind.ABORT if snap.spec.on_failure == "abort" else Kind.PAUSE
            names = ",".join(g.gate for g in failed)
            return Decision(kind, f"gate_failed:{names}"[:200], details=_gate_details(snap.gates))
    if snap.unassigned > 0 and snap.may_assign > 0:
        # Keep assigning in every phase: devices that join the target get their place.
        return Decision(Kind.ASSIGN, "wave_members", assign=min(snap.unassigned, snap.may_assign))
    if snap.phase is Phase.ROLLING:
        counts = snap.counts
        finished = count(counts, FINAL_STATUSES)
        unreachable = counts.get(DeviceStatus.UNREACHABLE, 0)
        in_progress = count(counts, IN_PROGRESS)
        assigned = finished + unreachable + in_progress
        needed = min(wave.min_devices, max(0, assigned - unreachable))
        if snap.unassigned == 0 and in_progress == 0 and finished >= needed:
            return Decision(
                Kind.BAKE,
                "wave_finished",
                details={"finished": finished, "unreachable": unreachable, "bake_s": wave.bake_s},
            )
        return Decision(Kind.WAIT)
    if snap.phase is Phase.BAKING:
        if elapsed >= wave.bake_s:
            return Decision(Kind.ANALYSE, "bake_done", details={"baked_s": round(elapsed, 1)})
        return Decision(Kind.WAIT)
    # ANALYSING
    if snap.gates is None:
        return Decision(Kind.WAIT)
    verdict = combine(snap.gates)
    details = _gate_details(snap.gates)
    if verdict is Verdict.PASS:
        last = snap.wave == len(snap.spec.waves) - 1
        if last:
            return Decision(Kind.SUCCEED, "all_waves_passed", details=details)
        following = snap.spec.waves[snap.wave + 1]
        if following.approval is Approval.MANUAL:
            return Decision(Kind.AWAIT_APPROVAL, "gates_passed", details=details)
        return Decision(Kind.ADVANCE, "gates_passed", details=details)
    if elapsed >= wave.analysis_timeout_s:
        return _inconclusive(snap, details)
    return Decision(Kind.WAIT)


def _inconclusive(snap: Snapshot, details: dict[str, Any]) -> Decision:
    """What gates still inconclusive at the analysis timeout lead to (``on_inconclusive``):
    an abort, an extension of the wave while it may still grow, or a pause."""
    spec = snap.spec
    if spec.on_inconclusive == "abort":
        return Decision(Kind.ABORT, "inconclusive", details=details)
    if spec.on_inconclusive == "extend":
        now = wave_percent(spec, snap.wave, snap.extended)
        grown = wave_percent(spec, snap.wave, snap.extended + 1)
        if now is not None and grown is not None and grown > now:
            return Decision(
                Kind.EXTEND,
                "inconclusive",
                details={"percent": grown, "from_percent": now} | details,
            )
        details = {"extension": f"the wave is at its cap of {now}%"} | details
    return Decision(Kind.PAUSE, "inconclusive", details=details)


def _gate_details(gates: list[GateResult]) -> dict[str, Any]:
    return {"gates": [g.to_dict() for g in gates]}


def analysis_due(
    progress: RolloutProgress, now: datetime, interval_s: float, counts: Mapping[DeviceStatus, int]
) -> bool:
    """Whether this tick evaluates the gates: once devices run the candidate, at most
    every ``interval_s`` (each analysis is a look of the sequential tests), and at once
    when the wave enters ``analysing``."""
    phase = progress.phase
    running = count(counts, (DeviceStatus.TRIAL, *FINAL_STATUSES))
    if phase is Phase.AWAITING_APPROVAL or (phase is Phase.ROLLING and not running):
        return False
    last = progress.last_analysis_at
    return (
        last is None
        or (now - last).total_seconds() >= interval_s
        or (phase is Phase.ANALYSING and last < progress.phase_started_at)
    )


def analysed(
    progress: RolloutProgress, gates: Sequence[GateResult], now: datetime
) -> RolloutProgress:
    """The progress after a gate analysis (one more look)."""
    return replace(
        progress,
        looks=progress.looks + 1,
        last_analysis_at=now,
        gates=tuple(g.to_dict() for g in gates),
    )


def apply(
    progress: RolloutProgress,
    decision: Decision,
    now: datetime,
    done: Mapping[str, Any] | None = None,
) -> Change:
    """What ``decision`` does to the rollout; ``done`` is what carrying it out did (the
    devices assigned, reverted), added to its log entry."""
    kind, reason = decision.kind, decision.reason
    if kind is Kind.WAIT:
        return Change(progress)
    details = {**decision.details, **(done or {})}
    notices: list[Notice] = []
    if kind is Kind.SUCCEED:
        return end(progress, RolloutState.SUCCEEDED, kind, reason, now, details)
    if kind is Kind.ABORT:
        ended = end(progress, RolloutState.ABORTED, kind, reason, now, details)
        if not reason.startswith("gate_failed"):
            return ended  # inconclusive: no gate failed
        # The gate failure is told as it was found: running, with the gates' numbers.
        failed = Notice(
            "rollout.gate_failed", progress.state, progress.wave, reason, decision.details
        )
        return replace(ended, notices=(failed, *ended.notices))
    if kind in (Kind.BAKE, Kind.ANALYSE):
        phase = Phase.BAKING if kind is Kind.BAKE else Phase.ANALYSING
        progress = replace(progress, phase=phase, phase_started_at=now)
    elif kind is Kind.EXTEND:
        # Back to rolling: the wave's new members are assigned, finish, bake, and the
        # gates look again (the looks go on counting: the tests hold over any number).
        progress = replace(
            progress, phase=Phase.ROLLING, phase_started_at=now, extended=progress.extended + 1
        )
    elif kind in (Kind.ADVANCE, Kind.AWAIT_APPROVAL):
        progress = next_wave(progress, now, awaiting=kind is Kind.AWAIT_APPROVAL)
        if kind is Kind.AWAIT_APPROVAL:
            notices.append(
                Notice("rollout.awaiting_approval", progress.state, progress.wave, reason)
            )
    elif kind is Kind.PAUSE:
        progress = replace(progress, state=RolloutState.PAUSED, reason=reason)
        if reason.startswith("gate_failed"):
            notices.append(
                Notice("rollout.gate_failed", progress.state, progress.wave, reason, details)
            )
        notices.append(Notice("rollout.paused", progress.state, progress.wave, reason, details))
    entry = Entry(kind, progress.wave, reason, details)
    return Change(progress, (entry,), tuple(notices))

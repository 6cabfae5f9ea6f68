"""The rollout controller's decisions (pure, sans-I/O).

The service gathers a ``Snapshot`` of one running rollout (where its current wave is,
how its devices are doing, the gate verdicts, how many devices the rate limits and the
schedule allow now) and ``decide`` returns the one thing to do next. The service
carries it out, writes it to the decision log and takes the next snapshot, so a
restart continues from the state in the database::

    decision = decide(snapshot)
    if decision.kind is Kind.ASSIGN: ...  # assign decision.assign more devices

A wave goes ``awaiting_approval`` (manual waves only) -> ``rolling`` (assign, wait for
devices to finish or time out) -> ``baking`` -> ``analysing`` -> the next wave. A
failing gate acts at any phase once devices run the candidate; passing needs the bake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgefleet.rollout.gates import GateResult, Verdict, combine
from edgefleet.rollout.policy import Approval, RolloutSpec


class RolloutState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    FAILED = "failed"


FINAL_STATES = frozenset({RolloutState.SUCCEEDED, RolloutState.ABORTED, RolloutState.FAILED})


class Phase(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLING = "rolling"
    BAKING = "baking"
    ANALYSING = "analysing"


class DeviceStatus(StrEnum):
    """Where a device of the rollout is with the candidate."""

    ASSIGNED = "assigned"  # desired state set, nothing heard yet
    DOWNLOADING = "downloading"
    TRIAL = "trial"  # verified and being smoke-tested, shadowed or trialled
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    UNREACHABLE = "unreachable"  # unfinished after the wave's device timeout
    REVERTED = "reverted"  # sent back to the previous version by an abort


FINISHED = frozenset({DeviceStatus.COMMITTED, DeviceStatus.ROLLED_BACK, DeviceStatus.FAILED})
IN_PROGRESS = frozenset({DeviceStatus.ASSIGNED, DeviceStatus.DOWNLOADING, DeviceStatus.TRIAL})


class Kind(StrEnum):
    WAIT = "wait"  # nothing to do now (not logged)
    ASSIGN = "assign"
    BAKE = "bake"
    ANALYSE = "analyse"
    ADVANCE = "advance"
    AWAIT_APPROVAL = "await_approval"
    SUCCEED = "succeed"
    PAUSE = "pause"
    ABORT = "abort"


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


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str = ""
    assign: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def decide(snap: Snapshot) -> Decision:
    """The next step of a rollout."""
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
        finished = sum(counts.get(s, 0) for s in FINISHED)
        unreachable = counts.get(DeviceStatus.UNREACHABLE, 0)
        in_progress = sum(counts.get(s, 0) for s in IN_PROGRESS)
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
        return Decision(Kind.PAUSE, "inconclusive", details=details)
    return Decision(Kind.WAIT)


def _gate_details(gates: list[GateResult]) -> dict[str, Any]:
    return {"gates": [g.to_dict() for g in gates]}


#: Agent states that mean the device took the update up, by the status they count as.
_DOWNLOADING_STATES = frozenset({"DOWNLOADING", "VERIFYING"})
_TRIAL_STATES = frozenset({"STAGED", "SMOKE_TEST", "SHADOW", "ACTIVATING", "TRIAL"})


def device_status(
    current: DeviceStatus,
    *,
    version: str,
    assigned_at: datetime,
    now: datetime,
    timeout_s: float,
    agent_state: str | None,
    reported_version: str | None,
    reported_at: datetime | None,
    outcome: tuple[str, str] | None,
) -> tuple[DeviceStatus, str]:
    """Where an assigned device is, from its twin and its latest outcome event for the
    candidate (``(to_state, reason)``) since it was assigned; with the reason code."""
    if outcome is not None:
        to_state, reason = outcome
        if to_state == "COMMITTED":
            return DeviceStatus.COMMITTED, ""
        if to_state == "ROLLED_BACK":
            return DeviceStatus.ROLLED_BACK, reason
        return DeviceStatus.FAILED, reason
    heard = reported_at is not None and reported_at >= assigned_at
    if heard and reported_version == version and agent_state == "COMMITTED":
        return DeviceStatus.COMMITTED, ""
    if heard and agent_state in _DOWNLOADING_STATES:
        return DeviceStatus.DOWNLOADING, ""
    if heard and agent_state in _TRIAL_STATES:
        return DeviceStatus.TRIAL, ""
    if (now - assigned_at).total_seconds() > timeout_s:
        return DeviceStatus.UNREACHABLE, "timeout"
    if current in (DeviceStatus.DOWNLOADING, DeviceStatus.TRIAL):
        return current, ""
    return DeviceStatus.ASSIGNED, ""

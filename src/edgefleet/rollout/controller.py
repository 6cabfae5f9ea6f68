"""The rollout controller's decisions and their effects (pure, sans-I/O).

Each tick the service gathers a ``Snapshot`` of one running rollout (where its current
wave is, how its devices are doing, the gate verdicts, how many devices the rate limits
and the schedule allow now) and ``decide`` returns the one thing to do next. ``apply``
says what that decision does to the rollout's ``RolloutProgress`` (its state, wave and
phase): the new progress, the decision log entries and the webhook notices. Operators'
actions (``start``, ``pause``, ``resume``, ``approve``, ``abort``) are changes of the
same kind. The service carries out the I/O (assigning, reverting), stores the change
and takes the next snapshot, so a restart continues from the state in the database::

    decision = decide(snapshot)
    if decision.kind is Kind.ASSIGN: ...  # assign decision.assign more devices
    change = apply(rollout.progress, decision, now, done={"assigned": 5})
    change.progress, change.entries, change.notices

A wave goes ``awaiting_approval`` (manual waves only) -> ``rolling`` (assign, wait for
devices to finish or time out) -> ``baking`` -> ``analysing`` -> the next wave. A
failing gate acts at any phase once devices run the candidate; passing needs the bake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgefleet.rollout.errors import RolloutStateError
from edgefleet.rollout.gates import GateResult, Verdict, combine
from edgefleet.rollout.policy import Approval, RolloutSpec
from edgefleet.rollout.status import FINAL_STATUSES, IN_PROGRESS, DeviceStatus, count

#: Longest reason kept with a rollout and its log entries.
MAX_REASON = 256


class RolloutState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    FAILED = "failed"


#: States a rollout never leaves; it stops holding on to its devices.
TERMINAL_STATES = frozenset({RolloutState.SUCCEEDED, RolloutState.ABORTED, RolloutState.FAILED})
#: States of a rollout that holds on to its devices (another rollout cannot take them).
ACTIVE_STATES = frozenset(RolloutState) - TERMINAL_STATES


class Phase(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLING = "rolling"
    BAKING = "baking"
    ANALYSING = "analysing"


class Kind(StrEnum):
    """What a decision log entry records: a controller decision or an operator action."""

    WAIT = "wait"  # nothing to do now (not logged)
    ASSIGN = "assign"
    BAKE = "bake"
    ANALYSE = "analyse"
    ADVANCE = "advance"
    AWAIT_APPROVAL = "await_approval"
    SUCCEED = "succeed"
    PAUSE = "pause"
    ABORT = "abort"
    # Operators' only (``decide`` never returns them).
    CREATE = "create"
    START = "start"
    RESUME = "resume"
    APPROVE = "approve"


@dataclass(frozen=True)
class RolloutProgress:
    """Where a rollout is: what its ticks and its operators change."""

    state: RolloutState
    wave: int
    phase: Phase
    phase_started_at: datetime
    #: gate analyses of the current wave so far (each one "look" of the sequential tests)
    looks: int = 0
    last_analysis_at: datetime | None = None
    #: the verdicts of the latest analysis (``GateResult.to_dict``)
    gates: tuple[dict[str, Any], ...] = ()
    #: why it is paused or ended
    reason: str = ""
    started_at: datetime | None = None
    #: when it reached a terminal state
    finished_at: datetime | None = None

    def moved_since(self, seen: RolloutProgress) -> bool:
        """Whether an operator (or another tick) changed the rollout since ``seen`` was
        read: a decision taken on ``seen`` is then dropped."""
        fields = ("state", "wave", "phase", "phase_started_at", "looks")
        return any(getattr(self, f) != getattr(seen, f) for f in fields)


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


@dataclass(frozen=True)
class Entry:
    """A decision log entry (the service adds who and when)."""

    kind: Kind
    wave: int
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notice:
    """A webhook notification: ``event`` and the rollout's state and wave it reports."""

    event: str
    state: RolloutState
    wave: int
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """What a decision or an operator's action does to a rollout."""

    progress: RolloutProgress
    entries: tuple[Entry, ...] = ()
    notices: tuple[Notice, ...] = ()


def initial(spec: RolloutSpec, now: datetime, *, start: bool) -> RolloutProgress:
    """A new rollout's progress: running (or a draft) at its first wave."""
    manual = spec.waves[0].approval is Approval.MANUAL
    return RolloutProgress(
        state=RolloutState.RUNNING if start else RolloutState.DRAFT,
        wave=0,
        phase=Phase.AWAITING_APPROVAL if manual else Phase.ROLLING,
        phase_started_at=now,
        started_at=now if start else None,
    )


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
        return Decision(Kind.PAUSE, "inconclusive", details=details)
    return Decision(Kind.WAIT)


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
        return _end(progress, RolloutState.SUCCEEDED, kind, reason, now, details)
    if kind is Kind.ABORT:
        # The gate failure is told as it was found: running, with the gates' numbers.
        failed = Notice(
            "rollout.gate_failed", progress.state, progress.wave, reason, decision.details
        )
        ended = _end(progress, RolloutState.ABORTED, kind, reason, now, details)
        return replace(ended, notices=(failed, *ended.notices))
    if kind in (Kind.BAKE, Kind.ANALYSE):
        phase = Phase.BAKING if kind is Kind.BAKE else Phase.ANALYSING
        progress = replace(progress, phase=phase, phase_started_at=now)
    elif kind in (Kind.ADVANCE, Kind.AWAIT_APPROVAL):
        progress = _next_wave(progress, now, awaiting=kind is Kind.AWAIT_APPROVAL)
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


def _next_wave(progress: RolloutProgress, now: datetime, *, awaiting: bool) -> RolloutProgress:
    return replace(
        progress,
        wave=progress.wave + 1,
        phase=Phase.AWAITING_APPROVAL if awaiting else Phase.ROLLING,
        phase_started_at=now,
        looks=0,
        last_analysis_at=None,
    )


def _end(
    progress: RolloutProgress,
    state: RolloutState,
    kind: Kind,
    reason: str,
    now: datetime,
    details: Mapping[str, Any],
) -> Change:
    """The rollout reaches a terminal state."""
    progress = replace(progress, state=state, reason=reason[:MAX_REASON], finished_at=now)
    entry = Entry(kind, progress.wave, reason, details)
    notice = Notice(f"rollout.{state.value}", state, progress.wave, reason, details)
    return Change(progress, (entry,), (notice,))


# -- operators' actions -------------------------------------------------------------------


def start(rollout_id: str, progress: RolloutProgress, now: datetime) -> Change:
    """Start a draft.

    Raises:
        RolloutStateError: it is not a draft.
    """
    _require(rollout_id, progress, "start", RolloutState.DRAFT)
    return _operator_change(
        replace(progress, state=RolloutState.RUNNING, reason="", started_at=now), Kind.START
    )


def pause(rollout_id: str, progress: RolloutProgress, reason: str = "") -> Change:
    """Pause a running rollout: no more devices are assigned until it is resumed.

    Raises:
        RolloutStateError: it is not running.
    """
    _require(rollout_id, progress, "pause", RolloutState.RUNNING)
    reason = reason or "operator"
    paused = replace(progress, state=RolloutState.PAUSED, reason=reason[:MAX_REASON])
    return _operator_change(paused, Kind.PAUSE, reason)


def resume(rollout_id: str, progress: RolloutProgress, now: datetime) -> Change:
    """Continue a paused rollout: the current wave bakes and is analysed afresh (new
    looks).

    Raises:
        RolloutStateError: it is not paused.
    """
    _require(rollout_id, progress, "resume", RolloutState.PAUSED)
    observing = progress.phase in (Phase.BAKING, Phase.ANALYSING)
    resumed = replace(
        progress,
        state=RolloutState.RUNNING,
        reason="",
        phase=Phase.BAKING if observing else progress.phase,
        phase_started_at=now,
        looks=0,
        last_analysis_at=None,
    )
    return _operator_change(resumed, Kind.RESUME)


def approve(rollout_id: str, progress: RolloutProgress, waves: int, now: datetime) -> Change:
    """Start a manual wave that awaits approval, or let a rollout paused on
    inconclusive gates go on to its next wave (or succeed, after its last of ``waves``).

    Raises:
        RolloutStateError: it is not waiting for an approval.
    """
    state, phase = progress.state, progress.phase
    if state is RolloutState.RUNNING and phase is Phase.AWAITING_APPROVAL:
        approved = replace(progress, phase=Phase.ROLLING, phase_started_at=now)
    elif state is RolloutState.PAUSED and progress.reason == "inconclusive":
        approved = replace(progress, looks=0, reason="", last_analysis_at=None)
        if progress.wave < waves - 1:
            # Approving the inconclusive wave also approves the next one.
            approved = _next_wave(approved, now, awaiting=False)
            approved = replace(approved, state=RolloutState.RUNNING)
        approved = replace(approved, phase_started_at=now)
    else:
        raise RolloutStateError(
            f"rollout {rollout_id} is not waiting for an approval",
            details={"state": state.value, "phase": phase.value, "reason": progress.reason},
        )
    entry = Entry(Kind.APPROVE, approved.wave, "operator")
    notice = Notice("rollout.approved", approved.state, approved.wave, "approved")
    if approved.state is RolloutState.PAUSED:  # the last wave: nothing left to approve
        reason = "approved_inconclusive"
        ended = _end(approved, RolloutState.SUCCEEDED, Kind.SUCCEED, reason, now, {})
        return Change(ended.progress, (entry, *ended.entries), (notice, *ended.notices))
    return Change(approved, (entry,), (notice,))


def abort(
    rollout_id: str,
    progress: RolloutProgress,
    now: datetime,
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> Change:
    """Stop a rollout for good; ``details`` (what reverting did) go with the log entry.

    Raises:
        RolloutStateError: it has already reached a terminal state.
    """
    require_active(rollout_id, progress)
    return _end(
        progress, RolloutState.ABORTED, Kind.ABORT, reason or "operator", now, details or {}
    )


def require_active(rollout_id: str, progress: RolloutProgress) -> None:
    """Raises RolloutStateError when the rollout has reached a terminal state."""
    if progress.state in TERMINAL_STATES:
        raise RolloutStateError(
            f"rollout {rollout_id} is already {progress.state.value}",
            details={"state": progress.state.value},
        )


def _require(rollout_id: str, progress: RolloutProgress, action: str, state: RolloutState) -> None:
    if progress.state is not state:
        raise RolloutStateError(
            f"cannot {action} rollout {rollout_id}: it is {progress.state.value}",
            details={"state": progress.state.value},
        )


def _operator_change(progress: RolloutProgress, kind: Kind, reason: str = "") -> Change:
    """A change of state by an operator: logged (the reason, else "operator") and sent
    to the webhooks as ``rollout.<new state>`` (the reason, else the action)."""
    entry = Entry(kind, progress.wave, reason or "operator")
    event = f"rollout.{progress.state.value}"
    return Change(
        progress, (entry,), (Notice(event, progress.state, progress.wave, reason or kind.value),)
    )

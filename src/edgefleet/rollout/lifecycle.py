"""A rollout's lifecycle (pure): its states, the phases of a wave, where it is
(``RolloutProgress``), and what operators' actions do to it.

A rollout is a ``draft`` until started, then ``running`` (or ``paused`` by an operator or
a gate) until it reaches a terminal state: ``succeeded``, ``aborted`` or ``failed``. Each
wave goes ``awaiting_approval`` (manual waves only) -> ``rolling`` -> ``baking`` ->
``analysing``. A change of a rollout (``Change``) is its new progress with the decision
log entries and the webhook notices that go with it; ``controller.apply`` makes one of a
tick's decision, and ``start``, ``pause``, ``resume``, ``approve`` and ``abort`` of an
operator's action::

    change = pause(rollout.id, rollout.progress, "checking")
    change.progress.state  # RolloutState.PAUSED
    change.entries, change.notices  # the log entry "pause", the event rollout.paused
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgefleet.rollout.errors import RolloutStateError
from edgefleet.rollout.policy import Approval, RolloutSpec

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
    EXTEND = "extend"  # grow the current wave for more evidence (``on_inconclusive``)
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
    #: times the current wave was extended for more evidence (``on_inconclusive``)
    extended: int = 0

    def moved_since(self, seen: RolloutProgress) -> bool:
        """Whether an operator (or another tick) changed the rollout since ``seen`` was
        read: a decision taken on ``seen`` is then dropped."""
        fields = ("state", "wave", "phase", "phase_started_at", "looks", "extended")
        return any(getattr(self, f) != getattr(seen, f) for f in fields)


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


def next_wave(progress: RolloutProgress, now: datetime, *, awaiting: bool) -> RolloutProgress:
    return replace(
        progress,
        wave=progress.wave + 1,
        phase=Phase.AWAITING_APPROVAL if awaiting else Phase.ROLLING,
        phase_started_at=now,
        looks=0,
        last_analysis_at=None,
        extended=0,
    )


def end(
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
        extended=0,
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
            approved = next_wave(approved, now, awaiting=False)
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
        ended = end(approved, RolloutState.SUCCEEDED, Kind.SUCCEED, reason, now, {})
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
    return end(progress, RolloutState.ABORTED, Kind.ABORT, reason or "operator", now, details or {})


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

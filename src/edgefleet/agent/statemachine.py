"""The update state machine, without I/O.

::

    IDLE -> DOWNLOADING -> VERIFYING -> STAGED -> SMOKE_TEST -> [SHADOW] -> ACTIVATING
               | retry         | reject                    | fail       | fail       | fail
               +--> FAILED     +--> FAILED                 +--> ROLLED_BACK <---------+
                                                                 ^
    ACTIVATING -> TRIAL --fail-----------------------------------+
                     +--pass--> COMMITTED

SHADOW is taken only when the desired state asks for shadow first and a model is
already serving: the candidate answers a share of live requests beside it, off the
request path, until its agreement and latency are judged.

``step(state, event)`` returns the next state and the commands the shell must carry
out (download into a slot, verify, smoke-test, switch the active slot, run a trial,
roll back, report). Every transition also yields a ``Transition`` record with a reason
code and the next sequence number, which the shell persists before acting and reports
to the server. ``recover(state)`` says what to do after a restart, from whatever state
a crash left on disk.

A check-in's answer is an event too (``CheckedIn``): the core decides what the desired
state asks of the device, what an operator allowed again, and whether a download put
off on an earlier check-in is tried again. ``agent.checkin`` reads the answer and holds
the rest of the check-in policy (when to check in, what to send)::

    state = AgentState.initial()
    state, commands, transitions = step(state, CheckedIn(model))
    # commands == [Download(model, slot="a")]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class State(StrEnum):
    IDLE = "IDLE"
    DOWNLOADING = "DOWNLOADING"
    VERIFYING = "VERIFYING"
    STAGED = "STAGED"
    SMOKE_TEST = "SMOKE_TEST"
    SHADOW = "SHADOW"
    ACTIVATING = "ACTIVATING"
    TRIAL = "TRIAL"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


#: States with no update in progress.
SETTLED = frozenset({State.IDLE, State.COMMITTED, State.ROLLED_BACK, State.FAILED})


@dataclass(frozen=True)
class DesiredModel:
    """The model version the device is asked to run (from the desired state).

    Equal when they name the same artifact: the policies that come with it do not count,
    so a desired state that only changes them does not restart an update.
    """

    model: str
    version: str
    variant: str
    target_path: str
    sha256: str
    size: int
    release: int = 0
    #: The trial policy that came with the desired state, kept so that an update
    #: resumed after a restart is judged as it was asked to be.
    trial: dict[str, Any] = field(default_factory=dict, compare=False)
    preconditions: dict[str, Any] = field(default_factory=dict, compare=False)
    #: Shadow-first policy; empty: activate right after the smoke test.
    shadow: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.model}@{self.version}"

    @classmethod
    def from_desired(cls, desired: Mapping[str, Any] | None) -> DesiredModel | None:
        """The model of a desired state as the device API sends it (``None``: no model)."""
        desired = desired or {}
        model = desired.get("model")
        if not model:
            return None
        return cls(
            model=model["name"],
            version=model["version"],
            variant=model["variant"],
            target_path=model["target_path"],
            sha256=model["sha256"],
            size=model["size"],
            release=model["release"],
            trial=desired.get("trial") or {},
            preconditions=desired.get("preconditions") or {},
            shadow=desired.get("shadow") or {},
        )


@dataclass(frozen=True)
class SlotContent:
    """What a slot holds. ``verified`` only after length, hash and signatures checked."""

    model: str
    version: str
    variant: str
    sha256: str
    verified: bool = False


@dataclass(frozen=True)
class AgentState:
    """Everything the agent must remember across a power cut (persisted as JSON)."""

    state: State = State.IDLE
    active: str | None = None  # "a", "b" or None (no model yet)
    slots: dict[str, SlotContent | None] = field(default_factory=lambda: {"a": None, "b": None})
    target: DesiredModel | None = None
    previous: str | None = None  # slot that was active before ACTIVATING (rollback point)
    refused: frozenset[str] = frozenset()  # versions never retried ("model@version")
    download_attempts: int = 0
    trial_boots: int = 0  # unclean restarts during the trial in progress
    seq: int = 0
    last_error: dict[str, Any] | None = None
    #: The trial's evidence so far, kept across restarts (``TrialRun.progress``): its
    #: serving seconds and the candidate's counts. Only while in TRIAL.
    trial_progress: dict[str, Any] | None = None

    @classmethod
    def initial(cls) -> AgentState:
        return cls()

    @property
    def inactive(self) -> str:
        return "b" if self.active == "a" else "a"

    @property
    def active_content(self) -> SlotContent | None:
        return self.slots.get(self.active) if self.active else None


# -- events the shell feeds in ---------------------------------------------------------


@dataclass(frozen=True)
class DesiredChanged:
    """The desired model is ``target`` (``None``: none asked for)."""

    target: DesiredModel | None


@dataclass(frozen=True)
class CheckedIn:
    """The server answered a check-in.

    ``changed`` is false for "nothing changed" (304): ``desired`` is then the model of
    the last answer. ``cleared``: refused versions ("model@version") an operator allows
    again (the desired config's ``clear_refused``).
    """

    desired: DesiredModel | None
    changed: bool = True
    cleared: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Downloaded:
    """The whole file is in the inactive slot (not yet trusted)."""


@dataclass(frozen=True)
class DownloadFailed:
    """The download stopped short. ``progressed``: bytes arrived before it was cut, so
    the partial file grew; such an attempt does not count towards giving up."""

    reason: str
    retryable: bool
    details: dict[str, Any] = field(default_factory=dict)
    progressed: bool = False


@dataclass(frozen=True)
class DownloadDeferred:
    """A precondition does not hold yet (disk, battery, network, window): try again at
    a later check-in, without counting an attempt."""

    reason: str


@dataclass(frozen=True)
class Verified:
    """Length, hashes, signatures and custom fields all checked."""


@dataclass(frozen=True)
class VerificationFailed:
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SmokePassed:
    pass


@dataclass(frozen=True)
class SmokeFailed:
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShadowPassed:
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShadowFailed:
    check: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Activated:
    """The runtime now serves the new slot and the pointer file says so."""


@dataclass(frozen=True)
class ActivationFailed:
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialPassed:
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialFailed:
    check: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OperatorCleared:
    """An operator allows a refused version again."""

    key: str


Event = (
    CheckedIn
    | DesiredChanged
    | Downloaded
    | DownloadFailed
    | DownloadDeferred
    | Verified
    | VerificationFailed
    | SmokePassed
    | SmokeFailed
    | ShadowPassed
    | ShadowFailed
    | Activated
    | ActivationFailed
    | TrialPassed
    | TrialFailed
    | OperatorCleared
)


# -- commands the shell carries out ----------------------------------------------------


@dataclass(frozen=True)
class Download:
    target: DesiredModel
    slot: str


@dataclass(frozen=True)
class Verify:
    target: DesiredModel
    slot: str


@dataclass(frozen=True)
class SmokeTest:
    target: DesiredModel
    slot: str


@dataclass(frozen=True)
class RunShadow:
    """Run the verified candidate in ``slot`` beside the serving model and judge it."""

    target: DesiredModel
    slot: str


@dataclass(frozen=True)
class Activate:
    slot: str


@dataclass(frozen=True)
class RunTrial:
    target: DesiredModel
    baseline_slot: str | None


@dataclass(frozen=True)
class SwitchBack:
    """Serve ``slot`` again (rollback); the failed slot's file may be discarded."""

    slot: str | None


@dataclass(frozen=True)
class Discard:
    """The inactive slot's partial or rejected file can be deleted."""

    slot: str


@dataclass(frozen=True)
class RetryLater:
    """Wait before the next command (the download again): ``agent.checkin`` says how
    long after the ``attempt``-th failed attempt in a row."""

    attempt: int


Command = (
    Download
    | Verify
    | SmokeTest
    | RunShadow
    | Activate
    | RunTrial
    | SwitchBack
    | Discard
    | RetryLater
)


@dataclass(frozen=True)
class Transition:
    """One state change, as reported to the server (sequence numbered, with a reason)."""

    seq: int
    from_state: State
    to_state: State
    reason: str
    model: str | None
    version: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_event(self, at: str) -> dict[str, Any]:
        """The device API's event for this transition (``at``: ISO 8601 time)."""
        return {
            "seq": self.seq,
            "kind": "transition",
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "reason": self.reason[:64],
            "model": self.model,
            "version": self.version,
            "at": at,
            "details": self.details,
        }


class InvalidEvent(Exception):  # noqa: N818 - a protocol violation, like h11's LocalProtocolError
    """The event makes no sense in the current state (a bug in the shell)."""


MAX_DOWNLOAD_ATTEMPTS = 8


Result = tuple[AgentState, list[Command], list[Transition]]


def _move(
    state: AgentState, to: State, reason: str, details: dict[str, Any] | None = None, **changes: Any
) -> tuple[AgentState, Transition]:
    # Name the update the transition is about: the new target when one starts, the
    # current one when it ends (clearing the target).
    target = changes.get("target") or state.target
    record = Transition(
        seq=state.seq + 1,
        from_state=state.state,
        to_state=to,
        reason=reason,
        model=target.model if target else None,
        version=target.version if target else None,
        details=details or {},
    )
    if not (to is State.TRIAL and state.state is State.TRIAL):
        changes.setdefault("trial_progress", None)  # a trial's evidence is its own
    return replace(state, state=to, seq=state.seq + 1, **changes), record


def _refuse(state: AgentState, to: State, reason: str, details: dict[str, Any]) -> Result:
    """End an update before activation: the old model never stopped serving."""
    slot = state.inactive
    key = state.target.key if state.target else ""
    refused = state.refused | {key} if key and to is State.FAILED else state.refused
    new_state, record = _move(
        state,
        to,
        reason,
        details,
        slots={**state.slots, slot: None},
        target=None,
        refused=refused,
        download_attempts=0,
        last_error={"reason": reason, **details},
    )
    return new_state, [Discard(slot)], [record]


def _roll_back(state: AgentState, reason: str, details: dict[str, Any]) -> Result:
    """Serve the previous slot again and never retry this version."""
    failed_slot = state.active if state.state is State.TRIAL else state.inactive
    back_to = state.previous
    key = state.target.key if state.target else ""
    new_state, record = _move(
        state,
        State.ROLLED_BACK,
        reason,
        details,
        active=back_to,
        previous=None,
        slots={**state.slots, failed_slot: None} if failed_slot else state.slots,
        target=None,
        refused=state.refused | {key} if key else state.refused,
        trial_boots=0,
        last_error={"reason": reason, **details},
    )
    commands: list[Command] = [SwitchBack(back_to)]
    if failed_slot:
        commands.append(Discard(failed_slot))
    return new_state, commands, [record]


def step(state: AgentState, event: Event) -> Result:
    """The next state, the commands to carry out, and the transitions to report.

    Raises:
        InvalidEvent: ``event`` cannot happen in ``state.state``.
    """
    now = state.state
    if isinstance(event, OperatorCleared):
        if event.key not in state.refused:
            return state, [], []
        return replace(state, refused=state.refused - {event.key}, seq=state.seq), [], []
    if isinstance(event, CheckedIn):
        return _checked_in(state, event)
    if isinstance(event, DesiredChanged):
        return _desired(state, event.target)
    if now is State.DOWNLOADING:
        if isinstance(event, Downloaded):
            new_state, record = _move(state, State.VERIFYING, "downloaded", download_attempts=0)
            return new_state, [Verify(state.target, state.inactive)], [record]  # type: ignore[arg-type]
        if isinstance(event, DownloadFailed):
            # A flaky link may cut a large download many times; only attempts that
            # fetched nothing bring the device closer to giving up.
            attempts = 1 if event.progressed else state.download_attempts + 1
            if event.retryable and attempts < MAX_DOWNLOAD_ATTEMPTS:
                # Stay in DOWNLOADING; the partial file is kept for the resume.
                retry = Download(state.target, state.inactive)  # type: ignore[arg-type]
                return (
                    replace(state, download_attempts=attempts),
                    [RetryLater(attempts), retry],
                    [],
                )
            return _refuse(
                state, State.FAILED, event.reason, {**event.details, "attempts": attempts}
            )
        if isinstance(event, DownloadDeferred):
            return replace(state, last_error={"reason": event.reason}), [], []
        if isinstance(event, VerificationFailed):
            # Signed metadata refused the target before a byte was trusted (revoked,
            # other hardware, below the floor, not signed as desired).
            return _refuse(state, State.FAILED, event.reason, event.details)
    elif now is State.VERIFYING:
        if isinstance(event, Verified):
            assert state.target is not None
            slots = {
                **state.slots,
                state.inactive: SlotContent(
                    state.target.model,
                    state.target.version,
                    state.target.variant,
                    state.target.sha256,
                    True,
                ),
            }
            staged, first = _move(state, State.STAGED, "verified", slots=slots)
            testing, second = _move(staged, State.SMOKE_TEST, "smoke_test_started")
            return testing, [SmokeTest(state.target, state.inactive)], [first, second]
        if isinstance(event, VerificationFailed):
            return _refuse(state, State.FAILED, event.reason, event.details)
    elif now in (State.STAGED, State.SMOKE_TEST):
        if isinstance(event, SmokePassed):
            assert state.target is not None
            if state.target.shadow and state.active is not None:
                new_state, record = _move(state, State.SHADOW, "smoke_test_passed")
                return new_state, [RunShadow(state.target, state.inactive)], [record]
            new_state, record = _move(
                state, State.ACTIVATING, "smoke_test_passed", previous=state.active
            )
            return new_state, [Activate(state.inactive)], [record]
        if isinstance(event, SmokeFailed):
            return _roll_back_before_activation(state, event.reason, event.details)
    elif now is State.SHADOW:
        if isinstance(event, ShadowPassed):
            new_state, record = _move(
                state, State.ACTIVATING, "shadow_passed", event.numbers, previous=state.active
            )
            return new_state, [Activate(state.inactive)], [record]
        if isinstance(event, ShadowFailed):
            return _roll_back_before_activation(
                state, f"shadow_failed:{event.check}", event.numbers
            )
    elif now is State.ACTIVATING:
        if isinstance(event, Activated):
            new_state, record = _move(
                state, State.TRIAL, "activated", active=state.inactive, trial_boots=0
            )
            return new_state, [RunTrial(state.target, state.previous)], [record]  # type: ignore[arg-type]
        if isinstance(event, ActivationFailed):
            return _roll_back_before_activation(state, event.reason, event.details)
    elif now is State.TRIAL:
        if isinstance(event, TrialPassed):
            new_state, record = _move(
                state,
                State.COMMITTED,
                "trial_passed",
                event.numbers,
                target=None,
                trial_boots=0,
                last_error=None,
            )
            return new_state, [], [record]
        if isinstance(event, TrialFailed):
            return _roll_back(state, f"trial_failed:{event.check}", event.numbers)
    raise InvalidEvent(f"{type(event).__name__} cannot happen in state {now}")


def _roll_back_before_activation(state: AgentState, reason: str, details: dict[str, Any]) -> Result:
    # The old model never stopped serving; the new slot is discarded and the version
    # refused, as after a failed trial.
    key = state.target.key if state.target else ""
    slot = state.inactive
    new_state, record = _move(
        state,
        State.ROLLED_BACK,
        reason,
        details,
        slots={**state.slots, slot: None},
        target=None,
        previous=None,
        refused=state.refused | {key} if key else state.refused,
        last_error={"reason": reason, **details},
    )
    return new_state, [SwitchBack(state.active), Discard(slot)], [record]


def _checked_in(state: AgentState, event: CheckedIn) -> Result:
    """What a check-in's answer asks of the device.

    A new answer may allow refused versions again and may change only the policies of
    the update in progress (kept, without restarting it). The desired model is taken up
    on a new answer, and on every check-in while settled: one that arrived while a
    model was on trial was put off (``_desired``) and is taken up now; on a device that
    already follows it this changes nothing. A download that the answer leaves where it
    was (put off by a precondition, or cut) is tried again.
    """
    desired = event.desired
    if event.changed:
        if state.refused & event.cleared:
            state = replace(state, refused=state.refused - event.cleared)
        if desired is not None and state.target == desired:
            state = replace(state, target=desired)
    commands: list[Command]
    transitions: list[Transition]
    if event.changed or state.state in SETTLED:
        state, commands, transitions = _desired(state, desired)
    else:
        commands, transitions = [], []
    if not transitions and state.state is State.DOWNLOADING and state.target is not None:
        commands = [*commands, Download(state.target, state.inactive)]
    return state, commands, transitions


def _desired(state: AgentState, target: DesiredModel | None) -> Result:
    active = state.active_content
    if target is None:
        return state, [], []
    same_as_active = active is not None and (active.model, active.version, active.sha256) == (
        target.model,
        target.version,
        target.sha256,
    )
    if state.target == target:
        return state, [], []  # already on it
    if same_as_active:
        if state.state in SETTLED:
            return state, [], []
        # Back to what is already serving: abandon the update in progress.
        return _abandon(state, "desired_is_active")
    if target.key in state.refused:
        return state, [], []  # never retried unless an operator clears it
    if state.state in (State.ACTIVATING, State.TRIAL):
        # A new model is already live and being judged: finish that first.
        return state, [], []
    if state.state not in SETTLED:
        abandoned, commands, records = _abandon(state, "superseded")
        started, more, more_records = _start(abandoned, target)
        return started, commands + more, records + more_records
    backup = state.slots.get(state.inactive)
    if (
        state.active is not None
        and backup is not None
        and backup.verified
        and (backup.model, backup.version, backup.sha256)
        == (target.model, target.version, target.sha256)
    ):
        # The version kept as backup (a fleet rollback): switch slots, no download.
        new_state, record = _move(
            state, State.ACTIVATING, "desired_is_backup", target=target, previous=state.active
        )
        return new_state, [Activate(state.inactive)], [record]
    return _start(state, target)


def _start(state: AgentState, target: DesiredModel) -> Result:
    new_state, record = _move(
        state,
        State.DOWNLOADING,
        "new_desired",
        {"release": target.release},
        target=target,
        download_attempts=0,
        slots={**state.slots, state.inactive: None},
    )
    return new_state, [Download(target, state.inactive)], [record]


def _abandon(state: AgentState, reason: str) -> Result:
    slot = state.inactive
    new_state, record = _move(
        state,
        State.IDLE,
        reason,
        target=None,
        slots={**state.slots, slot: None},
        download_attempts=0,
    )
    return new_state, [Discard(slot)], [record]


def recover(state: AgentState, *, clean_stop: bool = False, restart_limit: int = 1) -> Result:
    """What to do after a restart, from the state found on disk.

    The pointer file (``active``) is the truth about which slot serves. An update
    interrupted before ACTIVATING resumes where it was (a download resumes from its
    partial file, verification, smoke test and shadow run again from the start); one
    interrupted in ACTIVATING re-activates. A restart during TRIAL resumes the trial on
    the new model, its evidence kept (``trial_progress``), unless it was the
    ``restart_limit``-th unclean one of this trial (power loss and crashes count, a
    crash loop of a model that kills the process at load included; ``clean_stop``, a
    service stop, does not): then the new model is taken as having brought the device
    down, and rolls back with ``trial_failed:restart_limit``. As boot counters do
    (U-Boot's bootlimit, Android A/B's tries_remaining).
    """
    now = state.state
    target = state.target
    if now in SETTLED or target is None:
        return state, [], []
    if now is State.DOWNLOADING:
        return state, [Download(target, state.inactive)], []
    if now is State.VERIFYING:
        return state, [Verify(target, state.inactive)], []
    if now in (State.STAGED, State.SMOKE_TEST):
        return state, [SmokeTest(target, state.inactive)], []
    if now is State.SHADOW:
        # The old model never stopped serving: shadow the candidate again from the start.
        return state, [RunShadow(target, state.inactive)], []
    if now is State.ACTIVATING:
        if state.active is not None and state.active != state.previous:
            # The pointer already moved before the crash: the activation happened.
            new_state, record = _move(state, State.TRIAL, "activated", trial_boots=0)
            return new_state, [RunTrial(target, state.previous)], [record]
        return state, [Activate(state.inactive)], []
    # TRIAL: the device restarted with the new model live.
    if clean_stop:
        return state, [RunTrial(target, state.previous)], []
    restarts = state.trial_boots + 1
    numbers = {"restarts": restarts, "restart_limit": restart_limit}
    if restarts >= restart_limit:
        return _roll_back(state, "trial_failed:restart_limit", numbers)
    new_state, record = _move(state, State.TRIAL, "trial_resumed", numbers, trial_boots=restarts)
    return new_state, [RunTrial(target, state.previous)], [record]


def reported_state(state: AgentState) -> dict[str, Any]:
    """The device API's reported state of an agent in ``state``."""
    active = state.active_content
    return {
        "agent_state": state.state.value,
        "active_slot": state.active,
        "slots": [
            {
                "name": name,
                "model": c.model,
                "version": c.version,
                "variant": c.variant,
                "sha256": c.sha256,
                "verified": c.verified,
            }
            for name, c in state.slots.items()
            if c is not None
        ],
        "model": active.model if active else None,
        "version": active.version if active else None,
        "last_error": json.dumps(state.last_error)[:2000] if state.last_error else None,
        "trial_restarts": state.trial_boots if state.state is State.TRIAL else None,
    }


def to_json(state: AgentState) -> dict[str, Any]:
    """The persisted form of an ``AgentState``."""
    return {
        "state": state.state.value,
        "active": state.active,
        "slots": {k: (vars(v) if v else None) for k, v in state.slots.items()},
        "target": vars(state.target) if state.target else None,
        "previous": state.previous,
        "refused": sorted(state.refused),
        "download_attempts": state.download_attempts,
        "trial_boots": state.trial_boots,
        "seq": state.seq,
        "last_error": state.last_error,
        "trial_progress": state.trial_progress,
    }


def from_json(data: dict[str, Any]) -> AgentState:
    """Read a persisted ``AgentState``. Raises KeyError/ValueError/TypeError if malformed."""
    slots = {k: SlotContent(**v) if v else None for k, v in data["slots"].items()}
    if set(slots) != {"a", "b"}:
        raise ValueError(f"slots must be a and b, got {sorted(slots)}")
    active = data["active"]
    if active not in (None, "a", "b"):
        raise ValueError(f"active slot must be a, b or null, got {active!r}")
    return AgentState(
        state=State(data["state"]),
        active=active,
        slots=slots,
        target=DesiredModel(**data["target"]) if data["target"] else None,
        previous=data["previous"],
        refused=frozenset(data["refused"]),
        download_attempts=int(data["download_attempts"]),
        trial_boots=int(data["trial_boots"]),
        seq=int(data["seq"]),
        last_error=data["last_error"],
        trial_progress=data.get("trial_progress"),  # absent before restarts resumed trials
    )

"""Where each device of a rollout is (pure): its status, from its twin and its events.

A device the rollout assigned goes ``assigned -> downloading -> trial`` as it reports,
and ends ``committed``, ``rolled_back`` or ``failed`` with the outcome event of its
update; ``unreachable`` when the wave's device timeout passed without news (it may
still finish later); ``reverted`` once an abort sent it back. A final status
(``FINAL_STATUSES``) no longer changes with what the device reports: the device has
finished, and the delivery gates count it (``gates.Delivery.of``). ``Tally`` counts the
rollout's devices by wave, status and reason::

    status, detail = device_status(DeviceStatus.ASSIGNED, version="2.0.0", ...)
    changes = status_changes(assignments, "2.0.0", spec.waves, now)
    tally.by_status()  # {DeviceStatus.COMMITTED: 8}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from edgefleet.agent.statemachine import State
from edgefleet.rollout.policy import WaveSpec


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


#: Statuses of a device that finished: nothing it reports changes them any more.
FINAL_STATUSES = frozenset(
    {DeviceStatus.COMMITTED, DeviceStatus.ROLLED_BACK, DeviceStatus.FAILED, DeviceStatus.REVERTED}
)
#: Statuses of a device that is still working on the update (a wave waits for them).
IN_PROGRESS = frozenset({DeviceStatus.ASSIGNED, DeviceStatus.DOWNLOADING, DeviceStatus.TRIAL})
#: Assigned devices that have not finished their download yet (``max_concurrent_downloads``).
IN_FLIGHT = frozenset({DeviceStatus.ASSIGNED, DeviceStatus.DOWNLOADING})

#: The agent states an update ends in: an event into one of them is the device's outcome.
OUTCOME_STATES = frozenset({State.COMMITTED, State.ROLLED_BACK, State.FAILED})
#: Agent states that mean the device took the update up, by the status they count as.
_DOWNLOADING_STATES = frozenset({State.DOWNLOADING, State.VERIFYING})
_TRIAL_STATES = frozenset(
    {State.STAGED, State.SMOKE_TEST, State.SHADOW, State.ACTIVATING, State.TRIAL}
)


@dataclass(frozen=True)
class Assignment:
    """A device of the rollout that has not finished, with what it said since."""

    pk: int
    wave: int
    status: DeviceStatus
    assigned_at: datetime
    #: the twin's reported side: agent state, version, when
    agent_state: str | None
    reported_version: str | None
    reported_at: datetime | None
    #: (agent state, reason) of its latest outcome event for the candidate since assigned
    outcome: tuple[str, str] | None


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
        if to_state == State.COMMITTED:
            return DeviceStatus.COMMITTED, ""
        if to_state == State.ROLLED_BACK:
            return DeviceStatus.ROLLED_BACK, reason
        return DeviceStatus.FAILED, reason
    heard = reported_at is not None and reported_at >= assigned_at
    if heard and reported_version == version and agent_state == State.COMMITTED:
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


def status_changes(
    assignments: Iterable[Assignment], version: str, waves: Sequence[WaveSpec], now: datetime
) -> dict[int, tuple[DeviceStatus, str]]:
    """The new (status, detail) of each device whose status changed, by primary key; each
    device is timed out by the wave it came in with."""
    changes: dict[int, tuple[DeviceStatus, str]] = {}
    for a in assignments:
        status, detail = device_status(
            a.status,
            version=version,
            assigned_at=a.assigned_at,
            now=now,
            timeout_s=waves[min(a.wave, len(waves) - 1)].device_timeout_s,
            agent_state=a.agent_state,
            reported_version=a.reported_version,
            reported_at=a.reported_at,
            outcome=a.outcome,
        )
        if status is not a.status:
            changes[a.pk] = (status, detail)
    return changes


@dataclass(frozen=True)
class Tally:
    """The rollout's devices counted by (wave, status, detail)."""

    counts: Mapping[tuple[int, DeviceStatus, str], int]

    def by_status(self, wave: int | None = None) -> dict[DeviceStatus, int]:
        """Devices per status, of one wave or (``None``) of all."""
        totals: dict[DeviceStatus, int] = {}
        for (w, status, _), n in self.counts.items():
            if wave is None or w == wave:
                totals[status] = totals.get(status, 0) + n
        return totals

    def total(self) -> int:
        """Devices the rollout assigned so far."""
        return sum(self.counts.values())


def count(counts: Mapping[DeviceStatus, int], statuses: Iterable[DeviceStatus]) -> int:
    """How many devices have one of ``statuses``, from counts per status."""
    return sum(counts.get(s, 0) for s in statuses)

"""What the rollout service needs from storage, as interfaces, and the records it reads.

``edgefleet.store`` implements them with SQLAlchemy (``store/rollouts.py``); tests may
implement them in memory. The service opens a unit of work per operation (a tick
opens a few) and commits explicitly; a tick's reads use units of work that take no
write lock::

    with uow_factory() as uow:
        rollout = uow.rollouts.get(rollout_id, for_update=True)
        uow.rollouts.save(rollout.id, change.progress, now)
        uow.commit()

Every datetime a repository returns is timezone-aware (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, Self

from edgefleet.access.service import AccessUnitOfWork
from edgefleet.fleet.domain import DesiredState
from edgefleet.fleet.query import Node
from edgefleet.rollout.lifecycle import RolloutProgress
from edgefleet.rollout.policy import RolloutSpec
from edgefleet.rollout.status import Assignment, DeviceStatus, Tally

#: (device id, hardware, its telemetry buckets' gate fields merged) of one device.
DeviceTelemetry = tuple[str, str | None, dict[str, Any]]


@dataclass(frozen=True)
class Rollout:
    """A rollout: what it releases to which devices, and where it is."""

    id: str
    name: str
    model: str
    version: str
    spec: RolloutSpec
    created_at: datetime
    created_by: str
    progress: RolloutProgress


@dataclass(frozen=True)
class TargetDevice:
    """A device of the rollout's target, with what it runs and was told to run."""

    pk: int
    device_id: str
    hardware: str | None
    timezone: str | None  # its ``tz`` attribute
    reported_model: str | None
    reported_version: str | None
    desired_model: str | None
    desired_version: str | None


@dataclass(frozen=True)
class TouchedDevice:
    """A device the rollout assigned and has not reverted yet."""

    pk: int
    previous_version: str | None  # as recorded when it was assigned
    hardware: str | None


@dataclass(frozen=True)
class RolloutDevice:
    """A device of the rollout as listed: its wave and status."""

    device_id: str
    wave: int
    status: DeviceStatus
    detail: str
    previous_version: str | None
    assigned_at: datetime


@dataclass(frozen=True)
class LogEntry:
    """An entry of a rollout's decision log."""

    id: int
    at: datetime
    actor: str
    kind: str
    wave: int
    reason: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    created_at: datetime


@dataclass(frozen=True)
class WebhookDelivery:
    """A notification queued for one webhook, and how its delivery went so far."""

    id: int
    webhook_id: int
    event: str
    attempts: int
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str


@dataclass(frozen=True)
class DueDelivery:
    """A notification due for (another) attempt, with where and how to send it."""

    id: int
    event: str
    payload: dict[str, Any]
    url: str
    secret: str


class RolloutRepository(Protocol):
    """Rollouts, their devices, decision log and webhooks."""

    def add(self, rollout: Rollout, now: datetime) -> None:
        """Store a new rollout."""
        ...

    def get(self, rollout_id: str, *, for_update: bool = False) -> Rollout | None:
        """One rollout, or ``None``; ``for_update`` locks it until the unit of work ends."""
        ...

    def save(self, rollout_id: str, progress: RolloutProgress, now: datetime) -> None:
        """Store where a rollout is now."""
        ...

    def recent(self, limit: int = 100) -> list[Rollout]:
        """Rollouts, newest first."""
        ...

    def running_ids(self) -> list[str]:
        """Ids of the running rollouts, oldest first."""
        ...

    def target_devices(
        self, node: Node, now: datetime, rollout_id: str, among: Sequence[int] | None = None
    ) -> list[TargetDevice]:
        """Devices the query selects that no other active rollout holds (of ``among``,
        by primary key, when given)."""
        ...

    def assigned(self, rollout_id: str) -> set[int]:
        """Primary keys of the devices the rollout assigned."""
        ...

    def assign(
        self, rollout_id: str, wave: int, previous: Mapping[int, str | None], now: datetime
    ) -> None:
        """Assign devices (by primary key) in ``wave``, each with the version a revert
        sends it back to."""
        ...

    def assigned_since(self, rollout_id: str, since: datetime) -> int:
        """How many devices the rollout assigned at or after ``since``."""
        ...

    def open_assignments(self, rollout_id: str, model: str, version: str) -> list[Assignment]:
        """The rollout's devices that have not finished, each with its twin and its
        latest outcome event for ``version`` since it was assigned."""
        ...

    def set_statuses(
        self, rollout_id: str, changes: Mapping[int, tuple[DeviceStatus, str]], now: datetime
    ) -> None:
        """New (status, detail) of devices, by primary key."""
        ...

    def tally(self, rollout_id: str) -> Tally:
        """The rollout's devices counted by wave, status and detail."""
        ...

    def touched(self, rollout_id: str) -> list[TouchedDevice]:
        """The rollout's devices not reverted yet."""
        ...

    def touched_kinds(self, rollout_id: str) -> set[tuple[str | None, str | None]]:
        """Distinct (previous version, hardware) of the rollout's devices."""
        ...

    def devices(self, rollout_id: str, limit: int = 1000) -> list[RolloutDevice]:
        """The rollout's devices by wave, then device id."""
        ...

    def candidate_telemetry(
        self, rollout_id: str, model: str, version: str, since: datetime, every: int = 1
    ) -> list[DeviceTelemetry]:
        """Telemetry of the rollout's devices on ``version`` since ``since`` (of every
        ``every``-th device by primary key: a fixed sample of a large fleet)."""
        ...

    def device_attributes(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The attributes of each of ``device_ids`` (unknown ids left out)."""
        ...

    def trial_reports(
        self, rollout_id: str, model: str, version: str, every: int = 1
    ) -> list[DeviceTelemetry]:
        """(device id, hardware, details) of the event that ended each of the rollout's
        devices' last trial of ``version`` (``trial_passed`` or ``trial_failed:...``),
        sampled as ``candidate_telemetry``."""
        ...

    def baseline_telemetry(
        self,
        node: Node,
        now: datetime,
        model: str,
        version: str,
        previous: str | None,
        since: datetime,
        every: int = 1,
    ) -> list[DeviceTelemetry]:
        """Telemetry of the query's devices on ``previous`` (any other version of the
        model when ``None``) since ``since``, sampled as ``candidate_telemetry``."""
        ...

    def log(
        self,
        rollout_id: str,
        *,
        at: datetime,
        actor: str,
        kind: str,
        wave: int,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        """Append an entry to the rollout's decision log."""
        ...

    def decisions(self, rollout_id: str, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        """The decision log after entry ``after``, oldest first."""
        ...

    def add_webhook(self, *, url: str, secret: str, created_at: datetime, created_by: str) -> int:
        """Register a webhook; returns its id."""
        ...

    def webhooks(self) -> list[Webhook]:
        """The webhooks not disabled."""
        ...

    def enqueue(self, event: str, payload: dict[str, Any], now: datetime) -> int:
        """Queue a notification for every webhook; returns for how many."""
        ...

    def deliveries(self, limit: int = 100) -> list[WebhookDelivery]:
        """Notifications, newest first."""
        ...

    def due_deliveries(self, now: datetime, limit: int = 50) -> list[DueDelivery]:
        """Undelivered notifications due for an attempt, oldest first."""
        ...

    def delivery(self, delivery_id: int) -> WebhookDelivery | None:
        """One notification, or ``None``."""
        ...

    def save_delivery(
        self,
        delivery_id: int,
        *,
        attempts: int,
        last_error: str,
        next_attempt_at: datetime | None,
        delivered_at: datetime | None,
    ) -> None:
        """Store how a notification's delivery went."""
        ...


class DesiredStates(Protocol):
    """The devices' desired states (what the rollout asks of them)."""

    def set_desired_many(
        self, pks: Sequence[int], state: DesiredState | None, now: datetime
    ) -> None:
        """The same desired state for many devices, by primary key."""
        ...


class RolloutUnitOfWork(AccessUnitOfWork, Protocol):
    """One transaction over the rollout, device and access tables."""

    @property
    def rollouts(self) -> RolloutRepository: ...
    @property
    def devices(self) -> DesiredStates: ...
    def __enter__(self) -> Self: ...

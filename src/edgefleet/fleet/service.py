"""Fleet operations: enrollment, the twin, events, targeting, summaries.

An enrolled device's own requests (check-in, reports, events, telemetry) are done by
``fleet/checkin.py`` from the device's check-in row; two of its ports end here (wired
by server/context.py): ``report`` stores a report that changes attributes,
``add_events_many`` the batched events of many devices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, Self

from edgefleet.access import tokens
from edgefleet.access.service import AccessService, AccessUnitOfWork, Operator
from edgefleet.access.tokens import Role
from edgefleet.fleet.attributes import check_device_attributes
from edgefleet.fleet.domain import (
    AttributeValue,
    DesiredModel,
    DesiredState,
    EventBatch,
    EventsAccepted,
    ReportedState,
)
from edgefleet.fleet.errors import DeviceExistsError, DeviceNotFoundError, FleetError
from edgefleet.fleet.query import Node, parse_query

#: Resolves (model, version, device hardware) to the signed artifact that device should get.
ModelResolver = Callable[[str, str, str | None], DesiredModel]


class DeviceRepository(Protocol):
    def get(self, device_id: str, *, for_update: bool = False) -> Any: ...
    def create(
        self,
        device_id: str,
        *,
        attributes: dict[str, Any],
        group: str | None,
        credential_id: str,
        credential_hash: str,
        poll_interval_s: int,
        now: datetime,
    ) -> Any: ...
    def matching(
        self, node: Node | None, now: datetime, *, limit: int, offset: int
    ) -> list[Any]: ...
    def count_matching(self, node: Node | None, now: datetime) -> int: ...
    def set_desired(
        self, rows: Sequence[Any], state: DesiredState | None, now: datetime
    ) -> None: ...
    def set_reported(
        self, row: Any, reported: ReportedState, now: datetime, offline_after: float = 3.0
    ) -> None: ...
    def set_attributes(
        self, row: Any, changes: Mapping[str, Any], remove: Sequence[str] = ()
    ) -> None: ...
    def add_events_many(
        self, batches: Sequence[tuple[int, Sequence[Any]]], now: datetime
    ) -> list[tuple[int, int, int] | None]: ...
    def events(self, row: Any, limit: int = 50) -> list[Any]: ...
    def recent_telemetry(self, row: Any, limit: int = 12) -> list[Any]: ...
    def summary(self, now: datetime) -> dict[str, Any]: ...


class FleetUnitOfWork(AccessUnitOfWork, Protocol):
    @property
    def devices(self) -> DeviceRepository: ...
    def __enter__(self) -> Self: ...


def _now() -> datetime:
    return datetime.now(UTC)


class FleetService:
    """Devices and their twins over a unit of work."""

    def __init__(
        self,
        uow_factory: Callable[[], FleetUnitOfWork],
        access: AccessService,
        resolve_model: ModelResolver,
        *,
        view: Callable[[Any, datetime], Any],
        default_poll_interval_s: int = 60,
        offline_after_intervals: float = 3.0,
        read_uow_factory: Callable[[], FleetUnitOfWork] | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        #: For the fleet-wide summary (metrics scrapes): reads that take no write lock.
        self.read_uow_factory = read_uow_factory or uow_factory
        self.access = access
        self.resolve_model = resolve_model
        self.view = view
        self.default_poll_interval_s = default_poll_interval_s
        self.offline_after_intervals = offline_after_intervals

    # -- device side ----------------------------------------------------------------

    def enroll(
        self,
        device_id: str,
        enrollment_token: str,
        attributes: dict[str, Any],
        poll_interval_s: int | None = None,
    ) -> str:
        """Enroll a device and return its new credential (shown once).

        Raises:
            UnauthenticatedError: bad enrollment token.
            DeviceExistsError: the id is enrolled and no operator allowed re-enrollment.
        """
        issued = tokens.issue(tokens.DEVICE)
        now = _now()
        with self.uow_factory() as uow:
            group = self.access.use_enrollment_token(uow, enrollment_token)
            # After the token: a caller without a valid one learns nothing from this.
            check_device_attributes(attributes, current=None)
            existing = uow.devices.get(device_id, for_update=True)
            if existing is not None:
                if not existing.reenroll_allowed:
                    raise DeviceExistsError(
                        f"device {device_id!r} is already enrolled; an operator must allow "
                        "re-enrollment first (POST /api/v1/devices/{id}/reenroll)",
                        details={"device_id": device_id},
                    )
                existing.credential_id = issued.token_id
                existing.credential_hash = issued.digest
                existing.reenroll_allowed = False
                uow.devices.set_attributes(existing, attributes)
                if group is not None:
                    existing.group_name = group
            else:
                uow.devices.create(
                    device_id,
                    attributes=attributes,
                    group=group,
                    credential_id=issued.token_id,
                    credential_hash=issued.digest,
                    poll_interval_s=poll_interval_s or self.default_poll_interval_s,
                    now=now,
                )
            uow.commit()
        return issued.token

    def report(self, device_id: str, reported: ReportedState) -> None:
        """Store a device's reported state.

        Raises:
            DeviceNotFoundError, AttributeNotAllowedError (an attribute only an operator
            sets, see ``fleet.attributes``: nothing of the report is stored).
        """
        now = _now()
        with self.uow_factory() as uow:
            row = self._device(uow, device_id, for_update=True)
            check_device_attributes(reported.attributes, current=row.attributes or {})
            uow.devices.set_reported(row, reported, now, self.offline_after_intervals)
            uow.commit()

    def add_events_many(
        self, batches: Sequence[tuple[int, EventBatch]]
    ) -> list[EventsAccepted | DeviceNotFoundError]:
        """Store the event batches of many devices (idempotent by sequence number; by
        the primary key each device's credential authenticated) in one transaction: per
        batch, what was stored, or the error of a device deleted meanwhile."""
        now = _now()
        with self.uow_factory() as uow:
            stored = uow.devices.add_events_many([(pk, b.events) for pk, b in batches], now)
            uow.commit()
        return [
            EventsAccepted(accepted=r[0], duplicates=r[1], last_seq=r[2])
            if r is not None
            else DeviceNotFoundError("the device was deleted", details={"device_pk": pk})
            for (pk, _), r in zip(batches, stored, strict=True)
        ]

    # -- operator side --------------------------------------------------------------

    def list_devices(self, query: str | None, *, limit: int, offset: int) -> tuple[int, list[Any]]:
        """Devices matching a targeting query (all when ``query`` is empty).

        Raises:
            QuerySyntaxError, QueryFieldError.
        """
        node = parse_query(query) if query and query.strip() else None
        now = _now()
        with self.uow_factory() as uow:
            total = uow.devices.count_matching(node, now)
            rows = uow.devices.matching(node, now, limit=limit, offset=offset)
            return total, [self.view(r, now) for r in rows]

    def show_device(self, device_id: str) -> dict[str, Any]:
        now = _now()
        with self.uow_factory() as uow:
            row = self._device(uow, device_id)
            view = self.view(row, now)
            events = [
                {
                    "seq": e.seq,
                    "kind": e.kind,
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                    "reason": e.reason,
                    "model": e.model,
                    "version": e.version,
                    "at": _aware(e.at),
                    "details": e.details,
                }
                for e in uow.devices.events(row)
            ]
            health = [
                {
                    "bucket": _aware(t.bucket),
                    "model": t.model,
                    "version": t.version,
                    "samples": t.samples,
                    "data": t.data,
                }
                for t in uow.devices.recent_telemetry(row)
            ]
        return {"device": view.model_dump(), "events": events, "telemetry": health}

    def allow_reenroll(self, device_id: str, actor: Operator) -> None:
        actor.require(Role.OPERATOR)
        with self.uow_factory() as uow:
            row = self._device(uow, device_id, for_update=True)
            row.reenroll_allowed = True
            uow.access.audit(
                at=_now(),
                actor=actor.actor,
                action="device.allow_reenroll",
                target=device_id,
                before={"reenroll_allowed": False},
                after={"reenroll_allowed": True},
            )
            uow.commit()

    def set_attributes(
        self,
        device_id: str,
        actor: Operator,
        changes: Mapping[str, AttributeValue | None],
    ) -> dict[str, Any]:
        """Set (a value) or remove (None) a device's attributes as an operator, labels
        (``group``, ``cohort``) and identity (``hw``) included; returns the device's
        attributes after the change, ``group`` among them.

        Raises:
            ForbiddenError, DeviceNotFoundError.
        """
        actor.require(Role.OPERATOR)
        with self.uow_factory() as uow:
            row = self._device(uow, device_id, for_update=True)
            before = {**(row.attributes or {}), "group": row.group_name}
            if "group" in changes:
                group = changes["group"]
                row.group_name = None if group is None else str(group)
            uow.devices.set_attributes(
                row,
                {k: v for k, v in changes.items() if k != "group" and v is not None},
                remove=[k for k, v in changes.items() if k != "group" and v is None],
            )
            after = {**(row.attributes or {}), "group": row.group_name}
            uow.access.audit(
                at=_now(),
                actor=actor.actor,
                action="device.set_attributes",
                target=device_id,
                before={k: before.get(k) for k in changes},
                after={k: after.get(k) for k in changes},
            )
            uow.commit()
        return after

    def set_desired(
        self,
        actor: Operator,
        *,
        model: str | None,
        version: str | None,
        device_id: str | None = None,
        query: str | None = None,
        template: DesiredState | None = None,
    ) -> int:
        """Set the desired model of one device or of every device a query matches.

        The artifact variant is chosen per device from its hardware; ``model=None``
        clears the desired model. Returns how many devices changed.

        Raises:
            ForbiddenError, DeviceNotFoundError, QuerySyntaxError, QueryFieldError,
            VersionNotFoundError (registry), RepositoryStateError (not signed).
        """
        actor.require(Role.OPERATOR)
        now = _now()
        base = template or DesiredState()
        node = parse_query(query) if query and query.strip() else None
        # Resolve the artifacts first, outside the write transaction: resolving reads
        # the registry, which must not wait on the lock this update is about to take.
        with self.uow_factory() as uow:
            hardware_kinds = {row.hardware for row in self._targets(uow, device_id, node, now)}
        states = {
            hardware: base.model_copy(
                update={
                    "model": self.resolve_model(model, version, hardware)
                    if model and version
                    else None,
                }
            )
            for hardware in hardware_kinds
        }
        with self.uow_factory() as uow:
            rows = self._targets(uow, device_id, node, now, for_update=True)
            by_hardware: dict[str | None, list[Any]] = {}
            for row in rows:
                by_hardware.setdefault(row.hardware, []).append(row)
            for hardware, group in by_hardware.items():
                if hardware not in states:
                    raise FleetChangedError(
                        "devices changed hardware while their desired state was being set; "
                        "nothing was changed, try again"
                    )
                uow.devices.set_desired(group, states[hardware], now)
            changed = len(rows)
            target = device_id or f"query:{query or '*'}"
            uow.access.audit(
                at=now,
                actor=actor.actor,
                action="device.set_desired",
                target=target,
                before=None,
                after={"model": model, "version": version, "devices": changed},
            )
            uow.commit()
        return changed

    def _targets(
        self,
        uow: FleetUnitOfWork,
        device_id: str | None,
        node: Node | None,
        now: datetime,
        *,
        for_update: bool = False,
    ) -> list[Any]:
        if device_id is not None:
            return [self._device(uow, device_id, for_update=for_update)]
        return uow.devices.matching(node, now, limit=1_000_000, offset=0)

    def summary(self) -> dict[str, Any]:
        with self.read_uow_factory() as uow:
            return uow.devices.summary(_now())

    @staticmethod
    def _device(uow: FleetUnitOfWork, device_id: str, *, for_update: bool = False) -> Any:
        row = uow.devices.get(device_id, for_update=for_update)
        if row is None:
            raise DeviceNotFoundError(f"no device {device_id!r}", details={"device_id": device_id})
        return row


class FleetChangedError(FleetError):
    """The fleet changed under a bulk update; retrying is safe."""

    code = "fleet_changed"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

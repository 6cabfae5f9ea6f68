"""SQL repository of rollouts, their devices, decision log and webhooks.

Everything the controller needs per tick is a handful of set-based queries (the
target's devices, the unfinished assignments with their latest outcome event, the
telemetry of both arms), so its cost grows with the rows read, not with round trips.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, not_, select, true, update
from sqlalchemy.orm import Session

from edgefleet.fleet.query import Node
from edgefleet.fleet.telemetry import frozen, merge_buckets
from edgefleet.store.devices import utc
from edgefleet.store.tables import (
    DeviceEventRow,
    DeviceRow,
    RolloutDecisionRow,
    RolloutDeviceRow,
    RolloutRow,
    TelemetryRow,
    WebhookDeliveryRow,
    WebhookRow,
)
from edgefleet.store.targeting import compile_query

#: Rollout states that hold on to their devices.
ACTIVE_STATES = ("draft", "running", "paused")
#: Device statuses that are final for a rollout.
FINAL_STATUSES = ("committed", "rolled_back", "failed", "reverted")
OUTCOME_STATES = ("COMMITTED", "ROLLED_BACK", "FAILED")


@dataclass(frozen=True)
class TargetDevice:
    pk: int
    device_id: str
    hardware: str | None
    timezone: str | None
    reported_model: str | None
    reported_version: str | None
    desired_model: str | None
    desired_version: str | None

    def previous_version(self, model: str) -> str | None:
        """The version of ``model`` a revert sends the device back to: the one it
        reported running, else (it has not reported one yet, say its first reports are
        still on their way) the one it was told to run before."""
        if self.reported_version is not None and self.reported_model in (None, model):
            return self.reported_version
        if self.desired_model == model:
            return self.desired_version
        return None


@dataclass(frozen=True)
class Progress:
    """An unfinished assignment with what the device said since."""

    pk: int
    wave: int
    status: str
    assigned_at: datetime
    agent_state: str | None
    reported_version: str | None
    reported_at: datetime | None
    last_seen_at: datetime | None
    outcome: tuple[str, str] | None  # (to_state, reason) of the latest outcome event


class GateTelemetryCache:
    """The gate fields of telemetry buckets as last decoded, per analysed arm.

    A gate analysis reads every bucket of both arms since the rollout started, and
    decoding their JSON was most of its cost (py-spy at 10,000 devices: 13% of the
    server's interpreter time with an analysis every 5 s). Between two analyses only
    the buckets that took new samples change, so a bucket's decoded fields are used
    again while its row id and sample count are the same (the count grows with every
    merge into it). Each arm keeps only the buckets its latest analysis read, and only
    the ``max_arms`` arms analysed last are kept. Thread-safe.
    """

    def __init__(self, max_arms: int = 16) -> None:
        self.max_arms = max_arms
        self._arms: dict[tuple[str, ...], dict[int, tuple[int, dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        #: Buckets decoded and buckets used again, for tests and diagnostics.
        self.decoded = 0
        self.reused = 0

    def arm(self, key: tuple[str, ...]) -> dict[int, tuple[int, dict[str, Any]]]:
        with self._lock:
            return dict(self._arms.get(key, {}))

    def keep(self, key: tuple[str, ...], rows: dict[int, tuple[int, dict[str, Any]]]) -> None:
        with self._lock:
            self._arms.pop(key, None)
            self._arms[key] = rows  # the newest last
            while len(self._arms) > self.max_arms:
                del self._arms[next(iter(self._arms))]


class SqlRolloutRepository:
    def __init__(self, session: Session, gate_cache: GateTelemetryCache | None = None) -> None:
        self.session = session
        self.gate_cache = gate_cache

    # -- rollouts ------------------------------------------------------------------

    def add(self, **fields: Any) -> RolloutRow:
        row = RolloutRow(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, rollout_id: str, *, for_update: bool = False) -> RolloutRow | None:
        query = select(RolloutRow).where(RolloutRow.id == rollout_id)
        if for_update:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()

    def recent(self, limit: int = 100) -> list[RolloutRow]:
        query = select(RolloutRow).order_by(RolloutRow.created_at.desc()).limit(limit)
        return list(self.session.scalars(query))

    def running_ids(self) -> list[str]:
        query = select(RolloutRow.id).where(RolloutRow.state == "running")
        return list(self.session.scalars(query.order_by(RolloutRow.created_at)))

    # -- devices -------------------------------------------------------------------

    def target_devices(
        self, node: Node, now: datetime, rollout_id: str, among: Sequence[int] | None = None
    ) -> list[TargetDevice]:
        """Devices the query selects that no other active rollout holds (of ``among``,
        by primary key, when given)."""
        claimed = (
            select(RolloutDeviceRow.device_pk)
            .join(RolloutRow, RolloutRow.id == RolloutDeviceRow.rollout_id)
            .where(RolloutRow.state.in_(ACTIVE_STATES), RolloutRow.id != rollout_id)
        )
        query = select(
            DeviceRow.id,
            DeviceRow.device_id,
            DeviceRow.hardware,
            DeviceRow.attributes["tz"].as_string(),
            DeviceRow.reported_model,
            DeviceRow.reported_version,
            DeviceRow.desired["model"]["name"].as_string(),
            DeviceRow.desired["model"]["version"].as_string(),
        ).where(compile_query(node, now=now), not_(DeviceRow.id.in_(claimed)))
        if among is not None:
            query = query.where(DeviceRow.id.in_(list(among)))
        return [TargetDevice(*row) for row in self.session.execute(query)]

    def touched_kinds(self, rollout_id: str) -> set[tuple[str | None, str | None]]:
        """Distinct (previous version, hardware) of the rollout's devices."""
        query = (
            select(RolloutDeviceRow.previous_version, DeviceRow.hardware)
            .join(DeviceRow, DeviceRow.id == RolloutDeviceRow.device_pk)
            .where(RolloutDeviceRow.rollout_id == rollout_id)
            .distinct()
        )
        return {(previous, hardware) for previous, hardware in self.session.execute(query)}

    def assigned(self, rollout_id: str) -> set[int]:
        query = select(RolloutDeviceRow.device_pk).where(RolloutDeviceRow.rollout_id == rollout_id)
        # Plain rows (the connection, not the session): no ORM result machinery for the
        # ten thousand keys of a large rollout, read at every controller step.
        return set(self.session.connection().execute(query).scalars())

    def assign(
        self,
        rollout_id: str,
        model: str,
        wave: int,
        devices: Sequence[TargetDevice],
        now: datetime,
    ) -> None:
        if not devices:
            return
        self.session.execute(
            insert(RolloutDeviceRow),
            [
                {
                    "rollout_id": rollout_id,
                    "device_pk": d.pk,
                    "wave": wave,
                    "status": "assigned",
                    "detail": "",
                    "previous_version": d.previous_version(model),
                    "assigned_at": now,
                    "updated_at": now,
                }
                for d in devices
            ],
        )

    def progress(self, rollout_id: str, model: str, version: str) -> list[Progress]:
        """Unfinished assignments, each with the device's twin and its latest outcome
        event for this version since it was assigned."""
        open_ = and_(
            RolloutDeviceRow.rollout_id == rollout_id,
            RolloutDeviceRow.status.not_in(FINAL_STATUSES),
        )
        # Plain rows, as in ``assigned``: read at every step.
        connection = self.session.connection()
        rows = connection.execute(
            select(
                RolloutDeviceRow.device_pk,
                RolloutDeviceRow.wave,
                RolloutDeviceRow.status,
                RolloutDeviceRow.assigned_at,
                DeviceRow.agent_state,
                DeviceRow.reported_version,
                DeviceRow.reported_at,
                DeviceRow.last_seen_at,
            )
            .join(DeviceRow, DeviceRow.id == RolloutDeviceRow.device_pk)
            .where(open_)
        ).all()
        outcomes: dict[int, tuple[int, str, str]] = {}
        events = connection.execute(
            select(
                DeviceEventRow.device_pk,
                DeviceEventRow.seq,
                DeviceEventRow.to_state,
                DeviceEventRow.reason,
            )
            .join(RolloutDeviceRow, RolloutDeviceRow.device_pk == DeviceEventRow.device_pk)
            .where(
                open_,
                DeviceEventRow.model == model,
                DeviceEventRow.version == version,
                DeviceEventRow.to_state.in_(OUTCOME_STATES),
                DeviceEventRow.received_at >= RolloutDeviceRow.assigned_at,
            )
        )
        for pk, seq, to_state, reason in events:
            if pk not in outcomes or seq > outcomes[pk][0]:
                outcomes[pk] = (seq, to_state or "", reason)
        result = []
        for pk, wave, status, assigned_at, agent_state, reported, reported_at, seen_at in rows:
            outcome = outcomes.get(pk)
            result.append(
                Progress(
                    pk,
                    wave,
                    status,
                    utc(assigned_at),  # type: ignore[arg-type]
                    agent_state,
                    reported,
                    utc(reported_at),
                    utc(seen_at),
                    (outcome[1], outcome[2]) if outcome else None,
                )
            )
        return result

    def set_statuses(
        self, rollout_id: str, changes: dict[int, tuple[str, str]], now: datetime
    ) -> None:
        for (status, detail), pks in _group(changes).items():
            for start in range(0, len(pks), 1000):
                self.session.execute(
                    update(RolloutDeviceRow)
                    .where(
                        RolloutDeviceRow.rollout_id == rollout_id,
                        RolloutDeviceRow.device_pk.in_(pks[start : start + 1000]),
                    )
                    .values(status=status, detail=detail[:64], updated_at=now)
                )

    def counts(self, rollout_id: str) -> dict[tuple[int, str, str], int]:
        """(wave, status, detail) -> devices."""
        query = (
            select(
                RolloutDeviceRow.wave,
                RolloutDeviceRow.status,
                RolloutDeviceRow.detail,
                func.count(),
            )
            .where(RolloutDeviceRow.rollout_id == rollout_id)
            .group_by(RolloutDeviceRow.wave, RolloutDeviceRow.status, RolloutDeviceRow.detail)
        )
        return {(w, s, d): int(n) for w, s, d, n in self.session.execute(query)}

    def assigned_since(self, rollout_id: str, since: datetime) -> int:
        query = select(func.count()).where(
            RolloutDeviceRow.rollout_id == rollout_id, RolloutDeviceRow.assigned_at >= since
        )
        return int(self.session.scalar(query) or 0)

    def touched(self, rollout_id: str) -> list[tuple[int, str | None, str | None]]:
        """(device pk, previous version, hardware) of every device not yet reverted."""
        query = (
            select(
                RolloutDeviceRow.device_pk, RolloutDeviceRow.previous_version, DeviceRow.hardware
            )
            .join(DeviceRow, DeviceRow.id == RolloutDeviceRow.device_pk)
            .where(RolloutDeviceRow.rollout_id == rollout_id, RolloutDeviceRow.status != "reverted")
        )
        return [(pk, previous, hardware) for pk, previous, hardware in self.session.execute(query)]

    def device_list(self, rollout_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        query = (
            select(
                DeviceRow.device_id,
                RolloutDeviceRow.wave,
                RolloutDeviceRow.status,
                RolloutDeviceRow.detail,
                RolloutDeviceRow.previous_version,
                RolloutDeviceRow.assigned_at,
            )
            .join(DeviceRow, DeviceRow.id == RolloutDeviceRow.device_pk)
            .where(RolloutDeviceRow.rollout_id == rollout_id)
            .order_by(RolloutDeviceRow.wave, DeviceRow.device_id)
            .limit(limit)
        )
        return [
            {
                "device_id": device_id,
                "wave": wave,
                "status": status,
                "detail": detail,
                "previous_version": previous,
                "assigned_at": utc(at),
            }
            for device_id, wave, status, detail, previous, at in self.session.execute(query)
        ]

    # -- telemetry -------------------------------------------------------------------

    def candidate_telemetry(
        self, rollout_id: str, model: str, version: str, since: datetime, every: int = 1
    ) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(device id, hardware, merged data) of the rollout's devices on ``version``
        (of every ``every``-th device by primary key: a fixed sample of a large fleet)."""
        where = (
            RolloutDeviceRow.rollout_id == rollout_id,
            TelemetryRow.model == model,
            TelemetryRow.version == version,
            TelemetryRow.bucket >= since,
            _sample(every),
        )

        def buckets(*columns: Any) -> Any:
            return (
                select(DeviceRow.device_id, DeviceRow.hardware, *columns)
                .join(RolloutDeviceRow, RolloutDeviceRow.device_pk == TelemetryRow.device_pk)
                .join(DeviceRow, DeviceRow.id == TelemetryRow.device_pk)
                .where(*where)
            )

        arm = ("candidate", rollout_id, model, version)
        return self._gate_telemetry(arm, buckets)

    def baseline_telemetry(
        self,
        node: Node,
        now: datetime,
        model: str,
        version: str,
        previous: str | None,
        since: datetime,
        every: int = 1,
    ) -> list[tuple[str, str | None, dict[str, Any]]]:
        """The target's devices on the previous version (any other version of the model
        when ``previous`` is None) over the same window."""
        on_previous: ColumnElement[bool] = (
            TelemetryRow.version == previous
            if previous is not None
            else and_(TelemetryRow.version != version, TelemetryRow.version != "-")
        )
        where = (
            compile_query(node, now=now),
            TelemetryRow.model == model,
            on_previous,
            TelemetryRow.bucket >= since,
            _sample(every),
        )

        def buckets(*columns: Any) -> Any:
            return (
                select(DeviceRow.device_id, DeviceRow.hardware, *columns)
                .join(DeviceRow, DeviceRow.id == TelemetryRow.device_pk)
                .where(*where)
            )

        arm = ("baseline", str(node), model, version, str(previous))
        return self._gate_telemetry(arm, buckets)

    def _gate_telemetry(
        self, arm: tuple[str, ...], buckets: Callable[..., Any]
    ) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(device id, hardware, merged gate fields) of the buckets ``buckets(*columns)``
        selects, decoding only those the cache does not hold as they are now."""
        connection = self.session.connection()
        cache = self.gate_cache
        if cache is None:
            return _per_device(connection.execute(buckets(*_GATE_FIELDS)))
        known = cache.arm(arm)
        listed = connection.execute(buckets(TelemetryRow.id, TelemetryRow.samples)).all()
        stale = [pk for _, _, pk, samples in listed if known.get(pk, (None,))[0] != samples]
        for start in range(0, len(stale), _IDS_PER_STATEMENT):
            chunk = stale[start : start + _IDS_PER_STATEMENT]
            query = select(TelemetryRow.id, TelemetryRow.samples, *_GATE_FIELDS).where(
                TelemetryRow.id.in_(chunk)
            )
            for pk, samples, *values in connection.execute(query):
                # Kept: in a form the collector stops walking.
                known[pk] = (samples, frozen(_gate_fields(values)))
        cache.decoded += len(stale)
        cache.reused += len(listed) - len(stale)
        kept: dict[int, tuple[int, dict[str, Any]]] = {}
        rows: list[tuple[str, str | None, dict[str, Any]]] = []
        for device_id, hardware, pk, _ in listed:
            entry = known.get(pk)
            if entry is None:
                continue  # deleted between the two reads (retention)
            kept[pk] = entry
            rows.append((device_id, hardware, entry[1]))
        cache.keep(arm, kept)
        return _merge_per_device(rows)

    # -- decision log ------------------------------------------------------------------

    def log(self, **fields: Any) -> None:
        self.session.add(RolloutDecisionRow(**fields))
        self.session.flush()

    def decisions(
        self, rollout_id: str, after: int = 0, limit: int = 1000
    ) -> list[RolloutDecisionRow]:
        query = (
            select(RolloutDecisionRow)
            .where(RolloutDecisionRow.rollout_id == rollout_id, RolloutDecisionRow.id > after)
            .order_by(RolloutDecisionRow.id)
            .limit(limit)
        )
        return list(self.session.scalars(query))

    # -- webhooks ----------------------------------------------------------------------

    def add_webhook(self, **fields: Any) -> WebhookRow:
        row = WebhookRow(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def webhooks(self) -> list[WebhookRow]:
        query = select(WebhookRow).where(WebhookRow.disabled_at.is_(None)).order_by(WebhookRow.id)
        return list(self.session.scalars(query))

    def get_webhook(self, webhook_id: int) -> WebhookRow | None:
        return self.session.get(WebhookRow, webhook_id)

    def enqueue(self, event: str, payload: dict[str, Any], now: datetime) -> int:
        hooks = self.webhooks()
        for hook in hooks:
            self.session.add(
                WebhookDeliveryRow(
                    webhook_id=hook.id,
                    event=event,
                    payload=payload,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                    created_at=now,
                )
            )
        self.session.flush()
        return len(hooks)

    def due_deliveries(
        self, now: datetime, limit: int = 50
    ) -> list[tuple[WebhookDeliveryRow, WebhookRow]]:
        query = (
            select(WebhookDeliveryRow, WebhookRow)
            .join(WebhookRow, WebhookRow.id == WebhookDeliveryRow.webhook_id)
            .where(
                WebhookDeliveryRow.delivered_at.is_(None),
                WebhookDeliveryRow.next_attempt_at.is_not(None),
                WebhookDeliveryRow.next_attempt_at <= now,
                WebhookRow.disabled_at.is_(None),
            )
            .order_by(WebhookDeliveryRow.id)
            .limit(limit)
        )
        return [(delivery, hook) for delivery, hook in self.session.execute(query)]

    def delivery(self, delivery_id: int) -> WebhookDeliveryRow | None:
        return self.session.get(WebhookDeliveryRow, delivery_id)

    def deliveries(self, limit: int = 100) -> list[WebhookDeliveryRow]:
        query = select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id.desc()).limit(limit)
        return list(self.session.scalars(query))


#: The parts of a telemetry bucket the gates read: never the feature histograms, which
#: are most of a bucket's size and only drift detection needs.
GATE_KEYS = (
    "inferences",
    "errors",
    "latency_counts",
    "confidence_counts",
    "class_counts",
    "health_sum",
    "health_n",
    "restarts",
    "served_samples",
    "served_first",
    "served_last",
)
_GATE_FIELDS = [TelemetryRow.data[key] for key in GATE_KEYS]


def _sample(every: int) -> ColumnElement[bool]:
    return true() if every <= 1 else TelemetryRow.device_pk % every == 0


#: Row ids in one ``IN (...)`` list (under SQLite's and PostgreSQL's parameter limits).
_IDS_PER_STATEMENT = 5000


def _gate_fields(values: Sequence[Any]) -> dict[str, Any]:
    """A bucket's ``_GATE_FIELDS`` as read, by name, without the absent ones."""
    return {k: v for k, v in zip(GATE_KEYS, values, strict=True) if v is not None}


def _per_device(rows: Iterable[Any]) -> list[tuple[str, str | None, dict[str, Any]]]:
    return _merge_per_device(
        (device_id, hardware, _gate_fields(values)) for device_id, hardware, *values in rows
    )


def _merge_per_device(
    rows: Iterable[tuple[str, str | None, dict[str, Any]]],
) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Each device's buckets merged into one (the inputs are left as they are)."""
    merged: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for device_id, hardware, data in rows:
        _, so_far = merged.get(device_id, (hardware, {}))
        merged[device_id] = (hardware, merge_buckets(so_far, data) if so_far else dict(data))
    return [(device_id, hardware, data) for device_id, (hardware, data) in merged.items()]


def _group(changes: dict[int, tuple[str, str]]) -> dict[tuple[str, str], list[int]]:
    groups: dict[tuple[str, str], list[int]] = {}
    for pk, change in changes.items():
        groups.setdefault(change, []).append(pk)
    return groups

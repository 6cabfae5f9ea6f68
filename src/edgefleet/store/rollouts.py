"""SQL repository of rollouts, their devices, decision log and webhooks
(``rollout.ports.RolloutRepository``).

Everything the controller needs per tick is a handful of set-based queries (the
target's devices, the unfinished assignments with their latest outcome event, the
telemetry of both arms), so its cost grows with the rows read, not with round trips.
Rows are handed out as the records of ``rollout.ports``, datetimes in UTC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, not_, select, true, update
from sqlalchemy.orm import Session

from edgefleet.fleet.query import Node
from edgefleet.fleet.telemetry import frozen, merge_buckets
from edgefleet.rollout.lifecycle import ACTIVE_STATES, Phase, RolloutProgress, RolloutState
from edgefleet.rollout.policy import RolloutSpec
from edgefleet.rollout.ports import (
    DeviceTelemetry,
    DueDelivery,
    LogEntry,
    Rollout,
    RolloutDevice,
    TargetDevice,
    TouchedDevice,
    Webhook,
    WebhookDelivery,
)
from edgefleet.rollout.status import (
    FINAL_STATUSES,
    OUTCOME_STATES,
    Assignment,
    DeviceStatus,
    Tally,
)
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

    def add(self, rollout: Rollout, now: datetime) -> None:
        self.session.add(
            RolloutRow(
                id=rollout.id,
                name=rollout.name,
                model=rollout.model,
                version=rollout.version,
                spec=rollout.spec.model_dump(mode="json"),
                created_at=rollout.created_at,
                created_by=rollout.created_by,
                **_progress_columns(rollout.progress, now),
            )
        )
        self.session.flush()

    def get(self, rollout_id: str, *, for_update: bool = False) -> Rollout | None:
        query = select(RolloutRow).where(RolloutRow.id == rollout_id)
        if for_update:
            query = query.with_for_update()
        row = self.session.scalars(query).one_or_none()
        return None if row is None else _rollout(row)

    def save(self, rollout_id: str, progress: RolloutProgress, now: datetime) -> None:
        self.session.execute(
            update(RolloutRow)
            .where(RolloutRow.id == rollout_id)
            .values(**_progress_columns(progress, now))
        )

    def recent(self, limit: int = 100) -> list[Rollout]:
        query = select(RolloutRow).order_by(RolloutRow.created_at.desc()).limit(limit)
        return [_rollout(row) for row in self.session.scalars(query)]

    def running_ids(self) -> list[str]:
        query = select(RolloutRow.id).where(RolloutRow.state == RolloutState.RUNNING.value)
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
            .where(RolloutRow.state.in_(_values(ACTIVE_STATES)), RolloutRow.id != rollout_id)
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
        # ten thousand keys of a large rollout, read at every tick.
        return set(self.session.connection().execute(query).scalars())

    def assign(
        self, rollout_id: str, wave: int, previous: Mapping[int, str | None], now: datetime
    ) -> None:
        if not previous:
            return
        self.session.execute(
            insert(RolloutDeviceRow),
            [
                {
                    "rollout_id": rollout_id,
                    "device_pk": pk,
                    "wave": wave,
                    "status": DeviceStatus.ASSIGNED.value,
                    "detail": "",
                    "previous_version": version,
                    "assigned_at": now,
                    "updated_at": now,
                }
                for pk, version in previous.items()
            ],
        )

    def open_assignments(self, rollout_id: str, model: str, version: str) -> list[Assignment]:
        """Unfinished assignments, each with the device's twin and its latest outcome
        event for this version since it was assigned."""
        open_ = and_(
            RolloutDeviceRow.rollout_id == rollout_id,
            RolloutDeviceRow.status.not_in(_values(FINAL_STATUSES)),
        )
        # Plain rows, as in ``assigned``: read at every tick.
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
                DeviceEventRow.to_state.in_(_values(OUTCOME_STATES)),
                DeviceEventRow.received_at >= RolloutDeviceRow.assigned_at,
            )
        )
        for pk, seq, to_state, reason in events:
            if pk not in outcomes or seq > outcomes[pk][0]:
                outcomes[pk] = (seq, to_state or "", reason)
        result = []
        for pk, wave, status, assigned_at, agent_state, reported, reported_at in rows:
            outcome = outcomes.get(pk)
            result.append(
                Assignment(
                    pk,
                    wave,
                    DeviceStatus(status),
                    _aware(assigned_at),
                    agent_state,
                    reported,
                    utc(reported_at),
                    (outcome[1], outcome[2]) if outcome else None,
                )
            )
        return result

    def set_statuses(
        self, rollout_id: str, changes: Mapping[int, tuple[DeviceStatus, str]], now: datetime
    ) -> None:
        for (status, detail), pks in _group(changes).items():
            for start in range(0, len(pks), 1000):
                self.session.execute(
                    update(RolloutDeviceRow)
                    .where(
                        RolloutDeviceRow.rollout_id == rollout_id,
                        RolloutDeviceRow.device_pk.in_(pks[start : start + 1000]),
                    )
                    .values(status=status.value, detail=detail[:64], updated_at=now)
                )

    def tally(self, rollout_id: str) -> Tally:
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
        return Tally(
            {(w, DeviceStatus(s), d): int(n) for w, s, d, n in self.session.execute(query)}
        )

    def assigned_since(self, rollout_id: str, since: datetime) -> int:
        query = select(func.count()).where(
            RolloutDeviceRow.rollout_id == rollout_id, RolloutDeviceRow.assigned_at >= since
        )
        return int(self.session.scalar(query) or 0)

    def touched(self, rollout_id: str) -> list[TouchedDevice]:
        """The rollout's devices not reverted yet."""
        query = (
            select(
                RolloutDeviceRow.device_pk, RolloutDeviceRow.previous_version, DeviceRow.hardware
            )
            .join(DeviceRow, DeviceRow.id == RolloutDeviceRow.device_pk)
            .where(
                RolloutDeviceRow.rollout_id == rollout_id,
                RolloutDeviceRow.status != DeviceStatus.REVERTED.value,
            )
        )
        return [TouchedDevice(*row) for row in self.session.execute(query)]

    def devices(self, rollout_id: str, limit: int = 1000) -> list[RolloutDevice]:
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
            RolloutDevice(device_id, wave, DeviceStatus(status), detail, previous, _aware(at))
            for device_id, wave, status, detail, previous, at in self.session.execute(query)
        ]

    # -- telemetry -------------------------------------------------------------------

    def candidate_telemetry(
        self, rollout_id: str, model: str, version: str, since: datetime, every: int = 1
    ) -> list[DeviceTelemetry]:
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

    def device_attributes(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The attributes of each of ``device_ids`` (unknown ids left out)."""
        found: dict[str, dict[str, Any]] = {}
        ids = list(device_ids)
        for start in range(0, len(ids), _IDS_PER_STATEMENT):
            query = select(DeviceRow.device_id, DeviceRow.attributes).where(
                DeviceRow.device_id.in_(ids[start : start + _IDS_PER_STATEMENT])
            )
            for device_id, attributes in self.session.execute(query):
                found[device_id] = dict(attributes or {})
        return found

    def trial_reports(
        self, rollout_id: str, model: str, version: str, every: int = 1
    ) -> list[DeviceTelemetry]:
        """(device id, hardware, details) of the event that ended each of the rollout's
        devices' last trial of ``version``. An event never changes, so with a gate cache
        its details are decoded once, not at every analysis."""
        query = (
            select(DeviceRow.device_id, DeviceRow.hardware, DeviceEventRow.id)
            .join(RolloutDeviceRow, RolloutDeviceRow.device_pk == DeviceEventRow.device_pk)
            .join(DeviceRow, DeviceRow.id == DeviceEventRow.device_pk)
            .where(
                RolloutDeviceRow.rollout_id == rollout_id,
                DeviceEventRow.model == model,
                DeviceEventRow.version == version,
                (DeviceEventRow.reason == "trial_passed")
                | DeviceEventRow.reason.startswith("trial_failed:"),
                true() if every <= 1 else DeviceEventRow.device_pk % every == 0,
            )
            .order_by(DeviceEventRow.device_pk, DeviceEventRow.seq)
        )
        last: dict[str, tuple[str | None, int]] = {}
        for device_id, hardware, event_id in self.session.execute(query):
            last[device_id] = (hardware, event_id)
        arm = ("trials", rollout_id, model, version)
        known = self.gate_cache.arm(arm) if self.gate_cache is not None else {}
        wanted = [event_id for _, event_id in last.values() if event_id not in known]
        for begin in range(0, len(wanted), _IDS_PER_STATEMENT):
            chunk = wanted[begin : begin + _IDS_PER_STATEMENT]
            details = select(DeviceEventRow.id, DeviceEventRow.details).where(
                DeviceEventRow.id.in_(chunk)
            )
            for event_id, found in self.session.execute(details):
                known[event_id] = (0, found or {})
        rows: list[DeviceTelemetry] = []
        kept: dict[int, tuple[int, dict[str, Any]]] = {}
        for device_id, (hardware, event_id) in last.items():
            if event_id in known:  # (an event deleted between the two reads is left out)
                kept[event_id] = known[event_id]
                rows.append((device_id, hardware, known[event_id][1]))
        if self.gate_cache is not None:
            self.gate_cache.keep(arm, kept)
        return rows

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
    ) -> list[DeviceTelemetry]:
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
        rows: list[DeviceTelemetry] = []
        for device_id, hardware, pk, _ in listed:
            entry = known.get(pk)
            if entry is None:
                continue  # deleted between the two reads (retention)
            kept[pk] = entry
            rows.append((device_id, hardware, entry[1]))
        cache.keep(arm, kept)
        return _merge_per_device(rows)

    # -- decision log ------------------------------------------------------------------

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
        self.session.add(
            RolloutDecisionRow(
                rollout_id=rollout_id,
                at=at,
                actor=actor,
                kind=kind,
                wave=wave,
                reason=reason,
                details=details,
            )
        )
        self.session.flush()

    def decisions(self, rollout_id: str, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        query = (
            select(RolloutDecisionRow)
            .where(RolloutDecisionRow.rollout_id == rollout_id, RolloutDecisionRow.id > after)
            .order_by(RolloutDecisionRow.id)
            .limit(limit)
        )
        return [
            LogEntry(d.id, _aware(d.at), d.actor, d.kind, d.wave, d.reason, d.details)
            for d in self.session.scalars(query)
        ]

    # -- webhooks ----------------------------------------------------------------------

    def add_webhook(self, *, url: str, secret: str, created_at: datetime, created_by: str) -> int:
        row = WebhookRow(url=url, secret=secret, created_at=created_at, created_by=created_by)
        self.session.add(row)
        self.session.flush()
        return row.id

    def webhooks(self) -> list[Webhook]:
        return [Webhook(h.id, h.url, _aware(h.created_at)) for h in self._webhook_rows()]

    def _webhook_rows(self) -> list[WebhookRow]:
        query = select(WebhookRow).where(WebhookRow.disabled_at.is_(None)).order_by(WebhookRow.id)
        return list(self.session.scalars(query))

    def enqueue(self, event: str, payload: dict[str, Any], now: datetime) -> int:
        hooks = self._webhook_rows()
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

    def due_deliveries(self, now: datetime, limit: int = 50) -> list[DueDelivery]:
        query = (
            select(
                WebhookDeliveryRow.id,
                WebhookDeliveryRow.event,
                WebhookDeliveryRow.payload,
                WebhookRow.url,
                WebhookRow.secret,
            )
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
        return [DueDelivery(*row) for row in self.session.execute(query)]

    def delivery(self, delivery_id: int) -> WebhookDelivery | None:
        row = self.session.get(WebhookDeliveryRow, delivery_id)
        return None if row is None else _delivery(row)

    def save_delivery(
        self,
        delivery_id: int,
        *,
        attempts: int,
        last_error: str,
        next_attempt_at: datetime | None,
        delivered_at: datetime | None,
    ) -> None:
        self.session.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == delivery_id)
            .values(
                attempts=attempts,
                last_error=last_error,
                next_attempt_at=next_attempt_at,
                delivered_at=delivered_at,
            )
        )

    def deliveries(self, limit: int = 100) -> list[WebhookDelivery]:
        query = select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id.desc()).limit(limit)
        return [_delivery(row) for row in self.session.scalars(query)]


def _rollout(row: RolloutRow) -> Rollout:
    progress = RolloutProgress(
        state=RolloutState(row.state),
        wave=row.wave,
        phase=Phase(row.phase),
        phase_started_at=_aware(row.phase_started_at),
        looks=row.looks,
        last_analysis_at=utc(row.last_analysis_at),
        gates=tuple(row.gates or ()),
        reason=row.reason,
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
        extended=row.extended or 0,
    )
    return Rollout(
        id=row.id,
        name=row.name,
        model=row.model,
        version=row.version,
        spec=RolloutSpec.model_validate(row.spec),
        created_at=_aware(row.created_at),
        created_by=row.created_by,
        progress=progress,
    )


def _progress_columns(progress: RolloutProgress, now: datetime) -> dict[str, Any]:
    columns = asdict(progress)
    columns |= {
        "state": progress.state.value,
        "phase": progress.phase.value,
        "gates": list(progress.gates),
        "updated_at": now,
    }
    return columns


def _delivery(row: WebhookDeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        row.id,
        row.webhook_id,
        row.event,
        row.attempts,
        utc(row.delivered_at),
        utc(row.next_attempt_at),
        row.last_error,
    )


def _aware(value: datetime) -> datetime:
    """``utc`` of a column that is never null."""
    return utc(value) or value


def _values(members: Iterable[str]) -> list[str]:
    """Enum members as the plain strings stored, in a fixed order."""
    return sorted(str(m) for m in members)


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


def _per_device(rows: Iterable[Any]) -> list[DeviceTelemetry]:
    return _merge_per_device(
        (device_id, hardware, _gate_fields(values)) for device_id, hardware, *values in rows
    )


def _merge_per_device(
    rows: Iterable[DeviceTelemetry],
) -> list[DeviceTelemetry]:
    """Each device's buckets merged into one (the inputs are left as they are)."""
    merged: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for device_id, hardware, data in rows:
        _, so_far = merged.get(device_id, (hardware, {}))
        merged[device_id] = (hardware, merge_buckets(so_far, data) if so_far else dict(data))
    return [(device_id, hardware, data) for device_id, (hardware, data) in merged.items()]


def _group(
    changes: Mapping[int, tuple[DeviceStatus, str]],
) -> dict[tuple[DeviceStatus, str], list[int]]:
    groups: dict[tuple[DeviceStatus, str], list[int]] = {}
    for pk, change in changes.items():
        groups.setdefault(change, []).append(pk)
    return groups

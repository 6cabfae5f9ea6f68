"""SQL repository of drift monitors, looks and alarms (``drift.ports.DriftRepository``),
and the unit of work the drift service runs in.

A look reads one model version over a window: the devices' drift summaries (one row
per device and summary period, ``telemetry_summaries``) whose period ended in the
window, whatever its length, and the telemetry buckets that start in it for their
per-sample confidence and class histograms only (not the latency and health fields
that are most of a bucket; buckets stored before summaries had their own table still
hold summaries, read too). Both are read a few hundred devices at a time, in device
order, so the service holds one device's records at a time.
Targeting queries of query segments are compiled to SQL (``store/targeting.py``).
Rows are handed out as the records of ``drift.ports``, datetimes in UTC::

    with SqlDriftUnitOfWork(sessions, where) as uow:
        uow.drift.add_monitor("digits", monitor, monitor.digest(), now, "ops")
        uow.commit()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Self

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefleet.drift.alarms import ACTIVE_STATES, Alarm, AlarmState
from edgefleet.drift.monitor import Monitor
from edgefleet.drift.ports import (
    DriftBucket,
    NewLook,
    StoredLook,
    StoredMonitor,
    WindowDevice,
)
from edgefleet.errors import EdgefleetError
from edgefleet.fleet.query import parse_query
from edgefleet.fleet.telemetry import NO_MODEL
from edgefleet.store.devices import utc
from edgefleet.store.rollouts import SqlRolloutRepository
from edgefleet.store.tables import (
    DeviceRow,
    DriftAlarmRow,
    DriftLookRow,
    DriftMonitorRow,
    TelemetryRow,
    TelemetrySummaryRow,
)
from edgefleet.store.targeting import compile_query
from edgefleet.store.uow import SqlUnitOfWork

#: The parts of a telemetry bucket drift reads (a bucket's latency histogram and health
#: sums, most of it, are left in the database).
DRIFT_KEYS = (
    "feature_counts",
    "sketches",
    "sketch_rows",
    "sketches_invalid",
    "period_start",
    "period_end",
    "confidence_counts",
    "class_counts",
)
_DRIFT_FIELDS = [TelemetryRow.data[key] for key in DRIFT_KEYS]
#: Devices whose buckets one statement reads while a look streams them.
_DEVICES_PER_STATEMENT = 500
#: Primary keys in one ``IN (...)`` list (under both backends' parameter limits).
_KEYS_PER_STATEMENT = 5000
_ACTIVE = sorted(state.value for state in ACTIVE_STATES)


class SqlDriftRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- monitors --------------------------------------------------------------------

    def add_monitor(
        self, model: str, monitor: Monitor, digest: str, created_at: datetime, created_by: str
    ) -> StoredMonitor:
        latest = self.session.scalar(
            select(func.max(DriftMonitorRow.number)).where(DriftMonitorRow.model == model)
        )
        row = DriftMonitorRow(
            model=model,
            number=int(latest or 0) + 1,
            spec=monitor.model_dump(mode="json", by_alias=True),
            digest=digest,
            created_at=created_at,
            created_by=created_by,
        )
        self.session.add(row)
        self.session.flush()
        return _monitor(row)

    def monitor(self, model: str) -> StoredMonitor | None:
        query = (
            select(DriftMonitorRow)
            .where(DriftMonitorRow.model == model)
            .order_by(DriftMonitorRow.number.desc())
            .limit(1)
        )
        row = self.session.scalars(query).one_or_none()
        return None if row is None else _monitor(row)

    def monitor_versions(self, model: str) -> list[StoredMonitor]:
        query = (
            select(DriftMonitorRow)
            .where(DriftMonitorRow.model == model)
            .order_by(DriftMonitorRow.number.desc())
        )
        return [_monitor(row) for row in self.session.scalars(query)]

    def monitors(self) -> list[StoredMonitor]:
        newest = (
            select(DriftMonitorRow.model, func.max(DriftMonitorRow.number).label("number"))
            .group_by(DriftMonitorRow.model)
            .subquery()
        )
        query = (
            select(DriftMonitorRow)
            .join(
                newest,
                and_(
                    DriftMonitorRow.model == newest.c.model,
                    DriftMonitorRow.number == newest.c.number,
                ),
            )
            .order_by(DriftMonitorRow.model)
        )
        return [_monitor(row) for row in self.session.scalars(query)]

    # -- what a look reads -------------------------------------------------------------

    def window_devices(
        self, model: str, versions: Sequence[str], start: datetime, end: datetime
    ) -> list[WindowDevice]:
        sent = (
            select(TelemetryRow.device_pk.label("device_pk"))
            .where(_window(model, versions, start, end))
            .union(
                select(TelemetrySummaryRow.device_pk).where(
                    _summary_window(model, versions, start, end)
                )
            )
            .subquery()
        )
        query = (
            select(
                DeviceRow.id,
                DeviceRow.device_id,
                DeviceRow.hardware,
                DeviceRow.firmware,
                DeviceRow.group_name,
                DeviceRow.attributes,
            )
            .join(sent, sent.c.device_pk == DeviceRow.id)
            .order_by(DeviceRow.id)
        )
        return [
            WindowDevice(pk, device_id, hardware, firmware, group, attributes or {})
            for pk, device_id, hardware, firmware, group, attributes in self.session.execute(query)
        ]

    def drift_buckets(
        self, model: str, versions: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[DriftBucket]:
        window = _window(model, versions, start, end)
        summaries = _summary_window(model, versions, start, end)
        devices = sorted(
            set(self.session.scalars(select(TelemetryRow.device_pk).where(window).distinct()))
            | set(
                self.session.scalars(
                    select(TelemetrySummaryRow.device_pk).where(summaries).distinct()
                )
            )
        )
        # A few hundred devices' records per statement: bounded memory on both backends
        # without a server-side cursor (the read engine autocommits on PostgreSQL).
        for first in range(0, len(devices), _DEVICES_PER_STATEMENT):
            chunk = devices[first : first + _DEVICES_PER_STATEMENT]
            per_device: dict[int, list[DriftBucket]] = {}
            query = (
                select(
                    TelemetryRow.device_pk,
                    TelemetryRow.bucket,
                    TelemetryRow.version,
                    *_DRIFT_FIELDS,
                )
                .where(window, TelemetryRow.device_pk.in_(chunk))
                .order_by(TelemetryRow.device_pk, TelemetryRow.bucket)
            )
            for device_pk, bucket, version, *values in self.session.execute(query):
                data = {k: v for k, v in zip(DRIFT_KEYS, values, strict=True) if v is not None}
                per_device.setdefault(device_pk, []).append(
                    DriftBucket(device_pk, utc(bucket) or bucket, version, data)
                )
            summary_query = (
                select(
                    TelemetrySummaryRow.device_pk,
                    TelemetrySummaryRow.version,
                    TelemetrySummaryRow.period_start,
                    TelemetrySummaryRow.period_end,
                    TelemetrySummaryRow.data,
                )
                .where(summaries, TelemetrySummaryRow.device_pk.in_(chunk))
                .order_by(TelemetrySummaryRow.device_pk, TelemetrySummaryRow.period_end)
            )
            for device_pk, version, period_start, period_end, data in self.session.execute(
                summary_query
            ):
                ended = _aware(period_end)
                record = {
                    **data,
                    "period_start": _aware(period_start).timestamp(),
                    "period_end": ended.timestamp(),
                }
                per_device.setdefault(device_pk, []).append(
                    DriftBucket(device_pk, ended, version, record)
                )
            for device_pk in chunk:
                yield from per_device.pop(device_pk, ())

    def unknown_version_buckets(
        self, model: str, known: Sequence[str], start: datetime, end: datetime
    ) -> int:
        query = select(func.count()).where(
            TelemetryRow.model == model,
            TelemetryRow.bucket >= start,
            TelemetryRow.bucket < end,
            TelemetryRow.version != NO_MODEL[1],
            TelemetryRow.version.not_in(list(known)),
        )
        return int(self.session.scalar(query) or 0)

    def query_members(self, query: str, among: Sequence[int], now: datetime) -> set[int]:
        condition = compile_query(parse_query(query), now=now)
        members: set[int] = set()
        keys = list(among)
        for start in range(0, len(keys), _KEYS_PER_STATEMENT):
            chunk = keys[start : start + _KEYS_PER_STATEMENT]
            selected = select(DeviceRow.id).where(condition, DeviceRow.id.in_(chunk))
            members.update(self.session.scalars(selected))
        return members

    def query_problem(self, query: str) -> str | None:
        try:
            compile_query(parse_query(query), now=datetime.now().astimezone())
        except EdgefleetError as exc:
            return exc.message
        return None

    # -- looks -----------------------------------------------------------------------

    def add_look(self, look: NewLook) -> int | None:
        row = DriftLookRow(
            monitor_id=look.monitor_id,
            model=look.model,
            version=look.version,
            window_start=look.window_start,
            window_end=look.window_end,
            computed_at=look.computed_at,
            result=dict(look.result),
        )
        try:
            with self.session.begin_nested():
                self.session.add(row)
                self.session.flush()
        except IntegrityError:
            return None  # that window of that version was looked at already
        return row.id

    def last_window_end(self, model: str) -> datetime | None:
        query = select(func.max(DriftLookRow.window_end)).where(DriftLookRow.model == model)
        return utc(self.session.scalar(query))

    def looks(
        self, model: str, version: str | None, since: datetime, until: datetime, limit: int = 500
    ) -> list[StoredLook]:
        query = select(DriftLookRow).where(
            DriftLookRow.model == model,
            DriftLookRow.window_end > since,
            DriftLookRow.window_end <= until,
        )
        if version is not None:
            query = query.where(DriftLookRow.version == version)
        query = query.order_by(DriftLookRow.window_end.desc(), DriftLookRow.id.desc()).limit(limit)
        return [_look(row) for row in reversed(list(self.session.scalars(query)))]

    def latest_looks(self, model: str | None = None) -> list[StoredLook]:
        latest = select(DriftLookRow.model, func.max(DriftLookRow.window_end).label("end"))
        if model is not None:
            latest = latest.where(DriftLookRow.model == model)
        newest = latest.group_by(DriftLookRow.model).subquery()
        query = (
            select(DriftLookRow)
            .join(
                newest,
                and_(
                    DriftLookRow.model == newest.c.model,
                    DriftLookRow.window_end == newest.c.end,
                ),
            )
            .order_by(DriftLookRow.model, DriftLookRow.version)
        )
        return [_look(row) for row in self.session.scalars(query)]

    # -- alarms ----------------------------------------------------------------------

    def alarm(self, alarm_id: str, *, for_update: bool = False) -> Alarm | None:
        query = select(DriftAlarmRow).where(DriftAlarmRow.id == alarm_id)
        if for_update:
            query = query.with_for_update()
        row = self.session.scalars(query).one_or_none()
        return None if row is None else Alarm.model_validate(row.document)

    def alarms(
        self, *, state: AlarmState | None = None, model: str | None = None, limit: int = 1000
    ) -> list[Alarm]:
        query = select(DriftAlarmRow.document)
        if state is not None:
            query = query.where(DriftAlarmRow.state == state.value)
        if model is not None:
            query = query.where(DriftAlarmRow.model == model)
        query = query.order_by(DriftAlarmRow.opened_at.desc(), DriftAlarmRow.id).limit(limit)
        return [Alarm.model_validate(document) for document in self.session.scalars(query)]

    def active_alarms(self, model: str) -> list[Alarm]:
        query = select(DriftAlarmRow.document).where(
            DriftAlarmRow.model == model, DriftAlarmRow.state.in_(_ACTIVE)
        )
        return [Alarm.model_validate(document) for document in self.session.scalars(query)]

    def alarm_history(self, model: str, since: datetime) -> list[Alarm]:
        query = select(DriftAlarmRow.document).where(
            DriftAlarmRow.model == model,
            DriftAlarmRow.state.in_(_ACTIVE) | (DriftAlarmRow.resolved_at >= since),
        )
        return [Alarm.model_validate(document) for document in self.session.scalars(query)]

    def save_alarms(self, alarms: Sequence[Alarm], now: datetime) -> None:
        if not alarms:
            return
        known = set(
            self.session.scalars(
                select(DriftAlarmRow.id).where(DriftAlarmRow.id.in_([a.id for a in alarms]))
            )
        )
        for alarm in alarms:
            columns = _alarm_columns(alarm, now)
            if alarm.id in known:
                self.session.execute(
                    update(DriftAlarmRow).where(DriftAlarmRow.id == alarm.id).values(**columns)
                )
            else:
                self.session.add(DriftAlarmRow(id=alarm.id, **columns))
        self.session.flush()

    def alarm_counts(self) -> dict[tuple[str, str], int]:
        query = select(DriftAlarmRow.model, DriftAlarmRow.state, func.count()).group_by(
            DriftAlarmRow.model, DriftAlarmRow.state
        )
        return {(model, state): int(n) for model, state, n in self.session.execute(query)}


class SqlDriftUnitOfWork(SqlUnitOfWork):
    """The store's unit of work with the drift repository, and the rollouts' webhook
    queue as ``webhooks`` (drift notifications go out signed like rollout ones)."""

    drift: SqlDriftRepository
    webhooks: SqlRolloutRepository

    def __enter__(self) -> Self:
        super().__enter__()
        self.drift = SqlDriftRepository(self.session)
        self.webhooks = self.rollouts
        return self


def _window(model: str, versions: Sequence[str], start: datetime, end: datetime) -> Any:
    return and_(
        TelemetryRow.model == model,
        TelemetryRow.version.in_(list(versions)),
        TelemetryRow.bucket >= start,
        TelemetryRow.bucket < end,
    )


def _summary_window(model: str, versions: Sequence[str], start: datetime, end: datetime) -> Any:
    """Summaries of periods that ended in ``(start, end]`` (as scoring attributes them)."""
    return and_(
        TelemetrySummaryRow.model == model,
        TelemetrySummaryRow.version.in_(list(versions)),
        TelemetrySummaryRow.period_end > start,
        TelemetrySummaryRow.period_end <= end,
    )


def _aware(moment: datetime) -> datetime:
    """A stored moment in UTC (SQLite hands them back naive)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _monitor(row: DriftMonitorRow) -> StoredMonitor:
    return StoredMonitor(
        id=row.id,
        model=row.model,
        number=row.number,
        monitor=Monitor.model_validate(row.spec),
        digest=row.digest,
        created_at=utc(row.created_at) or row.created_at,
        created_by=row.created_by,
    )


def _look(row: DriftLookRow) -> StoredLook:
    return StoredLook(
        id=row.id,
        monitor_id=row.monitor_id,
        model=row.model,
        version=row.version,
        window_start=utc(row.window_start) or row.window_start,
        window_end=utc(row.window_end) or row.window_end,
        computed_at=utc(row.computed_at) or row.computed_at,
        result=row.result,
    )


def _alarm_columns(alarm: Alarm, now: datetime) -> dict[str, Any]:
    return {
        "model": alarm.model,
        "version": alarm.version,
        "segment": alarm.segment,
        "feature": alarm.feature,
        "state": alarm.state.value,
        "opened_at": alarm.opened_at,
        "resolved_at": alarm.resolved_at,
        "updated_at": now,
        "document": alarm.model_dump(mode="json"),
    }

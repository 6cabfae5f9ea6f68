"""SQL repository of devices, their events and telemetry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from edgefleet.fleet.domain import (
    DesiredState,
    DeviceEvent,
    DeviceView,
    ReportedState,
    desired_etag,
)
from edgefleet.fleet.query import Node
from edgefleet.fleet.versions import version_key
from edgefleet.store.tables import DeviceEventRow, DeviceRow, TelemetryRow, TelemetrySummaryRow
from edgefleet.store.targeting import compile_query


def utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything edgefleet stores is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def to_view(row: DeviceRow, now: datetime) -> DeviceView:
    deadline = utc(row.offline_deadline)
    return DeviceView(
        device_id=row.device_id,
        group=row.group_name,
        hardware=row.hardware,
        firmware=row.firmware,
        attributes=dict(row.attributes or {}),
        enrolled_at=utc(row.enrolled_at) or now,
        desired=row.desired,
        desired_etag=row.desired_etag,
        reported=row.reported,
        reported_at=utc(row.reported_at),
        model=row.reported_model,
        version=row.reported_version,
        agent_state=row.agent_state,
        last_seen_at=utc(row.last_seen_at),
        online=deadline is not None and deadline > now,
        poll_interval_s=row.poll_interval_s,
    )


class SqlDeviceRepository:
    """Devices in the ``devices`` table and their events and telemetry."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, device_id: str, *, for_update: bool = False) -> DeviceRow | None:
        query = select(DeviceRow).where(DeviceRow.device_id == device_id)
        if for_update:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()

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
    ) -> DeviceRow:
        row = DeviceRow(
            device_id=device_id,
            group_name=group,
            attributes=attributes,
            reenroll_allowed=False,
            enrolled_at=now,
            desired=None,
            desired_etag=desired_etag(None),
            poll_interval_s=poll_interval_s,
            last_event_seq=0,
            credential_id=credential_id,
            credential_hash=credential_hash,
        )
        apply_identity(row, attributes)
        self.session.add(row)
        self.session.flush()
        return row

    def matching(
        self, node: Node | None, now: datetime, *, limit: int, offset: int
    ) -> list[DeviceRow]:
        """Devices a targeting query selects, by device id; the database does the filtering."""
        query = select(DeviceRow).order_by(DeviceRow.device_id).limit(limit).offset(offset)
        if node is not None:
            query = query.where(compile_query(node, now=now))
        return list(self.session.scalars(query))

    def count_matching(self, node: Node | None, now: datetime) -> int:
        return self.count(compile_query(node, now=now) if node is not None else None)

    def count(self, condition: ColumnElement[bool] | None) -> int:
        query = select(func.count()).select_from(DeviceRow)
        if condition is not None:
            query = query.where(condition)
        return int(self.session.scalar(query) or 0)

    def set_desired(
        self, rows: Sequence[DeviceRow], state: DesiredState | None, now: datetime
    ) -> None:
        payload = state.model_dump(mode="json") if state else None
        etag = desired_etag(state)
        for row in rows:
            row.desired = payload
            row.desired_etag = etag
            row.desired_updated_at = now
        self.session.flush()

    def set_desired_many(
        self, pks: Sequence[int], state: DesiredState | None, now: datetime
    ) -> None:
        """The same desired state for many devices, by primary key, in bulk updates."""
        payload = state.model_dump(mode="json") if state else None
        etag = desired_etag(state)
        for start in range(0, len(pks), 5000):
            self.session.execute(
                update(DeviceRow)
                .where(DeviceRow.id.in_(pks[start : start + 5000]))
                .values(desired=payload, desired_etag=etag, desired_updated_at=now),
                execution_options={"synchronize_session": False},
            )

    def set_reported(
        self, row: DeviceRow, reported: ReportedState, now: datetime, offline_after: float = 3.0
    ) -> None:
        """Store what the device reports; a report is also a sign of life."""
        row.reported = reported.model_dump(mode="json")
        row.reported_at = now
        row.reported_model = reported.model
        row.reported_version = reported.version
        row.reported_version_key = version_key(reported.version)
        row.agent_state = reported.agent_state
        row.last_seen_at = now
        row.offline_deadline = now + timedelta(seconds=row.poll_interval_s * offline_after)
        changes: dict[str, Any] = dict(reported.attributes)
        if reported.firmware:
            changes["firmware"] = reported.firmware
        self.set_attributes(row, changes)
        self.session.flush()

    def set_attributes(
        self, row: DeviceRow, changes: Mapping[str, Any], remove: Sequence[str] = ()
    ) -> None:
        """Merge ``changes`` into the device's attributes and drop ``remove``; the
        attributes with columns of their own follow."""
        if not changes and not remove:
            return
        attributes = {**(row.attributes or {}), **changes}
        for key in remove:
            attributes.pop(key, None)
        row.attributes = attributes
        apply_identity(row, attributes)

    def add_events_many(
        self, batches: Sequence[tuple[int, Sequence[DeviceEvent]]], now: datetime
    ) -> list[tuple[int, int, int] | None]:
        """Store events not stored yet, for the batches of many devices (a device may
        send several): per batch (accepted, duplicates, last sequence), or ``None`` when
        its device is not enrolled. At most four statements whatever the number of
        batches (this runs for every batch a fleet sends during a rollout). The devices'
        rows are locked first, in key order (two writers never wait on each other
        crosswise), so batches of one device from two server processes are stored one
        after the other."""
        pks = sorted({pk for pk, _ in batches})
        locked = (
            select(DeviceRow.id, DeviceRow.last_event_seq)
            .where(DeviceRow.id.in_(pks))
            .order_by(DeviceRow.id)
            .with_for_update()
        )
        last_seq: dict[int, int] = {}
        for pk, last in self.session.execute(locked):
            last_seq[pk] = last
        wanted = {e.seq for _, events in batches for e in events}
        stored: set[tuple[int, int]] = {
            (pk, seq)
            for pk, seq in self.session.execute(
                select(DeviceEventRow.device_pk, DeviceEventRow.seq).where(
                    DeviceEventRow.device_pk.in_(list(last_seq)), DeviceEventRow.seq.in_(wanted)
                )
            )
        }
        results: list[tuple[int, int, int] | None] = []
        rows: list[dict[str, Any]] = []
        first_last = dict(last_seq)
        for pk, events in batches:
            if pk not in last_seq:
                results.append(None)
                continue
            accepted = 0
            for event in sorted(events, key=lambda e: e.seq):
                if (pk, event.seq) in stored:
                    continue
                stored.add((pk, event.seq))
                accepted += 1
                last_seq[pk] = max(last_seq[pk], event.seq)
                rows.append(
                    {
                        "device_pk": pk,
                        "seq": event.seq,
                        "kind": event.kind,
                        "from_state": event.from_state,
                        "to_state": event.to_state,
                        "reason": event.reason,
                        "model": event.model,
                        "version": event.version,
                        "details": event.details,
                        "at": event.at,
                        "received_at": now,
                    }
                )
            results.append((accepted, len(events) - accepted, last_seq[pk]))
        if rows:
            self.session.execute(insert(DeviceEventRow), rows)
        moved = [
            {"b_pk": pk, "b_last": last} for pk, last in last_seq.items() if last != first_last[pk]
        ]
        if moved:
            self.session.connection().execute(  # Core executemany, not an ORM bulk update
                update(DeviceRow)
                .where(DeviceRow.id == bindparam("b_pk"))
                .values(last_event_seq=bindparam("b_last")),
                moved,
            )
        return results

    def events(self, row: DeviceRow, limit: int = 50) -> list[DeviceEventRow]:
        query = (
            select(DeviceEventRow)
            .where(DeviceEventRow.device_pk == row.id)
            .order_by(DeviceEventRow.seq.desc())
            .limit(limit)
        )
        return list(reversed(list(self.session.scalars(query))))

    def recent_telemetry(self, row: DeviceRow, limit: int = 12) -> list[TelemetryRow]:
        query = (
            select(TelemetryRow)
            .where(TelemetryRow.device_pk == row.id)
            .order_by(TelemetryRow.bucket.desc())
            .limit(limit)
        )
        return list(self.session.scalars(query))

    def summary(self, now: datetime) -> dict[str, Any]:
        total = self.count(None)
        online = self.count(DeviceRow.offline_deadline > now)
        by_version = [
            {"model": m, "version": v, "devices": n}
            for m, v, n in self.session.execute(
                select(DeviceRow.reported_model, DeviceRow.reported_version, func.count())
                .group_by(DeviceRow.reported_model, DeviceRow.reported_version)
                .order_by(DeviceRow.reported_model, DeviceRow.reported_version)
            )
        ]
        by_state = {
            (state or "unknown"): n
            for state, n in self.session.execute(
                select(DeviceRow.agent_state, func.count()).group_by(DeviceRow.agent_state)
            )
        }
        return {
            "devices": total,
            "online": online,
            "offline": total - online,
            "by_version": by_version,
            "by_state": by_state,
        }

    def delete_telemetry_before(self, cutoff: datetime) -> int:
        from sqlalchemy import delete

        result = self.session.execute(delete(TelemetryRow).where(TelemetryRow.bucket < cutoff))
        # Drift summaries of periods that ended before the cutoff go with them.
        summaries = self.session.execute(
            delete(TelemetrySummaryRow).where(TelemetrySummaryRow.period_end < cutoff)
        )
        return int(getattr(result, "rowcount", 0) or 0) + int(
            getattr(summaries, "rowcount", 0) or 0
        )


def apply_identity(row: DeviceRow, attributes: dict[str, Any]) -> None:
    """Copy the attributes that have columns of their own (indexed, comparable)."""
    hardware = attributes.get("hw", attributes.get("hardware"))
    row.hardware = str(hardware) if hardware is not None else None
    firmware = attributes.get("firmware")
    row.firmware = str(firmware) if firmware is not None else None
    row.firmware_key = version_key(row.firmware)


def record_checkins(
    session: Session, seen: dict[int, tuple[datetime, int]], multiple: float
) -> None:
    """Batch-update last-seen times and offline deadlines of checked-in devices.

    ``seen`` maps a device's primary key to (check-in time, check-in interval in seconds);
    a device is offline once ``multiple`` poll intervals pass without a check-in. One
    ``UPDATE ... FROM unnest(...)`` keeps the rows locked for as short a time
    as possible on PostgreSQL (an executemany of one UPDATE per device held them far
    longer while reported-state writes waited).
    """
    rows = [
        (pk, at, at + timedelta(seconds=interval * multiple)) for pk, (at, interval) in seen.items()
    ]
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        # SQLite is in-process and its writer is serialised anyway: executemany is fine.
        connection.execute(
            update(DeviceRow)
            .where(DeviceRow.id == bindparam("pk"))
            .values(last_seen_at=bindparam("seen"), offline_deadline=bindparam("deadline")),
            [{"pk": pk, "seen": at, "deadline": deadline} for pk, at, deadline in rows],
        )
        return
    # PostgreSQL: one statement over three arrays; building a VALUES list of thousands
    # of bound rows costs far more CPU than the update itself.
    connection.exec_driver_sql(
        "UPDATE devices SET last_seen_at = v.seen, offline_deadline = v.deadline "
        "FROM unnest(%(pks)s::integer[], %(seen)s::timestamptz[], %(deadlines)s::timestamptz[]) "
        "AS v(pk, seen, deadline) WHERE devices.id = v.pk",
        {
            "pks": [r[0] for r in rows],
            "seen": [r[1] for r in rows],
            "deadlines": [r[2] for r in rows],
        },
    )

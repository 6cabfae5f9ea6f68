"""SQLAlchemy tables of the registry.

A version's immutable description is stored whole as a JSON document (the domain
object's JSON form); the columns beside it are what queries filter, sort and join on.
Its stage is a column of its own because it is the one thing that changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Document = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        Index("ix_model_versions_stage", "model_id", "stage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    version: Mapped[str] = mapped_column(String(128))
    major: Mapped[int] = mapped_column(BigInteger)
    minor: Mapped[int] = mapped_column(BigInteger)
    patch: Mapped[int] = mapped_column(BigInteger)
    prerelease: Mapped[str | None] = mapped_column(String(128))
    stage: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    parent: Mapped[str | None] = mapped_column(String(128))
    golden_sha256: Mapped[str] = mapped_column(String(64), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class VariantRow(Base):
    __tablename__ = "model_variants"
    __table_args__ = (
        UniqueConstraint("version_id", "name", name="uq_model_variants_version_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    runtime: Mapped[str] = mapped_column(String(64))
    precision: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    golden_sha256: Mapped[str | None] = mapped_column(String(64), index=True)


class TagRow(Base):
    __tablename__ = "version_tags"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class StageChangeRow(Base):
    __tablename__ = "stage_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text, default="")


class DeviceRow(Base):
    """A device's twin: identity, attributes, desired and reported state, liveness."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), unique=True)
    group_name: Mapped[str | None] = mapped_column(String(128), index=True)
    hardware: Mapped[str | None] = mapped_column(String(64), index=True)
    firmware: Mapped[str | None] = mapped_column(String(64))
    firmware_key: Mapped[str | None] = mapped_column(String(96), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(Document)
    credential_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    credential_hash: Mapped[str | None] = mapped_column(String(64))
    reenroll_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    desired: Mapped[dict[str, Any] | None] = mapped_column(Document)
    desired_etag: Mapped[str] = mapped_column(String(64))
    desired_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reported: Mapped[dict[str, Any] | None] = mapped_column(Document)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reported_model: Mapped[str | None] = mapped_column(String(128))
    reported_version: Mapped[str | None] = mapped_column(String(128))
    reported_version_key: Mapped[str | None] = mapped_column(String(96))
    agent_state: Mapped[str | None] = mapped_column(String(32), index=True)
    poll_interval_s: Mapped[int] = mapped_column(Integer, default=60)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    offline_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_event_seq: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_devices_reported_model_version", "reported_model", "reported_version"),
    )


class CheckinChangeRow(Base):
    """One change of a device's check-in answer (credential, desired ETag, poll
    interval) or its deletion, logged by SQLite triggers (migration 0004); the
    server's in-memory check-in rows are dropped as it reads them (store/checkin.py)."""

    __tablename__ = "checkin_changes"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy's form

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_pk: Mapped[int] = mapped_column(Integer)


class DeviceEventRow(Base):
    """One update-state transition reported by a device, kept in sequence order."""

    __tablename__ = "device_events"
    __table_args__ = (UniqueConstraint("device_pk", "seq", name="uq_device_events_device_pk_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(Document)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class TelemetryRow(Base):
    """A device's health and model metrics merged over one time bucket."""

    __tablename__ = "telemetry"
    __table_args__ = (
        UniqueConstraint(
            "device_pk", "bucket", "model", "version", name="uq_telemetry_device_bucket_model"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    samples: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(Document)


class TelemetrySummaryRow(Base):
    """One device's drift summary of one model version over one summary period: the
    period's ``feature_counts``, quantile summaries (``sketches``) and ``sketch_rows``.
    Written once, when the sample that closes the period arrives (a resent one is
    ignored); looks read a window's summaries by ``period_end``, not by bucket."""

    __tablename__ = "telemetry_summaries"
    __table_args__ = (
        UniqueConstraint(
            "device_pk",
            "model",
            "version",
            "period_end",
            name="uq_telemetry_summaries_device_model_version_period",
        ),
        Index("ix_telemetry_summaries_model_version_period_end", "model", "version", "period_end"),
        Index("ix_telemetry_summaries_period_end", "period_end"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict[str, Any]] = mapped_column(Document)


class ApiKeyRow(Base):
    """An operator API key (only its hash is stored)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EnrollmentTokenRow(Base):
    """A token devices enroll with (only its hash is stored)."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    uses_remaining: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    group_name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditRow(Base):
    """Append-only record of every operator write."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[dict[str, Any] | None] = mapped_column(Document)
    after: Mapped[dict[str, Any] | None] = mapped_column(Document)


class RolloutRow(Base):
    """A rollout: its definition and where the controller is with it."""

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(Document)
    state: Mapped[str] = mapped_column(String(16), index=True)
    wave: Mapped[int] = mapped_column(Integer, default=0)
    phase: Mapped[str] = mapped_column(String(32))
    phase_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    looks: Mapped[int] = mapped_column(Integer, default=0)
    extended: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_analysis_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gates: Mapped[list[Any] | None] = mapped_column(Document)
    reason: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RolloutDeviceRow(Base):
    """A device a rollout assigned, the wave it came in with, and how it is doing."""

    __tablename__ = "rollout_devices"
    __table_args__ = (Index("ix_rollout_devices_rollout_id_status", "rollout_id", "status"),)

    rollout_id: Mapped[str] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    device_pk: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    wave: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(64), default="")
    previous_version: Mapped[str | None] = mapped_column(String(128))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RolloutDecisionRow(Base):
    """One entry of a rollout's append-only decision log."""

    __tablename__ = "rollout_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[str] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    wave: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(Document)


class WebhookRow(Base):
    """A URL told about rollout state changes and gate failures (HMAC-signed)."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDeliveryRow(Base):
    """A notification waiting for (or done with) delivery to one webhook."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(Document)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DriftMonitorRow(Base):
    """One applied version of a model's drift monitor (``edgefleet.drift.monitor``).

    Applying a monitor appends a row with the next ``number`` for its model; the newest
    is in force, the older ones are its history. ``digest`` tells a change from the same
    monitor applied again."""

    __tablename__ = "drift_monitors"
    __table_args__ = (UniqueConstraint("model", "number", name="uq_drift_monitors_model_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    number: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(Document)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))


class DriftLookRow(Base):
    """One look of a monitor at one model version over one tumbling window: the scores
    and segments it computed (``result``). A look is written in the transaction that
    stores the alarms it changed, so a window is either looked at whole or not at all."""

    __tablename__ = "drift_looks"
    __table_args__ = (
        UniqueConstraint(
            "model", "version", "window_start", name="uq_drift_looks_model_version_window"
        ),
        Index("ix_drift_looks_model_window_end", "model", "window_end"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("drift_monitors.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))
    #: "" when the model had no version to score (none in production)
    version: Mapped[str] = mapped_column(String(128))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any]] = mapped_column(Document)


class DriftAlarmRow(Base):
    """A drift alarm (``edgefleet.drift.alarms.Alarm``) stored whole as ``document``,
    with the columns queries filter on beside it."""

    __tablename__ = "drift_alarms"
    __table_args__ = (
        Index("ix_drift_alarms_model_state", "model", "state"),
        Index("ix_drift_alarms_state_opened_at", "state", "opened_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    segment: Mapped[str] = mapped_column(String(512))
    feature: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    document: Mapped[dict[str, Any]] = mapped_column(Document)

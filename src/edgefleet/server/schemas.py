"""Response models of the operator and registry API, so OpenAPI describes every answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.fleet.domain import DeviceView
from edgefleet.registry.domain import ModelVersion, StageChange


class VariantSummary(BaseModel):
    name: str
    runtime: str
    precision: str
    hardware: list[str]
    sha256: str
    size: int


class VersionSummary(BaseModel):
    model: str
    version: str
    stage: str
    created_at: datetime
    author: str
    parent: str | None
    tags: list[str]
    metrics: dict[str, float]
    variants: list[VariantSummary]


class VersionList(BaseModel):
    versions: list[VersionSummary]


class Publication(BaseModel):
    release: int
    targets: list[str]


class RegisteredVersion(ModelVersion):
    published: Publication | None = Field(description="null when not signed yet (see note)")
    note: str


class StageChanges(BaseModel):
    changes: list[StageChange]


class EventOut(BaseModel):
    seq: int
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str
    model: str | None
    version: str | None
    at: datetime
    details: dict[str, Any]


class TelemetryBucket(BaseModel):
    bucket: datetime
    model: str
    version: str
    samples: int
    data: dict[str, Any]


class DeviceDetail(BaseModel):
    device: DeviceView
    events: list[EventOut]
    telemetry: list[TelemetryBucket]


class VersionCount(BaseModel):
    model: str | None
    version: str | None
    devices: int


class FleetSummary(BaseModel):
    devices: int
    online: int
    offline: int
    by_version: list[VersionCount]
    by_state: dict[str, int]


class TokenInfo(BaseModel):
    id: str
    kind: str
    role: str | None = None
    name: str | None = None
    uses_remaining: int | None = None
    expires_at: datetime | None = None
    group: str | None = None
    created_at: datetime
    created_by: str
    revoked: bool


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditLog(BaseModel):
    entries: list[AuditEntry]

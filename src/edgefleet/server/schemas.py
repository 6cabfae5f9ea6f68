"""Response models of the API, so OpenAPI describes every answer, errors included.

Every error is the same envelope (server/errors.py); a route lists the statuses it can
answer with ``responses=errors(401, 403, 404, ...)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.fleet.domain import DeviceView
from edgefleet.registry.domain import ModelVersion, StageChange


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: not_found, query_syntax, ...")
    message: str = Field(description="for people: what is wrong and what to do")
    details: dict[str, Any] = Field(description="the values involved; {} when none")


class ErrorEnvelope(BaseModel):
    """How every error leaves the API."""

    error: ErrorBody


#: What each error status means, wherever it is answered.
ERROR_MEANING: dict[int, str] = {
    400: "a targeting query that does not parse or names an unknown field (query_syntax, "
    "query_field), or a malformed Range header (bad_range)",
    401: "no, malformed, unknown or revoked credential",
    403: "the credential is valid but may not do this (role, or another device's)",
    404: "no such resource",
    409: "conflicts with the current state",
    413: "the request body is over the size limit",
    416: "the range selects no byte of the file",
    422: "the request is invalid (the envelope's details name the fields)",
    501: "a feature whose optional dependency is not installed",
    503: "the database or signer is unavailable, or the schema is not current",
}


def errors(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with the envelope's schema.

    ``meanings`` overrides a description for this route: ``errors(404, e404="no such device")``.
    """
    return {
        status: {
            "model": ErrorEnvelope,
            "description": meanings.get(f"e{status}", ERROR_MEANING[status]),
        }
        for status in statuses
    }


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

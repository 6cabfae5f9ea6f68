"""The operator API: devices and targeting, desired state, fleet summary, tokens, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, StrictInt

from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.fleet.domain import (
    ONLY_PATTERN_KEYS,
    AttributeKey,
    AttributeValue,
    DeviceId,
    DeviceView,
    Preconditions,
    ShadowPolicy,
    TrialPolicy,
)
from edgefleet.registry.semver import VersionText
from edgefleet.server.auth import Admin, OperatorRole, Viewer, context
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import (
    AuditLog,
    DeviceDetail,
    FleetSummary,
    TokenInfo,
    TokenList,
    errors,
)
from edgefleet.stdjson import Body, JsonObject

router = APIRouter(prefix="/api/v1", tags=["operator"], route_class=StandardJsonRoute)

QUERY_HELP = (
    "targeting query, e.g. `region:eu-west AND hw:rev2`, `firmware>=1.8.0`, `site:plant-*`, "
    "`model:digits@1.0.0`, `online:true`; AND, OR, NOT and parentheses"
)


class DeviceList(BaseModel):
    total: int
    devices: list[DeviceView]


class SetDesired(Body):
    """A desired model for a device (or every device a query selects)."""

    model: str | None = Field(default=None, max_length=128, description="null clears the model")
    version: VersionText | None = None
    trial: TrialPolicy = TrialPolicy()
    shadow: ShadowPolicy | None = None
    preconditions: Preconditions = Preconditions()
    config: JsonObject = Field(default_factory=dict)


class SetDesiredForQuery(SetDesired):
    query: str = Field(min_length=1, max_length=4096, description=QUERY_HELP)


class Changed(BaseModel):
    devices: int


class AttributeChanges(Body):
    """Attributes to set (a value) or remove (null), labels and identity included."""

    attributes: dict[AttributeKey, AttributeValue | None] = Field(
        min_length=1,
        max_length=64,
        description='e.g. {"group": "lab", "cohort": "early", "site": null}',
        json_schema_extra=ONLY_PATTERN_KEYS,
    )


class DeviceAttributes(BaseModel):
    device_id: str
    group: str | None
    attributes: dict[str, Any]


class TokenRequest(Body):
    kind: Literal["api_key", "enrollment"]
    role: Role | None = Field(default=None, description="api_key only")
    name: str = Field(default="", max_length=128)
    uses: StrictInt | None = Field(default=None, ge=1, le=10_000_000, description="enrollment only")
    expires_in_s: StrictInt | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    group: str | None = Field(default=None, max_length=128)


class TokenCreated(BaseModel):
    token: str = Field(description="the secret; shown only now")
    id: str
    description: TokenInfo


def _template(body: SetDesired):  # type: ignore[no-untyped-def]
    from edgefleet.fleet.domain import DesiredState

    return DesiredState(
        trial=body.trial, shadow=body.shadow, preconditions=body.preconditions, config=body.config
    )


@router.get(
    "/devices",
    response_model=DeviceList,
    summary="List devices, filtered by a targeting query",
    responses=errors(400, 401, 403, 422, 503),
)
def list_devices(
    request: Request,
    query: str | None = Query(default=None, max_length=4096, description=QUERY_HELP),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=10_000_000),
    _: Operator = Viewer,
) -> DeviceList:
    total, views = context(request).fleet.list_devices(query, limit=limit, offset=offset)
    return DeviceList(total=total, devices=views)


@router.get(
    "/devices/{device_id}",
    response_model=DeviceDetail,
    summary="One device: twin, recent events, recent telemetry",
    responses=errors(401, 403, 404, 422, 503, e404="no such device"),
)
def show_device(device_id: DeviceId, request: Request, _: Operator = Viewer) -> dict[str, Any]:
    ctx = context(request)
    ctx.telemetry.flush()  # show what this process has accepted, not a second behind
    return ctx.fleet.show_device(device_id)


@router.put(
    "/devices/{device_id}/desired",
    response_model=Changed,
    summary="Set one device's desired model",
    responses=errors(
        401,
        403,
        404,
        409,
        413,
        422,
        503,
        e404="no such device, model or version",
        e409="the version is not signed yet (repository_state)",
    ),
)
def set_device_desired(
    device_id: DeviceId, body: SetDesired, request: Request, actor: Operator = OperatorRole
) -> Changed:
    changed = context(request).fleet.set_desired(
        actor,
        model=body.model,
        version=body.version,
        device_id=device_id,
        template=_template(body),
    )
    return Changed(devices=changed)


@router.post(
    "/fleet/desired",
    response_model=Changed,
    summary="Set the desired model of every device a query selects",
    responses=errors(
        400,
        401,
        403,
        404,
        409,
        413,
        422,
        503,
        e404="no such model or version",
        e409="the version is not signed yet, or the fleet changed while it was set",
    ),
)
def set_query_desired(
    body: SetDesiredForQuery, request: Request, actor: Operator = OperatorRole
) -> Changed:
    changed = context(request).fleet.set_desired(
        actor,
        model=body.model,
        version=body.version,
        query=body.query,
        template=_template(body),
    )
    return Changed(devices=changed)


@router.post(
    "/devices/{device_id}/reenroll",
    response_model=Changed,
    summary="Allow a device id to enroll again (its next enrollment replaces the credential)",
    responses=errors(401, 403, 404, 422, 503, e404="no such device"),
)
def allow_reenroll(
    device_id: DeviceId, request: Request, actor: Operator = OperatorRole
) -> Changed:
    context(request).fleet.allow_reenroll(device_id, actor)
    return Changed(devices=1)


@router.patch(
    "/devices/{device_id}/attributes",
    response_model=DeviceAttributes,
    summary="Set or remove a device's attributes, labels (group, cohort) and identity (hw)",
    responses=errors(401, 403, 404, 413, 422, 503, e404="no such device"),
)
def set_attributes(
    device_id: DeviceId, body: AttributeChanges, request: Request, actor: Operator = OperatorRole
) -> DeviceAttributes:
    after = context(request).fleet.set_attributes(device_id, actor, body.attributes)
    group = after.pop("group")
    return DeviceAttributes(device_id=device_id, group=group, attributes=after)


@router.get(
    "/fleet/summary",
    response_model=FleetSummary,
    summary="Device counts by version, by state, online/offline",
    responses=errors(401, 403, 503),
)
def fleet_summary(request: Request, _: Operator = Viewer) -> dict[str, Any]:
    return context(request).fleet.summary()


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    summary="Create an API key or enrollment token",
    responses=errors(401, 403, 413, 422, 503),
)
def create_token(
    body: TokenRequest, request: Request, actor: Operator = OperatorRole
) -> TokenCreated:
    access = context(request).access
    expires = (
        datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    )
    if body.kind == "api_key":
        secret = access.create_api_key(
            body.role or Role.VIEWER, body.name or "api key", actor=actor
        )
    else:
        secret = access.create_enrollment_token(
            uses=body.uses, expires_at=expires, group=body.group, actor=actor
        )
    return TokenCreated(
        token=secret.token,
        id=secret.token_id,
        description=TokenInfo.model_validate(secret.description),
    )


@router.get(
    "/tokens",
    response_model=TokenList,
    summary="API keys and enrollment tokens (never their secrets)",
    responses=errors(401, 403, 503),
)
def list_tokens(request: Request, actor: Operator = OperatorRole) -> dict[str, Any]:
    return {"tokens": context(request).access.list_tokens(actor)}


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenInfo,
    summary="Revoke an API key (admin) or enrollment token",
    responses=errors(401, 403, 404, 422, 503, e404="no such token"),
)
def revoke_token(token_id: str, request: Request, actor: Operator = OperatorRole) -> dict[str, Any]:
    return context(request).access.revoke(token_id[:64], actor=actor)


@router.get(
    "/audit",
    response_model=AuditLog,
    summary="The audit log of operator writes, newest first",
    responses=errors(401, 403, 422, 503),
)
def audit_log(
    request: Request,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=10_000_000),
    actor: Operator = Admin,
) -> dict[str, Any]:
    return {"entries": context(request).access.audit_log(actor, limit, offset)}

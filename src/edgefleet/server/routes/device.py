"""The device API: enroll, check in for the desired state, report state, events,
telemetry.

A device credential reaches only its own device's routes (403 on another's). The good
case of every route but enrollment is answered before the framework, by the fast path
(server/hotpath.py); the routes take the rest. Both parse the request, authenticate the
device and do the request with ``fleet/checkin.py`` and answer with
``server/answers.py``, so they answer alike. The routes read the device's row from the
database, not the check-in cache.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, StrictInt

from edgefleet.fleet.domain import (
    Attributes,
    DesiredState,
    DeviceId,
    EventBatch,
    EventsAccepted,
    ReportedState,
    TelemetryAccepted,
    TelemetryBatch,
)
from edgefleet.fleet.ports import CheckinRow
from edgefleet.server import answers
from edgefleet.server.auth import context
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import errors
from edgefleet.stdjson import Body

router = APIRouter(prefix="/api/v1", tags=["device"], route_class=StandardJsonRoute)

AUTH_MEANINGS = {
    "e401": "missing, unknown or replaced device credential",
    "e403": "the credential belongs to another device",
}
#: What a device route with a body answers besides its own answer.
BODY_ERRORS = errors(401, 403, 413, 422, 503, **AUTH_MEANINGS)


class EnrollRequest(Body):
    device_id: DeviceId
    enrollment_token: str = Field(min_length=1, max_length=256)
    attributes: Attributes = Field(default_factory=dict)
    poll_interval_s: StrictInt | None = Field(default=None, ge=1, le=86400)


class DeviceUrls(BaseModel):
    api: str
    desired: str
    reported: str
    events: str
    telemetry: str
    tuf_metadata: str
    tuf_targets: str


class EnrollResponse(BaseModel):
    device_id: str
    credential: str = Field(description="the device's own secret; shown once")
    tuf_root: dict[str, Any] = Field(description="root metadata to pin as the trust anchor")
    urls: DeviceUrls


class DesiredResponse(BaseModel):
    device_id: str
    etag: str
    desired: DesiredState | None


class Accepted(BaseModel):
    accepted: bool = True


def base_url(request: Request) -> str:
    configured = context(request).settings.server_url
    return (configured or str(request.base_url)).rstrip("/")


@router.post(
    "/enroll",
    response_model=EnrollResponse,
    status_code=201,
    summary="Enroll a device with an enrollment token",
    responses=errors(
        401,
        409,
        413,
        422,
        503,
        e401="unknown, expired, revoked or used-up enrollment token",
        e409="already enrolled (an operator may allow re-enrollment)",
    ),
)
def enroll(body: EnrollRequest, request: Request) -> EnrollResponse:
    ctx = context(request)
    try:
        credential = ctx.fleet.enroll(
            body.device_id, body.enrollment_token, dict(body.attributes), body.poll_interval_s
        )
    except Exception:
        request.app.state.metrics.enrollments.labels("refused").inc()
        raise
    request.app.state.metrics.enrollments.labels("ok").inc()
    api = f"{base_url(request)}/api/v1"
    device = f"{api}/devices/{body.device_id}"
    return EnrollResponse(
        device_id=body.device_id,
        credential=credential,
        tuf_root=json.loads(ctx.repository().root_bytes()),
        urls=DeviceUrls(
            api=api,
            desired=f"{device}/desired",
            reported=f"{device}/reported",
            events=f"{device}/events",
            telemetry=f"{device}/telemetry",
            tuf_metadata=f"{base_url(request)}/tuf/metadata/",
            tuf_targets=f"{base_url(request)}/tuf/targets/",
        ),
    )


def _device(request: Request, device_id: str) -> CheckinRow:
    """The device of ``device_id``'s own credential, read from the database.

    Raises:
        UnauthenticatedError, ForbiddenError, StoreUnavailableError.
    """
    checkins = context(request).checkins
    return checkins.authenticate(request.headers.get("authorization"), device_id, fresh=True)


# The device routes are async: they do short synchronous reads of one indexed row on
# the event loop's own connection, or hand their write to a batched writer; no thread
# hand-off per request.


@router.get(
    "/devices/{device_id}/desired",
    response_model=DesiredResponse,
    summary="Check in: the desired state (ETag / If-None-Match: 304 when unchanged)",
    responses={
        304: {"description": "unchanged since the ETag given"},
        **errors(401, 403, 422, 503, **AUTH_MEANINGS),
    },
)
async def desired(device_id: str, request: Request) -> Response:
    device = _device(request, device_id)
    return answers.check_in(
        context(request).checkins,
        device,
        request.headers.get("if-none-match"),
        request.app.state.metrics,
    ).response()


@router.put(
    "/devices/{device_id}/reported",
    response_model=Accepted,
    summary="Report the device's actual state",
    responses=BODY_ERRORS,
)
async def reported(device_id: str, body: ReportedState, request: Request) -> Response:
    device = _device(request, device_id)
    return (await answers.report(context(request).checkins, device, body)).response()


@router.post(
    "/devices/{device_id}/events",
    response_model=EventsAccepted,
    summary="Report update-state transitions (idempotent by sequence number)",
    responses=BODY_ERRORS,
)
async def events(device_id: str, body: EventBatch, request: Request) -> Response:
    device = _device(request, device_id)
    return (await answers.events(context(request).checkins, device, body)).response()


@router.post(
    "/devices/{device_id}/telemetry",
    response_model=TelemetryAccepted,
    summary="Send a batch of health and model metrics",
    responses=BODY_ERRORS,
)
async def telemetry(device_id: str, body: TelemetryBatch, request: Request) -> Response:
    device = _device(request, device_id)
    return (await answers.telemetry(context(request).checkins, device, body)).response()

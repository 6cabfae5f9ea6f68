"""The device API: enroll, poll desired state, report state, events, telemetry.

A device credential reaches only its own device's routes (403 on another's).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, StrictInt
from starlette.concurrency import run_in_threadpool

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
from edgefleet.server.auth import authenticate_device, context
from edgefleet.server.hotpath import not_modified
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


@router.get(
    "/devices/{device_id}/desired",
    response_model=DesiredResponse,
    summary="Poll the desired state (ETag / If-None-Match: 304 when unchanged)",
    responses={
        304: {"description": "unchanged since the ETag given"},
        **errors(401, 403, 422, 503, **AUTH_MEANINGS),
    },
)
async def desired(device_id: str, request: Request, response: Response) -> Any:
    # Answered before the framework the same way for an enrolled device's own credential
    # (server/hotpath.py); this route takes the rest. Async with short synchronous reads
    # of one indexed row, so a 304 costs one lookup and no thread hand-off.
    ctx = context(request)
    row = authenticate_device(request, device_id)
    now = datetime.now(UTC)
    ctx.recorder.record(row.pk, now, row.poll_interval_s)
    metrics = request.app.state.metrics
    tag = f'"{row.desired_etag}"'
    if not_modified(request.headers.get("if-none-match"), row):
        metrics.not_modified.inc()
        return Response(status_code=304, headers={"ETag": tag})
    state, etag = ctx.checkin.desired(row.pk)
    metrics.checkins.labels("changed").inc()
    response.headers["ETag"] = f'"{etag}"'
    return DesiredResponse(
        device_id=device_id,
        etag=etag,
        desired=DesiredState.model_validate(state) if state else None,
    )


@router.put(
    "/devices/{device_id}/reported",
    response_model=Accepted,
    summary="Report the device's actual state",
    responses=BODY_ERRORS,
)
async def reported(device_id: str, body: ReportedState, request: Request) -> Accepted:
    # A valid report without attribute changes, with a length, is answered before the
    # framework the same way (server/hotpath.py); this route takes the rest.
    row = authenticate_device(request, device_id)
    ctx = context(request)
    if body.attributes or body.firmware:
        # Attributes are merged into the stored ones: a read-modify-write transaction.
        await run_in_threadpool(ctx.fleet.report, device_id, body)
    else:
        # One row of an UPDATE run for many devices in one transaction, answered once it
        # committed (server/batching.py).
        await ctx.report_batches.submit((row, body, datetime.now(UTC)))
    return Accepted()


@router.post(
    "/devices/{device_id}/events",
    response_model=EventsAccepted,
    summary="Report update-state transitions (idempotent by sequence number)",
    responses=BODY_ERRORS,
)
async def events(device_id: str, body: EventBatch, request: Request) -> EventsAccepted:
    # Stored with other devices' batches in one transaction, answered once it committed
    # (server/batching.py). A valid batch with a length is answered before the framework
    # the same way (server/hotpath.py); this route takes the rest.
    row = authenticate_device(request, device_id)
    return await context(request).event_batches.submit((row.pk, body))


@router.post(
    "/devices/{device_id}/telemetry",
    response_model=TelemetryAccepted,
    summary="Send a batch of health and model metrics",
    responses=BODY_ERRORS,
)
async def telemetry(device_id: str, body: TelemetryBatch, request: Request) -> TelemetryAccepted:
    # A valid batch with a length is answered before the framework (server/hotpath.py);
    # this route takes the rest and answers the same way. Merged into the device's
    # pending buckets in memory, written with the rest of the second's telemetry in one
    # transaction (store/telemetry.py).
    row = authenticate_device(request, device_id)
    buckets = context(request).telemetry.add_samples(row.pk, body.samples)
    return TelemetryAccepted(samples=len(body.samples), buckets=buckets)

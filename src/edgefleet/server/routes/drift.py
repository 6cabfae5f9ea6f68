"""The drift API: monitors (applied as new versions), status, reports computed on
demand, alarms and their acknowledgement and resolution. Thin: parse, call
``DriftService``, answer. Drift errors become the API's envelope with their status
(``STATUS``, installed by ``install_errors``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, Field

from edgefleet.access.service import Operator
from edgefleet.drift.alarms import AlarmState, AlarmStateError
from edgefleet.drift.errors import DriftError, MonitorError
from edgefleet.drift.monitor import Monitor
from edgefleet.drift.service import (
    AlarmNotFoundError,
    MonitorNotFoundError,
    NoReferenceError,
    ReportRequestError,
)
from edgefleet.registry.domain import NAME_PATTERN
from edgefleet.registry.semver import SEMVER_SCHEMA
from edgefleet.server import errors as envelopes
from edgefleet.server.auth import OperatorRole, Viewer, context
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import errors

router = APIRouter(prefix="/api/v1/drift", tags=["drift"], route_class=StandardJsonRoute)

#: Statuses of drift errors (other errors keep the API's own, ``server/errors.py``).
STATUS: tuple[tuple[type[DriftError], int], ...] = (
    (AlarmNotFoundError, 404),
    (MonitorNotFoundError, 404),
    (AlarmStateError, 409),
    (NoReferenceError, 409),
    (MonitorError, 422),
    (ReportRequestError, 422),
)

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="the model's name")]
AlarmId = Annotated[str, Path(min_length=1, max_length=32, description="the alarm's id")]
ATTRIBUTE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$"
DURATION_PATTERN = r"^[0-9]{1,9}(s|m|h|d|w)$"

#: An alarm's actions: no such alarm, or not possible in its state.
ALARM_ACTION = errors(
    401, 403, 404, 409, 422, 503, e404="no such alarm", e409="not possible in the alarm's state"
)


def install_errors(app: FastAPI) -> None:
    """Answer drift errors with their status (``STATUS``) in the API's envelope."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DriftError)
        status = next(
            (code for kind, code in STATUS if isinstance(exc, kind)), envelopes.status_of(exc)
        )
        return envelopes.envelope(exc.code, exc.message, exc.details, status)

    app.add_exception_handler(DriftError, handler)


@router.put(
    "/monitors/{model}",
    summary="Apply a model's drift monitor (stored as its next version unless unchanged)",
    responses=errors(
        401,
        403,
        404,
        413,
        422,
        503,
        e404="no such model, or no such version",
        e422="the monitor is invalid: every problem named by its field (details.problems)",
    ),
)
def apply_monitor(
    model: ModelName, spec: Monitor, request: Request, actor: Operator = OperatorRole
) -> dict[str, Any]:
    return context(request).drift.apply_monitor(spec, actor, model)


@router.get(
    "/monitors",
    summary="The drift monitor in force of every model",
    responses=errors(401, 403, 503),
)
def list_monitors(request: Request, _: Operator = Viewer) -> list[dict[str, Any]]:
    return context(request).drift.monitors()


@router.get(
    "/monitors/{model}",
    summary="A model's drift monitor in force, with its earlier versions",
    responses=errors(401, 403, 404, 422, 503, e404="the model has no drift monitor"),
)
def show_monitor(model: ModelName, request: Request, _: Operator = Viewer) -> dict[str, Any]:
    return context(request).drift.monitor(model)


@router.get(
    "/status",
    summary="Per monitor: its latest look of each version and its active alarms",
    responses=errors(401, 403, 422, 503),
)
def drift_status(
    request: Request,
    model: str | None = Query(default=None, pattern=NAME_PATTERN),
    _: Operator = Viewer,
) -> list[dict[str, Any]]:
    return context(request).drift.status(model)


@router.get(
    "/report",
    summary="A model version's drift report over a window, computed now",
    responses=errors(
        401,
        403,
        404,
        409,
        422,
        503,
        e404="no such model or version (or no version in production when none is named)",
        e409="the version has no reference profile",
        e422="the window or the reference window is not one (details name the fields)",
    ),
)
def drift_report(
    request: Request,
    model: str = Query(pattern=NAME_PATTERN),
    version: str | None = Query(
        default=None,
        max_length=128,
        json_schema_extra=SEMVER_SCHEMA,
        description="default: the monitor's version, else the one in production",
    ),
    start: Annotated[AwareDatetime | None, Query(description="ISO 8601 with a time zone")] = None,
    end: Annotated[AwareDatetime | None, Query(description="default: now")] = None,
    last: str | None = Query(
        default=None,
        pattern=DURATION_PATTERN,
        description="the window's length before end, e.g. 1h or 7d (instead of start)",
    ),
    segment_by: Annotated[
        list[Annotated[str, Field(pattern=ATTRIBUTE_PATTERN)]] | None,
        Query(
            max_length=16,
            description="device attributes to segment by (default: the monitor's segments)",
        ),
    ] = None,
    reference: Literal["profile", "window"] | None = Query(
        default=None, description="default: the monitor's reference, else the profile"
    ),
    reference_start: Annotated[AwareDatetime | None, Query()] = None,
    reference_end: Annotated[AwareDatetime | None, Query()] = None,
    _: Operator = Viewer,
) -> dict[str, Any]:
    return context(request).drift.report(
        model,
        version,
        start=start,
        end=end,
        last=last,
        segment_by=segment_by,
        reference=reference,
        reference_start=reference_start,
        reference_end=reference_end,
    )


@router.get(
    "/alarms",
    summary="Drift alarms, newest first",
    responses=errors(401, 403, 422, 503),
)
def list_alarms(
    request: Request,
    state: Annotated[AlarmState | None, Query()] = None,
    model: str | None = Query(default=None, pattern=NAME_PATTERN),
    limit: int = Query(default=1000, ge=1, le=10_000),
    _: Operator = Viewer,
) -> list[dict[str, Any]]:
    return context(request).drift.alarms(state=state, model=model, limit=limit)


@router.get(
    "/alarms/{alarm_id}",
    summary="One drift alarm",
    responses=errors(401, 403, 404, 422, 503, e404="no such alarm"),
)
def show_alarm(alarm_id: AlarmId, request: Request, _: Operator = Viewer) -> dict[str, Any]:
    return context(request).drift.alarm(alarm_id)


@router.post("/alarms/{alarm_id}/ack", summary="Acknowledge an open alarm", responses=ALARM_ACTION)
def acknowledge_alarm(
    alarm_id: AlarmId, request: Request, actor: Operator = OperatorRole
) -> dict[str, Any]:
    return context(request).drift.acknowledge(alarm_id, actor)


@router.post(
    "/alarms/{alarm_id}/resolve",
    summary="Resolve an open or acknowledged alarm",
    responses=ALARM_ACTION,
)
def resolve_alarm(
    alarm_id: AlarmId, request: Request, actor: Operator = OperatorRole
) -> dict[str, Any]:
    return context(request).drift.resolve(alarm_id, actor)

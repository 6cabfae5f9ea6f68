"""The rollout API: create, watch, pause / resume / approve / abort, the decision log,
and webhooks. Thin: parse, call ``RolloutService``, answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import Field, StrictBool

from edgefleet.access.service import Operator
from edgefleet.rollout.policy import RolloutSpec
from edgefleet.server.auth import Admin, OperatorRole, Viewer, context
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import errors
from edgefleet.stdjson import Body

router = APIRouter(prefix="/api/v1", tags=["rollouts"], route_class=StandardJsonRoute)
NO_ROLLOUT = "no such rollout"
#: A rollout's read routes.
READ = errors(401, 403, 404, 422, 503, e404=NO_ROLLOUT)
#: A rollout's actions: no such rollout, or not possible in its state.
ACTION = errors(
    401, 403, 404, 409, 413, 422, 503, e404=NO_ROLLOUT, e409="not possible in the rollout's state"
)


class Abort(Body):
    revert: StrictBool = Field(
        default=True, description="send touched devices back to their previous version"
    )
    reason: str = Field(default="", max_length=200)


class Pause(Body):
    reason: str = Field(default="", max_length=200)


class WebhookRequest(Body):
    url: str = Field(
        min_length=8,
        max_length=2048,
        # Documents the service's check (RolloutSpecError, 422 rollout_invalid).
        json_schema_extra={"pattern": "^https?://"},
    )


@router.post(
    "/rollouts",
    status_code=201,
    summary="Create (and start) a rollout",
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
        e409="the version is not signed yet, or conflicts with a running rollout",
    ),
)
def create_rollout(
    spec: RolloutSpec,
    request: Request,
    start: bool = Query(default=True, description="false: create a draft"),
    actor: Operator = OperatorRole,
) -> dict[str, Any]:
    return context(request).rollouts.create(actor, spec, start=start)


@router.get("/rollouts", summary="Rollouts, newest first", responses=errors(401, 403, 422, 503))
def list_rollouts(
    request: Request, limit: int = Query(default=100, ge=1, le=1000), _: Operator = Viewer
) -> list[dict[str, Any]]:
    return context(request).rollouts.list_rollouts(limit)


@router.get("/rollouts/{rollout_id}", summary="One rollout: state, waves, gates", responses=READ)
def show_rollout(rollout_id: str, request: Request, _: Operator = Viewer) -> dict[str, Any]:
    return context(request).rollouts.show(rollout_id)


@router.get(
    "/rollouts/{rollout_id}/devices",
    summary="The rollout's devices and their status",
    responses=READ,
)
def rollout_devices(
    rollout_id: str,
    request: Request,
    limit: int = Query(default=1000, ge=1, le=100_000),
    _: Operator = Viewer,
) -> list[dict[str, Any]]:
    return context(request).rollouts.devices(rollout_id, limit)


@router.get("/rollouts/{rollout_id}/log", summary="The decision log (append-only)", responses=READ)
def rollout_log(
    rollout_id: str,
    request: Request,
    after: int = Query(default=0, ge=0, description="entries after this id"),
    _: Operator = Viewer,
) -> list[dict[str, Any]]:
    return context(request).rollouts.log(rollout_id, after)


@router.post("/rollouts/{rollout_id}/start", summary="Start a draft", responses=ACTION)
def start_rollout(
    rollout_id: str, request: Request, actor: Operator = OperatorRole
) -> dict[str, Any]:
    return context(request).rollouts.start(actor, rollout_id)


@router.post("/rollouts/{rollout_id}/pause", summary="Pause", responses=ACTION)
def pause_rollout(
    rollout_id: str, request: Request, body: Pause | None = None, actor: Operator = OperatorRole
) -> dict[str, Any]:
    return context(request).rollouts.pause(actor, rollout_id, body.reason if body else "")


@router.post("/rollouts/{rollout_id}/resume", summary="Resume", responses=ACTION)
def resume_rollout(
    rollout_id: str, request: Request, actor: Operator = OperatorRole
) -> dict[str, Any]:
    return context(request).rollouts.resume(actor, rollout_id)


@router.post(
    "/rollouts/{rollout_id}/approve",
    summary="Approve a manual wave (or go on past an inconclusive one)",
    responses=ACTION,
)
def approve_rollout(
    rollout_id: str, request: Request, actor: Operator = OperatorRole
) -> dict[str, Any]:
    return context(request).rollouts.approve(actor, rollout_id)


@router.post(
    "/rollouts/{rollout_id}/abort",
    summary="Abort, reverting devices by default",
    responses=ACTION,
)
def abort_rollout(
    rollout_id: str, request: Request, body: Abort | None = None, actor: Operator = OperatorRole
) -> dict[str, Any]:
    body = body or Abort()
    return context(request).rollouts.abort(
        actor, rollout_id, revert=body.revert, reason=body.reason
    )


@router.post(
    "/webhooks",
    status_code=201,
    summary="Register a webhook (the secret is shown once)",
    responses=errors(401, 403, 413, 422, 503),
)
def add_webhook(body: WebhookRequest, request: Request, actor: Operator = Admin) -> dict[str, Any]:
    return context(request).rollouts.add_webhook(actor, body.url)


@router.get(
    "/webhooks",
    summary="Webhooks and their recent deliveries",
    responses=errors(401, 403, 503),
)
def list_webhooks(request: Request, actor: Operator = Admin) -> list[dict[str, Any]]:
    return context(request).rollouts.webhooks(actor)

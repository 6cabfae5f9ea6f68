"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from edgefleet.server.auth import context
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import errors
from edgefleet.store.migrate import current_revision, head_revision

router = APIRouter(tags=["health"], route_class=StandardJsonRoute)


class Health(BaseModel):
    status: str
    schema_revision: str | None = None


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database is reachable and its schema current",
    responses=errors(503, e503="not ready: the database is unreachable or its schema not current"),
)
def readyz(request: Request) -> Health:
    from edgefleet.store.errors import SchemaOutOfDateError

    revision = current_revision(context(request).engine)
    if revision != head_revision():
        raise SchemaOutOfDateError(
            f"database schema is at {revision or 'nothing'}, this server needs {head_revision()}"
        )
    return Health(status="ready", schema_revision=revision)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

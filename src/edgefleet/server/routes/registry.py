"""Registry routes, mirroring the CLI: register by upload, list, show, compare, promote."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from pydantic import Field, StrictBool
from starlette.concurrency import run_in_threadpool

from edgefleet.access.service import Operator
from edgefleet.registry.compare import Comparison
from edgefleet.registry.domain import NAME_PATTERN, ModelVersion
from edgefleet.registry.errors import BundleError
from edgefleet.registry.semver import SEMVER_SCHEMA
from edgefleet.registry.stages import STAGE_SCHEMA, StageText
from edgefleet.server.auth import OperatorRole, Viewer, context
from edgefleet.server.context import ServerContext
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import (
    RegisteredVersion,
    StageChanges,
    VersionList,
    VersionSummary,
    errors,
)
from edgefleet.signing.publish import PublishOutcome, publish_if_possible
from edgefleet.stdjson import Body

router = APIRouter(prefix="/api/v1/models", tags=["registry"], route_class=StandardJsonRoute)

#: Path parameters, described as the registry checks them (an unknown name is a 404, a
#: malformed version a 422 ``invalid_version``).
ModelName = Annotated[str, PathParam(json_schema_extra={"pattern": NAME_PATTERN})]
VersionParam = Annotated[str, PathParam(max_length=128, json_schema_extra=SEMVER_SCHEMA)]
NOT_FOUND = "no such model or version"


class Promote(Body):
    stage: StageText
    reason: str = Field(default="", max_length=1000)
    keep_production: StrictBool = False


def _register(
    ctx: ServerContext, tmp: Path, archive: Path, actor: Operator
) -> tuple[ModelVersion, PublishOutcome]:
    extracted = tmp / "bundle"
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(extracted, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"the upload is not a readable tar archive: {exc}") from exc
    version = ctx.registry.register(_bundle_root(extracted), author=actor.name)
    outcome = publish_if_possible(ctx.settings, ctx.artifacts, version)
    ctx.access.audit(
        actor, "model.register", f"{version.model}@{version.version}", None, version.summary()
    )
    return version, outcome


def _bundle_root(directory: Path) -> Path:
    if (directory / "edgefleet.yaml").is_file():
        return directory
    children = [p for p in directory.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "edgefleet.yaml").is_file():
        return children[0]
    raise BundleError(
        "the uploaded archive has no edgefleet.yaml at its top (or in one top folder)"
    )


@router.post(
    "",
    status_code=201,
    response_model=RegisteredVersion,
    summary="Register a bundle uploaded as a .tar.gz (body: the archive)",
    responses=errors(
        401,
        403,
        409,
        413,
        422,
        501,
        503,
        e409="version already registered",
        e422="not a bundle, or a bundle that fails its checks",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def register(request: Request, actor: Operator = OperatorRole) -> dict[str, Any]:
    ctx = context(request)
    with tempfile.TemporaryDirectory(prefix="edgefleet-upload-") as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        with archive.open("wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
        # Unpacking, checking (the golden samples run), storing and signing take long and
        # write to the database: on a worker thread, not the loop every device waits on.
        version, outcome = await run_in_threadpool(_register, ctx, Path(tmp), archive, actor)
    published = outcome.publication
    return {
        **version.model_dump(mode="json"),
        "published": {"release": published.release, "targets": list(published.targets)}
        if published
        else None,
        "note": outcome.note,
    }


@router.get(
    "",
    response_model=VersionList,
    summary="List versions (filter by model, stage, tag)",
    responses=errors(401, 403, 422, 503),
)
def list_versions(
    request: Request,
    name: str | None = Query(default=None, max_length=128),
    stage: str | None = Query(default=None, max_length=32, json_schema_extra=STAGE_SCHEMA),
    tag: str | None = Query(default=None, max_length=64),
    _: Operator = Viewer,
) -> dict[str, Any]:
    versions = context(request).registry.list_versions(model=name, stage=stage, tag=tag)
    return {"versions": [v.summary() for v in versions]}


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersion,
    summary="Everything about one version",
    responses=errors(401, 403, 404, 422, 503, e404=NOT_FOUND),
)
def show(
    name: ModelName, version: VersionParam, request: Request, _: Operator = Viewer
) -> dict[str, Any]:
    return context(request).registry.get(name, version).model_dump(mode="json")


@router.get(
    "/{name}/latest",
    response_model=VersionSummary,
    summary="Highest version by semver precedence",
    responses=errors(401, 403, 404, 422, 503, e404="no such model, or none in that stage"),
)
def latest(
    name: ModelName,
    request: Request,
    stage: str | None = Query(default=None, max_length=32, json_schema_extra=STAGE_SCHEMA),
    _: Operator = Viewer,
) -> dict[str, Any]:
    return context(request).registry.latest(name, stage).summary()


@router.get(
    "/{name}/compare",
    response_model=Comparison,
    summary="Compare version b with version a",
    responses=errors(401, 403, 404, 422, 503, e404=NOT_FOUND),
)
def compare(
    name: ModelName,
    request: Request,
    a: str = Query(max_length=128, json_schema_extra=SEMVER_SCHEMA),
    b: str = Query(max_length=128, json_schema_extra=SEMVER_SCHEMA),
    _: Operator = Viewer,
) -> dict[str, Any]:
    return context(request).registry.compare(name, a, b).model_dump(mode="json")


@router.post(
    "/{name}/versions/{version}/promote",
    response_model=StageChanges,
    summary="Move a version to another stage",
    responses=errors(401, 403, 404, 409, 413, 422, 503, e404=NOT_FOUND),
)
def promote(
    name: ModelName,
    version: VersionParam,
    body: Promote,
    request: Request,
    actor: Operator = OperatorRole,
) -> dict[str, Any]:
    ctx = context(request)
    changes = ctx.registry.promote(
        name,
        version,
        body.stage,
        actor=actor.actor,
        reason=body.reason,
        archive_previous=not body.keep_production,
    )
    result = {"changes": [c.model_dump(mode="json") for c in changes]}
    ctx.access.audit(actor, "model.promote", f"{name}@{version}", None, result)
    return result


@router.get(
    "/{name}/history",
    response_model=StageChanges,
    summary="Stage history of a model or one version",
    responses=errors(401, 403, 404, 422, 503, e404=NOT_FOUND),
)
def history(
    name: ModelName,
    request: Request,
    version: str | None = Query(default=None, max_length=128, json_schema_extra=SEMVER_SCHEMA),
    _: Operator = Viewer,
) -> dict[str, Any]:
    changes = context(request).registry.history(name, version)
    return {"changes": [c.model_dump(mode="json") for c in changes]}

"""Registry routes, mirroring the CLI: register by upload, list, show, compare, promote."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from edgefleet.access.service import Operator
from edgefleet.registry.compare import Comparison
from edgefleet.registry.domain import ModelVersion
from edgefleet.registry.errors import BundleError
from edgefleet.server.auth import OperatorRole, Viewer, context
from edgefleet.server.context import ServerContext
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import RegisteredVersion, StageChanges, VersionList, VersionSummary
from edgefleet.signing.publish import PublishOutcome, publish_if_possible
from edgefleet.stdjson import Body

router = APIRouter(prefix="/api/v1/models", tags=["registry"], route_class=StandardJsonRoute)


class Promote(Body):
    stage: str = Field(min_length=1, max_length=32)
    reason: str = Field(default="", max_length=1000)
    keep_production: bool = False


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
    responses={
        409: {"description": "version already registered"},
        422: {"description": "bad bundle"},
    },
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


@router.get("", response_model=VersionList, summary="List versions (filter by model, stage, tag)")
def list_versions(
    request: Request,
    name: str | None = Query(default=None, max_length=128),
    stage: str | None = Query(default=None, max_length=32),
    tag: str | None = Query(default=None, max_length=64),
    _: Operator = Viewer,
) -> dict[str, Any]:
    versions = context(request).registry.list_versions(model=name, stage=stage, tag=tag)
    return {"versions": [v.summary() for v in versions]}


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersion,
    summary="Everything about one version",
)
def show(name: str, version: str, request: Request, _: Operator = Viewer) -> dict[str, Any]:
    return context(request).registry.get(name, version).model_dump(mode="json")


@router.get(
    "/{name}/latest", response_model=VersionSummary, summary="Highest version by semver precedence"
)
def latest(
    name: str,
    request: Request,
    stage: str | None = Query(default=None, max_length=32),
    _: Operator = Viewer,
) -> dict[str, Any]:
    return context(request).registry.latest(name, stage).summary()


@router.get(
    "/{name}/compare", response_model=Comparison, summary="Compare version b with version a"
)
def compare(
    name: str,
    request: Request,
    a: str = Query(max_length=128),
    b: str = Query(max_length=128),
    _: Operator = Viewer,
) -> dict[str, Any]:
    return context(request).registry.compare(name, a, b).model_dump(mode="json")


@router.post(
    "/{name}/versions/{version}/promote",
    response_model=StageChanges,
    summary="Move a version to another stage",
)
def promote(
    name: str, version: str, body: Promote, request: Request, actor: Operator = OperatorRole
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
)
def history(
    name: str,
    request: Request,
    version: str | None = Query(default=None, max_length=128),
    _: Operator = Viewer,
) -> dict[str, Any]:
    changes = context(request).registry.history(name, version)
    return {"changes": [c.model_dump(mode="json") for c in changes]}

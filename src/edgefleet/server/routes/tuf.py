"""TUF metadata (public) and targets (enrolled devices and operators), read-only.

Files are streamed from the repository directory with ``Range`` (206,
``Content-Range``; 416 for ranges past the end), ``ETag`` and ``If-Range``, in
constant memory per request. Small files, whole, are answered from memory before
the framework (server/hotpath.py, server/filecache.py) with the same headers.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from edgefleet.errors import EdgefleetError
from edgefleet.server.auth import authenticate_any, context
from edgefleet.server.filecache import resolve

router = APIRouter(prefix="/tuf", tags=["tuf"])

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class FileNotServedError(EdgefleetError):
    code = "not_found"


class BadRangeError(EdgefleetError):
    code = "bad_range"


def _resolve(root: Path, relative: str) -> Path:
    path = resolve(root, relative)
    if path is None:
        raise FileNotServedError(f"no file {relative!r}")
    return path


def _check_range(header: str | None, size: int) -> int | None:
    """Validate a single byte range; returns how many bytes it selects."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise BadRangeError(f"malformed Range header {header!r} (expected bytes=START-END)")
    start_text, end_text = match.groups()
    if start_text == "":
        return min(int(end_text), size)
    start = int(start_text)
    if start >= size:
        return -1  # unsatisfiable: answered 416 with Content-Range
    end = int(end_text) if end_text else size - 1
    if end < start:
        raise BadRangeError(f"malformed Range header {header!r}: end before start")
    return min(end, size - 1) - start + 1


def _serve(request: Request, directory: Path, relative: str) -> FileResponse:
    path = _resolve(directory, relative)
    size = path.stat().st_size
    selected = _check_range(request.headers.get("range"), size)
    if selected == -1:
        from starlette.exceptions import HTTPException

        raise HTTPException(
            416, "the range starts past the end of the file", {"Content-Range": f"bytes */{size}"}
        )
    request.app.state.metrics.artifact_bytes.inc(size if selected is None else selected)
    return FileResponse(path, media_type="application/octet-stream")


@router.get(
    "/metadata/{path:path}", summary="TUF metadata (public, signed)", response_class=FileResponse
)
def metadata(path: str, request: Request) -> FileResponse:
    return _serve(request, context(request).settings.home / "tuf" / "metadata", path)


@router.get(
    "/targets/{path:path}",
    summary="TUF targets: model artifacts, golden samples, profiles (authenticated)",
    response_class=FileResponse,
    responses={
        206: {"description": "the requested range"},
        416: {"description": "range not satisfiable"},
    },
)
def targets(path: str, request: Request) -> FileResponse:
    authenticate_any(request)
    return _serve(request, context(request).settings.home / "tuf" / "targets", path)

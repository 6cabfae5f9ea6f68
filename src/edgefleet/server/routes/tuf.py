"""TUF metadata (public) and targets (enrolled devices and operators), read-only.

Files are streamed from the repository directory by Starlette's ``FileResponse`` in
constant memory per request, with ``ETag``, ``Last-Modified`` and one byte range (206,
``Content-Range``). Everything that can go wrong is decided here, before a byte is sent,
and answered with the error envelope: a path that names no file we serve is 404 (also
when the filesystem refuses the name: too long, a symlink loop); ``If-Range`` is checked
first (RFC 9110 section 13.1.5: a stale one means the whole file, 200, whatever the
range); the ``Range`` header is parsed strictly (RFC 9110 section 14.1.1): one
``bytes=FIRST-LAST``, ``bytes=FIRST-`` or ``bytes=-SUFFIX``, ASCII digits of any length,
no spaces inside; anything else is 400 (``bad_range``), a range with no byte in the file
is 416 with ``Content-Range: bytes */size``. ``FileResponse`` is then handed that range in
canonical form, because it parses the header again, leniently (``int()`` takes ``+1``
and ``1_0``, and raises on numerals past 4300 digits).

Small files, whole, are answered from memory before the framework (server/hotpath.py,
server/filecache.py) with the same headers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from edgefleet.errors import EdgefleetError
from edgefleet.server.auth import authenticate_any, context
from edgefleet.server.filecache import MEDIA_TYPE, resolve
from edgefleet.server.jsonbody import StandardJsonRoute
from edgefleet.server.schemas import errors

router = APIRouter(prefix="/tuf", tags=["tuf"], route_class=StandardJsonRoute)

# ASCII digits only: ``\d`` would also take other scripts' digits, which ``int()`` reads.
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")

#: Numerals longer than this (once leading zeros are gone) are past the end of any file
#: (10**18 bytes is an exabyte), so they are never converted: ``int()`` of thousands of
#: digits is slow, and refused past 4300.
_OFFSET_DIGITS = 18
_BEYOND = 10**_OFFSET_DIGITS

#: How much of a path or header an error message repeats.
_SHOWN = 80


class FileNotServedError(EdgefleetError):
    code = "not_found"


class BadRangeError(EdgefleetError):
    code = "bad_range"


class RangeNotSatisfiableError(HTTPException):
    """No byte of the range is in the file: 416, and the file's size in ``Content-Range``
    (the error envelope's ``range_not_satisfiable``, server/errors.py)."""

    def __init__(self, size: int) -> None:
        super().__init__(
            416,
            f"the range selects no byte of the {size}-byte file",
            {"Content-Range": f"bytes */{size}"},
        )


class ByteRange(NamedTuple):
    """Bytes ``first`` to ``last`` of a file, both included (as in ``Content-Range``)."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def byte_range(header: str, size: int) -> ByteRange | None:
    """The bytes a ``Range`` header selects from a file of ``size`` bytes; None for the
    whole file (an empty file, asked for its last bytes).

    Raises:
        BadRangeError: not one valid range in bytes.
        RangeNotSatisfiableError: the range starts past the end, or is the last 0 bytes.
    """
    # A field value's leading and trailing whitespace is not part of it (RFC 9110 5.5);
    # the range unit is case-insensitive (14.1); inside, the grammar has no whitespace.
    unit, equals, spec = header.strip(" \t").partition("=")
    match = _RANGE_SPEC.fullmatch(spec)
    if not equals or unit.lower() != "bytes" or match is None or match.groups() == ("", ""):
        raise BadRangeError(
            f"malformed Range header {_shown(header)}"
            " (expected one range: bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX)"
        )
    first_text, last_text = match.groups()
    if not first_text:
        suffix = _offset(last_text)
        if suffix == 0:
            raise RangeNotSatisfiableError(size)
        return ByteRange(max(size - suffix, 0), size - 1) if size else None
    if last_text and _magnitude(last_text) < _magnitude(first_text):
        raise BadRangeError(f"malformed Range header {_shown(header)}: LAST before FIRST")
    first = _offset(first_text)
    if first >= size:
        raise RangeNotSatisfiableError(size)
    return ByteRange(first, min(_offset(last_text), size - 1) if last_text else size - 1)


def _magnitude(digits: str) -> tuple[int, str]:
    """Orders numerals as their values, without converting them."""
    significant = digits.lstrip("0")
    return len(significant), significant


def _offset(digits: str) -> int:
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= _OFFSET_DIGITS else _BEYOND


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


class _CheckedFileResponse(FileResponse):
    """A ``FileResponse`` that sends ``selected`` (None: the whole file), the range the
    route checked against the same ``stat``. ``FileResponse`` reads ``Range`` and ``If-Range``
    from the request again: it is given the range in canonical form, and no ``If-Range``
    (already decided on the same validators)."""

    def __init__(self, path: Path, stat: os.stat_result) -> None:
        super().__init__(path, media_type=MEDIA_TYPE, stat_result=stat)
        self.selected: ByteRange | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if self.selected is not None:
            canonical = f"bytes={self.selected.first}-{self.selected.last}"
            headers.append((b"range", canonical.encode()))
        await super().__call__({**scope, "headers": headers}, receive, send)


def _range_applies(if_range: str | None, response: FileResponse) -> bool:
    """Whether ``If-Range`` (if any) names the file as it is: strong comparison with its
    ``ETag`` or its ``Last-Modified`` date (RFC 9110 section 13.1.5)."""
    if if_range is None:
        return True
    return not if_range.startswith("W/") and if_range in (
        response.headers["etag"],
        response.headers["last-modified"],
    )


def _serve(request: Request, directory: Path, relative: str) -> FileResponse:
    path = resolve(directory, relative)
    try:
        stat = None if path is None else path.stat()
    except OSError:
        stat = None  # removed since
    if path is None or stat is None:
        raise FileNotServedError(f"no file {_shown(relative)}")
    response = _CheckedFileResponse(path, stat)
    ranges = request.headers.getlist("range")
    if ranges and _range_applies(request.headers.get("if-range"), response):
        # Several Range fields are one comma-separated list (RFC 9110 5.3): several ranges.
        response.selected = byte_range(", ".join(ranges), stat.st_size)
    served = stat.st_size if response.selected is None else response.selected.length
    request.app.state.metrics.artifact_bytes.inc(served)
    return response


#: What a file route answers besides the file.
FILE_ANSWERS: dict[int | str, dict[str, Any]] = {
    206: {"description": "the requested range (Content-Range)"},
    **errors(400, 404, 416, e400="a malformed Range header (bad_range)", e404="no such file"),
}


@router.get(
    "/metadata/{path:path}",
    summary="TUF metadata (public, signed)",
    response_class=FileResponse,
    responses=FILE_ANSWERS,
)
def metadata(path: str, request: Request) -> FileResponse:
    return _serve(request, context(request).settings.home / "tuf" / "metadata", path)


@router.get(
    "/targets/{path:path}",
    summary="TUF targets: model artifacts, golden samples, profiles (authenticated)",
    response_class=FileResponse,
    responses={**FILE_ANSWERS, **errors(401, 503)},
)
def targets(path: str, request: Request) -> FileResponse:
    authenticate_any(request)
    return _serve(request, context(request).settings.home / "tuf" / "targets", path)

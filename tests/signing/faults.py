"""What a repository server (or the disk under the device) can do to a delivery, for the
device's own code to meet in process.

``FaultyTransport`` is an httpx transport: it forwards each request to a real one (the
live server's, or ``files`` over a repository directory) unless a fault is set for a path
it contains, and the fault then answers instead, usually from the genuine response::

    transport = FaultyTransport(files(repository.root_dir))
    transport.faults["/targets/models/digits/1.1.0/"] = status(503)
    client = DeliveryClient(..., http=httpx.Client(transport=transport))
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from tuf.api.metadata import Metadata, MetaFile
from tuf.api.serialization.json import JSONSerializer

from edgefleet.signing.repository import TufRepository

Forward = Callable[[httpx.Request], httpx.Response]
#: Answers a request, given how to get the genuine answer.
Fault = Callable[[httpx.Request, Forward], httpx.Response]


class FaultyTransport(httpx.BaseTransport):
    """Forwards to ``upstream`` unless a fault's key is part of the request's path.
    ``requests`` records (path, Range header) of every request."""

    def __init__(self, upstream: httpx.BaseTransport) -> None:
        self.upstream = upstream
        self.faults: dict[str, Fault] = {}
        self.requests: list[tuple[str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((path, request.headers.get("Range")))
        for where, fault in self.faults.items():
            if where in path:
                return fault(request, self.upstream.handle_request)
        return self.upstream.handle_request(request)

    def close(self) -> None:
        self.upstream.close()


def files(root: Path) -> httpx.MockTransport:
    """A static file server over ``root``, with single byte ranges as nginx or S3 serve
    them (no sockets: each test's client talks to it directly)."""

    def answer(request: httpx.Request) -> httpx.Response:
        file = (root / request.url.path.lstrip("/")).resolve()
        if not file.is_relative_to(root.resolve()) or not file.is_file():
            return httpx.Response(404)
        data = file.read_bytes()
        byte_range = request.headers.get("Range")
        if not byte_range:
            return httpx.Response(200, content=data)
        first = int(byte_range.removeprefix("bytes=").split("-", 1)[0])
        if first >= len(data):
            return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {first}-{len(data) - 1}/{len(data)}"},
            content=data[first:],
        )

    return httpx.MockTransport(answer)


def status(code: int) -> Fault:
    """Answer HTTP ``code`` with an empty body."""
    return lambda request, forward: httpx.Response(code)


def refuse_ranges(request: httpx.Request, forward: Forward) -> httpx.Response:
    """Answer 416 to any request for a range, the whole file otherwise (a server whose
    file is not the one the partial download was started from)."""
    if "Range" in request.headers:
        return httpx.Response(416)
    return forward(request)


def serve(body: bytes) -> Fault:
    """Answer 200 with ``body`` instead of the genuine file."""
    return lambda request, forward: httpx.Response(200, content=body)


def cut_at(position: int) -> Fault:
    """Drop the connection when the transfer reaches byte ``position`` of the file, on
    every request: the first gets that far, a resume from there gets nothing."""

    def answer(request: httpx.Request, forward: Forward) -> httpx.Response:
        response = forward(request)
        body = response.read()
        first = _first_byte(response)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutStream(body[: max(0, position - first)]),
        )

    return answer


def short_body(missing: int) -> Fault:
    """Send the file less its last ``missing`` bytes as if it were all of it."""

    def answer(request: httpx.Request, forward: Forward) -> httpx.Response:
        response = forward(_without_range(request))
        return httpx.Response(200, content=response.read()[:-missing])

    return answer


def content_range(first: int | None = None, extra_total: int = 0) -> Fault:
    """Answer every request with a 206 from byte ``first`` (default: the one asked for)
    whose ``Content-Range`` names the file's length plus ``extra_total``."""

    def answer(request: httpx.Request, forward: Forward) -> httpx.Response:
        asked = request.headers.get("Range", "bytes=0-")
        start = int(asked.removeprefix("bytes=").split("-", 1)[0]) if first is None else first
        data = forward(_without_range(request)).read()
        total = len(data) + extra_total
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{total}"},
            content=data[start:],
        )

    return answer


def no_space_for_partials(room: int) -> Callable[..., Any]:
    """A replacement for ``Path.open`` under which a partial download (``*.part``)
    opened for writing takes ``room`` bytes, then fails with ENOSPC; every other file
    opens as usual."""
    genuine = Path.open

    def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = genuine(path, mode, *args, **kwargs)
        if path.name.endswith(".part") and ("w" in mode or "a" in mode):
            return _FullDisk(handle, room)
        return handle

    return open_


def enospc(*args: Any, **kwargs: Any) -> None:
    """Fail as a write to a full disk does."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def newer_timestamp(repository: TufRepository) -> bytes:
    """The repository's timestamp one version on, signed with its keys (what a device
    must write down after its next refresh)."""
    timestamp = repository.timestamp()
    timestamp.signed.version += 1
    return _signed(repository, timestamp)


def without_sha256(repository: TufRepository, prefix: str) -> dict[str, bytes]:
    """Metadata, signed with the repository's keys, in which every target under
    ``prefix`` is listed with a SHA-512 only: {metadata file name: bytes} to serve."""
    snapshot = repository.snapshot()
    targets = repository.targets_role("targets", snapshot)
    changed = [info for path, info in targets.signed.targets.items() if path.startswith(prefix)]
    assert changed, f"no target under {prefix} in the top-level targets"
    for info in changed:
        directory, _, name = info.path.rpartition("/")
        data = (repository.targets_dir / directory / f"{info.hashes['sha256']}.{name}").read_bytes()
        info.hashes = {"sha512": hashlib.sha512(data).hexdigest()}
    targets.signed.version += 1
    snapshot.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    snapshot.signed.version += 1
    timestamp = repository.timestamp()
    timestamp.signed.snapshot_meta = MetaFile(snapshot.signed.version)
    timestamp.signed.version += 1
    return {
        f"{targets.signed.version}.targets.json": _signed(repository, targets),
        f"{snapshot.signed.version}.snapshot.json": _signed(repository, snapshot),
        "timestamp.json": _signed(repository, timestamp),
    }


def _signed(repository: TufRepository, md: Metadata[Any]) -> bytes:
    md.signatures.clear()
    for record in repository.keyring.records[md.signed.type]:
        md.sign(repository.keyring.signer(record), append=True)
    return md.to_bytes(JSONSerializer())


def _first_byte(response: httpx.Response) -> int:
    content_range = response.headers.get("Content-Range")
    if response.status_code != 206 or not content_range:
        return 0
    return int(content_range.removeprefix("bytes ").split("-", 1)[0])


def _without_range(request: httpx.Request) -> httpx.Request:
    headers = {k: v for k, v in request.headers.items() if k.lower() != "range"}
    return httpx.Request(request.method, request.url, headers=headers)


class _CutStream(httpx.SyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        if self.data:
            yield self.data
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        )


class _FullDisk:
    """A file that takes ``room`` more bytes, then fails with ENOSPC."""

    def __init__(self, handle: Any, room: int) -> None:
        self._handle = handle
        self._room = room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            self._handle.write(data[: self._room])
            self._room = 0
            enospc()
        self._room -= len(data)
        return int(self._handle.write(data))

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

"""The most frequent device requests, answered in front of the web framework.

Nearly every check-in of a settled fleet is ``GET /api/v1/devices/{id}/desired`` with
an ``If-None-Match`` that still matches, answered ``304``; the next most frequent request
is ``POST /api/v1/devices/{id}/telemetry``, and while a rollout installs, each device
also reports its transitions (``POST .../events``) and its state (``PUT .../reported``)
and fetches TUF files. FastAPI's middleware stack, routing, dependency injection and
response models cost more than the work of these answers (a 304 check-in: 13,483/s
here against 9,650/s through the framework, ``benchmarks/checkin.py``), so
``DeviceFastPath``, an ASGI layer around the FastAPI app, takes them first. It only
parses and formats: the device is authenticated and the request done by the same
service function the route calls (``fleet/checkin.py``), answered by the same
formatting (``server/answers.py``), and counted and timed in the same request metrics.

It answers a device's own requests with a valid JSON body (with a length, within the
size cap), check-ins, TUF metadata, and targets for an enrolled device, whole (not
ranges), of small files from memory (``server/filecache.py``). Anything else goes on to
the app, with the body read so far given again: no or a bad credential, another
device's, a body that is not valid or is over the cap, a range, a large file, an
operator, a server not started, and every request whose service function raised (a
database that cannot be read, a batched write that failed, a refused attribute). The
route then calls the service function again (a report replaces the last, events are
stored once by sequence number, a refused report stored nothing) and answers, with the
error envelope where it fails.

Its own answers come from the check-in cache (``store/checkin.py``), the routes' from
the database: docs/api.md, "The check-in path", says how far behind that may be.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.fleet.checkin import CheckinService
from edgefleet.fleet.domain import EventBatch, ReportedState, TelemetryBatch
from edgefleet.fleet.ports import CheckinRow
from edgefleet.server import answers
from edgefleet.server.answers import Answer
from edgefleet.server.filecache import FileCache
from edgefleet.server.metrics import ServerMetrics

PREFIX = "/api/v1/devices/"
DESIRED = "/desired"
TUF_METADATA = "/tuf/metadata/"
TUF_TARGETS = "/tuf/targets/"

# The routes' templates, so metrics label these answers as the routes label theirs.
DESIRED_TEMPLATE = PREFIX + "{device_id}" + DESIRED
METADATA_TEMPLATE = TUF_METADATA + "{path:path}"
TARGETS_TEMPLATE = TUF_TARGETS + "{path:path}"


class Serving(NamedTuple):
    """What the fast path answers with, once the server has started."""

    checkins: CheckinService
    metrics: ServerMetrics
    #: The TUF repository's directory (``metadata/``, ``targets/``).
    tuf: Path


BodyT = TypeVar("BodyT")


@dataclass(frozen=True)
class BodyRoute(Generic[BodyT]):
    """A device route with a JSON body whose good case the fast path answers."""

    method: str
    suffix: str
    adapter: TypeAdapter[BodyT]
    answer: Callable[[CheckinService, CheckinRow, BodyT], Awaitable[Answer]]

    @property
    def template(self) -> str:
        return PREFIX + "{device_id}" + self.suffix


BODY_ROUTES: tuple[BodyRoute[Any], ...] = (
    BodyRoute("POST", "/telemetry", TypeAdapter(TelemetryBatch), answers.telemetry),
    BodyRoute("PUT", "/reported", TypeAdapter(ReportedState), answers.report),
    BodyRoute("POST", "/events", TypeAdapter(EventBatch), answers.events),
)


class DeviceFastPath:
    """An ASGI layer that answers the good case of device requests before ``app``.

    ``serving`` gives what it answers with, or None before the server started (then
    ``app`` answers everything); ``max_body`` is the JSON body size cap.
    """

    def __init__(self, app: ASGIApp, serving: Callable[[], Serving | None], max_body: int) -> None:
        self.app = app
        self.serving = serving
        self.max_body = max_body
        # Used on the event loop's thread only.
        self.files = FileCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answered, receive = await self.answer(scope, receive, send)
            if answered:
                return
        await self.app(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> tuple[bool, Receive]:
        """(answered, the receive to hand on: the body read so far is given again)."""
        method = scope["method"]
        if method == "GET":
            answered = await self._check_in(scope, send) or await self._file(scope, send)
            return answered, receive
        if method in ("POST", "PUT"):
            return await self._with_body(scope, receive, send)
        return False, receive

    def _device(self, serving: Serving, scope: Scope, suffix: str) -> CheckinRow | None:
        """The device of a device route ``.../{id}<suffix>`` whose own credential the
        request bears, or None."""
        path: str = scope["path"]
        device_id = path[len(PREFIX) : -len(suffix)]
        if not device_id or "/" in device_id:
            return None
        return _authenticated(serving, scope, device_id)

    async def _check_in(self, scope: Scope, send: Send) -> bool:
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and path.endswith(DESIRED)):
            return False
        serving = self.serving()
        if serving is None:
            return False
        started = time.perf_counter()
        device = self._device(serving, scope, DESIRED)
        if device is None:
            return False
        try:
            answer = answers.check_in(
                serving.checkins, device, _header(scope, b"if-none-match"), serving.metrics
            )
        except Exception:
            return False  # the route answers: the error envelope, or 404 if it was deleted
        await answer.send(send)
        serving.metrics.request_done(
            "GET", DESIRED_TEMPLATE, answer.status, time.perf_counter() - started
        )
        return True

    async def _file(self, scope: Scope, send: Send) -> bool:
        """A TUF metadata file, or a target for an enrolled device, from memory; not
        ranges (resumed downloads) nor operators (their key is checked by the route)."""
        path: str = scope["path"]
        if path.startswith(TUF_METADATA):
            prefix, template, directory = TUF_METADATA, METADATA_TEMPLATE, "metadata"
        elif path.startswith(TUF_TARGETS):
            prefix, template, directory = TUF_TARGETS, TARGETS_TEMPLATE, "targets"
        else:
            return False
        serving = self.serving()
        if serving is None or _header(scope, b"range") is not None:
            return False
        if directory == "targets" and _authenticated(serving, scope, None) is None:
            return False
        started = time.perf_counter()
        try:
            cached = self.files.get(serving.tuf / directory, path[len(prefix) :])
        except Exception:
            # Nothing here turns an exception into the error envelope (the framework is
            # not running yet): the route tries again, and answers or logs it with one.
            return False
        if cached is None:
            return False  # missing (the route's 404) or large: the route streams it
        serving.metrics.artifact_bytes.inc(len(cached.body))
        await Answer(200, cached.headers, cached.body).send(send)
        serving.metrics.request_done("GET", template, 200, time.perf_counter() - started)
        return True

    async def _with_body(self, scope: Scope, receive: Receive, send: Send) -> tuple[bool, Receive]:
        """A device's JSON body for one of ``BODY_ROUTES``: read, validated and done;
        (answered, the receive to hand on: the body read so far is given again)."""
        path: str = scope["path"]
        route = next(
            (r for r in BODY_ROUTES if r.method == scope["method"] and path.endswith(r.suffix)),
            None,
        )
        if route is None or not path.startswith(PREFIX):
            return False, receive
        serving = self.serving()
        if serving is None:
            return False, receive
        started = time.perf_counter()
        length = _raw_header(scope, b"content-length")
        content_type = _raw_header(scope, b"content-type") or b""
        if (
            length is None
            or not length.isdigit()
            or int(length) > self.max_body
            or not content_type.startswith(b"application/json")
        ):
            return False, receive
        device = self._device(serving, scope, route.suffix)
        if device is None:
            return False, receive
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return True, receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body:
                break
        body = b"".join(chunks)
        replay = _replaying(body, more, receive)
        if more:
            return False, replay
        try:
            parsed = route.adapter.validate_json(body)
        except ValidationError:
            return False, replay  # the route answers 422 with its envelope
        try:
            answer = await route.answer(serving.checkins, device, parsed)
        except Exception:
            return False, replay  # the route does it again, or answers the error
        await answer.send(send)
        serving.metrics.request_done(
            route.method, route.template, answer.status, time.perf_counter() - started
        )
        return True, receive


def _authenticated(serving: Serving, scope: Scope, device_id: str | None) -> CheckinRow | None:
    """The device whose credential the request bears (``device_id``'s own, if given),
    or None: the route answers the rest (401, 403, or 503 from the store)."""
    try:
        return serving.checkins.authenticate(_header(scope, b"authorization"), device_id)
    except Exception:
        return None


def _raw_header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    value = _raw_header(scope, wanted)
    return None if value is None else value.decode("latin-1")


def _replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that first gives back what was read, then reads on."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again

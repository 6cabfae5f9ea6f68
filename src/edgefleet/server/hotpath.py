"""The most frequent device requests, answered before the web framework.

Nearly every poll of a settled fleet is ``GET /api/v1/devices/{id}/desired`` with an
``If-None-Match`` that still matches, answered ``304``; the next most frequent request
is ``POST /api/v1/devices/{id}/telemetry``, and while a rollout installs, each device
also reports its transitions (``POST .../events``) and its state (``PUT .../reported``).
``DeviceFastPath.answer`` answers exactly the good case of each: the 304 from one
indexed row (credential and ETag), or else the desired state, its JSON made once per
ETag; telemetry by validating the batch and merging it into the pending buckets
(store/telemetry.py); events and a report without attribute changes by validating them
and handing them to the same batched writes the routes use (server/batching.py),
answered once they committed. ``EdgefleetApp`` asks it first, before FastAPI's
middleware stack, routing, dependency injection and response models, which cost more
than the work itself; it counts and times its answers in the same request metrics. It
also answers TUF metadata and, for enrolled devices, whole targets (not ranges) of small
files from memory (server/filecache.py). Anything else (no or stale ETag, a bad or
foreign credential, a body that is not valid or is over the size cap, a report that
changes attributes, a database that cannot be read or written, a range, a large file)
goes on to the regular route, with the body it sent, which gives the full answer and the
error envelopes (a report or events whose batched write failed are written again there:
a report replaces the last, events are stored once by sequence number). Measured with
``benchmarks/checkin.py`` and ``benchmarks/fleet.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from edgefleet.access import tokens
from edgefleet.fleet.domain import (
    DesiredState,
    EventBatch,
    EventsAccepted,
    ReportedState,
    TelemetryBatch,
)
from edgefleet.fleet.errors import DeviceNotFoundError
from edgefleet.server.filecache import FileCache
from edgefleet.store.checkin import CheckinRow
from edgefleet.store.errors import StoreUnavailableError

PREFIX = "/api/v1/devices/"
DESIRED = "/desired"
TELEMETRY = "/telemetry"
REPORTED = "/reported"
TUF_METADATA = "/tuf/metadata/"
TUF_TARGETS = "/tuf/targets/"
EVENTS = "/events"

# The routes' templates, so metrics label these answers as the routes label theirs.
DESIRED_TEMPLATE = PREFIX + "{device_id}" + DESIRED
METADATA_TEMPLATE = TUF_METADATA + "{path:path}"
TARGETS_TEMPLATE = TUF_TARGETS + "{path:path}"


class EdgefleetApp(FastAPI):
    """FastAPI, with the device fast path asked before its middleware stack."""

    fast_path: DeviceFastPath | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.fast_path is not None and scope["type"] == "http":
            answered, receive = await self.fast_path.answer(scope, receive, send)
            if answered:
                return
        await super().__call__(scope, receive, send)


class DeviceFastPath:
    """``state``: the app's state once started (``ctx`` and ``metrics``), else None."""

    def __init__(self, state: Callable[[], Any], max_body: int) -> None:
        self.state = state
        self.max_body = max_body
        # Used on the event loop's thread only.
        self.files = FileCache()
        self._desired_bodies: dict[str, bytes] = {}

    async def answer(self, scope: dict[str, Any], receive: Any, send: Any) -> tuple[bool, Any]:
        """(answered, the receive to hand on: the body read so far is given again)."""
        method = scope["method"]
        if method == "GET":
            answered = await self._desired(scope, send) or await self._file(scope, send)
            return answered, receive
        if method in ("POST", "PUT"):
            return await self._with_body(scope, receive, send)
        return False, receive

    def _device(self, scope: dict[str, Any], suffix: str) -> tuple[CheckinRow, Any] | None:
        """The authenticated row of a device route ``.../{id}<suffix>``, or None."""
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and path.endswith(suffix)):
            return None
        device_id = path[len(PREFIX) : -len(suffix)]
        if not device_id or "/" in device_id:
            return None
        found = self._credential(scope)
        if found is None or found[0].device_id != device_id:
            return None
        return found

    def _credential(self, scope: dict[str, Any]) -> tuple[CheckinRow, Any] | None:
        """The row of the enrolled device whose credential the request bears, or None."""
        authorization = _header(scope, b"authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        parsed = tokens.parse(token) if scheme.lower() == "bearer" else None
        if parsed is None or parsed.kind != tokens.DEVICE:
            return None
        state = self._started()
        if state is None:
            return None
        try:
            # On the event loop's thread: from memory, or its own connection.
            row = state.ctx.lookup_on_loop(parsed.token_id)
        except StoreUnavailableError:
            return None  # the regular route answers with the error envelope
        if row is None or not tokens.matches(parsed.secret, row.credential_hash):
            return None
        return row, state

    def _started(self) -> Any:
        state = self.state()
        if state is None or getattr(state, "metrics", None) is None:
            return None  # not started (or stopping): the regular route answers
        return state

    async def _file(self, scope: dict[str, Any], send: Any) -> bool:
        """A TUF metadata file, or a target for an enrolled device, from memory; not
        ranges (resumed downloads) nor operators (their key is checked by the route)."""
        path: str = scope["path"]
        if path.startswith(TUF_METADATA):
            prefix, template, directory = TUF_METADATA, METADATA_TEMPLATE, "metadata"
            state = self._started()
        elif path.startswith(TUF_TARGETS):
            prefix, template, directory = TUF_TARGETS, TARGETS_TEMPLATE, "targets"
            found = self._credential(scope)
            state = None if found is None else found[1]
        else:
            return False
        if state is None or _header(scope, b"range") is not None:
            return False
        started = time.perf_counter()
        root = state.ctx.settings.home / "tuf" / directory
        try:
            cached = self.files.get(root, path[len(prefix) :])
        except Exception:
            # Nothing here turns an exception into the error envelope (the framework is
            # not running yet): the route tries again, and answers or logs it with one.
            return False
        if cached is None:
            return False  # missing (the route's 404) or large: the route streams it
        state.metrics.artifact_bytes.inc(len(cached.body))
        await send({"type": "http.response.start", "status": 200, "headers": cached.headers})
        await send({"type": "http.response.body", "body": cached.body})
        state.metrics.request_done("GET", template, 200, time.perf_counter() - started)
        return True

    async def _desired(self, scope: dict[str, Any], send: Any) -> bool:
        """A check-in: 304 when ``If-None-Match`` still matches, else the desired state
        (its JSON made once per ETag: equal ETags, equal states)."""
        if not scope["path"].endswith(DESIRED):
            return False
        started = time.perf_counter()
        found = self._device(scope, DESIRED)
        if found is None:
            return False
        row, state = found
        metrics = state.metrics
        if_none_match = _header(scope, b"if-none-match")
        if not_modified(None if if_none_match is None else if_none_match.decode("latin-1"), row):
            tag = f'"{row.desired_etag}"'.encode()
            state.ctx.recorder.record(row.pk, datetime.now(UTC), row.poll_interval_s)
            metrics.not_modified.inc()
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", tag)]})
            await send({"type": "http.response.body", "body": b""})
            metrics.request_done("GET", DESIRED_TEMPLATE, 304, time.perf_counter() - started)
            return True
        try:
            etag, desired = self._desired_json(state, row)
        except (StoreUnavailableError, DeviceNotFoundError, ValidationError):
            return False  # the route answers: the error envelope, or 404 if it was deleted
        state.ctx.recorder.record(row.pk, datetime.now(UTC), row.poll_interval_s)
        metrics.checkins.labels("changed").inc()
        body = b"".join(
            (
                b'{"device_id":',
                json.dumps(row.device_id).encode(),
                b',"etag":',
                json.dumps(etag).encode(),
                b',"desired":',
                desired,
                b"}",
            )
        )
        await _send_json(send, body, (b"etag", f'"{etag}"'.encode()))
        metrics.request_done("GET", DESIRED_TEMPLATE, 200, time.perf_counter() - started)
        return True

    def _desired_json(self, state: Any, row: CheckinRow) -> tuple[str, bytes]:
        """(ETag, the desired state's JSON) of the device ``row``."""
        known = self._desired_bodies.get(row.desired_etag)
        if known is not None:
            return row.desired_etag, known
        # The row may be older than the database (another process's change, seen within
        # the check-in cache's refresh): the state and the ETag read together agree.
        desired, etag = state.ctx.checkin.desired(row.pk)
        known = self._desired_bodies.get(etag)
        if known is None:
            known = (
                DesiredState.model_validate(desired).model_dump_json().encode()
                if desired
                else b"null"
            )
            if len(self._desired_bodies) >= DESIRED_BODIES_KEPT:
                self._desired_bodies.clear()
            self._desired_bodies[etag] = known
        return etag, known

    async def _with_body(self, scope: dict[str, Any], receive: Any, send: Any) -> tuple[bool, Any]:
        """A device's JSON body for one of ``BODY_ROUTES``: read, validated and acted
        on; (answered, the receive to hand on: the body read so far is given again)."""
        path: str = scope["path"]
        route = next(
            (r for r in BODY_ROUTES if r.method == scope["method"] and path.endswith(r.suffix)),
            None,
        )
        if route is None:
            return False, receive
        started = time.perf_counter()
        length = _header(scope, b"content-length")
        content_type = _header(scope, b"content-type") or b""
        if (
            length is None
            or not length.isdigit()
            or int(length) > self.max_body
            or not content_type.startswith(b"application/json")
        ):
            return False, receive
        found = self._device(scope, route.suffix)
        if found is None:
            return False, receive
        row, state = found
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
            return False, replay
        answer = await route.act(state, row, parsed)
        if answer is None:
            return False, replay
        await _send_json(send, answer)
        state.metrics.request_done(route.method, route.template, 200, time.perf_counter() - started)
        return True, receive


async def _telemetry(state: Any, row: CheckinRow, batch: TelemetryBatch) -> bytes:
    # Merged into the device's pending buckets in memory (store/telemetry.py).
    buckets = state.ctx.telemetry.add_samples(row.pk, batch.samples)
    return json.dumps({"samples": len(batch.samples), "buckets": buckets}).encode()


async def _reported(state: Any, row: CheckinRow, report: ReportedState) -> bytes | None:
    if report.attributes or report.firmware:
        return None  # a read-modify-write of the stored attributes: the route's
    try:
        # One row of an UPDATE for many devices, answered once it committed.
        await state.ctx.report_batches.submit((row, report, datetime.now(UTC)))
    except Exception:
        return None  # the route writes it again (a report replaces) or answers the error
    return ACCEPTED


async def _events(state: Any, row: CheckinRow, batch: EventBatch) -> bytes | None:
    try:
        # Stored with other devices' batches in one transaction, answered once committed.
        stored: EventsAccepted = await state.ctx.event_batches.submit((row.pk, batch))
    except Exception:
        return None  # the route stores it again (by sequence number) or answers the error
    return stored.model_dump_json().encode()


class BodyRoute(NamedTuple):
    """A device route whose good case the fast path answers: ``act`` gives the JSON
    answer, or None to hand the request on to the route."""

    method: str
    suffix: str
    adapter: TypeAdapter[Any]
    act: Callable[[Any, CheckinRow, Any], Awaitable[bytes | None]]

    @property
    def template(self) -> str:
        return PREFIX + "{device_id}" + self.suffix


ACCEPTED = b'{"accepted":true}'

#: Desired states kept as JSON by ETag (a fleet has a few at a time: one per version,
#: variant and rollout).
DESIRED_BODIES_KEPT = 1024

BODY_ROUTES = (
    BodyRoute("POST", TELEMETRY, TypeAdapter(TelemetryBatch), _telemetry),
    BodyRoute("PUT", REPORTED, TypeAdapter(ReportedState), _reported),
    BodyRoute("POST", EVENTS, TypeAdapter(EventBatch), _events),
)


def not_modified(if_none_match: str | None, row: CheckinRow) -> bool:
    """Whether a check-in's ``If-None-Match`` names the device's desired ETag (quoted,
    bare or weak): the answer is then 304."""
    if if_none_match is None:
        return False
    tag = f'"{row.desired_etag}"'
    return if_none_match.strip() in (tag, row.desired_etag, f"W/{tag}")


async def _send_json(send: Any, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    """A 200 with a JSON body."""
    content = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": content + list(headers)})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict[str, Any], wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _replaying(body: bytes, more: bool, receive: Any) -> Any:
    """A ``receive`` that first gives back what was read, then reads on."""
    given = False

    async def again() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        message: dict[str, Any] = await receive()
        return message

    return again

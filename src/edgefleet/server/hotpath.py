"""The two most frequent device requests, answered before the web framework.

Nearly every poll of a settled fleet is ``GET /api/v1/devices/{id}/desired`` with an
``If-None-Match`` that still matches, answered ``304``; the next most frequent request
is ``POST /api/v1/devices/{id}/telemetry``. ``DeviceFastPath.answer`` answers exactly
the good case of each: the 304 from one indexed row (credential and ETag), the
telemetry batch by validating it and merging it into the pending buckets
(store/telemetry.py). ``EdgefleetApp`` asks it first, before FastAPI's middleware stack,
routing, dependency injection and response models, which cost more than the work
itself; it counts and times its answers in the same request metrics. Anything else (no
or stale ETag, a bad or foreign credential, a body that is not a valid batch or is over
the size cap, a database that cannot be read) goes on to the regular route, with the
body it sent, which gives the full answer and the error envelopes. Measured with
``benchmarks/checkin.py`` and ``benchmarks/fleet.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from edgefleet.access import tokens
from edgefleet.fleet.domain import TelemetryBatch
from edgefleet.store.checkin import CheckinRow
from edgefleet.store.errors import StoreUnavailableError

PREFIX = "/api/v1/devices/"
DESIRED = "/desired"
TELEMETRY = "/telemetry"

# The routes' templates, so metrics label these answers as the routes label theirs.
DESIRED_TEMPLATE = PREFIX + "{device_id}" + DESIRED
TELEMETRY_TEMPLATE = PREFIX + "{device_id}" + TELEMETRY

_BATCH: TypeAdapter[TelemetryBatch] = TypeAdapter(TelemetryBatch)


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

    async def answer(self, scope: dict[str, Any], receive: Any, send: Any) -> tuple[bool, Any]:
        """(answered, the receive to hand on: the body read so far is given again)."""
        method = scope["method"]
        if method == "GET":
            return await self._not_modified(scope, send), receive
        if method == "POST":
            return await self._telemetry(scope, receive, send)
        return False, receive

    def _device(self, scope: dict[str, Any], suffix: str) -> tuple[CheckinRow, Any] | None:
        """The authenticated row of a device route ``.../{id}<suffix>``, or None."""
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and path.endswith(suffix)):
            return None
        device_id = path[len(PREFIX) : -len(suffix)]
        if not device_id or "/" in device_id:
            return None
        authorization = _header(scope, b"authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        parsed = tokens.parse(token) if scheme.lower() == "bearer" else None
        if parsed is None or parsed.kind != tokens.DEVICE:
            return None
        state = self.state()
        if state is None or getattr(state, "metrics", None) is None:
            return None  # not started (or stopping): the regular route answers
        try:
            # On the event loop's thread: from memory, or its own connection.
            row = state.ctx.lookup_on_loop(parsed.token_id)
        except StoreUnavailableError:
            return None  # the regular route answers with the error envelope
        if (
            row is None
            or row.device_id != device_id
            or not tokens.matches(parsed.secret, row.credential_hash)
        ):
            return None
        return row, state

    async def _not_modified(self, scope: dict[str, Any], send: Any) -> bool:
        if_none_match = _header(scope, b"if-none-match")
        if if_none_match is None:
            return False
        started = time.perf_counter()
        found = self._device(scope, DESIRED)
        if found is None:
            return False
        row, state = found
        tag = f'"{row.desired_etag}"'.encode()
        if if_none_match.strip() not in (tag, row.desired_etag.encode(), b"W/" + tag):
            return False
        state.ctx.recorder.record(row.pk, datetime.now(UTC), row.poll_interval_s)
        metrics = state.metrics
        metrics.not_modified.inc()
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", tag)]})
        await send({"type": "http.response.body", "body": b""})
        metrics.request_done("GET", DESIRED_TEMPLATE, 304, time.perf_counter() - started)
        return True

    async def _telemetry(self, scope: dict[str, Any], receive: Any, send: Any) -> tuple[bool, Any]:
        """(answered, the receive to hand on: the body read so far is given again)."""
        if not scope["path"].endswith(TELEMETRY):
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
        found = self._device(scope, TELEMETRY)
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
            batch = _BATCH.validate_json(body)
        except ValidationError:
            return False, replay
        buckets = state.ctx.telemetry.add_samples(row.pk, batch.samples)
        answer = json.dumps({"samples": len(batch.samples), "buckets": buckets}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        state.metrics.request_done("POST", TELEMETRY_TEMPLATE, 200, time.perf_counter() - started)
        return True, receive


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

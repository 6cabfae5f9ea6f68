"""The "nothing changed" answer to a check-in, before the web framework.

Nearly every poll of a settled fleet is ``GET /api/v1/devices/{id}/desired`` with an
``If-None-Match`` that still matches, answered ``304``. This ASGI middleware answers
exactly that case from one indexed row (credential and ETag), skipping routing,
dependency injection and response models; anything else — no or stale ETag, a bad or
foreign credential — goes on to the regular route, which gives the full answer and the
error envelopes. Measured with ``benchmarks/checkin.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edgefleet.access import tokens

PREFIX = "/api/v1/devices/"
SUFFIX = "/desired"
TEMPLATE = PREFIX + "{device_id}" + SUFFIX


class _Route:
    """Stands in for the route in ``scope`` so metrics label the request by template."""

    path = TEMPLATE


class NotModifiedFastPath:
    def __init__(self, app: Any, state: Callable[[], Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and await self._not_modified(scope, send)
        ):
            return
        await self.app(scope, receive, send)

    async def _not_modified(self, scope: dict[str, Any], send: Any) -> bool:
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
            return False
        device_id = path[len(PREFIX) : -len(SUFFIX)]
        if not device_id or "/" in device_id:
            return False
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value
        if authorization is None or if_none_match is None:
            return False
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        parsed = tokens.parse(token) if scheme.lower() == "bearer" else None
        if parsed is None or parsed.kind != tokens.DEVICE:
            return False
        state = self.state()
        row = state.ctx.checkin.lookup(parsed.token_id)
        if (
            row is None
            or row.device_id != device_id
            or not tokens.matches(parsed.secret, row.credential_hash)
        ):
            return False
        tag = f'"{row.desired_etag}"'.encode()
        if if_none_match.strip() not in (tag, row.desired_etag.encode(), b"W/" + tag):
            return False
        state.ctx.recorder.record(row.pk, datetime.now(UTC), row.poll_interval_s)
        state.metrics.checkins.labels("not_modified").inc()
        scope["route"] = _Route
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", tag)]})
        await send({"type": "http.response.body", "body": b""})
        return True

"""The device API's good answers, made once for both the routes and the fast path.

A device request reaches either its route (``server/routes/device.py``) or, in the
good case, the fast path before the framework (``server/hotpath.py``). Each parses the
request its own way and then calls the same function here, which calls the request's
service function (``fleet/checkin.py``) and formats its answer as status, headers and
bytes; the route returns it as a response, the fast path sends it. So the two cannot
answer differently (``tests/server/test_fast_path_and_routes_agree.py`` checks it on
the wire)::

    device = checkins.authenticate(authorization, device_id)
    answer = await answers.events(checkins, device, batch)
    await answer.send(send)  # the fast path
    return answer.response()  # the route

Errors are raised, not formatted: the route's exception handlers answer them with the
error envelope (server/errors.py), and the fast path hands such a request on to the
route.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from starlette.responses import Response
from starlette.types import Send

from edgefleet.fleet.checkin import CheckinService
from edgefleet.fleet.domain import EventBatch, ReportedState, TelemetryBatch
from edgefleet.fleet.ports import CheckinRow
from edgefleet.server.metrics import ServerMetrics

JSON = b"application/json"


class Answer(NamedTuple):
    """An HTTP answer: status, raw header fields (lower-case names) and body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    async def send(self, send: Send) -> None:
        """Send it on an ASGI connection."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})

    def response(self) -> Response:
        """It as a route's response: these headers, no others."""
        response = Response(self.body, self.status)
        response.raw_headers = list(self.headers)
        return response


def json_answer(body: bytes, *headers: tuple[bytes, bytes]) -> Answer:
    """A 200 with a JSON body."""
    content = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
    return Answer(200, content + list(headers), body)


ACCEPTED = json_answer(b'{"accepted":true}')


def check_in(
    checkins: CheckinService,
    device: CheckinRow,
    if_none_match: str | None,
    metrics: ServerMetrics,
) -> Answer:
    """``GET .../desired``: 304 with the ETag, or the desired state with it; counted in
    ``edgefleet_checkins_total``. Raises what ``CheckinService.check_in`` raises."""
    found = checkins.check_in(device, if_none_match)
    tag = (b"etag", f'"{found.etag}"'.encode())
    if found.desired_json is None:
        metrics.not_modified.inc()
        return Answer(304, [tag], b"")
    metrics.checkins.labels("changed").inc()
    body = b"".join(
        (
            b'{"device_id":',
            json.dumps(device.device_id).encode(),
            b',"etag":',
            json.dumps(found.etag).encode(),
            b',"desired":',
            found.desired_json,
            b"}",
        )
    )
    return json_answer(body, tag)


async def report(checkins: CheckinService, device: CheckinRow, body: ReportedState) -> Answer:
    """``PUT .../reported``, answered once stored."""
    await checkins.report(device, body)
    return ACCEPTED


async def events(checkins: CheckinService, device: CheckinRow, body: EventBatch) -> Answer:
    """``POST .../events``, answered once stored."""
    stored = await checkins.add_events(device, body)
    return json_answer(stored.model_dump_json().encode())


async def telemetry(checkins: CheckinService, device: CheckinRow, body: TelemetryBatch) -> Answer:
    """``POST .../telemetry``, merged in memory."""
    return json_answer(checkins.add_telemetry(device, body).model_dump_json().encode())

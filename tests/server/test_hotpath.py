"""The device fast path answers the good case through the service and hands every
request it cannot answer well to the routes, with its body.

The service's ports are in memory here; tests/server/test_fast_path_and_routes_agree.py
checks on a real server that the fast path and the routes answer alike.
"""

import asyncio
import json
from pathlib import Path
from typing import Any

from edgefleet.fleet.domain import DesiredState, EventsAccepted
from edgefleet.fleet.errors import AttributeNotAllowedError
from edgefleet.server.filecache import FileCache
from edgefleet.server.hotpath import DeviceFastPath, Serving
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.routes.device import DesiredResponse
from edgefleet.store.errors import StoreUnavailableError
from tests.fleet.memory import Batches, Fleet

UNAVAILABLE = StoreUnavailableError("the database at sqlite:///x is locked")
EMPTY_FLEET = {"online": 0, "offline": 0, "by_version": [], "by_state": {}}


class Device(Fleet):
    """A fast path over the service's ports in memory (device ``cam-1``)."""

    def __init__(self, *args: Any, tuf: Path = Path("/nonexistent"), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = ServerMetrics(lambda: EMPTY_FLEET)
        self.serving: Serving | None = Serving(self.checkins, self.metrics, tuf)
        self.fast_path = DeviceFastPath(_no_app, lambda: self.serving, 1 << 20)

    def answered(self, method: str, suffix: str, status: int = 200) -> float:
        """How many requests the fast path answered and counted, as the route would."""
        route = f"/api/v1/devices/{{device_id}}/{suffix}"
        labels = {"method": method, "route": route, "status": str(status)}
        return self.metrics.registry.get_sample_value("edgefleet_http_requests_total", labels) or 0


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("only DeviceFastPath.answer is called here")


def _check_in(device: Device, if_none_match: bytes | None = b'"abc"') -> tuple[bool, list[Any]]:
    headers = [(b"authorization", f"Bearer {device.credential}".encode())]
    if if_none_match is not None:
        headers.append((b"if-none-match", if_none_match))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/devices/cam-1/desired",
        "headers": headers,
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("a check-in has no body to read")

    async def send(message: Any) -> None:
        sent.append(message)

    answered, _ = asyncio.run(device.fast_path.answer(scope, receive, send))
    return answered, sent


def _send_body(
    device: Device, method: str, suffix: str, body: Any
) -> tuple[bool, list[Any], bytes | None]:
    """(answered, messages sent, the body the route would read next or None)."""
    content = json.dumps(body).encode()
    scope = {
        "type": "http",
        "method": method,
        "path": f"/api/v1/devices/cam-1/{suffix}",
        "headers": [
            (b"authorization", f"Bearer {device.credential}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ],
    }
    sent: list[Any] = []
    messages = [{"type": "http.request", "body": content, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    async def run() -> tuple[bool, list[Any], bytes | None]:
        answered, handed_on = await device.fast_path.answer(scope, receive, send)
        replayed = None if answered else (await handed_on())["body"]
        return answered, sent, replayed

    return asyncio.run(run())


def test_a_304_is_one_lookup_and_a_last_seen_time():
    device = Device()
    answered, sent = _check_in(device, b'W/"etag"')
    assert answered and sent[0] == {
        "type": "http.response.start",
        "status": 304,
        "headers": [(b"etag", b'"etag"')],
    }
    assert (device.seen.pks, device.rows.desired_reads) == ([7], [])
    assert device.answered("GET", "desired", 304) == 1


def test_a_database_it_cannot_read_goes_to_the_route_which_answers_503():
    device = Device()
    device.rows.error = UNAVAILABLE
    assert _check_in(device) == (False, [])


def test_a_server_not_yet_started_goes_to_the_route():
    device = Device()
    device.serving = None
    assert _check_in(device) == (False, [])
    assert _send_body(device, "PUT", "reported", REPORT)[:2] == (False, [])


REPORT = {"agent_state": "COMMITTED", "model": "digits", "version": "1.1.0"}
EVENTS = {
    "events": [
        {
            "seq": 1,
            "from_state": "IDLE",
            "to_state": "DOWNLOADING",
            "reason": "new_desired",
            "at": "2026-12-03T00:00:00Z",
        }
    ]
}


def test_a_report_and_events_go_to_the_batched_writes_and_are_answered_once_written():
    device = Device(events=Batches(answer=EventsAccepted(accepted=1, duplicates=0, last_seq=1)))

    answered, sent, _ = _send_body(device, "PUT", "reported", REPORT)
    assert answered and sent[-1]["body"] == b'{"accepted":true}'
    ((row, report, _),) = device.reports.items
    assert (row.pk, report.version) == (7, "1.1.0")

    answered, sent, _ = _send_body(device, "POST", "events", EVENTS)
    assert answered and sent[0]["status"] == 200
    assert json.loads(sent[-1]["body"]) == {"accepted": 1, "duplicates": 0, "last_seq": 1}
    assert [(pk, len(batch.events)) for pk, batch in device.events.items] == [(7, 1)]
    assert (device.answered("PUT", "reported"), device.answered("POST", "events")) == (1, 1)


def test_a_report_that_changes_attributes_is_a_transaction_of_its_own():
    device = Device()
    with_attributes = {**REPORT, "attributes": {"site": "plant-3"}}
    answered, sent, _ = _send_body(device, "PUT", "reported", with_attributes)
    assert answered and sent[-1]["body"] == b'{"accepted":true}'
    ((device_id, report),) = device.attribute_reports
    assert (device_id, report.attributes) == ("cam-1", {"site": "plant-3"})
    assert device.reports.items == []


def test_what_the_service_cannot_do_goes_to_the_route_with_its_body():
    refused = AttributeNotAllowedError("group is set by the enrollment token or an operator")
    device = Device(Batches(error=UNAVAILABLE), Batches(error=UNAVAILABLE), refused)

    # A write that failed: the route tries again (or answers the error envelope); a
    # report the service refused: the route refuses it again, with the envelope.
    with_group = {**REPORT, "attributes": {"group": "lab"}}
    for method, suffix, body in (
        ("PUT", "reported", REPORT),
        ("POST", "events", EVENTS),
        ("PUT", "reported", with_group),
    ):
        answered, sent, replayed = _send_body(device, method, suffix, body)
        assert (answered, sent) == (False, [])
        assert replayed is not None and json.loads(replayed) == body
    assert (len(device.reports.items), len(device.events.items)) == (1, 1)
    assert len(device.attribute_reports) == 1
    assert device.answered("PUT", "reported") == device.answered("POST", "events") == 0


def test_a_body_that_is_not_valid_goes_to_the_route_with_its_body():
    device = Device()
    for body in ({"agent_state": ""}, {"agent_state": "IDLE", "nope": 1}, [1]):
        answered, sent, replayed = _send_body(device, "PUT", "reported", body)
        assert (answered, sent) == (False, [])
        assert replayed is not None and json.loads(replayed) == body
    assert device.reports.items == []


def test_a_changed_desired_state_is_answered_as_the_route_would_its_json_made_once_per_etag():
    desired = {"model": None, "config": {"threshold": 0.5}, "rollout": "r-1"}
    device = Device()
    device.rows.desired_state[7] = (desired, "etag-2")  # newer than the row the cache held
    for _ in range(2):
        answered, sent = _check_in(device, None)
        assert answered and sent[0]["status"] == 200
        assert dict(sent[0]["headers"])[b"etag"] == b'"etag-2"'
        route = DesiredResponse(
            device_id="cam-1", etag="etag-2", desired=DesiredState.model_validate(desired)
        )
        assert json.loads(sent[1]["body"]) == route.model_dump(mode="json")
    # The row said "etag", the database "etag-2": both reads went to the database, the
    # JSON was made once.
    assert (device.rows.desired_reads, device.seen.pks) == ([7, 7], [7, 7])
    assert device.answered("GET", "desired") == 2

    # A desired state it cannot read (the JSON it knows is for "etag-2", not "etag").
    device.rows.desired_error = UNAVAILABLE
    assert _check_in(device, b'"etag-1"') == (False, [])


class _BrokenCache(FileCache):
    def get(self, root: Path, relative: str) -> Any:
        raise RuntimeError("a bug in the cache")


def test_the_fast_path_hands_a_file_it_fails_on_to_the_route(tmp_path: Path):
    # Before the framework nothing turns an exception into the envelope: the route does.
    device = Device(tuf=tmp_path)
    device.fast_path.files = _BrokenCache()
    scope = {"type": "http", "method": "GET", "path": "/tuf/metadata/root.json", "headers": []}
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        raise AssertionError("a GET has no body to read")

    answered, _ = asyncio.run(device.fast_path.answer(scope, receive, send))
    assert (answered, sent) == (False, [])

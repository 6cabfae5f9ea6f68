"""The device fast path hands every request it cannot answer well to the routes."""

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from edgefleet.access import tokens
from edgefleet.fleet.domain import DesiredState, EventsAccepted
from edgefleet.server.hotpath import DeviceFastPath
from edgefleet.server.routes.device import DesiredResponse
from edgefleet.store.checkin import CheckinRow
from edgefleet.store.errors import StoreUnavailableError


def _scope(credential: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/devices/cam-1/desired",
        "headers": [
            (b"authorization", f"Bearer {credential}".encode()),
            (b"if-none-match", b'"abc"'),
        ],
    }


def _answer(fast_path: DeviceFastPath, scope: dict[str, Any]) -> tuple[bool, list[Any]]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("a check-in has no body to read")

    async def send(message: Any) -> None:
        sent.append(message)

    answered, _ = asyncio.run(fast_path.answer(scope, receive, send))
    return answered, sent


def test_a_database_it_cannot_read_goes_to_the_route_which_answers_503():
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("the database at sqlite:///x is locked")

    state = SimpleNamespace(ctx=SimpleNamespace(lookup_on_loop=unavailable), metrics=object())
    issued = tokens.issue(tokens.DEVICE)
    answered, sent = _answer(DeviceFastPath(lambda: state, 1 << 20), _scope(issued.token))
    assert (answered, sent) == (False, [])


def test_a_server_not_yet_started_goes_to_the_route():
    issued = tokens.issue(tokens.DEVICE)
    for state in (None, SimpleNamespace(metrics=None)):
        fast_path = DeviceFastPath(lambda state=state: state, 1 << 20)
        assert _answer(fast_path, _scope(issued.token)) == (False, [])


class _Batches:
    """A batched write that records what it was given, or fails."""

    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.items: list[Any] = []
        self.answer = answer
        self.error = error

    async def submit(self, item: Any) -> Any:
        self.items.append(item)
        if self.error is not None:
            raise self.error
        return self.answer


def _device_state(reports: _Batches, events: _Batches) -> tuple[Any, str, list[Any]]:
    issued = tokens.issue(tokens.DEVICE)
    row = CheckinRow(7, "cam-1", issued.digest, "etag", 10)
    timed: list[Any] = []
    state = SimpleNamespace(
        ctx=SimpleNamespace(
            lookup_on_loop=lambda token_id: row if token_id == issued.token_id else None,
            report_batches=reports,
            event_batches=events,
        ),
        metrics=SimpleNamespace(request_done=lambda *args: timed.append(args[:3])),
    )
    return state, issued.token, timed


def _send_body(
    fast_path: DeviceFastPath, method: str, suffix: str, credential: str, body: Any
) -> tuple[bool, list[Any], bytes | None]:
    """(answered, messages sent, the body the route would read next or None)."""
    content = json.dumps(body).encode()
    scope = {
        "type": "http",
        "method": method,
        "path": f"/api/v1/devices/cam-1/{suffix}",
        "headers": [
            (b"authorization", f"Bearer {credential}".encode()),
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
        answered, handed_on = await fast_path.answer(scope, receive, send)
        replayed = None if answered else (await handed_on())["body"]
        return answered, sent, replayed

    return asyncio.run(run())


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
    reports = _Batches()
    events = _Batches(answer=EventsAccepted(accepted=1, duplicates=0, last_seq=1))
    state, credential, timed = _device_state(reports, events)
    fast_path = DeviceFastPath(lambda: state, 1 << 20)

    answered, sent, _ = _send_body(fast_path, "PUT", "reported", credential, REPORT)
    assert answered and sent[-1]["body"] == b'{"accepted":true}'
    ((row, report, _),) = reports.items
    assert (row.pk, report.version) == (7, "1.1.0")

    answered, sent, _ = _send_body(fast_path, "POST", "events", credential, EVENTS)
    assert answered and sent[0]["status"] == 200
    assert json.loads(sent[-1]["body"]) == {"accepted": 1, "duplicates": 0, "last_seq": 1}
    assert [(pk, len(batch.events)) for pk, batch in events.items] == [(7, 1)]
    assert timed == [
        ("PUT", "/api/v1/devices/{device_id}/reported", 200),
        ("POST", "/api/v1/devices/{device_id}/events", 200),
    ]


def test_what_the_batched_writes_cannot_take_goes_to_the_route_with_its_body():
    failing = StoreUnavailableError("the database at sqlite:///x is locked")
    reports, events = _Batches(error=failing), _Batches(error=failing)
    state, credential, timed = _device_state(reports, events)
    fast_path = DeviceFastPath(lambda: state, 1 << 20)

    # A write that failed: the route tries again (or answers the error envelope).
    for method, suffix, body in (("PUT", "reported", REPORT), ("POST", "events", EVENTS)):
        answered, sent, replayed = _send_body(fast_path, method, suffix, credential, body)
        assert (answered, sent) == (False, [])
        assert replayed is not None and json.loads(replayed) == body
    # Attributes are merged into the stored ones: a read-modify-write, the route's.
    with_attributes = {**REPORT, "attributes": {"site": "plant-3"}}
    answered, _, replayed = _send_body(fast_path, "PUT", "reported", credential, with_attributes)
    assert not answered and replayed is not None and json.loads(replayed) == with_attributes
    assert len(reports.items) == 1  # only the failed write; the report with attributes never
    assert timed == []


def test_a_changed_desired_state_is_answered_as_the_route_would_its_json_made_once_per_etag():
    desired = {"model": None, "config": {"threshold": 0.5}, "rollout": "r-1"}
    reads: list[int] = []

    def read_desired(pk: int) -> tuple[dict[str, Any], str]:
        reads.append(pk)
        return desired, "etag-2"  # newer than the row the check-in cache held

    state, credential, timed = _device_state(_Batches(), _Batches())
    recorded: list[Any] = []
    state.ctx.checkin = SimpleNamespace(desired=read_desired)
    state.ctx.recorder = SimpleNamespace(record=lambda *args: recorded.append(args[0]))
    state.metrics.checkins = SimpleNamespace(labels=lambda *_: SimpleNamespace(inc=lambda: None))
    fast_path = DeviceFastPath(lambda: state, 1 << 20)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/devices/cam-1/desired",
        "headers": [(b"authorization", f"Bearer {credential}".encode())],
    }
    for _ in range(2):
        answered, sent = _answer(fast_path, scope)
        assert answered and sent[0]["status"] == 200
        assert dict(sent[0]["headers"])[b"etag"] == b'"etag-2"'
        route = DesiredResponse(
            device_id="cam-1", etag="etag-2", desired=DesiredState.model_validate(desired)
        )
        assert json.loads(sent[1]["body"]) == route.model_dump(mode="json")
    # The row said "etag", the database "etag-2": both reads went to the database, the
    # JSON was made once.
    assert (reads, recorded) == ([7, 7], [7, 7])
    assert timed == [("GET", "/api/v1/devices/{device_id}/desired", 200)] * 2

    def unavailable(pk: int) -> Any:
        raise StoreUnavailableError("the database at sqlite:///x is locked")

    state.ctx.checkin = SimpleNamespace(desired=unavailable)
    assert _answer(DeviceFastPath(lambda: state, 1 << 20), scope) == (False, [])

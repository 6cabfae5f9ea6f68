"""The device fast path hands every request it cannot answer well to the routes."""

import asyncio
from types import SimpleNamespace
from typing import Any

from edgefleet.access import tokens
from edgefleet.server.hotpath import DeviceFastPath
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

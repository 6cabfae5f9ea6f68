"""The device fast path and the routes give the same answer to every device request.

The server's app is the FastAPI app behind the fast path (``create_app``). Each request
goes once through the whole app and once through the bare FastAPI app (no fast path),
and the two answers must be the same bytes: status, every header field, body. The good
requests must have been answered by the fast path (nothing reached FastAPI), the bad
ones by the route, so that both sides of each comparison are really tested.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from edgefleet.access import tokens
from edgefleet.config import Settings
from edgefleet.server.app import create_app
from edgefleet.server.hotpath import DeviceFastPath

JSON = (("Content-Type", "application/json"),)
REPORT = {"agent_state": "COMMITTED", "model": "digits", "version": "1.0.0"}
EVENTS = {"events": [{"seq": 1, "reason": "boot", "at": "2026-11-21T00:00:00Z"}]}
TELEMETRY = {"samples": [{"at": "2026-11-21T00:00:00Z", "health": {"cpu_percent": 12.5}}]}


class Reached:
    """Counts the HTTP requests that reach the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.count += 1
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    credential: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    #: Sent without a Content-Length, in chunks.
    chunked: bool = False

    def send(self, client: httpx.AsyncClient) -> Any:
        headers = dict(self.headers)
        if self.credential is not None:
            headers["Authorization"] = f"Bearer {self.credential}"
        content: Any = self.body
        if self.chunked and self.body is not None:
            content = _chunks(self.body)
        return client.request(self.method, self.path, headers=headers, content=content)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body[:10]
    yield body[10:]


@asynccontextmanager
async def _running(app: ASGIApp) -> AsyncIterator[None]:
    """The app's lifespan (start-up and shutdown), as a server runs it."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put)
    )
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


def _bundle_archive(bundle: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(bundle, arcname=bundle.name)
    return buffer.getvalue()


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.multi_items()), response.content


async def _compare(settings: Settings, bundle: Path) -> None:
    app = create_app(settings)
    fast_path = app.app
    assert isinstance(fast_path, DeviceFastPath)
    api = fast_path.app
    assert isinstance(api, FastAPI)
    reached = fast_path.app = Reached(api)
    transport = httpx.ASGITransport
    base = "http://edgefleet.test"
    async with (
        _running(app),
        httpx.AsyncClient(transport=transport(app=app), base_url=base) as fast,
        httpx.AsyncClient(transport=transport(app=api), base_url=base) as bare,
    ):
        admin = (settings.home / "admin.token").read_text().strip()

        async def call(method: str, path: str, token: str | None = admin, **kwargs: Any) -> Any:
            headers = dict(kwargs.pop("headers", {}))
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            response = await bare.request(method, path, headers=headers, **kwargs)
            assert response.status_code < 300, f"{method} {path}: {response.text}"
            return response

        async def enroll(device_id: str, **attributes: Any) -> str:
            token = (await call("POST", "/api/v1/tokens", json={"kind": "enrollment"})).json()
            body = {
                "device_id": device_id,
                "enrollment_token": token["token"],
                "attributes": {"hw": "x86_64", "firmware": "2.0.0", **attributes},
            }
            enrolled = await call("POST", "/api/v1/enroll", None, json=body)
            return str(enrolled.json()["credential"])

        archive = _bundle_archive(bundle)
        gzip = {"Content-Type": "application/gzip"}
        await call("POST", "/api/v1/models", content=archive, headers=gzip)
        cam = await enroll("cam-1")
        blank = await enroll("cam-blank")  # no desired model: "desired": null
        first = (await enroll("cam-events-1"), "cam-events-1")
        second = (await enroll("cam-events-2"), "cam-events-2")
        other = await enroll("cam-other")
        replaced = await enroll("cam-replaced")
        desired = {"model": "digits", "version": "1.0.0"}
        await call("PUT", "/api/v1/devices/cam-1/desired", json=desired)
        # Seen once, so the fast path's check-in cache holds the row before it changes.
        seen = await Request("GET", "/api/v1/devices/cam-replaced/desired", replaced).send(fast)
        assert seen.status_code == 200
        await call("POST", "/api/v1/devices/cam-replaced/reenroll")
        await enroll("cam-replaced")
        operator = (
            await call("POST", "/api/v1/tokens", json={"kind": "api_key", "role": "viewer"})
        ).json()["token"]
        now = (await Request("GET", "/api/v1/devices/cam-1/desired", cam).send(bare)).json()
        etag = f'"{now["etag"]}"'
        target = now["desired"]["model"]["target_path"]
        sha = now["desired"]["model"]["sha256"]
        directory, _, filename = target.rpartition("/")
        artifact = f"/tuf/targets/{directory}/{sha}.{filename}"
        unknown = tokens.issue(tokens.DEVICE).token

        check_in = "/api/v1/devices/cam-1/desired"
        own = "/api/v1/devices/cam-1"
        replaced_check_in = "/api/v1/devices/cam-replaced/desired"
        report_with_attributes = {**REPORT, "firmware": "2.1.0", "attributes": {"site": "p-3"}}
        nan = b'{"samples": [{"at": "2026-11-21T00:00:00Z", "health": {"cpu_percent": NaN}}]}'
        cases = [
            # The fast path's: the good case of every device request.
            Case("desired state", 200, Request("GET", check_in, cam)),
            Case("stale ETag", 200, Request("GET", check_in, cam, if_none_match('"0123"'))),
            Case(
                "no desired model", 200, Request("GET", "/api/v1/devices/cam-blank/desired", blank)
            ),
            Case("not modified", 304, Request("GET", check_in, cam, if_none_match(etag))),
            Case("weak ETag", 304, Request("GET", check_in, cam, if_none_match(f"W/{etag}"))),
            Case("reported", 200, Request("PUT", f"{own}/reported", cam, JSON, _dump(REPORT))),
            Case(
                "reported with attributes",
                200,
                Request("PUT", f"{own}/reported", cam, JSON, _dump(report_with_attributes)),
            ),
            Case("events", 200, *_each_device("events", EVENTS, first, second)),
            Case("events again", 200, *_each_device("events", EVENTS, first, second)),
            Case(
                "telemetry", 200, Request("POST", f"{own}/telemetry", cam, JSON, _dump(TELEMETRY))
            ),
            Case("TUF metadata", 200, Request("GET", "/tuf/metadata/timestamp.json")),
            Case("TUF root", 200, Request("GET", "/tuf/metadata/1.root.json")),
            Case("TUF target", 200, Request("GET", artifact, cam)),
            # The routes': everything else.
            Case("no credential", 401, Request("GET", check_in), fast=False),
            Case("garbage", 401, Request("GET", check_in, "garbage"), fast=False),
            Case("unknown credential", 401, Request("GET", check_in, unknown), fast=False),
            Case(
                "replaced credential", 401, Request("GET", replaced_check_in, replaced), fast=False
            ),
            Case(
                "replaced credential, not modified",
                401,
                Request("GET", replaced_check_in, replaced, if_none_match(etag)),
                fast=False,
            ),
            Case("another device's credential", 403, Request("GET", check_in, other), fast=False),
            Case("an operator key", 401, Request("GET", check_in, operator), fast=False),
            Case(
                "report, unknown credential",
                401,
                Request("PUT", f"{own}/reported", unknown, JSON, _dump(REPORT)),
                fast=False,
            ),
            Case(
                "report, another device's credential",
                403,
                Request("PUT", f"{own}/reported", other, JSON, _dump(REPORT)),
                fast=False,
            ),
            Case(
                "report, malformed JSON",
                422,
                Request("PUT", f"{own}/reported", cam, JSON, b"{"),
                fast=False,
            ),
            Case(
                "report, invalid",
                422,
                Request("PUT", f"{own}/reported", cam, JSON, _dump({"agent_state": 5})),
                fast=False,
            ),
            Case(
                "report, a group",
                403,
                Request(
                    "PUT",
                    f"{own}/reported",
                    cam,
                    JSON,
                    _dump({**REPORT, "attributes": {"group": "lab"}}),
                ),
                fast=False,
            ),
            Case(
                "events, none",
                422,
                Request("POST", f"{own}/events", cam, JSON, _dump({"events": []})),
                fast=False,
            ),
            Case(
                "telemetry, NaN",
                422,
                Request("POST", f"{own}/telemetry", cam, JSON, nan),
                fast=False,
            ),
            Case(
                "telemetry, over the size cap",
                413,
                Request(
                    "POST", f"{own}/telemetry", cam, JSON, b" " * (settings.max_json_bytes + 1)
                ),
                fast=False,
            ),
            Case(
                "telemetry, no length (chunked)",
                200,
                Request("POST", f"{own}/telemetry", cam, JSON, _dump(TELEMETRY), chunked=True),
                fast=False,
            ),
            Case(
                "TUF metadata, missing",
                404,
                Request("GET", "/tuf/metadata/9.root.json"),
                fast=False,
            ),
            Case("TUF target, operator", 200, Request("GET", artifact, operator), fast=False),
            Case(
                "TUF target, range",
                206,
                Request("GET", artifact, cam, (("Range", "bytes=0-9"),)),
                fast=False,
            ),
            Case(
                "TUF target, unknown credential", 401, Request("GET", artifact, unknown), fast=False
            ),
        ]
        differ: list[str] = []
        for case in cases:
            before = reached.count
            through_fast = _answer(await case.request.send(fast))
            route_answered = reached.count > before
            through_bare = _answer(await (case.bare or case.request).send(bare))
            if through_fast != through_bare or through_fast[0] != case.status:
                differ.append(f"{case.name}:\n  {through_fast}\n  {through_bare}")
            if route_answered == case.fast:
                differ.append(f"{case.name}: {'not ' if case.fast else ''}the fast path's answer")
        assert not differ, "\n".join(differ)


@dataclass(frozen=True)
class Case:
    """A request, the status it must get, and whether the fast path answers it; for
    requests that change what they answer, another device's same request for the bare
    app."""

    name: str
    status: int
    request: Request
    bare: Request | None = None
    fast: bool = True


def if_none_match(etag: str) -> tuple[tuple[str, str], ...]:
    return (("If-None-Match", etag),)


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


def _each_device(
    suffix: str, body: Any, *credentials_and_ids: tuple[str, str]
) -> tuple[Request, Request]:
    """The same request of two devices in the same state: one for each app."""
    one, two = (
        Request("POST", f"/api/v1/devices/{device}/{suffix}", credential, JSON, _dump(body))
        for credential, device in credentials_and_ids
    )
    return one, two


def test_the_fast_path_and_the_routes_answer_every_device_request_alike(
    settings: Settings, example_bundles: dict[str, Path]
):
    asyncio.run(_compare(settings, example_bundles["1.0.0"]))

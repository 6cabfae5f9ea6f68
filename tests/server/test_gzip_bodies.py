"""Gzip-compressed JSON request bodies: inflated before the app, held to the body cap
while inflating, and refused clearly when they are not gzip or not JSON."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import pytest

from edgefleet.server.gzipbody import RequestDecompression


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def echo(scope, receive, send):
    """Answers with what it received: the body and its headers."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    answer = json.dumps({"body": body.decode("latin-1"), "headers": headers}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": answer})


def client(max_body: int = 10_000) -> httpx.AsyncClient:
    app = RequestDecompression(echo, max_body=max_body)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.anyio
async def post(content: bytes, max_body: int = 10_000, **headers: str) -> httpx.Response:
    async with client(max_body) as c:
        return await c.post("/x", content=content, headers=headers)


@pytest.mark.anyio
async def test_a_gzip_json_body_reaches_the_app_inflated_with_its_length():
    plain = json.dumps({"samples": [{"n": i} for i in range(200)]}).encode()
    answer = await post(
        gzip.compress(plain), **{"content-encoding": "gzip", "content-type": "application/json"}
    )
    seen = answer.json()
    assert answer.status_code == 200 and seen["body"].encode() == plain
    assert "content-encoding" not in seen["headers"]
    assert seen["headers"]["content-length"] == str(len(plain))


@pytest.mark.anyio
async def test_a_plain_body_passes_untouched():
    answer = await post(b'{"a": 1}', **{"content-type": "application/json"})
    assert answer.json()["body"] == '{"a": 1}'


@pytest.mark.anyio
async def test_a_body_that_inflates_past_the_cap_is_refused_without_inflating_it_all():
    bomb = gzip.compress(b"0" * 50_000_000)  # ~50 KB that would inflate to 50 MB
    assert len(bomb) < 100_000
    answer = await post(
        bomb, max_body=100_000, **{"content-encoding": "gzip", "content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"


@pytest.mark.anyio
async def test_a_compressed_body_over_the_cap_is_refused():
    noise = gzip.compress(bytes(range(256)) * 100, compresslevel=0)
    answer = await post(noise, max_body=1_000, **{"content-encoding": "gzip"})
    assert answer.status_code == 413


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [b"not gzip at all", gzip.compress(b'{"a": 1}')[:-6], gzip.compress(b"{}") + b"junk"],
    ids=["garbage", "truncated", "trailing bytes"],
)
async def test_a_broken_gzip_body_is_a_400_naming_it(content):
    answer = await post(content, **{"content-encoding": "gzip"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "bad_request" and "gzip" in error["message"]


@pytest.mark.anyio
async def test_other_encodings_and_non_json_bodies_are_415():
    answer = await post(zlib.compress(b"{}"), **{"content-encoding": "br"})
    assert answer.status_code == 415 and "'br'" in answer.json()["error"]["message"]
    answer = await post(
        gzip.compress(b"x"), **{"content-encoding": "gzip", "content-type": "multipart/form-data"}
    )
    assert answer.status_code == 415 and "JSON" in answer.json()["error"]["message"]


def _samples(count: int) -> list[dict]:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return [
        {
            "at": (now + timedelta(seconds=i)).isoformat(),
            "models": [
                {
                    "model": "digits",
                    "version": "1.0.0",
                    "inferences": 10,
                    "latency_counts": [1, 2, 3] * 20,
                    "class_counts": [1] * 10,
                }
            ],
        }
        for i in range(count)
    ]


def test_the_agent_link_sends_large_telemetry_gzipped_and_the_server_takes_it(live):
    from edgefleet.agent.link import COMPRESS_FROM, ServerLink

    device_id, credential, _ = live.enroll()
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    link = ServerLink(live.url, device_id, timeout=10, client=http)
    link.credential = credential
    link.telemetry(_samples(20))
    assert sent[-1].headers["content-encoding"] == "gzip"
    assert len(json.dumps({"samples": _samples(20)})) >= COMPRESS_FROM
    assert len(sent[-1].content) < len(gzip.decompress(sent[-1].content)) / 2
    link.telemetry([{"at": _samples(1)[0]["at"]}])  # small: sent as it is
    assert "content-encoding" not in sent[-1].headers
    shown = live.admin("GET", f"/api/v1/devices/{device_id}").json()
    assert sum(t["data"].get("inferences", 0) for t in shown["telemetry"]) == 200


def test_the_agent_link_falls_back_to_plain_bodies_for_a_server_that_refuses_gzip():
    from edgefleet.agent.link import ServerLink

    seen: list[str | None] = []

    def old_server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("content-encoding"))
        if request.headers.get("content-encoding"):
            return httpx.Response(422, json={"error": {"message": "invalid JSON"}})
        json.loads(request.content)
        return httpx.Response(202, json={"samples": 20, "buckets": 1})

    link = ServerLink(
        "http://old",
        "d1",
        timeout=5,
        client=httpx.Client(transport=httpx.MockTransport(old_server)),
    )
    link.telemetry(_samples(20))
    link.telemetry(_samples(20))
    assert seen == ["gzip", None, None] and link.compress is False

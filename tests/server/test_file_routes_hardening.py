"""The TUF file routes answer odd names and odd ranges with a 4xx and the error envelope.

Each request goes out on its own connection (``http.client``, which sends a header value
as given: httpx refuses leading spaces before sending anything) to a real server, as a
device (answered from memory when it can, else by the route), an operator (always the
route) and, for metadata, anonymously (also from memory first).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx
import pytest

from edgefleet.config import Settings
from edgefleet.server.filecache import MAX_FILE_BYTES
from edgefleet.server.routes.tuf import (
    BadRangeError,
    ByteRange,
    RangeNotSatisfiableError,
    byte_range,
)
from tests.server.conftest import LiveServer, serve

SMALL = bytes(range(256)) * 4  # answered from memory when whole
LARGE = b"L" * (MAX_FILE_BYTES + 1)  # always streamed by the route


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> str:
        error = json.loads(self.body)["error"]
        assert set(error) == {"code", "message", "details"}
        return str(error["code"])


@dataclass
class Server:
    url: str
    device: str
    operator: str

    def get(self, path: str, token: str | None = None, **headers: str) -> Answer:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        address = urlsplit(self.url)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            answer = Answer(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            )
        finally:
            connection.close()
        return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("hardening") / "home"
    settings = Settings(home=home, database_url_override=None, db_busy_timeout_s=0.2)
    with serve(settings) as (url, _), httpx.Client(timeout=30) as client:
        admin_token = (home / "admin.token").read_text().strip()
        _, credential, _ = LiveServer(url, settings, admin_token, client).enroll()
        for directory in ("metadata", "targets"):
            files = home / "tuf" / directory / "hardening"
            files.mkdir(parents=True)
            (files / "small.bin").write_bytes(SMALL)
            (files / "large.bin").write_bytes(LARGE)
            (files / "loop").symlink_to("loop")
            (files / "cycle-a").symlink_to("cycle-b")
            (files / "cycle-b").symlink_to("cycle-a")
        yield Server(url, credential, admin_token)


# Each answered 500 (a plain-text one from the fast path) before names that the
# filesystem refuses were taken as names of no file.
REFUSED_NAMES = {
    "longer than NAME_MAX": "a" * 300,
    "201 characters, 401 bytes": "e" + "\u0301" * 200,
    "longer than PATH_MAX": "sub/../" * 700 + "small.bin",
    "symlink to itself": "loop",
    "under a symlink loop": "loop/small.bin",
    "two-link cycle": "cycle-a",
    # Already 404, kept that way.
    "a file as a directory": "small.bin/x",
    "combining characters": "e\u0301\u0301.json",
}

CALLERS = {
    "anonymous metadata (memory, then route)": ("metadata", None),
    "device target (memory, then route)": ("targets", "device"),
    "operator target (route)": ("targets", "operator"),
}


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
@pytest.mark.parametrize("name", REFUSED_NAMES.values(), ids=REFUSED_NAMES.keys())
def test_a_name_the_filesystem_refuses_is_not_found(
    server: Server, name: str, caller: tuple[str, str | None]
):
    directory, who = caller
    token = None if who is None else getattr(server, who)
    answer = server.get(f"/tuf/{directory}/hardening/{quote(name)}", token)
    assert answer.status == 404, answer.body[:200]
    assert answer.error_code() == "not_found"
    # The message repeats the name, not all of it.
    assert len(json.loads(answer.body)["error"]["message"]) < 120


WHOLE = "whole"  # 206 with every byte of the file
NINES = "9" * 5000  # past the 4300 digits int() converts

RANGES: dict[str, tuple[str, int | str | tuple[int, int]]] = {
    # The cases (those with 5000 digits answered 500; ' bytes = 0 - 1 ' was
    # answered 400 all along: the dropped connection was httpx refusing to send it).
    "last of 32 digits": ("bytes=0-" + "9" * 32, WHOLE),
    "last of 5000 digits": ("bytes=0-" + NINES, WHOLE),
    "suffix of 5000 digits": ("bytes=-" + NINES, WHOLE),
    "first of 32 digits": ("bytes=" + "9" * 32 + "-", 416),
    "first of 5000 digits": (f"bytes={NINES}-", 416),
    "5000 leading zeros": ("bytes=" + "0" * 5000 + "5-9", (5, 9)),
    "spaces around and inside": (" bytes = 0 - 1 ", "bad_range"),
    # RFC 9110: the last 0 bytes are unsatisfiable (was a 416 without the envelope); the
    # range unit is case-insensitive (was 400).
    "last 0 bytes": ("bytes=-0", 416),
    "upper-case unit": ("BYTES=2-3", (2, 3)),
    # Unchanged.
    "an ordinary range": ("bytes=2-3", (2, 3)),
    "two ranges": ("bytes=0-1,4-5", "bad_range"),
}


@pytest.mark.parametrize("target", ["small.bin", "large.bin"])
@pytest.mark.parametrize("who", ["device", "operator"])
@pytest.mark.parametrize("header,expected", RANGES.values(), ids=RANGES.keys())
def test_a_range_is_served_or_refused_with_the_envelope(
    server: Server, header: str, expected: int | str | tuple[int, int], who: str, target: str
):
    content = SMALL if target == "small.bin" else LARGE
    answer = server.get(f"/tuf/targets/hardening/{target}", getattr(server, who), Range=header)
    if expected == 416:
        assert answer.status == 416, answer.body[:200]
        assert answer.headers["content-range"] == f"bytes */{len(content)}"
        assert answer.error_code() == "range_not_satisfiable"
    elif isinstance(expected, str) and expected != WHOLE:
        assert answer.status == 400, answer.body[:200]
        assert answer.error_code() == expected
    else:
        first, last = (0, len(content) - 1) if expected == WHOLE else expected
        assert isinstance(first, int) and isinstance(last, int)
        assert answer.status == 206, answer.body[:200]
        assert answer.headers["content-range"] == f"bytes {first}-{last}/{len(content)}"
        assert answer.body == content[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=abc", "bytes=-0"])
def test_a_range_with_a_stale_if_range_is_ignored(server: Server, header: str):
    # RFC 9110 13.1.5: the file changed since the client's copy, so it gets all of it,
    # whatever range it asked (was 416 or 400).
    path = "/tuf/targets/hardening/large.bin"
    answer = server.get(path, server.device, Range=header, **{"If-Range": '"stale"'})
    assert answer.status == 200, answer.body[:200]
    assert answer.body == LARGE
    etag = server.get(path, server.operator).headers["etag"]
    fresh = server.get(path, server.device, Range="bytes=1-2", **{"If-Range": etag})
    assert (fresh.status, fresh.body) == (206, LARGE[1:3])


@pytest.mark.parametrize(
    "header,size,expected",
    [
        ("bytes=0-0", 10, ByteRange(0, 0)),
        ("bytes=3-", 10, ByteRange(3, 9)),
        ("bytes=-3", 10, ByteRange(7, 9)),
        ("bytes=-30", 10, ByteRange(0, 9)),
        ("bytes=5-" + NINES, 10, ByteRange(5, 9)),
        ("\tbytes=1-2 ", 10, ByteRange(1, 2)),
        ("Bytes=1-2", 10, ByteRange(1, 2)),
        ("bytes=-5", 0, None),  # an empty file: all of it
    ],
)
def test_byte_range_selects(header: str, size: int, expected: ByteRange | None):
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=",
        "bytes=-",
        "bytes 0-1",
        "items=0-1",
        "bytes=0 -1",
        "bytes=+1-2",
        "bytes=1_0-20",
        "bytes=\u0661-3",  # an Arabic-Indic digit, which int() reads
        "bytes=5-4",
        "bytes=0-1,",
        f"bytes={NINES}8-{NINES}",
    ],
)
def test_byte_range_refuses_what_is_not_one_range_in_bytes(header: str):
    with pytest.raises(BadRangeError) as raised:
        byte_range(header, 10)
    assert len(raised.value.message) < 200


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=10-20", "bytes=-0", f"bytes={NINES}-"])
def test_byte_range_past_the_end_is_not_satisfiable(header: str):
    with pytest.raises(RangeNotSatisfiableError) as raised:
        byte_range(header, 10)
    assert raised.value.status_code == 416
    assert raised.value.headers == {"Content-Range": "bytes */10"}

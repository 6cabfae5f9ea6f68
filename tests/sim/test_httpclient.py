"""The virtual devices' device-API client against small servers that misbehave on
purpose (the scenario tests run it against the real server)."""

import asyncio
import functools
import socket

import pytest

from edgefleet.sim.httpclient import ConnectionPool, HttpError


def run(test):
    """An async test run on its own event loop."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


class Server:
    """An HTTP/1.1 server on a free port that answers each request with
    ``answer(request_head, body)`` (raw bytes; ``None``: close without answering)."""

    def __init__(self, answer, delay_s: float = 0.0):
        self.answer = answer
        self.delay_s = delay_s
        self.connections = 0
        self.requests: list[bytes] = []
        #: requests served, per connection (numbered in the order they were accepted)
        self.per_connection: dict[int, int] = {}
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc):
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        self.writers.append(writer)
        connection = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                self.per_connection[connection] = self.per_connection.get(connection, 0) + 1
                await asyncio.sleep(self.delay_s)
                answer = self.answer(head, body)
                if answer is None:
                    writer.close()
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def ok(body: bytes = b'{"ok": true}', *, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return (
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: "t1"\r\n'
        + connection
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@run
async def test_requests_reuse_one_kept_alive_connection():
    async with Server(lambda head, body: ok(body or b"{}")) as server:
        pool = ConnectionPool(server.url, limit=4)
        first = await pool.request("GET", "/a", {"If-None-Match": '"t0"'})
        second = await pool.request("POST", "/b", {"Authorization": "Bearer x"}, b'{"n": 1}')
        await pool.aclose()
    assert first.status_code == 200 and first.headers["etag"] == '"t1"'
    assert first.json() == {} and second.json() == {"n": 1}
    assert server.connections == 1
    get, post = server.requests
    assert get.startswith(b"GET /a HTTP/1.1\r\n") and b'If-None-Match: "t0"' in get
    assert b"Content-Type: application/json\r\nContent-Length: 8\r\n" in post


@run
async def test_a_connection_the_server_closed_while_idle_is_replaced():
    async with Server(lambda head, body: ok()) as server:
        pool = ConnectionPool(server.url)
        await pool.request("GET", "/a")
        for writer in server.writers:  # the server's idle timeout
            writer.close()
        await asyncio.sleep(0.05)
        answer = await pool.request("GET", "/a")
        await pool.aclose()
    assert answer.status_code == 200 and server.connections == 2


@run
async def test_a_reused_connection_closed_before_answering_is_tried_again_once():
    seen = []

    def first_connection_closes_on_its_second_request(head, body):
        seen.append(head)
        return None if len(seen) == 2 else ok()

    async with Server(first_connection_closes_on_its_second_request) as server:
        pool = ConnectionPool(server.url)
        await pool.request("GET", "/a")
        answer = await pool.request("GET", "/b")
        await pool.aclose()
    assert answer.status_code == 200 and server.connections == 2 and len(seen) == 3


@run
async def test_a_reused_connection_that_times_out_is_not_tried_again():
    # The server may be doing the request, only slowly: sending it again would do it
    # twice.
    seen = []

    def second_request_never_answered(head, body):
        seen.append(head)
        return ok() if len(seen) == 1 else b""

    async with Server(second_request_never_answered) as server:
        pool = ConnectionPool(server.url, read_timeout_s=0.2)
        await pool.request("GET", "/a")
        with pytest.raises(HttpError, match="no answer within"):
            await pool.request("GET", "/b")
        await pool.aclose()
    assert len(seen) == 2 and server.connections == 1


@run
async def test_an_answer_with_connection_close_is_not_kept():
    async with Server(lambda head, body: ok(close=True)) as server:
        pool = ConnectionPool(server.url)
        await pool.request("GET", "/a")
        await pool.request("GET", "/a")
        await pool.aclose()
    assert server.connections == 2


@run
async def test_chunked_answers_are_read_whole():
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with Server(lambda head, body: chunked) as server:
        pool = ConnectionPool(server.url)
        answer = await pool.request("GET", "/a")
        await pool.aclose()
    assert answer.body == b"hello world"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda head, body: None, "connection closed"),
        (lambda head, body: b"SMTP ready\r\n\r\n", "malformed answer"),
    ],
)
@run
async def test_no_answer_is_an_error(answer, message):
    async with Server(answer) as server:
        pool = ConnectionPool(server.url)
        with pytest.raises(HttpError, match=message):
            await pool.request("GET", "/a")
        await pool.aclose()


@run
async def test_a_server_that_does_not_answer_times_out():
    async def never(reader, writer):
        await asyncio.sleep(10)

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(f"http://127.0.0.1:{port}", read_timeout_s=0.2)
    with pytest.raises(HttpError, match=r"no answer within 0\.2 s"):
        await pool.request("GET", "/a")
    await pool.aclose()
    server.close()


@run
async def test_a_refused_connection_is_an_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = ConnectionPool(f"http://127.0.0.1:{port}")
    with pytest.raises(HttpError, match="cannot connect"):
        await pool.request("GET", "/a")


@run
async def test_the_pool_bounds_its_connections():
    async with Server(lambda head, body: ok()) as server:
        pool = ConnectionPool(server.url, limit=3)
        answers = await asyncio.gather(*(pool.request("GET", f"/{i}") for i in range(30)))
        await pool.aclose()
    assert {a.status_code for a in answers} == {200}
    assert server.connections <= 3


def test_only_http_urls():
    with pytest.raises(ValueError, match="not an http"):
        ConnectionPool("ftp://example.com")


@run
async def test_the_time_a_request_waited_for_a_connection_is_told_apart():
    async with Server(lambda head, body: ok(), delay_s=0.2) as server:
        pool = ConnectionPool(server.url, limit=1)
        first, second = await asyncio.gather(pool.request("GET", "/a"), pool.request("GET", "/b"))
        await pool.aclose()
    assert first.queued_s == 0.0  # it found the connection free
    assert second.queued_s >= 0.15  # it waited for the first answer
    assert pool.waited == 1 and server.connections == 1


@run
async def test_idle_connections_are_reused_oldest_first():
    async with Server(lambda head, body: ok(), delay_s=0.05) as server:
        pool = ConnectionPool(server.url, limit=3)
        await asyncio.gather(*(pool.request("GET", "/warm") for _ in range(3)))
        for _ in range(6):
            await pool.request("GET", "/poll")
        await pool.aclose()
    assert server.connections == 3
    # Each took one warm-up request and two of the six polls: none left idle while
    # another does the work (newest first, one would have taken all six).
    assert sorted(server.per_connection.values()) == [3, 3, 3]

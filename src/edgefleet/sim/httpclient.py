"""The virtual devices' HTTP/1.1 client for the device API: keep-alive connections
on asyncio protocols, responses parsed by httptools (the parser uvicorn uses).

Ten thousand virtual devices checking in every ten seconds are a thousand requests a
second from the simulator's one event loop, where a general client's per-request
machinery (sessions, tracing hooks, cookie jars, redirect and decompression
handling, stream readers, a task per timeout) cost more CPU than the device
logic. The device API needs none of it: small request bodies, small responses read
whole, one host. A request here is one write of prebuilt bytes and one parser feed
per chunk received; its timeout is one timer handle::

    pool = ConnectionPool("http://127.0.0.1:8080", limit=4096)
    answer = await pool.request("GET", "/api/v1/devices/d1/desired", {"If-None-Match": tag})
    answer.status_code, answer.headers["etag"], answer.body
    await pool.aclose()

Idle connections are reused oldest first (round robin), so each is used about as
often as a real device uses its own and none sits idle until the server's keep-alive
timeout closes it. (Reused newest first, most of a large pool went idle past the
server's 75 s while a few carried the load; a burst of slow requests then opened
hundreds of connections at once, more than the server's listen queue held, and the
dropped connection attempts were retried by the kernel after 1, 3 and 7 s: check-ins
of 1-15 s in the fleet benchmark's waves.) A reused connection that fails before any of
the answer arrived (the server closed it while idle) is retried once on a new one:
the server did not read the request. Anything else that fails (refused, reset,
timed out, an answer the parser rejects) raises ``HttpError``; the request may or
may not have been done. Artifact downloads (streamed, throttled, resumed) stay on
aiohttp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """A request to the server failed at the connection or protocol level."""


@dataclass(frozen=True)
class Answer:
    """A server's answer (read whole); header names are lower case."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes
    #: seconds the request waited for a free connection of the pool before it was sent
    queued_s: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received = False
        #: The server closed the connection while a request waited, before sending
        #: any of the answer (as one does with a connection it kept idle too long).
        self.dropped = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._status = 0
        self._keep_alive = True

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but are one.)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.dropped = self._answer is not None and not self.received
        self._fail(HttpError(f"connection closed: {exc}" if exc else "connection closed"))

    # -- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        answer = Answer(self._status, self._headers, b"".join(self._body))
        future, self._answer = self._answer, None
        if future is not None and not future.done():
            future.set_result(answer)

    # -- the pool's side ------------------------------------------------------------------

    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._answer = loop.create_future()
        self._headers, self._body, self.received = {}, [], False
        self.transport.write(request)
        return self._answer

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep_alive and self._answer is None

    def timed_out(self, seconds: float) -> None:
        self._fail(HttpError(f"no answer within {seconds:g} s"))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: HttpError) -> None:
        future, self._answer = self._answer, None
        if future is not None and not future.done():
            future.set_exception(exc)


class ConnectionPool:
    """Up to ``limit`` keep-alive connections to the server at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        *,
        limit: int = 256,
        connect_timeout_s: float = 30.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self._host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._slots = asyncio.Semaphore(limit)
        #: Requests that found every connection busy and waited for one.
        self.waited = 0
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Answer:
        """``method`` ``path`` (under the base URL's path), the answer read whole.

        Raises:
            HttpError: no answer (connection refused, reset or closed, timed out, a
                malformed answer).
        """
        request = self._encode(method, path, headers, body, content_type)
        waits = self._slots.locked()
        queued = time.perf_counter() if waits else 0.0
        if waits:
            self.waited += 1
        async with self._slots:
            if waits:
                queued = time.perf_counter() - queued
            connection = self._reused()
            answer: Answer | None = None
            if connection is not None:
                try:
                    answer = await self._exchange(connection, request)
                except HttpError:
                    if not connection.dropped:
                        raise  # timed out, malformed, or cut mid-answer: maybe done
                    # Closed by the server while idle, before it read the request.
            if answer is None:
                answer = await self._exchange(await self._connect(), request)
        return dataclasses.replace(answer, queued_s=queued) if waits else answer

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    # -- internals ------------------------------------------------------------------------

    def _encode(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str,
    ) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        if headers:
            lines.extend(f"{name}: {value}" for name, value in headers.items())
        if body is not None:
            lines.append(f"Content-Type: {content_type}")
            lines.append(f"Content-Length: {len(body)}")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    def _reused(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.popleft()
            if connection.reusable:
                return connection
            self._drop(connection)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl
                )
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        self._open.add(connection)
        return connection

    async def _exchange(self, connection: _Connection, request: bytes) -> Answer:
        loop = asyncio.get_running_loop()
        answer = connection.send(request, loop)
        timer = loop.call_later(self.read_timeout_s, connection.timed_out, self.read_timeout_s)
        try:
            result = await answer
        except BaseException:
            # Failed, timed out or cancelled mid-answer: the connection is spent.
            connection.close()
            self._drop(connection)
            raise
        finally:
            timer.cancel()
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
            self._drop(connection)
        return result

    def _drop(self, connection: _Connection) -> None:
        self._open.discard(connection)

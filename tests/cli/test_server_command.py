"""``edgefleet server`` as its own process: settings that reach uvicorn."""

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgefleet.sim.scenario import ServerSettings
from edgefleet.sim.server import EmbeddedServer

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer read off ``sock`` (b"" when the server had closed it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def _answered_connection(home: Path) -> Iterator[socket.socket]:
    """A connection to a fresh ``edgefleet server`` that has had one answer."""
    server = EmbeddedServer(home, ServerSettings())
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(REQUEST)
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            yield sock
    finally:
        server.stop()


def test_an_idle_connection_outlives_a_poll_interval(tmp_path):
    # uvicorn's own keep-alive (5 s) closed every device's connection between two
    # 10 s polls, so each poll paid a new handshake. The server keeps it for 75 s.
    with _answered_connection(tmp_path / "home") as sock:
        time.sleep(6.5)
        sock.sendall(REQUEST)
        assert _answer(sock).startswith(b"HTTP/1.1 200")


def test_the_keep_alive_is_a_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HTTP_KEEP_ALIVE_S", "1")
    with _answered_connection(tmp_path / "home") as sock:
        time.sleep(2.5)
        # The server closed the idle connection: the read ends at once.
        assert sock.recv(1) == b""

"""``edgefleet server`` as its own process: settings that reach uvicorn, its start."""

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

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


def _server_command(home: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "EDGEFLEET_HOME": str(home)}
    env.pop("EDGEFLEET_DATABASE_URL", None)
    return [sys.executable, "-m", "edgefleet", "server", "--log-level", "warning", *args], env


def test_a_port_in_use_is_an_error_before_any_started_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command, env = _server_command(tmp_path / "home", "--port", str(port))
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
    assert result.returncode == 1  # docs/cli.md: refused, for the reason the message states
    assert result.stderr.startswith(f"error: port {port} on 127.0.0.1 is in use")
    assert result.stdout == ""  # no "edgefleet server on http://..." line
    assert "Traceback" not in result.stderr


def test_the_started_line_comes_when_the_server_answers_on_the_port_it_names(tmp_path):
    command, env = _server_command(tmp_path / "home", "--port", "0")
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # pytest's per-test timeout bounds the wait
        match = re.match(r"edgefleet server on (http://127\.0\.0\.1:(\d+)) ", line)
        assert match, line
        assert int(match.group(2)) != 0  # the port it took, not the 0 it was given
        # Printed only once the application has started and listens: it answers at once.
        assert httpx.get(f"{match.group(1)}/readyz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)

"""Running the control plane on uvicorn, on a socket bound beforehand.

Binding the socket first makes a port in use a ``ServerStartError`` before anything
claims a start; ``on_started`` is called once uvicorn has started the application (the
lifespan: database, controller) and listens, so whatever it prints is true::

    listeners = bind("127.0.0.1", 8080)
    serve(create_app(settings), listeners, on_started=lambda: print("listening"))
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from edgefleet.errors import EdgefleetError


class ServerStartError(EdgefleetError):
    """The server could not start: its port is taken, or its startup failed."""

    code = "server_start_failed"


def bind(host: str, port: int) -> list[socket.socket]:
    """TCP sockets bound to ``port`` on every address of ``host`` (``localhost`` may be
    both 127.0.0.1 and ::1), not yet listening. Port 0 picks a free port, the same on all.

    Raises:
        ServerStartError: the port is in use or not ours to take, or ``host`` is not an
            address of this machine.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(
            f"cannot listen on {host}: {exc.strerror}", details={"host": host, "port": port}
        ) from exc
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            if listeners:
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            listeners.append(_bound(family, kind, proto, address, host, port))
    except ServerStartError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _bound(family: int, kind: int, proto: int, address: Any, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a restarted server takes its port back while old connections linger.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # Each address gets its own socket; an IPv6 one must not claim the IPv4 port too.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} on {host} is in use (another edgefleet server?): stop what "
                "holds it, or choose another port with --port"
            )
        elif exc.errno == errno.EACCES:
            message = (
                f"no permission to listen on port {port} on {host} (ports below 1024 need "
                "privileges): choose another port with --port"
            )
        else:
            message = f"cannot listen on {host} port {port}: {exc.strerror or exc}"
        raise ServerStartError(message, details={"host": host, "port": port}) from exc
    return sock


def url_of(host: str, listeners: list[socket.socket]) -> str:
    """The ``http://host:port`` address the listeners serve (the real port when 0 was asked)."""
    port = listeners[0].getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, calling ``on_started`` once the application started and it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()


def serve(
    app: Any,
    listeners: list[socket.socket],
    *,
    on_started: Callable[[], None],
    **uvicorn_options: Any,
) -> None:
    """Serve ``app`` on ``listeners`` until interrupted; closes them at the end.

    ``uvicorn_options`` are ``uvicorn.Config``'s (log level, keep-alive, ...).

    Raises:
        ServerStartError: the application's startup failed (uvicorn has logged why).
    """
    server = _AnnouncingServer(uvicorn.Config(app, **uvicorn_options), on_started)
    try:
        server.run(sockets=listeners)
    except SystemExit as exc:
        # uvicorn ends a failed startup with sys.exit(3), a code the CLI does not document.
        if server.started or exc.code != STARTUP_FAILURE:
            raise
        raise ServerStartError(
            "the server did not start: its startup failed (the log above says why)"
        ) from None
    finally:
        for listener in listeners:
            listener.close()

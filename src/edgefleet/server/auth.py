"""Request authentication: operator API keys by role; device credentials are checked by
``fleet.checkin.authenticate`` (the device routes through ``CheckinService``)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from edgefleet.access import tokens
from edgefleet.access.errors import UnauthenticatedError
from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.fleet.checkin import authenticate as authenticate_device
from edgefleet.server.context import ServerContext


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def operator(role: Role) -> Callable[[Request], Operator]:
    """A dependency that admits operators holding at least ``role``.

    It reads the database, so it is a plain function: FastAPI runs it on a worker
    thread, never on the event loop, which serves every device meanwhile."""

    def dependency(request: Request) -> Operator:
        found = context(request).access.authenticate_operator(bearer(request))
        found.require(role)
        return found

    return dependency


Viewer = Depends(operator(Role.VIEWER))
OperatorRole = Depends(operator(Role.OPERATOR))
Admin = Depends(operator(Role.ADMIN))


def authenticate_any(request: Request) -> str:
    """Admit any enrolled device or any operator; returns who, for logs. For a worker
    thread (the device is read on a pooled connection).

    Raises:
        UnauthenticatedError: neither, or an unknown or replaced one.
        StoreUnavailableError.
    """
    token = bearer(request)
    parsed = tokens.parse(token or "")
    if parsed is not None and parsed.kind == tokens.DEVICE:
        lookup = context(request).checkin.lookup
        device = authenticate_device(request.headers.get("authorization"), None, lookup)
        return f"device:{device.device_id}"
    if parsed is not None and parsed.kind == tokens.API_KEY:
        return context(request).access.authenticate_operator(token).actor
    raise UnauthenticatedError("a device credential or an operator API key is required")

"""Request authentication: operator API keys by role, device credentials by device."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from edgefleet.access import tokens
from edgefleet.access.errors import ForbiddenError, UnauthenticatedError
from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.server.context import ServerContext
from edgefleet.store.checkin import CheckinRow


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


def authenticate_device(request: Request, device_id: str) -> CheckinRow:
    """The device row of a device credential, which must be ``device_id``'s own. For the
    device routes, which run on the event loop: read on the loop's own connection, so
    the loop never waits for a pooled one that worker threads hold.

    Raises:
        UnauthenticatedError: no, malformed or unknown credential.
        ForbiddenError: another device's valid credential.
    """
    parsed = tokens.parse(bearer(request) or "")
    if parsed is None or parsed.kind != tokens.DEVICE:
        raise UnauthenticatedError(
            "a device credential is required (Authorization: Bearer efd_...)"
        )
    row = context(request).checkin.lookup(parsed.token_id, own_connection=True)
    if row is None or not tokens.matches(parsed.secret, row.credential_hash):
        raise UnauthenticatedError("unknown or replaced device credential")
    if row.device_id != device_id:
        raise ForbiddenError(
            "this credential belongs to another device", details={"device_id": device_id}
        )
    return row


def authenticate_any(request: Request) -> str:
    """Admit any enrolled device or any operator; returns who, for logs."""
    token = bearer(request)
    parsed = tokens.parse(token or "")
    if parsed is not None and parsed.kind == tokens.DEVICE:
        row = context(request).checkin.lookup(parsed.token_id)
        if row is not None and tokens.matches(parsed.secret, row.credential_hash):
            return f"device:{row.device_id}"
    elif parsed is not None and parsed.kind == tokens.API_KEY:
        return context(request).access.authenticate_operator(token).actor
    raise UnauthenticatedError("a device credential or an operator API key is required")

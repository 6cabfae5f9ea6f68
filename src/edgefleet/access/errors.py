"""Authentication and authorisation errors (401 and 403 at the API)."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class AccessError(EdgefleetError):
    """Base class of access errors."""

    code = "access_error"


class UnauthenticatedError(AccessError):
    """No credential, or one that is unknown, malformed, revoked or expired."""

    code = "unauthenticated"


class ForbiddenError(AccessError):
    """The credential is valid but may not do this."""

    code = "forbidden"


class TokenNotFoundError(AccessError):
    """No key or token with that id."""

    code = "token_not_found"

"""Every error leaves the API as ``{"error": {"code", "message", "details"}}``.

Service errors map to statuses by type; request validation becomes 422 with the
offending fields; anything unexpected is logged and answered 500 with no internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from edgefleet.access.errors import ForbiddenError, TokenNotFoundError, UnauthenticatedError
from edgefleet.errors import ConfigError, EdgefleetError, MissingDependencyError
from edgefleet.fleet.errors import (
    AttributeNotAllowedError,
    DeviceExistsError,
    DeviceNotFoundError,
    QueryFieldError,
    QuerySyntaxError,
)
from edgefleet.registry.errors import (
    ArtifactNotFoundError,
    ModelNotFoundError,
    VersionExistsError,
    VersionNotFoundError,
)
from edgefleet.rollout.errors import RolloutNotFoundError, RolloutSpecError, RolloutStateError
from edgefleet.server.metrics import BodyTooLargeError
from edgefleet.signing.errors import (
    KeysExistError,
    KeysMissingError,
    RepositoryStateError,
    SignerUnavailableError,
)
from edgefleet.store.errors import SchemaOutOfDateError, StoreConflictError, StoreUnavailableError

log = logging.getLogger("edgefleet.server")

STATUS: tuple[tuple[type[EdgefleetError], int], ...] = (
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (AttributeNotAllowedError, 403),
    (ModelNotFoundError, 404),
    (VersionNotFoundError, 404),
    (DeviceNotFoundError, 404),
    (TokenNotFoundError, 404),
    (RolloutNotFoundError, 404),
    (RolloutStateError, 409),
    (RolloutSpecError, 422),
    (ArtifactNotFoundError, 404),
    (VersionExistsError, 409),
    (DeviceExistsError, 409),
    (StoreConflictError, 409),
    (KeysExistError, 409),
    (KeysMissingError, 409),
    (RepositoryStateError, 409),
    (QuerySyntaxError, 400),
    (QueryFieldError, 400),
    (StoreUnavailableError, 503),
    (SchemaOutOfDateError, 503),
    (SignerUnavailableError, 503),
    (MissingDependencyError, 501),
    (ConfigError, 500),
)

#: Errors raised by route helpers, by code.
CODE_STATUS = {"not_found": 404, "bad_range": 400, "no_variant": 422, "fleet_changed": 409}


def status_of(error: EdgefleetError) -> int:
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return CODE_STATUS.get(error.code, 422)


def envelope(
    code: str,
    message: str,
    details: Any = None,
    status: int = 400,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or {}}},
        status_code=status,
        headers=headers,
    )


def allowed_methods(request: Request) -> list[str]:
    """The methods of every route at the request's path, for a 405's ``Allow`` (RFC 9110
    section 15.5.6: it MUST list them). Starlette's own 405 names only the first route
    matching the path, so ``OPTIONS /api/v1/models`` said ``POST`` and not ``GET``."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into envelopes."""

    @app.exception_handler(EdgefleetError)
    async def _edgefleet(request: Request, exc: EdgefleetError) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return envelope(exc.code, exc.message, exc.details, status, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "location": ".".join(str(p) for p in e.get("loc", ())),
                "message": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['location']}: {p['message']}" for p in problems[:5])
        return envelope(
            "invalid_request", f"the request is invalid: {summary}", {"problems": problems}, 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            416: "range_not_satisfiable",
        }
        code = codes.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return envelope(code, str(exc.detail), None, exc.status_code, headers)

    @app.exception_handler(BodyTooLargeError)
    async def _too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return envelope(
            "too_large", f"the request body is over the {exc.limit}-byte limit", None, 413
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope("internal_error", "internal server error (logged on the server)", None, 500)

"""Request bodies are read as standard JSON (see ``edgefleet.stdjson``), on every route.

FastAPI parses a JSON body with Python's ``json`` module, which accepts ``NaN``,
``Infinity``, ``1e999`` and lone surrogates. Every router is made with
``route_class=StandardJsonRoute``, whose requests parse their body themselves before the
route's models see it and refuse such a value with the 422 envelope naming the field
(``body.attributes.score: Input should be a finite number ...``). A test checks that every
route of the app is one. The device fast path (server/hotpath.py) parses with pydantic's
JSON parser, which refuses lone surrogates as invalid JSON, and validates into models that
refuse non-finite numbers; whatever it refuses comes here, so the answer is this one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from edgefleet.stdjson import FINITE, nonstandard


class StandardJsonRequest(Request):
    """A request whose ``json()`` is standard JSON or a validation error."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                value = json.loads(body)
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError("the body is not UTF-8 text", "", exc.start) from exc
            found = nonstandard(value)
            if found is not None:
                path, problem = found
                raise RequestValidationError(
                    [
                        {
                            "type": "finite_number" if problem == FINITE else "string_unicode",
                            "loc": ("body", *path),
                            "msg": f"Input should be {problem}",
                            "input": None,
                        }
                    ]
                )
            self._json = value
        return self._json


class StandardJsonRoute(APIRoute):
    """An API route whose JSON body is parsed by :class:`StandardJsonRequest` first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        reads_json = self.body_field is not None

        async def standard_json_handler(request: Request) -> Response:
            request = StandardJsonRequest(request.scope, request.receive)
            if reads_json and _is_json(request):
                body = await request.body()
                if body:
                    # Parsed here, outside the framework's own parsing, which would turn
                    # the validation error into a bare 400; the route reads it again from
                    # the request's cache.
                    # Invalid JSON: the framework answers it with its json_invalid 422.
                    with contextlib.suppress(json.JSONDecodeError):
                        await request.json()
            return await handler(request)

        return standard_json_handler


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )

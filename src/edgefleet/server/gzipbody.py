"""Gzip-compressed JSON request bodies (``Content-Encoding: gzip``), for devices on
metered links.

A device's hourly drift summary is mostly numbers that compress two to one (see
docs/runtime.md); the agent sends telemetry bodies over ``COMPRESS_FROM`` bytes
gzipped. This outermost layer inflates such a body before anything else sees it, so the
device fast path, the body cap and the routes all read plain JSON, and a request
without the header costs one look at its headers::

    app = RequestDecompression(DeviceFastPath(api, ...), max_body=settings.max_json_bytes)

The inflated body is held to the same cap as a plain one (``max_body``), checked while
inflating, so a small body that would inflate to gigabytes (a "zip bomb") is refused
with 413 after at most ``max_body`` bytes of work. A body that is not valid gzip is a
400, an encoding other than gzip or identity a 415, both in the API's error format.
"""

from __future__ import annotations

import json
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Request bodies at least this long are worth compressing (the agent's choice).
COMPRESS_FROM = 1024


class RequestDecompression:
    """ASGI middleware: inflate ``Content-Encoding: gzip`` JSON request bodies.

    Args:
        app: the application that reads the plain body.
        max_body: the largest inflated body accepted (bytes); the compressed one may be
            no longer either.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoding = _header(scope, b"content-encoding")
        if encoding is None or encoding.strip().lower() in (b"", b"identity"):
            await self.app(scope, receive, send)
            return
        if encoding.strip().lower() != b"gzip":
            await _error(
                send,
                415,
                "unsupported_encoding",
                f"Content-Encoding {encoding.decode('latin-1')!r} is not accepted: "
                "send gzip or an uncompressed body",
            )
            return
        media = (_header(scope, b"content-type") or b"application/json").split(b";")[0]
        if media.strip().lower() != b"application/json":
            await _error(
                send,
                415,
                "unsupported_encoding",
                "only JSON bodies may be sent gzip-compressed",
            )
            return
        try:
            body = await self._inflate(receive)
        except _TooLargeError:
            await _error(
                send, 413, "too_large", f"the request body is over the {self.max_body}-byte limit"
            )
            return
        except zlib.error as exc:
            await _error(send, 400, "bad_request", f"the gzip body cannot be inflated: {exc}")
            return
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-encoding", b"content-length")
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect, once the app waits for it

        await self.app({**scope, "headers": headers}, replay, send)

    async def _inflate(self, receive: Receive) -> bytes:
        """The whole inflated body; raises _TooLargeError past ``max_body`` (compressed or
        inflated) and zlib.error on a body that is not one complete gzip stream."""
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        parts: list[bytes] = []
        received = inflated = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                raise zlib.error("the client went away before the body ended")
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            received += len(chunk)
            if received > self.max_body:
                raise _TooLargeError
            while chunk:
                # Never more than the room left (+1 to notice going over).
                part = inflater.decompress(chunk, self.max_body - inflated + 1)
                inflated += len(part)
                if inflated > self.max_body:
                    raise _TooLargeError
                parts.append(part)
                chunk = inflater.unconsumed_tail
        rest = inflater.flush()
        if inflated + len(rest) > self.max_body:
            raise _TooLargeError
        parts.append(rest)
        if not inflater.eof:
            raise zlib.error("the gzip stream ends early")
        if inflater.unused_data:
            raise zlib.error("there are bytes after the gzip stream")
        return b"".join(parts)


class _TooLargeError(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

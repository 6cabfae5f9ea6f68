"""``edgefleet agent serve``: the runtime on a loopback HTTP port, for applications
written in other languages.

Standard library only (no web framework on the device)::

    POST /v1/predict   {"inputs": {"X": [[0.0, ...]]}}  ->  {"model", "outputs", "latency_ms"}
    GET  /v1/model     the active and shadow models
    GET  /v1/metrics   per-model counters as JSON (the telemetry snapshot)
    GET  /metrics      Prometheus text
    GET  /healthz      200 when a model is active, 503 before

Errors are ``{"error": {"code", "message", "details"}}`` with 400 (bad request), 413
(body over ``max_body``), 503 (no model) or 500 (the model failed).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from edgefleet.runtime.errors import InferenceError, InvalidInputError, NoModelError
from edgefleet.runtime.prometheus import registry_for
from edgefleet.runtime.runtime import ModelRuntime

MAX_BODY = 16 << 20


def make_server(
    runtime: ModelRuntime,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    max_body: int = MAX_BODY,
    registry: CollectorRegistry | None = None,
) -> ThreadingHTTPServer:
    """A threading HTTP server answering for ``runtime`` (call ``serve_forever``);
    ``registry`` replaces the runtime-only Prometheus registry (the agent adds its own)."""
    metrics_registry = registry or registry_for(runtime)

    class Handler(BaseHTTPRequestHandler):
        server_version = "edgefleet-agent"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, details: Any = None) -> None:
            self._json(
                status, {"error": {"code": code, "message": message, "details": details or {}}}
            )

        def do_GET(self) -> None:
            if self.path == "/healthz":
                active = runtime.active
                if active is None:
                    self._error(503, "no_model", "no model is active yet")
                else:
                    self._json(200, {"status": "ok", "model": active.key()})
            elif self.path == "/v1/model":
                active, shadow = runtime.active, runtime.shadow
                self._json(200, {"active": _identity(active), "shadow": _identity(shadow)})
            elif self.path == "/v1/metrics":
                stats = runtime.shadow_stats()
                self._json(
                    200,
                    {"models": runtime.telemetry(), "shadow": stats.to_dict() if stats else None},
                )
            elif self.path == "/metrics":
                data = generate_latest(metrics_registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._error(404, "not_found", f"no route {self.path}")

        def do_POST(self) -> None:
            if self.path != "/v1/predict":
                self._error(404, "not_found", f"no route {self.path}")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._error(411, "length_required", "send a Content-Length")
                return
            if length > max_body:
                self._error(413, "too_large", f"the body is over the {max_body}-byte limit")
                self.close_connection = True
                return
            try:
                body = json.loads(self.rfile.read(length))
                inputs = body["inputs"]
                if not isinstance(inputs, dict):
                    raise TypeError("inputs must be an object of input name to nested lists")
            except (ValueError, KeyError, TypeError) as exc:
                self._error(
                    400, "invalid_request", f'expected {{"inputs": {{name: batch}}}}: {exc}'
                )
                return
            try:
                prediction = runtime.predict(inputs)
            except InvalidInputError as exc:
                self._error(400, exc.code, exc.message, exc.details)
                return
            except NoModelError as exc:
                self._error(503, exc.code, exc.message)
                return
            except InferenceError as exc:
                self._error(500, exc.code, exc.message)
                return
            self._json(
                200,
                {
                    "model": _identity(prediction.model),
                    "outputs": {k: np.asarray(v).tolist() for k, v in prediction.outputs.items()},
                    "latency_ms": prediction.latency_ms,
                },
            )

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def _identity(identity: Any) -> dict[str, str] | None:
    if identity is None:
        return None
    return {"name": identity.name, "version": identity.version, "variant": identity.variant}


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="edgefleet-agent-http", daemon=True)
    thread.start()
    return thread

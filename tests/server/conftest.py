"""A real server (uvicorn on a free port, in a thread) on each database backend, with
the digits examples registered and signed, an admin key, and helpers to enroll devices."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from edgefleet.config import Settings
from edgefleet.server.app import create_app


@dataclass
class LiveServer:
    url: str
    settings: Settings
    admin_token: str
    http: httpx.Client
    _devices: int = field(default=0)

    def api(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.api(method, path, self.admin_token, **kwargs)

    def token(self, kind: str = "enrollment", **fields: Any) -> str:
        response = self.admin("POST", "/api/v1/tokens", json={"kind": kind, **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def enroll(
        self, device_id: str | None = None, **attributes: Any
    ) -> tuple[str, str, dict[str, Any]]:
        self._devices += 1
        device_id = device_id or f"dev-{self._devices}"
        body = {
            "device_id": device_id,
            "enrollment_token": self.token(),
            "attributes": {"hw": "x86_64", "firmware": "2.0.0", **attributes},
        }
        response = self.api("POST", "/api/v1/enroll", json=body)
        assert response.status_code == 201, response.text
        data = response.json()
        return device_id, data["credential"], data

    def upload(self, bundle: Path) -> httpx.Response:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(bundle, arcname=bundle.name)
        return self.admin(
            "POST",
            "/api/v1/models",
            content=buffer.getvalue(),
            headers={"Content-Type": "application/gzip"},
        )


@contextmanager
def serve(settings: Settings, port: int = 0) -> Iterator[tuple[str, uvicorn.Server]]:
    """Run the app on a loopback port (a free one by default) until the generator is
    closed."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def live(settings: Settings, example_bundles: dict[str, Path]) -> Iterator[LiveServer]:
    """The server on ``settings``' backend with digits 1.0.0 and 1.1.0 registered and signed."""
    with serve(settings) as (url, _):
        admin_token = (settings.home / "admin.token").read_text().strip()
        with httpx.Client(timeout=30) as http:
            live = LiveServer(url, settings, admin_token, http)
            for version in ("1.0.0", "1.1.0"):
                response = live.upload(example_bundles[version])
                assert response.status_code == 201, response.text
                assert response.json()["published"]["release"] >= 1
            yield live

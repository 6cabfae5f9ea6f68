"""A signed repository with the digits example published, served over real HTTP.

``StaticServer`` is a plain static file server (with HTTP Range, as nginx or S3 would
give) plus the hooks an attacker needs: replace what a URL answers, or cut a response
short after some bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgefleet.config import Settings
from edgefleet.registry.service import RegistryService
from edgefleet.signing.client import DeliveryClient
from edgefleet.signing.keys import Keyring
from edgefleet.signing.policy import DeviceFacts
from edgefleet.signing.publish import Publisher, open_repository
from edgefleet.signing.repository import TufRepository
from edgefleet.store.bootstrap import open_registry

X86 = DeviceFacts(hardware="x86_64", firmware="2.0.0")
ARM = DeviceFacts(hardware="aarch64", firmware="2.0.0")


@dataclass
class StaticServer:
    root: Path
    overrides: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""

    def body(self, path: str) -> bytes | None:
        if path in self.overrides:
            return self.overrides[path]
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            return None
        return file.read_bytes()


def _handler(server: StaticServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server.requests.append((path, self.headers.get("Range")))
            data = server.body(path)
            if data is None:
                self.send_error(404)
                return
            start, status = 0, 200
            byte_range = self.headers.get("Range")
            if byte_range and byte_range.startswith("bytes="):
                first = int(byte_range.removeprefix("bytes=").split("-", 1)[0])
                if first >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                start, status = first, 206
            payload = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            limit = server.cut_after.pop(path, None)
            if limit is not None:
                self.wfile.write(payload[:limit])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def static_server() -> Iterator[Callable[[Path], StaticServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(root: Path) -> StaticServer:
        state = StaticServer(root)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        servers.append(httpd)
        return state

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class SignedFleet:
    settings: Settings
    registry: RegistryService
    repository: TufRepository
    publisher: Publisher
    server: StaticServer
    tmp: Path

    @property
    def pinned_root(self) -> bytes:
        return (self.repository.metadata_dir / "1.root.json").read_bytes()

    def client(self, name: str = "device") -> DeliveryClient:
        return DeliveryClient(
            self.tmp / name / "tuf",
            f"{self.server.url}/metadata/",
            f"{self.server.url}/targets/",
            pinned_root=self.pinned_root,
        )

    def metadata_url_path(self, filename: str) -> str:
        return f"/metadata/{filename}"

    def target_url_path(self, target_path: str) -> str:
        info = self.repository.all_targets()[target_path]
        directory, _, name = target_path.rpartition("/")
        return f"/targets/{directory}/{info.hashes['sha256']}.{name}"


def make_fleet(
    tmp: Path,
    bundles: dict[str, Path],
    start_server,
    *,
    bins_threshold: int = 1024,
    root_keys: int = 1,
    root_threshold: int = 1,
) -> Iterator[SignedFleet]:
    settings = Settings(
        home=tmp / "home", database_url_override=None, tuf_bins_threshold=bins_threshold
    )
    Keyring.generate(settings.home / "keys", {"root": root_keys})
    repository = open_repository(settings)
    repository.initialise({"root": root_threshold})
    with open_registry(settings) as registry:
        publisher = Publisher(repository, registry.artifacts)
        for version in ("1.0.0", "1.1.0"):
            publisher.publish(registry.register(bundles[version]))
        yield SignedFleet(
            settings, registry, repository, publisher, start_server(repository.root_dir), tmp
        )


@pytest.fixture
def fleet(tmp_path, example_bundles, static_server) -> Iterator[SignedFleet]:
    yield from make_fleet(tmp_path, example_bundles, static_server)

"""CLI remote mode: the registry commands against a server's REST API.

``--server URL`` (or ``EDGEFLEET_SERVER``) with ``EDGEFLEET_TOKEN`` switches the
``model`` commands from the local store to the server; answers are the same domain
objects, so the commands format them identically.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx

from edgefleet.errors import ConfigError, EdgefleetError
from edgefleet.progress import NO_PROGRESS, Progress
from edgefleet.registry.compare import Comparison
from edgefleet.registry.domain import ModelVersion, StageChange


class RemoteError(EdgefleetError):
    """The server refused the request (its envelope's code and message are kept)."""

    code = "remote_error"

    def __init__(
        self, code: str, message: str, details: dict[str, Any] | None = None, status: int = 0
    ) -> None:
        super().__init__(message, details=details)
        self.code = code
        self.status = status


class RemoteRegistry:
    """The registry operations of ``RegistryService``, over HTTP."""

    def __init__(
        self, server: str, token: str | None, *, client: httpx.Client | None = None
    ) -> None:
        if not token:
            raise ConfigError("remote mode needs an API key: set EDGEFLEET_TOKEN")
        self.base = server.rstrip("/")
        self.client = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        self.headers = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request to the server; its JSON answer, or its error as RemoteError."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            response = self.client.request(method, f"{self.base}{path}", headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError("server_unreachable", f"cannot reach {self.base}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise RemoteError(
                    error["code"], error["message"], error.get("details"), response.status_code
                )
            except (ValueError, KeyError, TypeError):
                raise RemoteError(
                    "http_error",
                    f"{self.base} answered HTTP {response.status_code}",
                    status=response.status_code,
                ) from None
        return response.json()

    def register(
        self, path: Path, *, author: str | None = None, progress: Progress = NO_PROGRESS
    ) -> tuple[ModelVersion, str, dict[str, Any] | None]:
        """Upload a bundle directory as .tar.gz; returns the version, the signing note and
        the publication (release, targets) if it was signed."""
        if not path.is_dir():
            from edgefleet.registry.errors import BundleError

            raise BundleError(
                f"{path} is not a bundle directory (expected a folder with edgefleet.yaml)"
            )
        with tempfile.TemporaryDirectory(prefix="edgefleet-upload-") as tmp:
            archive = Path(tmp) / "bundle.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(path, arcname=path.name)
            size = archive.stat().st_size
            advance = progress.task(f"uploading {path.name}", total=size, unit="bytes")

            def chunks() -> Any:
                with archive.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        advance(len(chunk))
                        yield chunk

            data = self.call(
                "POST",
                "/api/v1/models",
                content=chunks(),
                headers={
                    "Content-Type": "application/gzip",
                    "Content-Length": str(size),
                },
            )
        note = data.pop("note", "")
        published = data.pop("published", None)
        return ModelVersion.model_validate(data), note, published

    def list_versions(
        self, *, model: str | None = None, stage: str | None = None, tag: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"name": model, "stage": stage, "tag": tag}.items() if v}
        versions: list[dict[str, Any]] = self.call("GET", "/api/v1/models", params=params)[
            "versions"
        ]
        return versions

    def get(self, model: str, version: str) -> ModelVersion:
        return ModelVersion.model_validate(
            self.call("GET", f"/api/v1/models/{model}/versions/{version}")
        )

    def latest(self, model: str, stage: str | None = None) -> dict[str, Any]:
        params = {"stage": stage} if stage else {}
        result: dict[str, Any] = self.call("GET", f"/api/v1/models/{model}/latest", params=params)
        return result

    def compare(self, model: str, a: str, b: str) -> Comparison:
        return Comparison.model_validate(
            self.call("GET", f"/api/v1/models/{model}/compare", params={"a": a, "b": b})
        )

    def promote(
        self,
        model: str,
        version: str,
        stage: str,
        *,
        reason: str,
        archive_previous: bool,
        actor: str | None = None,
    ) -> list[StageChange]:
        # The server records the API key's owner as the actor; ``actor`` is local-only.
        body = {"stage": stage, "reason": reason, "keep_production": not archive_previous}
        data = self.call("POST", f"/api/v1/models/{model}/versions/{version}/promote", json=body)
        return [StageChange.model_validate(c) for c in data["changes"]]

    def history(self, model: str, version: str | None = None) -> list[StageChange]:
        params = {"version": version} if version else {}
        data = self.call("GET", f"/api/v1/models/{model}/history", params=params)
        return [StageChange.model_validate(c) for c in data["changes"]]

"""The agent's HTTP link to the control plane (device API)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx

from edgefleet.errors import EdgefleetError

#: Telemetry bodies at least this long go gzip-compressed (``Content-Encoding: gzip``):
#: an hourly drift summary is mostly numbers and shrinks to about half (docs/runtime.md).
COMPRESS_FROM = 1024


class ServerError(EdgefleetError):
    """The server refused a request or could not be reached (``retryable`` says which)."""

    code = "server_error"

    def __init__(self, message: str, *, retryable: bool, status: int = 0) -> None:
        super().__init__(message, details={"status": status, "retryable": retryable})
        self.retryable = retryable
        self.status = status

    @property
    def too_large(self) -> bool:
        """The server refused the request's body as over its size cap."""
        return self.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    credential: str
    urls: dict[str, str]


class ServerLink:
    """Enrollment, check-ins and reports over HTTP."""

    def __init__(
        self, server: str, device_id: str, *, timeout: float, client: httpx.Client | None = None
    ) -> None:
        self.base = server.rstrip("/")
        self.device_id = device_id
        self.http = client or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0))
        )
        self.credential: str | None = None
        #: Whether to gzip large telemetry bodies; off for good once the server refuses one
        #: (a server from before it inflated them answers 400, 415 or 422).
        self.compress = True

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        try:
            response = self.http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {self.base}: {exc}", retryable=True) from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            retryable = response.status_code >= 500 or response.status_code == 429
            raise ServerError(
                f"{method} {url} answered {response.status_code}: {message}",
                retryable=retryable,
                status=response.status_code,
            )
        return response

    def enroll(
        self, token: str, attributes: dict[str, Any], checkin_interval_s: int
    ) -> tuple[Enrollment, bytes]:
        body = {
            "device_id": self.device_id,
            "enrollment_token": token,
            "attributes": attributes,
            "poll_interval_s": checkin_interval_s,  # the device API's name
        }
        data = self._request("POST", f"{self.base}/api/v1/enroll", json=body).json()
        root = json.dumps(data["tuf_root"]).encode()
        return Enrollment(data["device_id"], data["credential"], data["urls"]), root

    def desired(self, etag: str | None) -> tuple[str | None, dict[str, Any] | None, bool]:
        """Check in: (etag, desired state, changed). ``changed`` is false on 304."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request(
            "GET", f"{self.base}/api/v1/devices/{self.device_id}/desired", headers=headers
        )
        if response.status_code == 304:
            return etag, None, False
        data = response.json()
        return response.headers.get("etag"), data.get("desired"), True

    def report(self, reported: dict[str, Any]) -> None:
        self._request("PUT", f"{self.base}/api/v1/devices/{self.device_id}/reported", json=reported)

    def events(self, events: list[dict[str, Any]]) -> int:
        data = self._request(
            "POST", f"{self.base}/api/v1/devices/{self.device_id}/events", json={"events": events}
        ).json()
        return int(data["last_seq"])

    def telemetry(self, samples: list[dict[str, Any]]) -> None:
        url = f"{self.base}/api/v1/devices/{self.device_id}/telemetry"
        body = json.dumps({"samples": samples}, separators=(",", ":")).encode()
        plain = {"Content-Type": "application/json"}
        if self.compress and len(body) >= COMPRESS_FROM:
            try:
                self._request(
                    "POST",
                    url,
                    content=gzip.compress(body, compresslevel=6),
                    headers={**plain, "Content-Encoding": "gzip"},
                )
                return
            except ServerError as exc:
                if exc.status not in (400, 415, 422):
                    raise
                self.compress = False  # and send it again as it is, once
        self._request("POST", url, content=body, headers=plain)


def save_enrollment(path: Path, enrollment: Enrollment) -> None:
    """Keep the device credential (mode 0600)."""
    from edgefleet.fsutil import write_atomic

    data = json.dumps(
        {
            "device_id": enrollment.device_id,
            "credential": enrollment.credential,
            "urls": enrollment.urls,
        }
    ).encode()
    write_atomic(path, data, mode=0o600)


def load_enrollment(path: Path) -> Enrollment | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Enrollment(data["device_id"], data["credential"], data["urls"])

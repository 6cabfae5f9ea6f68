"""The server a simulation runs against, and the operator calls it makes.

``EmbeddedServer`` runs ``edgefleet server`` as a process of its own (so its CPU is
its own and can be measured) on a free loopback port, with a home directory of its
own: embedded SQLite unless a database URL is given. ``OperatorClient`` is the few
operator API calls the simulator needs: upload a bundle, make an enrollment token,
set a desired version, create and watch a rollout::

    with EmbeddedServer(home, ServerSettings()) as server:
        operator = OperatorClient(server.url, server.token)
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from edgefleet.errors import EdgefleetError
from edgefleet.sim.scenario import ServerSettings

log = logging.getLogger("edgefleet.sim")

#: Waits before trying a read again whose connection failed before an answer, or
#: that the server answered 503 (busy).
READ_RETRY_DELAYS_S = (0.2, 1.0, 3.0)


class SimServerError(EdgefleetError):
    """The server did not start, or refused an operator call the simulation needs."""

    code = "sim_server_error"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """``edgefleet server`` in a child process, stopped on exit."""

    def __init__(
        self,
        home: Path,
        settings: ServerSettings,
        *,
        database_url: str | None = None,
        port: int | None = None,
    ) -> None:
        self.home = home
        self.settings = settings
        self.database_url = database_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the server and wait until it is ready.

        Raises:
            SimServerError: it exited or was not ready in time (the log's end is shown).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "EDGEFLEET_HOME": str(self.home),
            "EDGEFLEET_ROLLOUT_TICK_S": str(self.settings.rollout_tick_s),
            "EDGEFLEET_ROLLOUT_ANALYSIS_INTERVAL_S": str(self.settings.rollout_analysis_interval_s),
            "EDGEFLEET_OFFLINE_AFTER_INTERVALS": str(self.settings.offline_after_intervals),
            "EDGEFLEET_DRIFT_LOOK_GRACE_S": str(self.settings.drift_look_grace_s),
            "EDGEFLEET_DRIFT_LOOKS_INTERVAL_S": str(self.settings.drift_looks_interval_s),
        }
        env.pop("EDGEFLEET_DATABASE_URL", None)
        if self.database_url:
            env["EDGEFLEET_DATABASE_URL"] = self.database_url
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgefleet",
                    "server",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SimServerError(
                    f"the server exited with code {self.process.returncode}: {self._log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise SimServerError(
                f"the server was not ready in {timeout_s:.0f} s: {self._log_tail()}"
            )
        token_file = self.home / "admin.token"
        if not token_file.exists():
            self.stop()
            raise SimServerError(f"the server wrote no admin key to {token_file}")
        self.token = token_file.read_text().strip()

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system)."""
        import psutil

        if self.process is None:
            return 0.0
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class OperatorClient:
    """The operator API calls of a simulation (async)."""

    def __init__(self, url: str, token: str, http: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.http = http

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; its JSON answer.

        Raises:
            SimServerError: unreachable, or answered with an error.
        """
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        # A read is tried again when the connection failed before an answer: a busy
        # server closes an idle keep-alive connection just as the next request goes out
        # on it ("disconnected without sending a response"). Writes are not.
        # So is a read the server answered 503 (its database busy: "try again").
        delays = READ_RETRY_DELAYS_S if method == "GET" else ()
        for delay in (*delays, None):
            try:
                response = await self.http.request(
                    method, f"{self.url}{path}", headers=headers, **kwargs
                )
                if response.status_code != 503 or delay is None:
                    break
                log.info("%s %s: answered 503; trying again in %.1f s", method, path, delay)
                await asyncio.sleep(delay)
            except httpx.TransportError as exc:
                if delay is None:
                    raise SimServerError(
                        f"{method} {path}: cannot reach {self.url}: {exc}"
                    ) from exc
                log.info("%s %s: %s; trying again in %.1f s", method, path, exc, delay)
                await asyncio.sleep(delay)
            except httpx.HTTPError as exc:
                raise SimServerError(f"{method} {path}: cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise SimServerError(
                f"{method} {path} answered {response.status_code}: {message}",
                details={"status": response.status_code},
            )
        return response.json() if response.content else None

    async def upload(self, bundle: Path) -> bool:
        """Register and sign a bundle; ``False`` if that version is registered already."""
        buffer = io.BytesIO()
        # Level 1: model weights hardly compress, and an 80 MB bundle should not
        # spend the run's first minute in zlib.
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
            tar.add(bundle, arcname=bundle.name)
        try:
            await self.call(
                "POST",
                "/api/v1/models",
                content=buffer.getvalue(),
                headers={"Content-Type": "application/gzip"},
                timeout=600,
            )
        except SimServerError as exc:
            if exc.details.get("status") == 409:
                return False
            raise
        return True

    async def enrollment_token(self, uses: int) -> str:
        body = {"kind": "enrollment", "uses": uses, "expires_in_s": 86400}
        return str((await self.call("POST", "/api/v1/tokens", json=body))["token"])

    async def set_desired(self, query: str, model: str, version: str, trial: dict[str, Any]) -> int:
        body = {"query": query, "model": model, "version": version, "trial": trial}
        return int((await self.call("POST", "/api/v1/fleet/desired", json=body))["devices"])

    async def create_rollout(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/api/v1/rollouts", json=body)
        return result

    async def rollout(self, rollout_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", f"/api/v1/rollouts/{rollout_id}")
        return result

    async def log(self, rollout_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The rollout's decision log entries after the entry ``after``."""
        result: list[dict[str, Any]] = await self.call(
            "GET", f"/api/v1/rollouts/{rollout_id}/log", params={"after": after}
        )
        return result

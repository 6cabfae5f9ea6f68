"""Rollouts with the real server and real agent processes: a good version wave by wave
to everyone through a manual wave, a pause, and a server restart in the middle of a
wave; a version that fails its trials stopped after wave one; an abort that sends
committed devices back to their backup slot without a download."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
import yaml

from tests.agent.test_two_agents import broken_bundle
from tests.server.conftest import LiveServer, serve

AGENTS = [f"cam-{i}" for i in range(4)]
TRIAL = {"min_inferences": 40, "min_seconds": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """A server that can be restarted on the same port, and agent processes."""

    def __init__(self, settings, tmp_path, example_bundles) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.example_bundles = example_bundles
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(timeout=30)
        self.server: ExitStack | None = None
        self.processes: list[subprocess.Popen] = []
        self.live: LiveServer | None = None

    def start_server(self) -> LiveServer:
        stack = ExitStack()
        stack.enter_context(serve(self.settings, self.port))
        self.server = stack
        token = (self.settings.home / "admin.token").read_text().strip()
        self.live = LiveServer(self.url, self.settings, token, self.http)
        return self.live

    def stop_server(self) -> None:
        assert self.server is not None
        self.server.close()
        self.server = None

    def start_agents(self) -> None:
        assert self.live is not None
        for name in AGENTS:
            config = self.tmp_path / f"{name}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "server": self.url,
                        "device_id": name,
                        "enrollment_token": self.live.token(),
                        "state_dir": str(self.tmp_path / name),
                        "hardware": "x86_64",
                        "firmware": "2.0.0",
                        "attributes": {"region": "eu-west"},
                        "serve_port": None,
                        "poll_interval_s": 0.2,
                        "max_backoff_s": 1,
                        "trial_replay_per_s": 2000,
                        "telemetry_interval_s": 0.5,
                    }
                )
            )
            env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_AGENT_CRASH_AT"}
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)
        if self.server is not None:
            self.server.close()
        self.http.close()

    def wait(self, what, predicate, timeout: float = 120.0):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = what()
            if predicate(value):
                return value
            time.sleep(0.1)
        raise AssertionError(f"never got there: {value}")

    def devices(self) -> dict[str, dict]:
        assert self.live is not None
        listed = self.live.admin("GET", "/api/v1/devices").json()["devices"]
        return {d["device_id"]: d for d in listed}

    def rollout(self, rollout_id: str) -> dict:
        assert self.live is not None
        return self.live.admin("GET", f"/api/v1/rollouts/{rollout_id}").json()

    def install(self, version: str) -> None:
        assert self.live is not None
        self.wait(self.devices, lambda ds: len(ds) == len(AGENTS))  # all enrolled
        body = {"query": "region:eu-west", "model": "digits", "version": version, "trial": TRIAL}
        assert self.live.admin("POST", "/api/v1/fleet/desired", json=body).status_code == 200
        self.wait(
            self.devices,
            lambda ds: (
                len(ds) == len(AGENTS)
                and all(
                    d["version"] == version and d["agent_state"] == "COMMITTED" for d in ds.values()
                )
            ),
        )

    def create(self, version: str, **spec) -> str:
        assert self.live is not None
        body = {
            "model": "digits",
            "version": version,
            "target": "region:eu-west",
            "trial": TRIAL,
            "gates": [
                {"metric": "trial_failures", "max_count": 0, "min_samples": 1},
                {"metric": "download_failures", "max_count": 0, "min_samples": 1},
                # Trials replay at least 40 inferences per device, none failing.
                {"metric": "error_rate", "max": 0.05, "min_samples": 40},
            ],
            **spec,
        }
        response = self.live.admin("POST", "/api/v1/rollouts", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@contextmanager
def fleet_of_agents(settings, tmp_path, example_bundles) -> Iterator[Fleet]:
    fleet = Fleet(settings, tmp_path, example_bundles)
    try:
        live = fleet.start_server()
        for version in ("1.0.0", "1.1.0"):
            assert live.upload(example_bundles[version]).status_code == 201
        fleet.start_agents()
        fleet.install("1.0.0")
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"rollout_tick_s": 0.2, "rollout_analysis_interval_s": 0.5})


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_good_version_through_a_manual_wave_a_pause_and_a_server_restart(
    settings, tmp_path, example_bundles
):
    with fleet_of_agents(settings, tmp_path, example_bundles) as fleet:
        waves = [
            {"percent": 25, "bake_s": 0},
            {"percent": 50, "bake_s": 0, "approval": "manual"},
            {"percent": 100, "bake_s": 1},
        ]
        rid = fleet.create("1.1.0", waves=waves)
        view = fleet.wait(lambda: fleet.rollout(rid), lambda v: v["phase"] == "awaiting_approval")
        assert view["devices"] == {"committed": 1} and view["wave"] == 1
        gates = {g["gate"]: g for g in view["gates"]}
        assert gates["error_rate"]["verdict"] == "pass"
        assert gates["error_rate"]["numbers"]["trials"] >= 40  # real telemetry from the agent
        live = fleet.live
        assert live is not None
        assert live.admin("POST", f"/api/v1/rollouts/{rid}/pause").json()["state"] == "paused"
        assert live.admin("POST", f"/api/v1/rollouts/{rid}/resume").json()["state"] == "running"
        assert live.admin("POST", f"/api/v1/rollouts/{rid}/approve").json()["phase"] == "rolling"

        # Restart the server in the middle of the wave: the controller continues from the
        # database and the agents reconnect on their own.
        fleet.wait(lambda: fleet.rollout(rid), lambda v: sum(v["devices"].values()) >= 2)
        fleet.stop_server()
        time.sleep(1.0)
        fleet.start_server()
        view = fleet.wait(lambda: fleet.rollout(rid), lambda v: v["state"] == "succeeded")
        assert view["devices"] == {"committed": 4}
        assert all(d["version"] == "1.1.0" for d in fleet.devices().values())
        log = fleet.live.admin("GET", f"/api/v1/rollouts/{rid}/log").json()  # type: ignore[union-attr]
        assigned = sum(e["details"].get("assigned", 0) for e in log if e["kind"] == "assign")
        assert assigned == 4  # nobody assigned twice across the restart
        kinds = [e["kind"] for e in log]
        assert {"await_approval", "pause", "resume", "approve", "succeed"} <= set(kinds)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_version_that_fails_trials_is_stopped_after_wave_one(settings, tmp_path, example_bundles):
    with fleet_of_agents(settings, tmp_path, example_bundles) as fleet:
        live = fleet.live
        assert live is not None
        assert live.upload(broken_bundle(tmp_path, example_bundles)).status_code == 201
        waves = [{"percent": 25, "bake_s": 0}, {"percent": 100, "bake_s": 0}]
        rid = fleet.create("2.0.0", waves=waves, trial={**TRIAL, "min_mean_confidence": 0.5})
        view = fleet.wait(lambda: fleet.rollout(rid), lambda v: v["state"] == "aborted")
        assert view["reason"] == "gate_failed:trial_failures"
        assert sum(view["waves"][1]["devices"].values()) == 0  # never went further
        devices = fleet.devices()
        assert all(d["version"] == "1.0.0" for d in devices.values())
        rolled_back = [d for d in devices.values() if d["agent_state"] == "ROLLED_BACK"]
        assert len(rolled_back) == 1  # only the canary ever ran 2.0.0, and it rolled back
        entries = live.admin("GET", f"/api/v1/rollouts/{rid}/log").json()
        gate = {g["gate"]: g for g in entries[-1]["details"]["gates"]}["trial_failures"]
        assert gate["verdict"] == "fail" and gate["numbers"]["count"] == 1


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_abort_switches_committed_devices_back_without_a_download(
    settings, tmp_path, example_bundles
):
    with fleet_of_agents(settings, tmp_path, example_bundles) as fleet:
        live = fleet.live
        assert live is not None
        waves = [{"percent": 50, "bake_s": 0}, {"percent": 100, "approval": "manual"}]
        rid = fleet.create("1.1.0", waves=waves)
        fleet.wait(lambda: fleet.rollout(rid), lambda v: v["phase"] == "awaiting_approval")
        on_new = [d for d, v in fleet.devices().items() if v["version"] == "1.1.0"]
        assert len(on_new) == 2
        aborted = live.admin("POST", f"/api/v1/rollouts/{rid}/abort", json={"revert": True})
        assert aborted.status_code == 200 and aborted.json()["devices"] == {"reverted": 2}
        fleet.wait(
            fleet.devices,
            lambda ds: all(
                d["version"] == "1.0.0" and d["agent_state"] == "COMMITTED" for d in ds.values()
            ),
        )
        for device in on_new:
            events = live.admin("GET", f"/api/v1/devices/{device}").json()["events"]
            back = [e for e in events if e["version"] == "1.0.0"]
            reasons = [e["reason"] for e in back]
            assert "desired_is_backup" in reasons  # switched slots locally
            assert "downloaded" not in reasons[reasons.index("desired_is_backup") :]
        refused = live.admin("POST", f"/api/v1/rollouts/{rid}/resume")
        assert refused.status_code == 409

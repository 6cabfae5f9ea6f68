"""Crash injection: SIGKILL a real agent process at every step of an update, restart
it, and check that a verified model serves and the update completed or was abandoned."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.agent.test_agent_e2e import desired
from tests.server.conftest import LiveServer

# (crash point, expected end): "committed" = 1.1.0 serving, "rolled_back" = 1.0.0 serving.
POINTS = [
    ("state_unrenamed:DOWNLOADING", "committed"),
    ("state_saved:DOWNLOADING", "committed"),
    ("download_chunk", "committed"),
    ("state_saved:VERIFYING", "committed"),
    ("state_unrenamed:SMOKE_TEST", "committed"),
    ("state_saved:SMOKE_TEST", "committed"),
    ("state_saved:ACTIVATING", "committed"),
    ("pointer_unrenamed", "committed"),
    ("pointer_written", "committed"),
    ("activated_in_runtime", "committed"),
    # The new model was live when the device went down: that counts against it.
    ("state_saved:TRIAL", "rolled_back"),
    ("trial_tick:2", "rolled_back"),
    ("state_unrenamed:COMMITTED", "rolled_back"),
    ("state_saved:COMMITTED", "committed"),
]


def agent_run(config, crash_at=None):
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_AGENT_CRASH_AT"}
    if crash_at:
        env["EDGEFLEET_AGENT_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status(config) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "edgefleet", "agent", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def assert_verified_model_active(state_dir, state) -> str:
    active = state["active"]
    assert active in ("a", "b"), state
    content = state["slots"][active]
    assert content is not None and content["verified"], state
    model = state_dir / "slots" / active / "model"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == content["sha256"]
    assert (state_dir / "active").read_text().strip() == active
    return str(content["version"])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_kill_at_every_step_of_an_update(live: LiveServer, tmp_path):
    results = {}
    only = os.environ.get("EDGEFLEET_CRASH_POINTS")
    points = [p for p in POINTS if not only or p[0] in only.split(",")]
    for index, (point, _expected) in enumerate(points):
        device = f"crash-{index}"
        state_dir = tmp_path / device
        config = tmp_path / f"{device}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "server": live.url,
                    "device_id": device,
                    "enrollment_token": live.token(),
                    "state_dir": str(state_dir),
                    "hardware": "x86_64",
                    "firmware": "2.0.0",
                    "serve_port": None,
                    "poll_interval_s": 0.2,
                    "trial_replay_per_s": 2000,
                }
            )
        )
        first = agent_run(config)  # enrolls; nothing desired yet
        assert first.returncode == 0, first.stderr
        desired(live, device, "1.0.0")
        installed = agent_run(config)
        assert installed.returncode == 0, installed.stderr
        assert assert_verified_model_active(state_dir, status(config)) == "1.0.0"

        desired(live, device, "1.1.0")
        crashed = agent_run(config, crash_at=point)
        assert crashed.returncode == -9, (
            f"{point} was not reached: {crashed.stdout} {crashed.stderr}"
        )
        # Straight after the kill, before any restart, the files name a verified model.
        assert assert_verified_model_active(state_dir, status(config)) in ("1.0.0", "1.1.0")
        restarted = agent_run(config)
        assert restarted.returncode == 0, restarted.stderr
        final = status(config)
        version = assert_verified_model_active(state_dir, final)
        outcome = (
            "committed"
            if (final["state"], version) == ("COMMITTED", "1.1.0")
            else (
                "rolled_back"
                if (final["state"], version) == ("ROLLED_BACK", "1.0.0")
                else f"{final['state']} {version}"
            )
        )
        results[point] = outcome
        reported = live.admin("GET", f"/api/v1/devices/{device}").json()["device"]
        assert reported["version"] == version and reported["agent_state"] == final["state"]
    assert results == dict(points)

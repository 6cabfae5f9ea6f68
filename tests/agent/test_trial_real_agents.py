"""The default trial on real agent processes: a good release commits and a slow one rolls
back, on an idle machine and with a CPU hog started at the update.

The agents run ``edgefleet agent run`` as a device would, with the trial policy left at
its default (no ``trial`` in the desired state): 1.1.0 over 1.0.0 is no slower (paired
latency ratio about 1), 1.2.0 over 1.1.0 about twice as slow. Only the install of the
first model uses a short trial (setup, not under test).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgefleet.fleet.domain import TrialPolicy
from tests.server.conftest import LiveServer

INSTALL_TRIAL = {"min_inferences": 0, "min_seconds": 0}
DEFAULT = TrialPolicy()


@pytest.fixture(scope="module")
def heavy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits 1.2.0: as accurate as 1.1.0, about twice its latency."""
    from edgefleet.examples.digits import build_examples

    return build_examples(tmp_path_factory.mktemp("heavy"), seed=0, versions=["1.2.0"])[0]


def start_agent(live: LiveServer, work: Path, name: str) -> subprocess.Popen[bytes]:
    config = work / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": live.url,
                "device_id": name,
                "enrollment_token": live.token(),
                "state_dir": str(work / name),
                "hardware": "x86_64",
                "firmware": "2.0.0",
                "serve_port": None,
                "checkin_interval_s": 0.5,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_AGENT_CRASH_AT"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / f"{name}.log").open("wb"),
    )


def enrolled(live: LiveServer, device: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live.admin("GET", f"/api/v1/devices/{device}").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{device} did not enroll within {timeout} s")


def desire(live: LiveServer, device: str, version: str, trial: dict | None = None) -> None:
    body: dict = {"model": "digits", "version": version}
    if trial is not None:
        body["trial"] = trial
    response = live.admin("PUT", f"/api/v1/devices/{device}/desired", json=body)
    assert response.status_code == 200, response.text


def outcome(live: LiveServer, device: str, version: str, timeout: float) -> dict:
    """The device's final event for ``version`` (COMMITTED, ROLLED_BACK or FAILED)."""
    deadline = time.monotonic() + timeout
    events: list[dict] = []
    while time.monotonic() < deadline:
        response = live.admin("GET", f"/api/v1/devices/{device}")
        if response.status_code == 200:
            events = [e for e in response.json()["events"] if e["version"] == version]
            final = [e for e in events if e["to_state"] in ("COMMITTED", "ROLLED_BACK", "FAILED")]
            if final:
                return final[-1]
        time.sleep(0.2)
    raise AssertionError(f"{device} never settled on {version}: {events}")


@contextlib.contextmanager
def cpu_hog() -> Iterator[None]:
    """One busy process per core, for as long as the block runs."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def update_pair(live: LiveServer, good: str, heavy: str) -> tuple[dict, dict]:
    """good: 1.0.0 -> 1.1.0, heavy: 1.1.0 -> 1.2.0, both with the default trial."""
    desire(live, good, "1.1.0")
    desire(live, heavy, "1.2.0")
    heavy_outcome = outcome(live, heavy, "1.2.0", timeout=DEFAULT.deadline_s)
    good_outcome = outcome(live, good, "1.1.0", timeout=DEFAULT.deadline_s + 30)
    return good_outcome, heavy_outcome


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_default_trial_commits_a_good_release_and_rolls_back_a_slow_one(
    live: LiveServer, tmp_path, heavy_bundle
):
    assert live.upload(heavy_bundle).status_code == 201
    conditions = ("idle", "cpu-hog")
    names = [f"{kind}-{condition}" for condition in conditions for kind in ("good", "heavy")]
    processes = [start_agent(live, tmp_path, name) for name in names]
    try:
        for name in names:
            enrolled(live, name)
        for condition in conditions:
            desire(live, f"good-{condition}", "1.0.0", INSTALL_TRIAL)
            desire(live, f"heavy-{condition}", "1.1.0", INSTALL_TRIAL)
        for condition in conditions:
            assert outcome(live, f"good-{condition}", "1.0.0", 120)["to_state"] == "COMMITTED"
            assert outcome(live, f"heavy-{condition}", "1.1.0", 120)["to_state"] == "COMMITTED"
        results = {}
        for condition in conditions:
            hog = cpu_hog() if condition == "cpu-hog" else contextlib.nullcontext()
            with hog:
                results[condition] = update_pair(live, f"good-{condition}", f"heavy-{condition}")
        for condition, (good, heavy) in results.items():
            assert good["to_state"] == "COMMITTED", (condition, good)
            assert good["reason"] == "trial_passed"
            details = good["details"]
            assert details["probe_pairs"] > 0 and details["latency_ratio_median"] < 1.5
            assert details["cpu_ratio_median"] < 1.5
            assert details["elapsed_s"] >= DEFAULT.min_seconds
            assert heavy["to_state"] == "ROLLED_BACK", (condition, heavy)
            # Slower in both paired measures: either check may have its evidence first.
            assert heavy["reason"] in ("trial_failed:latency", "trial_failed:cpu")
            details = heavy["details"]
            assert details["latency_ratio_median"] > 1.5
            assert details["latency_p50_ms"] > details["baseline_latency_p50_ms"]
            # Caught by the evidence, long before the trial's minimum time.
            assert details["elapsed_s"] < DEFAULT.min_seconds
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

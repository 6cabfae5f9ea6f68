"""Crash injection: SIGKILL a real agent process at every step of an update, restart
it, and check that a verified model serves and the update completed or was abandoned."""

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.agent.test_agent_e2e import FAST_TRIAL, desired
from tests.server.conftest import LiveServer

# (crash point, expected end, trial policy beyond FAST_TRIAL): "committed" = 1.1.0
# serving, "rolled_back" = 1.0.0 serving.
POINTS = [
    ("state_unrenamed:DOWNLOADING", "committed", {}),
    ("events_queued:DOWNLOADING", "committed", {}),
    ("state_saved:DOWNLOADING", "committed", {}),
    ("download_chunk", "committed", {}),
    # The file complete in its slot, the state still DOWNLOADING: not fetched again.
    ("downloaded", "committed", {}),
    ("state_saved:VERIFYING", "committed", {}),
    ("state_unrenamed:SMOKE_TEST", "committed", {}),
    ("state_saved:SMOKE_TEST", "committed", {}),
    # Shadow first: the old model still serves alone, the candidate is only compared.
    ("state_saved:SHADOW", "committed", {}),
    ("shadow_tick:2", "committed", {}),
    ("state_saved:ACTIVATING", "committed", {}),
    ("pointer_unrenamed", "committed", {}),
    ("pointer_written", "committed", {}),
    ("activated_in_runtime", "committed", {}),
    # The pointer moved and the event is queued, the state not saved yet.
    ("events_queued:TRIAL", "committed", {}),
    # A restart during the trial resumes it (default restart limit 3) ...
    ("state_saved:TRIAL", "committed", {}),
    ("trial_tick:2", "committed", {}),
    ("state_unrenamed:COMMITTED", "committed", {}),
    # ... unless the limit is 1: then the new model is taken as having brought it down.
    ("trial_tick:2", "rolled_back", {"max_trial_restarts": 1}),
    ("state_saved:COMMITTED", "committed", {}),
    # A trial that fails (no model is that confident), killed as the pointer switches back.
    ("pointer_unrenamed:2", "rolled_back", {"min_mean_confidence": 1.0}),
    ("pointer_written:2", "rolled_back", {"min_mean_confidence": 1.0}),
]


def agent_config(live: LiveServer, tmp_path, device: str):
    """A config file for a real agent ``device`` on ``live``, its state in
    ``tmp_path / device``; fast check-ins and replays."""
    config = tmp_path / f"{device}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": live.url,
                "device_id": device,
                "enrollment_token": live.token(),
                "state_dir": str(tmp_path / device),
                "hardware": "x86_64",
                "firmware": "2.0.0",
                "serve_port": None,
                "checkin_interval_s": 0.2,
                "trial_replay_per_s": 2000,
            }
        )
    )
    return config


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


def files_state(state_dir) -> dict | None:
    """The state as the files say it, read without touching them (the pointer is the
    truth while ACTIVATING, as the agent's own reconciliation does on start-up)."""
    path = state_dir / "state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    pointer = state_dir / "active"
    if state["state"] == "ACTIVATING" and pointer.exists():
        state["active"] = pointer.read_text().strip()
    return state


def assert_verified_model_active(state_dir, state) -> str:
    active = state["active"]
    assert active in ("a", "b"), state
    content = state["slots"][active]
    assert content is not None and content["verified"], state
    model = state_dir / "slots" / active / "model"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == content["sha256"]
    if state["state"] != "ACTIVATING":
        # The pointer may lag a settled state only until the next start-up fixes it.
        assert (state_dir / "active").read_text().strip() in ("a", "b")
    return str(content["version"])


def kill_and_restart(live: LiveServer, tmp_path, index: int, point: str, trial: dict) -> str:
    """One device: 1.0.0 installed, 1.1.0 desired, the agent killed at ``point`` and
    restarted; how the update ended ("committed", "rolled_back" or what else)."""
    device = f"crash-{index}"
    state_dir = tmp_path / device
    config = agent_config(live, tmp_path, device)
    first = agent_run(config)  # enrolls; nothing desired yet
    assert first.returncode == 0, first.stderr
    desired(live, device, "1.0.0")
    installed = agent_run(config)
    assert installed.returncode == 0, installed.stderr
    assert assert_verified_model_active(state_dir, status(config)) == "1.0.0"

    # 1.1.0 goes through every state: shadow first, then activation and trial.
    shadowed = {
        "model": "digits",
        "version": "1.1.0",
        "trial": {**FAST_TRIAL, **trial},
        "shadow": {"fraction": 0.5, "min_seconds": 0, "min_compared": 20},
    }
    response = live.admin("PUT", f"/api/v1/devices/{device}/desired", json=shadowed)
    assert response.status_code == 200, response.text
    crashed = agent_run(config, crash_at=point)
    assert crashed.returncode == -9, f"{point} was not reached: {crashed.stdout} {crashed.stderr}"
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
    shown = live.admin("GET", f"/api/v1/devices/{device}").json()
    reported = shown["device"]
    assert reported["version"] == version and reported["agent_state"] == final["state"]
    # Every transition reached the server: no gap in the sequence, none twice.
    seqs = sorted(e["seq"] for e in shown["events"])
    assert seqs == list(range(1, len(seqs) + 1)), (point, seqs)
    assert shown["events"][-1]["to_state"] == final["state"], (point, shown["events"][-1])
    if point == "downloaded":
        assert "downloaded 0 bytes" in restarted.stdout, restarted.stdout
    return outcome


@pytest.mark.parametrize("backend", ["sqlite"])
def test_kill_at_every_step_of_an_update(live: LiveServer, tmp_path):
    only = os.environ.get("EDGEFLEET_CRASH_POINTS")
    points = [p for p in POINTS if not only or p[0] in only.split(",")]
    # Each point is its own device; two at a time (the agents' start-ups are most of it).
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(
            pool.map(
                lambda item: kill_and_restart(live, tmp_path, item[0], item[1][0], item[1][2]),
                enumerate(points),
            )
        )
    results = {(p, str(t)): outcome for (p, _, t), outcome in zip(points, outcomes, strict=True)}
    assert results == {(p, str(t)): expected for p, expected, t in points}


@pytest.mark.timeout(1500)  # ~150 agent processes, ~1.2 s each
@pytest.mark.parametrize("backend", ["sqlite"])
def test_random_kills(live: LiveServer, tmp_path, example_bundles):
    """At least EDGEFLEET_RANDOM_KILLS (default 120) SIGKILLs at random moments of
    updates cycling through versions; after every kill the files name a verified model,
    and in the end the server holds every event the agent numbered, none twice."""
    import random
    import shutil

    wanted = int(os.environ.get("EDGEFLEET_RANDOM_KILLS", "120"))
    # More versions of the same model to cycle through (copies of 1.1.0's bundle).
    versions = ["1.0.0", "1.1.0"]
    for minor in range(2, 6):
        bundle = tmp_path / f"digits-1.{minor}.0"
        shutil.copytree(example_bundles["1.1.0"], bundle)
        manifest = yaml.safe_load((bundle / "edgefleet.yaml").read_text())
        manifest["version"] = f"1.{minor}.0"
        (bundle / "edgefleet.yaml").write_text(yaml.safe_dump(manifest))
        assert live.upload(bundle).status_code == 201
        versions.append(f"1.{minor}.0")
    state_dir = tmp_path / "random"
    config = agent_config(live, tmp_path, "random")
    assert agent_run(config).returncode == 0
    rng = random.Random(20261122)
    kills = completed = checks = 0
    index = 0
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_AGENT_CRASH_AT"}
    while kills < wanted and index < wanted * 4:
        version = versions[index % len(versions)]
        body = {
            "model": "digits",
            "version": version,
            "trial": {"min_inferences": 40, "min_seconds": 0},
            "config": {"clear_refused": [f"digits@{version}"]},
        }
        assert live.admin("PUT", "/api/v1/devices/random/desired", json=body).status_code == 200
        process = subprocess.Popen(
            [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config), "--once"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Start-up (imports, loading the serving model) takes ~1 s here; aim the kills
            # mostly at the work after it.
            process.wait(timeout=rng.uniform(0.6, 1.3))
            completed += 1
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            kills += 1
        index += 1
        state = files_state(state_dir)
        if state is not None and state["active"] is not None:
            assert_verified_model_active(state_dir, state)
            checks += 1
    assert kills >= wanted, f"only {kills} kills in {index} runs"
    final = agent_run(config)
    assert final.returncode == 0, final.stderr
    final_state = status(config)
    assert_verified_model_active(state_dir, final_state)
    # The newest 50 events the server shows run without a gap up to the agent's last.
    seqs = [e["seq"] for e in live.admin("GET", "/api/v1/devices/random").json()["events"]]
    assert seqs == list(range(final_state["seq"] - len(seqs) + 1, final_state["seq"] + 1))
    print(f"random kills: {kills} kills, {completed} runs completed, {checks} checks of the files")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_service_stop_during_the_trial_is_no_restart_to_count(live: LiveServer, tmp_path):
    """SIGTERM (systemctl stop) ends the agent cleanly: with a restart limit of 1 the
    trial still resumes, its serving time kept, and the release commits."""
    import signal
    import time

    state_dir = tmp_path / "stopped"
    config = agent_config(live, tmp_path, "stopped")
    assert agent_run(config).returncode == 0
    desired(live, "stopped", "1.0.0")
    assert agent_run(config).returncode == 0
    desired(live, "stopped", "1.1.0", min_seconds=6, max_trial_restarts=1)
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_AGENT_CRASH_AT"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (files_state(state_dir) or {}).get("state") != "TRIAL":
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.05)
        time.sleep(3.0)  # some of the trial served
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (state_dir / "clean-stop").exists()
    # The stop kept the trial's evidence (the periodic save comes every 5 s).
    stopped = json.loads((state_dir / "state.json").read_text())
    assert stopped["state"] == "TRIAL" and stopped["trial_progress"]["serving_s"] >= 2.0
    resumed = agent_run(config)
    assert resumed.returncode == 0, resumed.stderr
    final = status(config)
    assert (final["state"], assert_verified_model_active(state_dir, final)) == (
        "COMMITTED",
        "1.1.0",
    )
    events = live.admin("GET", "/api/v1/devices/stopped").json()["events"]
    assert not [e for e in events if e["reason"] == "trial_resumed"]
    passed = events[-1]
    assert passed["reason"] == "trial_passed"
    # The serving time before the stop counted toward the trial's 6 s.
    assert passed["details"]["elapsed_s"] >= 6.0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_model_that_kills_the_agent_in_its_trial_is_rolled_back_at_the_limit(
    live: LiveServer, tmp_path
):
    """A crash loop: the process dies at the new model's first trial look on every start
    (as a model that kills it at its first inference would); the default budget of 3
    restarts ends it with trial_failed:restart_limit, and 1.0.0 serves again."""
    state_dir = tmp_path / "looping"
    config = agent_config(live, tmp_path, "looping")
    assert agent_run(config).returncode == 0
    desired(live, "looping", "1.0.0")
    assert agent_run(config).returncode == 0
    desired(live, "looping", "1.1.0")
    deaths = 0
    while deaths < 10:
        run = agent_run(config, crash_at="trial_tick")
        if run.returncode != -9:
            assert run.returncode == 0, run.stderr
            break
        deaths += 1
    # Killed on activation's first look and at each of the two resumed trials; the third
    # restart reaches the limit and rolls back before any trial runs again.
    assert deaths == 3
    final = status(config)
    assert (final["state"], assert_verified_model_active(state_dir, final)) == (
        "ROLLED_BACK",
        "1.0.0",
    )
    events = live.admin("GET", "/api/v1/devices/looping").json()["events"]
    assert [e["details"]["restarts"] for e in events if e["reason"] == "trial_resumed"] == [1, 2]
    last = events[-1]
    assert last["reason"] == "trial_failed:restart_limit"
    assert last["details"] == {"restarts": 3, "restart_limit": 3}
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))

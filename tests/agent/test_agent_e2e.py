"""The agent against the real server: install, update after a trial, roll back a
version that fails its trial, refuse what the signed metadata does not allow."""

import pytest

from edgefleet.agent.config import AgentConfig
from edgefleet.agent.shell import Agent
from edgefleet.agent.statemachine import State
from tests.server.conftest import LiveServer

FAST_TRIAL = {"min_inferences": 40, "min_seconds": 0}


def make_agent(live: LiveServer, tmp_path, name="cam-1", hw="x86_64") -> Agent:
    config = AgentConfig(
        server=live.url,
        device_id=name,
        enrollment_token=live.token(),
        state_dir=tmp_path / name,
        hardware=hw,
        firmware="2.0.0",
        serve_port=None,
        trial_replay_per_s=2000,
        checkin_interval_s=1,
    )
    agent = Agent(
        config, sleep=lambda s: None if s >= 1 else __import__("time").sleep(min(s, 0.01))
    )
    agent.start()
    return agent


def desired(live: LiveServer, device: str, version: str, **trial) -> None:
    body = {"model": "digits", "version": version, "trial": {**FAST_TRIAL, **trial}}
    response = live.admin("PUT", f"/api/v1/devices/{device}/desired", json=body)
    assert response.status_code == 200, response.text


def server_view(live: LiveServer, device: str) -> dict:
    return live.admin("GET", f"/api/v1/devices/{device}").json()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_install_update_and_roll_back(live: LiveServer, tmp_path):
    agent = make_agent(live, tmp_path)
    assert agent.runtime.active is None  # no model yet: serves nothing
    assert agent.check_in_once() is True  # nothing desired yet
    assert agent.state.state is State.IDLE

    desired(live, "cam-1", "1.0.0")
    agent.check_in_once()
    assert agent.state.state is State.COMMITTED and agent.state.active == "a"
    assert agent.runtime.active.version == "1.0.0"
    view = server_view(live, "cam-1")
    assert view["device"]["agent_state"] == "COMMITTED" and view["device"]["version"] == "1.0.0"
    reasons = [e["reason"] for e in view["events"]]
    assert reasons == [
        "new_desired",
        "downloaded",
        "verified",
        "smoke_test_started",
        "smoke_test_passed",
        "activated",
        "trial_passed",
    ]

    desired(live, "cam-1", "1.1.0")
    agent.check_in_once()
    assert agent.state.state is State.COMMITTED and agent.state.active == "b"
    assert agent.runtime.active.version == "1.1.0"
    assert agent.state.slots["a"].version == "1.0.0"  # kept as backup
    committed = [e for e in server_view(live, "cam-1")["events"] if e["to_state"] == "COMMITTED"]
    assert committed[-1]["version"] == "1.1.0"
    assert committed[-1]["details"]["inferences"] >= 40  # committed only after the trial

    # 1.0.0 again, under a trial it cannot pass: rolled back, 1.1.0 serving throughout.
    desired(live, "cam-1", "1.0.0", min_mean_confidence=0.999)
    agent.check_in_once()
    assert agent.state.state is State.ROLLED_BACK
    assert agent.runtime.active.version == "1.1.0" and agent.state.active == "b"
    view = server_view(live, "cam-1")
    last = view["events"][-1]
    assert last["to_state"] == "ROLLED_BACK" and last["reason"] == "trial_failed:mean_confidence"
    assert last["details"]["mean_confidence"] < 0.999
    assert view["device"]["agent_state"] == "ROLLED_BACK" and view["device"]["version"] == "1.1.0"
    # Never retried on this device.
    live.admin("PUT", "/api/v1/devices/cam-1/desired", json={"model": "digits", "version": "1.1.0"})
    desired(live, "cam-1", "1.0.0")
    agent.check_in_once()
    assert agent.state.state is State.ROLLED_BACK and agent.runtime.active.version == "1.1.0"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_refusals_from_signed_metadata_keep_the_model(live: LiveServer, tmp_path):
    agent = make_agent(live, tmp_path, name="cam-2")
    desired(live, "cam-2", "1.0.0")
    agent.check_in_once()
    assert agent.runtime.active.version == "1.0.0"
    # The operator revokes 1.1.0 in the signed policy, but the control plane still asks.
    from edgefleet.signing.publish import Publisher, open_repository
    from edgefleet.store.bootstrap import open_registry

    with open_registry(live.settings) as registry:
        Publisher(open_repository(live.settings), registry.artifacts).revoke("digits", "1.1.0")
    desired(live, "cam-2", "1.1.0")
    agent.check_in_once()
    assert agent.state.state is State.FAILED
    assert agent.runtime.active.version == "1.0.0"
    last = server_view(live, "cam-2")["events"][-1]
    assert last["reason"] == "revoked" and last["to_state"] == "FAILED"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_restart_resumes_from_disk(live: LiveServer, tmp_path):
    agent = make_agent(live, tmp_path, name="cam-3")
    desired(live, "cam-3", "1.0.0")
    agent.check_in_once()
    restarted = Agent(agent.config)
    restarted.start()
    assert restarted.state.state is State.COMMITTED
    assert restarted.runtime.active.version == "1.0.0"
    assert (
        restarted.runtime.predict(
            {"X": __import__("numpy").zeros((1, 64), "float32")}
        ).model.version
        == "1.0.0"
    )


@pytest.mark.parametrize("backend", ["sqlite"])
def test_agent_status_command(live: LiveServer, tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from edgefleet.cli.main import app

    agent = make_agent(live, tmp_path, name="cam-4")
    desired(live, "cam-4", "1.0.0")
    agent.check_in_once()
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump({"server": live.url, "device_id": "cam-4", "state_dir": str(agent.root)})
    )
    result = CliRunner().invoke(app, ["agent", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "state: COMMITTED" in result.stdout and "* slot a: digits 1.0.0" in result.stdout
    data = json.loads(
        CliRunner().invoke(app, ["agent", "status", "--config", str(config), "--json"]).stdout
    )
    assert data["active"] == "a"
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: x\ndevice_id: 'bad id!'\n")
    refused = CliRunner().invoke(app, ["agent", "status", "--config", str(bad)])
    assert refused.exit_code == 1 and "is invalid" in refused.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_bad_server_cannot_make_the_device_load_what_tuf_does_not_allow(
    live: LiveServer, tmp_path
):
    from edgefleet.agent.statemachine import DesiredChanged, DesiredModel

    agent = make_agent(live, tmp_path, name="cam-5")
    desired(live, "cam-5", "1.0.0")
    agent.check_in_once()
    fp32 = live.admin("GET", "/api/v1/models/digits/versions/1.1.0").json()["variants"][0]
    path = f"models/digits/1.1.0/onnx-fp32/{fp32['filename']}"
    cases = {
        # A version the TUF metadata does not have.
        "not_found": DesiredModel(
            "digits", "7.0.0", "onnx-fp32", "models/digits/7.0.0/onnx-fp32/m.onnx", "e" * 64, 10, 9
        ),
        # The signed artifact, but the server claims other bytes for it.
        "desired_not_signed": DesiredModel(
            "digits", "1.1.0", "onnx-fp32", path, "f" * 64, fp32["size"], 2
        ),
    }
    for reason, target in cases.items():
        agent.handle(DesiredChanged(target))
        assert agent.state.state is State.FAILED and agent.state.last_error["reason"] == reason
        assert agent.runtime.active.version == "1.0.0"
    # The fp32 build is signed for x86_64 and aarch64 only: a 32-bit ARM device refuses it.
    arm = make_agent(live, tmp_path, name="cam-6", hw="armv7l")
    arm.handle(
        DesiredChanged(
            DesiredModel("digits", "1.1.0", "onnx-fp32", path, fp32["sha256"], fp32["size"], 2)
        )
    )
    assert (
        arm.state.state is State.FAILED
        and arm.state.last_error["reason"] == "incompatible_hardware"
    )
    assert arm.runtime.active is None


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_model_that_fails_the_smoke_test_is_rolled_back_before_serving(
    live: LiveServer, tmp_path
):
    agent = make_agent(live, tmp_path, name="cam-7")
    desired(live, "cam-7", "1.0.0")
    agent.check_in_once()
    # Corrupt the golden samples the device downloads for the next version: the smoke
    # test then sees outputs that do not match.
    original = agent._smoke_test

    def tampered(target, slot):
        from edgefleet.registry.golden import read_golden, write_golden

        golden = read_golden(agent.store.golden_file(slot))
        golden.outputs["probabilities"] = golden.outputs["probabilities"][::-1].copy()
        write_golden(agent.store.golden_file(slot), golden)
        return original(target, slot)

    agent._smoke_test = tampered
    desired(live, "cam-7", "1.1.0")
    agent.check_in_once()
    assert (
        agent.state.state is State.ROLLED_BACK
        and agent.state.last_error["reason"] == "golden_mismatch"
    )
    assert (
        agent.runtime.active.version == "1.0.0" and agent.state.slots[agent.state.inactive] is None
    )


@pytest.mark.parametrize("backend", ["sqlite"])
def test_agent_metrics(live: LiveServer, tmp_path):
    import httpx

    from edgefleet.agent.metrics import AgentCollector
    from edgefleet.runtime.prometheus import registry_for
    from edgefleet.runtime.serve import make_server, serve_in_thread

    agent = make_agent(live, tmp_path, name="cam-8")
    desired(live, "cam-8", "1.0.0")
    agent.check_in_once()
    registry = registry_for(agent.runtime)
    registry.register(AgentCollector(agent))
    server = make_server(agent.runtime, "127.0.0.1", 0, registry=registry)
    serve_in_thread(server)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
    assert 'edgefleet_agent_state{state="COMMITTED"} 1.0' in text
    assert 'edgefleet_agent_updates_total{outcome="COMMITTED"} 1.0' in text
    assert "edgefleet_agent_bytes_downloaded_total" in text
    assert "edgefleet_runtime_inferences_total" in text


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_download_waits_for_its_time_window(live: LiveServer, tmp_path):
    from datetime import UTC, datetime, timedelta

    agent = make_agent(live, tmp_path, name="cam-9")
    now = datetime.now(UTC)
    closed = (
        (now + timedelta(hours=2)).strftime("%H:%M"),
        (now + timedelta(hours=3)).strftime("%H:%M"),
    )
    body = {
        "model": "digits",
        "version": "1.0.0",
        "trial": FAST_TRIAL,
        "preconditions": {"window_utc": list(closed)},
    }
    assert live.admin("PUT", "/api/v1/devices/cam-9/desired", json=body).status_code == 200
    agent.check_in_once()
    agent.check_in_once()  # retried at the next check-in, still outside the window
    assert agent.state.state is State.DOWNLOADING and agent.state.download_attempts == 0
    assert agent.state.last_error == {"reason": "precondition:time_window"}
    assert agent.runtime.active is None
    opened = (
        (now - timedelta(minutes=5)).strftime("%H:%M"),
        (now + timedelta(hours=1)).strftime("%H:%M"),
    )
    body["preconditions"] = {"window_utc": list(opened)}
    assert live.admin("PUT", "/api/v1/devices/cam-9/desired", json=body).status_code == 200
    agent.check_in_once()
    assert agent.state.state is State.COMMITTED and agent.runtime.active.version == "1.0.0"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_shadow_first_reports_agreement_and_keeps_a_disagreeing_model_out(
    live: LiveServer, tmp_path, example_bundles
):
    from tests.agent.test_two_agents import broken_bundle

    assert live.upload(broken_bundle(tmp_path, example_bundles)).status_code == 201
    agent = make_agent(live, tmp_path, name="cam-8")
    desired(live, "cam-8", "1.0.0")
    agent.check_in_once()
    assert agent.runtime.active.version == "1.0.0"

    # 2.0.0 answers the same class for every input: it disagrees with 1.0.0 on most
    # requests and never goes live.
    shadow = {"fraction": 0.5, "min_seconds": 0, "min_compared": 60, "min_agreement": 0.8}
    body = {"model": "digits", "version": "2.0.0", "trial": FAST_TRIAL, "shadow": shadow}
    assert live.admin("PUT", "/api/v1/devices/cam-8/desired", json=body).status_code == 200
    agent.check_in_once()
    assert agent.state.state is State.ROLLED_BACK and agent.runtime.active.version == "1.0.0"
    assert agent.runtime.shadow is None  # the shadow run is over
    events = server_view(live, "cam-8")["events"]
    assert [e["to_state"] for e in events[-2:]] == ["SHADOW", "ROLLED_BACK"]
    failed = events[-1]
    assert failed["reason"] == "shadow_failed:agreement"
    assert failed["details"]["agreement"] < 0.8 and failed["details"]["compared"] >= 60
    assert "activated" not in [e["reason"] for e in events if e["version"] == "2.0.0"]

    # 1.1.0 agrees with 1.0.0: it passes the shadow period, then its trial.
    body = {"model": "digits", "version": "1.1.0", "trial": FAST_TRIAL, "shadow": shadow}
    assert live.admin("PUT", "/api/v1/devices/cam-8/desired", json=body).status_code == 200
    agent.check_in_once()
    assert agent.state.state is State.COMMITTED and agent.runtime.active.version == "1.1.0"
    events = [e for e in server_view(live, "cam-8")["events"] if e["version"] == "1.1.0"]
    reasons = [e["reason"] for e in events]
    assert (
        reasons.index("shadow_passed") < reasons.index("activated") < reasons.index("trial_passed")
    )
    passed = events[reasons.index("shadow_passed")]["details"]
    assert passed["agreement"] >= 0.8 and passed["compared"] >= 60
    assert passed["live_latency_p95_ms"] > 0 and passed["shadow_latency_p95_ms"] > 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_idle_trial_replays_recorded_application_inputs(live: LiveServer, tmp_path):
    import numpy as np

    agent = make_agent(live, tmp_path, name="cam-9")
    desired(live, "cam-9", "1.0.0")
    agent.check_in_once()
    # The application's traffic, unlike any golden sample: every pixel at 7.
    app_input = np.full((1, 64), 7.0, np.float32)
    for _ in range(64):
        agent.runtime.predict({"X": app_input})
    recorded = agent.runtime.recorded_inputs()
    assert len(recorded) == 64 // agent.runtime.record_every
    agent.save_recorded_inputs()

    # A restart keeps the recording; the idle trial of 1.1.0 replays it.
    restarted = Agent(agent.config, sleep=agent.sleep)
    restarted.start()
    assert len(restarted.runtime.recorded_inputs()) == len(recorded)
    replayed = []
    predict = restarted.runtime.predict

    def spy(inputs, *, record=True):
        replayed.append(np.asarray(inputs["X"]))
        return predict(inputs, record=record)

    restarted.runtime.predict = spy
    desired(live, "cam-9", "1.1.0")
    restarted.check_in_once()
    assert restarted.state.state is State.COMMITTED
    assert restarted.runtime.active.version == "1.1.0"
    assert any(np.array_equal(x, app_input) for x in replayed)
    assert len(restarted.runtime.recorded_inputs()) == len(recorded)  # replays not recorded

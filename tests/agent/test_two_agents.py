"""Acceptance: the real server and two real agent processes. One device gets 1.0.0, then
1.1.0 (COMMITTED only after its trial), then a deliberately broken version (an untrained
model: uniform probabilities) and rolls back with 1.1.0 still serving; the other device,
given nothing, stays as it was."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.golden import GoldenSamples, write_golden
from tests.server.conftest import LiveServer

TRIAL = {
    "min_inferences": 40,
    "min_seconds": 0,
    "min_mean_confidence": 0.5,
}


def broken_bundle(tmp_path, example_bundles):
    """digits 2.0.0: a valid model that answers 0.1 for every class, whatever the input."""
    import onnxruntime
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 64])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [64, 10], [0.0] * 640)
    tenth = helper.make_tensor("tenth", TensorProto.FLOAT, [1], [0.1])
    nodes = [
        helper.make_node("MatMul", ["X", "zeros"], ["z"]),
        helper.make_node("Add", ["z", "tenth"], ["probabilities"]),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(nodes, "untrained", [x], [label, probs], [zeros, tenth])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    bundle = tmp_path / "digits-2.0.0"
    bundle.mkdir()
    save(model, str(bundle / "model.onnx"))
    golden_x = np.load(example_bundles["1.1.0"] / "golden-fp32.npz")["input.X"]
    session = onnxruntime.InferenceSession(
        str(bundle / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    out_label, out_probs = session.run(None, {"X": golden_x})
    write_golden(
        bundle / "golden.npz",
        GoldenSamples({"X": golden_x}, {"label": out_label, "probabilities": out_probs}),
    )
    sha, size = sha256_file(bundle / "model.onnx")
    manifest = {
        "format": 1,
        "name": "digits",
        "version": "2.0.0",
        "inputs": [{"name": "X", "dtype": "float32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "dtype": "int64", "shape": [-1], "role": "label"},
            {
                "name": "probabilities",
                "dtype": "float32",
                "shape": [-1, 10],
                "role": "probabilities",
            },
        ],
        "variants": [
            {
                "name": "onnx-fp32",
                "file": "model.onnx",
                "sha256": sha,
                "size": size,
                "hardware": ["x86_64"],
            }
        ],
        "golden": {"file": "golden.npz"},
    }
    (bundle / "edgefleet.yaml").write_text(yaml.safe_dump(manifest))
    return bundle


def wait_for(live: LiveServer, device: str, predicate, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    view: dict = {}
    while time.monotonic() < deadline:
        response = live.admin("GET", f"/api/v1/devices/{device}")
        if response.status_code == 200:
            view = response.json()
            if predicate(view):
                return view
        time.sleep(0.1)
    raise AssertionError(f"{device} never got there: {view}")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_two_agent_processes(live: LiveServer, tmp_path, example_bundles):
    assert live.upload(broken_bundle(tmp_path, example_bundles)).status_code == 201
    processes = []
    try:
        for name in ("agent-1", "agent-2"):
            config = tmp_path / f"{name}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "server": live.url,
                        "device_id": name,
                        "enrollment_token": live.token(),
                        "state_dir": str(tmp_path / name),
                        "hardware": "x86_64",
                        "firmware": "2.0.0",
                        "serve_port": None,
                        "checkin_interval_s": 0.2,
                        "trial_replay_per_s": 2000,
                        "telemetry_interval_s": 1,
                    }
                )
            )
            env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_AGENT_CRASH_AT"}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for name in ("agent-1", "agent-2"):
            wait_for(live, name, lambda v: v["device"]["agent_state"] == "IDLE")

        def set_desired(version):
            body = {"model": "digits", "version": version, "trial": TRIAL}
            assert (
                live.admin("PUT", "/api/v1/devices/agent-1/desired", json=body).status_code == 200
            )

        set_desired("1.0.0")
        wait_for(
            live,
            "agent-1",
            lambda v: (
                v["device"]["version"] == "1.0.0" and v["device"]["agent_state"] == "COMMITTED"
            ),
        )
        set_desired("1.1.0")
        view = wait_for(
            live,
            "agent-1",
            lambda v: (
                v["device"]["version"] == "1.1.0" and v["device"]["agent_state"] == "COMMITTED"
            ),
        )
        events = [e for e in view["events"] if e["version"] == "1.1.0"]
        order = [e["to_state"] for e in events]
        assert order.index("TRIAL") < order.index("COMMITTED")  # committed only after the trial
        assert events[-1]["reason"] == "trial_passed" and events[-1]["details"]["inferences"] >= 40

        set_desired("2.0.0")
        view = wait_for(live, "agent-1", lambda v: v["device"]["agent_state"] == "ROLLED_BACK")
        assert view["device"]["version"] == "1.1.0"  # still serving the previous model
        last = view["events"][-1]
        assert last["version"] == "2.0.0" and last["reason"] == "trial_failed:mean_confidence"
        assert last["details"]["mean_confidence"] < 0.5
        assert live.admin("GET", "/api/v1/devices/agent-2").json()["device"]["version"] is None
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

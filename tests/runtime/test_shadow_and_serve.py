"""Shadow execution and the loopback HTTP endpoint."""

import json
import threading

import httpx
import numpy as np
import pytest

from edgefleet.registry.domain import TensorSpec
from edgefleet.runtime.runtime import ModelRuntime
from edgefleet.runtime.serve import make_server, serve_in_thread
from edgefleet.runtime.shadow import ShadowRunner


def test_shadow_compares_a_candidate_on_a_fraction_of_requests(digits):
    live_path, live_id, golden = digits("1.0.0")
    candidate_path, candidate_id, _ = digits("1.1.0")
    runtime = ModelRuntime(shadow_queue=1024)
    runtime.load(live_path, live_id)
    runtime.set_shadow(candidate_path, candidate_id, fraction=0.25)
    rows = golden.inputs["X"]
    for i in range(400):
        runtime.predict({"X": rows[i % len(rows)][None, :]})
    runtime.drain_shadow()
    stats = runtime.shadow_stats()
    assert stats.compared == 100 and stats.skipped == 0 and stats.failed == 0
    # Golden samples are confident ones both versions get right: they agree.
    assert stats.agreement == 1.0
    assert 0 < stats.mean_distance < 0.1
    assert sum(stats.live_latency_counts) == sum(stats.shadow_latency_counts) == 100
    roles = {
        identity.version: (s.requests, role) for identity, s, role in runtime.metrics().values()
    }
    assert roles == {"1.0.0": (400, "active"), "1.1.0": (100, "shadow")}
    runtime.clear_shadow()
    assert runtime.shadow is None


class _BlockedSession:
    """A candidate that waits until released, to fill the shadow queue."""

    inputs = (TensorSpec(name="X", dtype="float32", shape=(None, 64)),)
    outputs = (TensorSpec(name="probabilities", dtype="float32", shape=(None, 10)),)

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def run(self, feeds):
        self.entered.set()
        self.release.wait(timeout=30)
        return {"probabilities": np.full((feeds["X"].shape[0], 10), 0.1, np.float32)}


def test_a_full_shadow_queue_skips_work_and_never_delays_the_live_request(digits):
    live_path, live_id, golden = digits("1.0.0")
    runtime = ModelRuntime()
    runtime.load(live_path, live_id)
    blocked = _BlockedSession()
    runner = ShadowRunner(
        lambda feeds: (blocked.run(feeds), 1.0),
        fraction=1.0,
        probabilities="probabilities",
        label=None,
        queue_size=2,
    )
    try:
        row = golden.inputs["X"][:1]
        for i in range(10):
            prediction = runtime.predict({"X": row})
            runner.offer({"X": row}, prediction.outputs, prediction.latency_ms)
            if i == 0:
                assert blocked.entered.wait(timeout=10)  # the worker holds the first job
        # One job is running (blocked), two wait in the queue, the rest were skipped.
        assert runner.stats().skipped == 7
        blocked.release.set()
        runner.drain()
        assert runner.stats().compared == 3
    finally:
        blocked.release.set()
        runner.stop()


def test_shadow_fraction_must_be_a_share():
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        ShadowRunner(lambda f: ({}, 0.0), fraction=0.0, probabilities=None, label=None)


@pytest.fixture
def endpoint(digits):
    path, identity, golden = digits("1.1.0")
    runtime = ModelRuntime()
    server = make_server(runtime, "127.0.0.1", 0)
    serve_in_thread(server)
    yield runtime, f"http://127.0.0.1:{server.server_address[1]}", (path, identity, golden)
    server.shutdown()
    server.server_close()


def test_http_endpoint(endpoint):
    runtime, url, (path, identity, golden) = endpoint
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{url}/healthz").status_code == 503
        before = http.post(f"{url}/v1/predict", json={"inputs": {"X": [[0.0] * 64]}})
        assert before.status_code == 503 and before.json()["error"]["code"] == "no_model"
        runtime.load(path, identity)
        assert http.get(f"{url}/healthz").json() == {
            "status": "ok",
            "model": "digits@1.1.0/onnx-int8".replace("int8", "fp32"),
        }
        answer = http.post(f"{url}/v1/predict", json={"inputs": {"X": golden.inputs["X"].tolist()}})
        assert answer.status_code == 200
        body = answer.json()
        assert body["model"] == {"name": "digits", "version": "1.1.0", "variant": "onnx-fp32"}
        assert body["outputs"]["label"] == golden.outputs["label"].tolist()
        np.testing.assert_allclose(
            body["outputs"]["probabilities"], golden.outputs["probabilities"], atol=1e-5
        )
        bad_shape = http.post(f"{url}/v1/predict", json={"inputs": {"X": [[0.0] * 10]}})
        assert bad_shape.status_code == 400 and bad_shape.json()["error"]["code"] == "invalid_input"
        not_json = http.post(
            f"{url}/v1/predict", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_request"
        huge = http.post(f"{url}/v1/predict", content=b"x" * (17 << 20))
        assert huge.status_code == 413
        metrics = http.get(f"{url}/v1/metrics").json()["models"]
        assert metrics[0]["inferences"] == 16 and metrics[0]["errors"] == {"input": 1}
        text = http.get(f"{url}/metrics").text
        labels = 'model="digits",role="active",variant="onnx-fp32",version="1.1.0"'
        assert f"edgefleet_runtime_inferences_total{{{labels}}} 16.0" in text
        assert "edgefleet_runtime_latency_seconds_bucket" in text
        assert json.loads(http.get(f"{url}/v1/model").content)["shadow"] is None
        assert http.get(f"{url}/nope").status_code == 404

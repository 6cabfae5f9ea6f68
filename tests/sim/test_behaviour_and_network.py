"""Virtual-device building blocks: behaviour measured from the real digits models and
sampled per device; network profiles."""

import numpy as np
import pytest
from pydantic import ValidationError

from edgefleet.agent.trial import TrialRun
from edgefleet.examples.digits import load_split
from edgefleet.fleet.domain import ModelMetrics, TrialPolicy
from edgefleet.registry.profile import confidence_mean
from edgefleet.runtime.metrics import ModelStats
from edgefleet.sim.behaviour import (
    DeviceNoise,
    VirtualModel,
    measure,
    measure_together,
    probe_pairs,
    shares,
)
from edgefleet.sim.network import PROFILES, Link, NetworkProfile
from edgefleet.sim.scenario import Behaviour, FleetSpec, Scenario


@pytest.fixture(scope="module")
def held_out():
    _, x_test, _, y_test = load_split(0)
    return {"X": x_test[:300].astype(np.float32)}, y_test[:300]


@pytest.fixture(scope="module")
def profiles(example_bundles, held_out):
    inputs, _ = held_out
    paths = {
        version: example_bundles[version] / "model-fp32.onnx" for version in ("1.0.0", "1.1.0")
    }
    return measure_together(paths, inputs, repeats=1)


def test_measured_profile_matches_the_model_on_held_out_data(profiles, held_out):
    _, labels = held_out
    profile = profiles["1.1.0"]
    assert len(profile.latencies_ms) == 300 and profile.mean_latency_ms > 0
    truth = shares(np.bincount(labels, minlength=10))
    # A trained model's predicted class mix is close to the true mix.
    assert np.abs(np.asarray(profile.class_shares) - truth).max() < 0.05
    assert sum(profile.confidence_shares) == pytest.approx(1.0)
    assert profile.confidence_shares[-1] > 0.5  # mostly confident
    assert profile.error_rate == 0.0 and profile.ram_mb > 0


def test_models_measured_together_are_each_their_own(profiles, example_bundles, held_out):
    inputs, _ = held_out
    alone = measure(example_bundles["1.0.0"] / "model-fp32.onnx", inputs, repeats=2)
    assert len(alone.latencies_ms) == 600
    # Taking turns changes the timing, never what a model answers.
    assert alone.class_shares == profiles["1.0.0"].class_shares
    assert alone.confidence_shares == profiles["1.0.0"].confidence_shares
    assert profiles["1.0.0"].class_shares != profiles["1.1.0"].class_shares
    assert profiles["1.0.0"].ram_mb < profiles["1.1.0"].ram_mb


def test_a_virtual_device_sends_telemetry_shaped_like_the_profile(profiles):
    rng = np.random.default_rng(1)
    device = VirtualModel(profiles["1.1.0"], DeviceNoise.draw(rng))
    metrics, health = device.interval(requests=5000, seconds=60.0, rng=rng)
    body = ModelMetrics(model="digits", version="1.1.0", **metrics)  # valid API body
    assert body.inferences == 5000 and sum(body.class_counts) == 5000
    observed = shares(body.class_counts)
    assert np.abs(observed - np.asarray(profiles["1.1.0"].class_shares)).max() < 0.03
    assert 0 < health["cpu_percent"] < 100


def test_variants_of_a_behaviour_show_in_telemetry(profiles):
    base = profiles["1.1.0"]
    rng = np.random.default_rng(2)
    noise = DeviceNoise()

    def cpu(profile):
        values = [
            VirtualModel(profile, noise).interval(requests=20_000, seconds=10.0, rng=rng)[1][
                "cpu_percent"
            ]
            for _ in range(20)
        ]
        return float(np.mean(values)) - noise.cpu_base_percent

    assert cpu(base.scaled(latency=2.0)) == pytest.approx(2 * cpu(base), rel=0.1)
    missing = VirtualModel(base.scaled(drop_class=3)).interval(requests=5000, seconds=1, rng=rng)
    assert missing[0]["class_counts"][3] == 0
    failing = VirtualModel(base.scaled(error_rate=0.2)).interval(requests=5000, seconds=1, rng=rng)
    assert 800 < failing[0]["errors"]["inference_failed"] < 1200
    assert failing[0]["inferences"] == 5000 - failing[0]["errors"]["inference_failed"]


def test_scenario_factors_apply_per_revision_on_top_of_the_measured_model(profiles):
    base = profiles["1.1.0"]
    fleet = FleetSpec()
    camera = next(k for k in fleet.kinds if k.name == "camera")
    gateway = next(k for k in fleet.kinds if k.name == "gateway")
    behaviour = Behaviour(
        latency_factor={"rpi3-r1.2": 1.3},
        cpu_factor=1.25,
        memory_factor={"gateway": 2.0},
        confidence_factor=0.5,
        class_recall={"3": 0.0, "4": 0.5},
    )
    assert behaviour.factor("latency", camera) == 1.3 and behaviour.factor("latency", gateway) == 1
    assert behaviour.factor("memory", gateway) == 2.0 and behaviour.factor("cpu", camera) == 1.25
    on_camera = base.varied(
        latency=behaviour.factor("latency", camera),
        cpu=behaviour.factor("cpu", camera),
        confidence=0.5,
        recall={3: 0.0, 4: 0.5},
    )
    assert on_camera.mean_latency_ms == pytest.approx(1.3 * base.mean_latency_ms)
    assert on_camera.cpu_factor == 1.25
    classes, measured = np.asarray(on_camera.class_shares), np.asarray(base.class_shares)
    assert classes[3] == 0 and classes[4] == pytest.approx(measured[4] / 2)
    assert classes.sum() == pytest.approx(1.0)
    assert sum(on_camera.confidence_shares) == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    mean_conf = [
        confidence_mean(
            VirtualModel(p).interval(requests=5000, seconds=1, rng=rng)[0]["confidence_counts"]
        )
        for p in (base, on_camera)
    ]
    assert mean_conf[1] == pytest.approx(mean_conf[0] / 2, abs=0.05)
    assert base.varied() is base


def test_behaviour_factors_must_name_the_fleets_revisions_or_kinds():
    body = {
        "name": "x",
        "baseline": "1.1.0",
        "releases": [{"version": "1.2.0", "behaviour": {"latency_factor": {"rpi4": 1.3}}}],
    }
    with pytest.raises(ValidationError, match="rpi4 is neither a revision nor a kind"):
        Scenario.model_validate(body)
    body["releases"][0]["behaviour"] = {"class_recall": {"nine": 0.5}}
    with pytest.raises(ValidationError, match="class_recall"):
        Scenario.model_validate(body)
    body["releases"][0]["behaviour"] = {"cpu_factor": 0}
    with pytest.raises(ValidationError, match="cpu_factor"):
        Scenario.model_validate(body)


def test_a_virtual_trial_is_judged_by_the_agents_trial_run_on_paired_probes(profiles):
    # The simulator feeds the agent's own TrialRun; its probe pairs come from profiles
    # measured together, so a model as fast as the previous one is not rolled back and
    # one twice as slow fails on latency, as on a real device. The profiles are real
    # timings of this machine: where single runs of a 16 us model vary by 1.5x (a loaded
    # virtual machine) a third or more of a same-speed model's pairs are over the limit,
    # and the sign test may want more than these 400 pairs to pass it (never to fail it).
    rng = np.random.default_rng(3)
    noise = DeviceNoise(latency_factor=1.3)
    old, new = VirtualModel(profiles["1.0.0"], noise), VirtualModel(profiles["1.1.0"], noise)
    slow = VirtualModel(profiles["1.1.0"].scaled(latency=2.0), noise)
    policy = TrialPolicy(min_inferences=0, min_seconds=0)
    verdicts = {}
    for name, candidate in (("same", new), ("slow", slow)):
        run = TrialRun(policy, started_s=0.0, baseline=None, compare_latency=True)
        for ours, theirs in probe_pairs(candidate, old, 400, rng):
            run.add_probe(ours, theirs, ours, theirs)
        verdicts[name] = run.verdict(ModelStats(), now_s=1.0)
    assert verdicts["same"].passed is not False
    assert verdicts["same"].numbers["latency_ratio_median"] < 1.5
    assert verdicts["slow"].passed is False and verdicts["slow"].check == "latency"
    assert verdicts["slow"].numbers["latency_ratio_median"] > 1.5


def test_network_profiles():
    two_g, ethernet = Link(PROFILES["cellular-2g"], seed=3), Link(PROFILES["ethernet"], seed=3)
    assert two_g.transfer_seconds(80 * 2**20) > 1000 * ethernet.transfer_seconds(80 * 2**20)
    assert ethernet.connected(1e6) and ethernet.next_outage(0) is None
    timeline = [two_g.connected(t) for t in np.arange(0, 3600, 1.0)]
    offline = 1 - np.mean(timeline)
    assert 0.05 < offline < 0.3  # about 20 s out of every 140 s
    start, end = two_g.next_outage(0.0)
    assert start < end and not two_g.connected((start + end) / 2)
    again = Link(PROFILES["cellular-2g"], seed=3)
    assert [again.connected(t) for t in np.arange(0, 3600, 1.0)] == timeline  # deterministic
    losses = sum(Link(PROFILES["cellular-4g"], seed=s).lost() for s in range(2000))
    assert 5 < losses < 50
    assert all(two_g.request_delay() >= 0 for _ in range(100))
    with pytest.raises(ValueError, match="loss"):
        NetworkProfile("bad", 0.1, 0.0, 1.5, 1e6)


def test_the_operator_client_tries_a_read_again_when_the_connection_drops(monkeypatch):
    import asyncio

    import httpx

    from edgefleet.sim import server as sim_server
    from edgefleet.sim.server import OperatorClient, SimServerError

    monkeypatch.setattr(sim_server, "READ_RETRY_DELAYS_S", (0.0, 0.0))
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1 or request.method == "POST":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"state": "running"})

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            client = OperatorClient("http://server", "token", http)
            view = await client.call("GET", "/api/v1/rollouts/ro-1")
            with pytest.raises(SimServerError, match="cannot reach"):
                await client.call("POST", "/api/v1/rollouts", json={})
            return view

    assert asyncio.run(main()) == {"state": "running"}
    assert calls == ["GET", "GET", "POST"]  # the read once more; the write never twice


def test_the_operator_client_tries_a_read_again_when_the_server_is_busy(monkeypatch):
    import asyncio

    import httpx

    from edgefleet.sim import server as sim_server
    from edgefleet.sim.server import OperatorClient, SimServerError

    monkeypatch.setattr(sim_server, "READ_RETRY_DELAYS_S", (0.0, 0.0))
    calls: list[str] = []
    busy = {"error": {"code": "store_unavailable", "message": "the database is locked"}}

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("ro-1") and len(calls) == 1:
            return httpx.Response(503, json=busy)
        if request.url.path.endswith("ro-1"):
            return httpx.Response(200, json={"state": "running"})
        return httpx.Response(503, json=busy)

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            client = OperatorClient("http://server", "token", http)
            view = await client.call("GET", "/api/v1/rollouts/ro-1")
            with pytest.raises(SimServerError, match="503: the database is locked"):
                await client.call("GET", "/api/v1/rollouts/ro-2")  # busy every time
            with pytest.raises(SimServerError, match="503"):
                await client.call("POST", "/api/v1/rollouts", json={})
            return view

    assert asyncio.run(main()) == {"state": "running"}
    assert calls == [
        "GET /api/v1/rollouts/ro-1",
        "GET /api/v1/rollouts/ro-1",
        *["GET /api/v1/rollouts/ro-2"] * 3,  # the first try and the two delays
        "POST /api/v1/rollouts",  # a write is never sent twice
    ]

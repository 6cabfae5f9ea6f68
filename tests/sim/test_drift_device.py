"""A virtual device in a drifting run: its requests drawn from its drift level's pool,
its summary periods in its telemetry, and big samples sent within the agent's byte
budget (pure: no server; a stand-in classifier, clocks moved by hand)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edgefleet.agent.checkin import SAMPLE_BYTES_PER_REQUEST
from edgefleet.agent.statemachine import AgentState, SlotContent, State
from edgefleet.fleet.domain import TelemetryBatch
from edgefleet.registry.profile import compute_profile
from edgefleet.sim.behaviour import BehaviourProfile
from edgefleet.sim.delivery import SharedDelivery
from edgefleet.sim.device import Connections, DeviceSpec, VirtualDevice, World
from edgefleet.sim.drift import DriftInputs, DriftWorld
from edgefleet.sim.httpclient import Answer
from edgefleet.sim.network import PROFILES
from edgefleet.sim.scenario import DeviceKind, Drift
from tests.sim.drifting import KEY, LinearModel, held_out


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CapturingDevice(VirtualDevice):
    """Serves 1.1.0 and keeps what it would send instead of sending it."""

    def __init__(self, world: World, site: str, root: Path) -> None:
        spec = DeviceSpec(
            device_id=f"d-{site}",
            kind=DeviceKind(name="camera", hardware="x86_64", revision="r1"),
            region="eu-west",
            site=site,
            network=PROFILES["ethernet"],
            checkin_interval_s=3.0,
            seed=11,
            run="t",
        )
        super().__init__(spec, world)
        content = SlotContent("digits", "1.1.0", "onnx-fp32", "0" * 64, verified=True)
        self.state = AgentState(state=State.COMMITTED, active="a", slots={"a": content, "b": None})
        self.bodies: list[tuple[str, Any]] = []

    async def _request(self, method: str, route: str, **options: Any) -> Answer:
        self.bodies.append((route, options.get("json_body")))
        return Answer(200, {}, b"{}")


def drifting_world(root: Path) -> tuple[World, DriftWorld, Clock]:
    held = held_out()
    model = LinearModel()
    profile = compute_profile({"X": held.inputs}, probabilities=model(KEY, held.inputs))
    drift = Drift(cohort="site:s1", transform="brightness", intensity=0.25)
    clock = Clock(2_000.0)
    drifting = DriftWorld(DriftInputs([drift], held, model), {"1.1.0": profile}, 10.0, clock=clock)
    behaviour = BehaviourProfile(
        latencies_ms=(0.1, 0.2), class_shares=(0.25,) * 4, confidence_shares=(1.0,) + (0.0,) * 19
    )
    world = World(
        base_url="http://fleet.invalid",
        connections=Connections("http://fleet.invalid"),
        delivery=SharedDelivery(root, "credential"),
        enrollment_token="token",
        models={KEY: behaviour},
        behaviours={},
        telemetry_interval_s=2.0,
        requests_per_s=400.0,
        max_backoff_s=8.0,
        drift=drifting,
    )
    return world, drifting, clock


def test_a_device_in_the_cohort_reports_the_models_answers_on_its_drifted_rows(tmp_path):
    world, drifting, clock = drifting_world(tmp_path)
    inside, outside = CapturingDevice(world, "s1", tmp_path), CapturingDevice(world, "s2", tmp_path)
    drifting.clock_t = world.now() - 100.0  # the drift is at its full intensity
    base = drifting.inputs.pool(KEY, (0,))
    bright = drifting.inputs.pool(KEY, (10,))
    for device in (inside, outside):
        device._traffic_at = world.now() - 5.0
        device._queue_telemetry()
    (entry,) = inside.telemetry[-1]["models"]
    (other,) = outside.telemetry[-1]["models"]
    for sent, pool in ((entry, bright), (other, base)):
        shares = sent["class_counts"]
        assert sum(shares) == sum(sent["confidence_counts"]) == sent["inferences"] > 1000
        # The class mix is the pool's, as the stand-in model answered on its rows.
        expected = [float(share) for share in (pool.shares @ (pool.predicted[:, None] == range(4)))]
        assert all(abs(s / sum(shares) - e) < 0.05 for s, e in zip(shares, expected, strict=True))
    assert "sketches" not in entry and "feature_counts" not in entry  # no period closed yet
    assert drifting.intervals == 2 and drifting.cost_s > 0

    clock.now = 2_010.0  # the 10-second period closed
    inside._traffic_at = world.now() - 2.0
    inside._queue_telemetry()
    (closing,) = inside.telemetry[-1]["models"]
    assert closing["period_start"] == 2_000.0 and closing["period_end"] == 2_010.0
    assert sum(closing["feature_counts"]["X[0]"]) > 100
    assert drifting.periods == 1 and drifting.period_cost_us is not None
    # The server takes what the device sends.
    TelemetryBatch.model_validate({"samples": inside.telemetry})


def test_a_backlog_of_summaries_goes_within_the_byte_budget(tmp_path):
    world, _, _ = drifting_world(tmp_path)
    device = CapturingDevice(world, "s1", tmp_path)
    padding = "x" * 30_000  # a sample the size of a period's summaries
    device.telemetry = [
        {"at": "2026-12-06T04:00:00+00:00", "health": {}, "models": [], "n": i, "pad": padding}
        for i in range(60)
    ]
    device.last_report = {"agent_state": "COMMITTED"}
    sent: list[int] = []
    posts = 0
    for _ in range(10):
        device.bodies.clear()
        asyncio.run(device.flush())
        for route, body in device.bodies:
            if route == "telemetry":
                posts += 1
                assert len(json.dumps(body)) <= SAMPLE_BYTES_PER_REQUEST + 1000
                sent += [sample["n"] for sample in body["samples"]]
        if not device.telemetry:
            break
    assert sent == list(range(60))  # all of them, in order, over several check-ins
    assert posts >= 4  # 1.8 MB of samples in bodies of at most 512 KiB

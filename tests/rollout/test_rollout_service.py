"""The rollout service over a real store (both backends), ticked by hand on a clock it
is given: the rate limits and the schedule hold assignments back across many ticks,
without a server and without sleeping. (The rules themselves: test_schedule.py.)"""

from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.fleet.domain import DesiredModel
from edgefleet.rollout.service import RolloutService
from edgefleet.rollout.status import DeviceStatus
from edgefleet.store.bootstrap import open_store
from tests.rollout.test_rollout_api import DELIVERY_GATES

ADMIN = Operator(key_id="local", name="test", role=Role.ADMIN)
START = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)
ONE_WAVE = [{"percent": 100, "bake_s": 0}]


def artifact(model: str, version: str, hardware: str | None) -> DesiredModel:
    return DesiredModel(
        name=model,
        version=version,
        variant="fp32",
        target_path=f"{model}/{version}/fp32.onnx",
        sha256="0" * 64,
        size=1,
        release=1,
    )


class Rollouts:
    """A service on a store with eight devices in eu-west, on a clock moved by hand."""

    def __init__(self, uow_factory) -> None:
        self.uow = uow_factory
        self.now = START
        self.service = RolloutService(
            uow_factory, artifact, analysis_interval_s=0, clock=lambda: self.now
        )
        with uow_factory() as uow:
            for i in range(8):
                uow.devices.create(
                    f"cam-{i}",
                    attributes={"region": "eu-west"},
                    group=None,
                    credential_id=f"id-{i}",
                    credential_hash="x",
                    poll_interval_s=10,
                    now=START,
                )
            uow.commit()

    def create(self, version: str = "1.1.0", **spec) -> str:
        body = {
            "model": "digits",
            "version": version,
            "target": "region:eu-west",
            "waves": ONE_WAVE,
            "gates": DELIVERY_GATES,
            **spec,
        }
        return self.service.create(ADMIN, body)["id"]

    def tick(self, rollout_id: str, times: int = 1) -> dict:
        for _ in range(times):
            self.service.tick(rollout_id)
        return self.service.show(rollout_id)

    def commit_assigned(self, rollout_id: str) -> None:
        """The assigned devices report their outcome: committed."""
        with self.uow() as uow:
            assigned = uow.rollouts.assigned(rollout_id)
            committed = dict.fromkeys(assigned, (DeviceStatus.COMMITTED, ""))
            uow.rollouts.set_statuses(rollout_id, committed, self.now)
            uow.commit()


@pytest.fixture
def rollouts(settings):
    with open_store(settings) as uow_factory:
        yield Rollouts(uow_factory)


def test_rate_limits_and_schedule_hold_assignments_back(rollouts: Rollouts):
    limited = rollouts.create(rate={"max_concurrent_downloads": 3})
    view = rollouts.tick(limited, times=10)  # devices silent: at most 3 in flight
    assert view["devices"] == {"assigned": 3}
    for _ in range(20):
        rollouts.commit_assigned(limited)
        view = rollouts.tick(limited)
        assert view["devices"].get("assigned", 0) <= 3
        if view["state"] == "succeeded":
            break
    assert view["state"] == "succeeded" and view["devices"] == {"committed": 8}

    # A per-minute rate holds pro rata over any 10 s: 30 a minute is 5 in 10 s.
    paced = rollouts.create(version="1.0.0", rate={"max_assign_per_minute": 30})
    assert rollouts.tick(paced, times=10)["devices"] == {"assigned": 5}
    rollouts.now += timedelta(seconds=10)  # the first five were assigned 10 s ago
    assert rollouts.tick(paced)["devices"] == {"assigned": 5}
    rollouts.now += timedelta(seconds=1)
    assert rollouts.tick(paced)["devices"] == {"assigned": 8}

    later = {"start_at": "2099-01-01T00:00:00Z"}
    scheduled = rollouts.create(version="1.0.0", schedule=later)
    view = rollouts.tick(scheduled, times=5)
    assert view["state"] == "running" and view["devices"] == {}  # nothing before start_at
    closed = {"windows": [{"start": "00:00", "end": "00:00", "timezone": "UTC"}]}
    assert (
        rollouts.tick(rollouts.create(version="1.0.0", schedule=closed), times=5)["devices"] == {}
    )


def test_an_inconclusive_wave_grows_by_its_step_to_its_cap_then_pauses(rollouts: Rollouts):
    waves = [{"percent": 25, "bake_s": 0, "analysis_timeout_s": 5}, {"percent": 100}]
    # No telemetry: the latency gate can only stay inconclusive.
    gates = [{"metric": "latency_p95", "max_ratio": 1.2, "min_samples": 2}]
    extend = {"step_percent": 25, "max_percent": 50}
    rollout = rollouts.create(waves=waves, gates=gates, on_inconclusive="extend", extend=extend)

    def settle() -> dict:
        rollouts.tick(rollout, times=3)
        rollouts.commit_assigned(rollout)
        rollouts.tick(rollout, times=3)
        rollouts.now += timedelta(seconds=6)  # past the analysis timeout
        return rollouts.tick(rollout)

    view = settle()
    assert view["extended"] == 1 and view["waves"][0]["percent_now"] == 50
    assert view["state"] == "running" and view["devices"] == {"committed": 2}
    view = settle()
    assert view["devices"] == {"committed": 4}  # the wave's 50% of 8
    assert view["state"] == "paused" and view["reason"] == "inconclusive"
    kinds = [entry["kind"] for entry in rollouts.service.log(rollout)]
    assert "extend" in kinds and kinds[-1] == "pause"


def test_create_says_what_detect_needs_and_logs_it(rollouts: Rollouts):
    gates = [{"metric": "cpu_percent", "max_ratio": 1.2, "min_samples": 2}]
    created = rollouts.service.create(
        ADMIN,
        {
            "model": "digits",
            "version": "1.1.0",
            "target": "region:eu-west",
            "waves": [{"percent": 25}, {"percent": 100}],
            "gates": gates,
            "detect": {"cpu_percent": 1.5},
        },
    )
    # No device has sent telemetry on the previous version: no estimate, nothing grown.
    (sizing,) = created["detect"]
    assert sizing["metric"] == "cpu_percent" and sizing["devices"] is None
    assert sizing["note"] == "too few baseline devices to estimate"
    assert created["target_devices"] == 8 and created["waves"][0]["percent"] == 25
    (entry,) = rollouts.service.log(created["id"])
    assert entry["kind"] == "create" and entry["details"]["detect"] == [sizing]

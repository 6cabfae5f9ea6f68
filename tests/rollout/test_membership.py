"""The controller reuses a rollout's target as read (``rollout_membership_refresh_s``):
a device that left the target since is still never assigned, and devices that joined
it get their place once the target is read again (at the latest, at the next wave)."""

import time

import pytest

from tests.rollout.test_rollout_api import Fleet, create, install_baseline, run_until
from tests.server.conftest import LiveServer


@pytest.fixture
def settings(settings):
    """A target read once serves the whole wave."""
    return settings.model_copy(update={"rollout_membership_refresh_s": 3600.0})


def _assigned(live: LiveServer, rollout_id: str) -> dict[str, int]:
    devices = live.admin("GET", f"/api/v1/rollouts/{rollout_id}/devices").json()
    return {d["device_id"]: d["wave"] for d in devices}


def _wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_device_that_left_the_target_is_not_assigned(live: LiveServer):
    fleet = Fleet(live, 4, lambda device, version: "commit")
    install_baseline(live, fleet)
    rollout = create(
        live,
        waves=[{"percent": 100, "bake_s": 0}],
        rate={"max_concurrent_downloads": 1},
    )
    first = _wait_for(lambda: _assigned(live, rollout["id"]))
    leaving = sorted(set(fleet.devices) - set(first))[0]
    response = live.api(
        "PUT",
        f"/api/v1/devices/{leaving}/reported",
        fleet.devices[leaving]["credential"],
        json={"agent_state": "COMMITTED", "attributes": {"region": "us-east"}},
    )
    assert response.status_code in (200, 204), response.text
    del fleet.devices[leaving]  # it would refuse nothing; it must simply never be asked
    view = run_until(live, fleet, rollout["id"], lambda v: v["state"] == "succeeded")
    assigned = _assigned(live, rollout["id"])
    assert leaving not in assigned
    assert sorted(assigned) == sorted(fleet.devices)
    assert view["state"] == "succeeded"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_devices_that_join_the_target_get_their_place_at_the_next_wave(live: LiveServer):
    fleet = Fleet(live, 4, lambda device, version: "commit")
    install_baseline(live, fleet)
    rollout = create(
        live,
        waves=[
            {"percent": 50, "bake_s": 0, "min_devices": 1},
            {"percent": 100, "bake_s": 0, "approval": "manual"},
        ],
    )
    run_until(live, fleet, rollout["id"], lambda v: v["phase"] == "awaiting_approval")
    for i in range(2):
        device_id, credential, _ = live.enroll(f"late-{i}", region="eu-west")
        fleet.devices[device_id] = {"credential": credential, "seq": 0, "version": None}
    install_baseline(live, fleet)
    response = live.admin("POST", f"/api/v1/rollouts/{rollout['id']}/approve")
    assert response.status_code == 200, response.text
    run_until(live, fleet, rollout["id"], lambda v: v["state"] == "succeeded")
    assigned = _assigned(live, rollout["id"])
    assert sorted(assigned) == sorted(fleet.devices)
    assert {assigned["late-0"], assigned["late-1"]} == {1}

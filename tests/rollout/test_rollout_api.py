"""The rollout controller in the real server: devices enrolled over the device API
answer their desired state with the events a real agent sends; waves advance, a failing
gate aborts and reverts, a manual wave waits for approval, pause and resume."""

import time
from datetime import UTC, datetime

import pytest

from tests.server.conftest import LiveServer

FAST_WAVES = [
    {"percent": 25, "bake_s": 0, "min_devices": 1},
    {"percent": 50, "bake_s": 0},
    {"percent": 100, "bake_s": 0},
]
DELIVERY_GATES = [
    {"metric": "rollbacks", "max_count": 0, "min_samples": 1},
    {"metric": "download_failures", "max": 0.5, "min_samples": 1},
]


class Fleet:
    """Devices that do what the agent does with a desired state, as events."""

    def __init__(self, live: LiveServer, count: int, behaviour) -> None:
        self.live = live
        self.behaviour = behaviour
        self.devices = {}
        for i in range(count):
            device_id, credential, _ = live.enroll(f"cam-{i:02d}", region="eu-west")
            self.devices[device_id] = {"credential": credential, "seq": 0, "version": None}

    def step(self) -> None:
        for device_id, device in self.devices.items():
            answer = self.live.api(
                "GET", f"/api/v1/devices/{device_id}/desired", device["credential"]
            ).json()
            model = (answer["desired"] or {}).get("model")
            if not model or model["version"] == device.get("seen"):
                continue
            device["seen"] = model["version"]
            outcome = self.behaviour(device_id, model["version"])
            state = "COMMITTED" if outcome == "commit" else "ROLLED_BACK"
            reason = "trial_passed" if outcome == "commit" else "trial_failed:error_rate"
            device["seq"] += 1
            event = {
                "seq": device["seq"],
                "from_state": "TRIAL",
                "to_state": state,
                "reason": reason,
                "model": "digits",
                "version": model["version"],
                "at": datetime.now(UTC).isoformat(),
            }
            response = self.live.api(
                "POST",
                f"/api/v1/devices/{device_id}/events",
                device["credential"],
                json={"events": [event]},
            )
            assert response.status_code == 200, response.text
            if outcome == "commit":
                device["version"] = model["version"]
            reported = {"agent_state": state, "model": "digits", "version": device["version"]}
            response = self.live.api(
                "PUT", f"/api/v1/devices/{device_id}/reported", device["credential"], json=reported
            )
            assert response.status_code in (200, 204), response.text


def run_until(live: LiveServer, fleet: Fleet, rollout_id: str, done, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    view: dict = {}
    while time.monotonic() < deadline:
        fleet.step()
        view = live.admin("GET", f"/api/v1/rollouts/{rollout_id}").json()
        if done(view):
            return view
        time.sleep(0.05)
    raise AssertionError(f"rollout never got there: {view}")


def create(live: LiveServer, version: str = "1.1.0", **spec) -> dict:
    body = {
        "model": "digits",
        "version": version,
        "target": "region:eu-west",
        "waves": FAST_WAVES,
        "gates": DELIVERY_GATES,
        **spec,
    }
    response = live.admin("POST", "/api/v1/rollouts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def install_baseline(live: LiveServer, fleet: Fleet) -> None:
    response = live.admin(
        "POST",
        "/api/v1/fleet/desired",
        json={"query": "region:eu-west", "model": "digits", "version": "1.0.0"},
    )
    assert response.status_code == 200, response.text
    fleet.step()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_good_version_goes_wave_by_wave_to_everyone(live: LiveServer):
    fleet = Fleet(live, 8, lambda device, version: "commit")
    install_baseline(live, fleet)
    rollout = create(live)
    view = run_until(live, fleet, rollout["id"], lambda v: v["state"] == "succeeded")
    assert view["devices"] == {"committed": 8}
    assert [sum(w["devices"].values()) for w in view["waves"]] == [2, 2, 4]  # 25%, 50%, 100%
    assert all(d["version"] == "1.1.0" for d in fleet.devices.values())
    log = live.admin("GET", f"/api/v1/rollouts/{rollout['id']}/log").json()
    kinds = [e["kind"] for e in log]
    assert kinds[0] == "create" and kinds[-1] == "succeed"
    assert kinds.count("advance") == 2
    advance = next(e for e in log if e["kind"] == "advance")
    gates = {g["gate"]: g for g in advance["details"]["gates"]}
    assert gates["rollbacks"]["verdict"] == "pass" and gates["rollbacks"]["numbers"]["count"] == 0
    # Wave membership is nested and stable: the first wave's devices come first.
    devices = live.admin("GET", f"/api/v1/rollouts/{rollout['id']}/devices").json()
    assert sorted({d["wave"] for d in devices}) == [0, 1, 2]
    assert all(d["previous_version"] == "1.0.0" for d in devices)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_version_that_fails_trials_is_stopped_in_wave_one_and_reverted(live: LiveServer):
    fleet = Fleet(live, 8, lambda device, version: "rollback" if version == "1.1.0" else "commit")
    install_baseline(live, fleet)
    rollout = create(live)
    view = run_until(live, fleet, rollout["id"], lambda v: v["state"] == "aborted")
    assert view["reason"] == "gate_failed:rollbacks"
    assert sum(view["waves"][0]["devices"].values()) == 2
    assert sum(view["waves"][1]["devices"].values()) == 0  # never got further
    assert view["devices"] == {"reverted": 2}
    # The devices that tried it were sent back to 1.0.0, with a trial that cannot hold
    # them back; everyone else never left it.
    for device_id in fleet.devices:
        desired = live.admin("GET", f"/api/v1/devices/{device_id}").json()["device"]["desired"]
        assert desired["model"]["version"] == "1.0.0"
    log = live.admin("GET", f"/api/v1/rollouts/{rollout['id']}/log").json()
    abort = log[-1]
    assert abort["kind"] == "abort" and abort["details"]["reverted"] == 2
    failed = {g["gate"]: g for g in abort["details"]["gates"]}["rollbacks"]
    assert failed["verdict"] == "fail" and failed["numbers"]["count"] >= 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_devices_not_heard_from_yet_are_reverted_to_what_they_were_told_before(
    live: LiveServer,
):
    fleet = Fleet(live, 8, lambda device, version: "rollback" if version == "1.1.0" else "commit")
    response = live.admin(
        "POST",
        "/api/v1/fleet/desired",
        json={"query": "region:eu-west", "model": "digits", "version": "1.0.0"},
    )
    assert response.status_code == 200, response.text
    # The first wave is chosen before any device has reported what it runs (their first
    # reports still on their way): the revert has only what they were told to go on.
    rollout = create(live)
    deadline = time.monotonic() + 30
    while live.admin("GET", f"/api/v1/rollouts/{rollout['id']}").json()["devices"] != {
        "assigned": 2
    }:
        assert time.monotonic() < deadline, "the first wave was never assigned"
        time.sleep(0.05)
    devices = live.admin("GET", f"/api/v1/rollouts/{rollout['id']}/devices").json()
    assert [d["previous_version"] for d in devices] == ["1.0.0", "1.0.0"]
    view = run_until(live, fleet, rollout["id"], lambda v: v["state"] == "aborted")
    assert view["devices"] == {"reverted": 2}
    for device_id in fleet.devices:
        desired = live.admin("GET", f"/api/v1/devices/{device_id}").json()["device"]["desired"]
        assert desired["model"]["version"] == "1.0.0"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_manual_approval_pause_and_resume(live: LiveServer):
    fleet = Fleet(live, 4, lambda device, version: "commit")
    install_baseline(live, fleet)
    waves = [
        {"percent": 25, "bake_s": 0},
        {"percent": 100, "bake_s": 0, "approval": "manual"},
    ]
    rollout = create(live, waves=waves)
    rid = rollout["id"]
    view = run_until(live, fleet, rid, lambda v: v["phase"] == "awaiting_approval")
    assert view["wave"] == 1 and view["devices"] == {"committed": 1}
    time.sleep(0.5)  # nothing moves without the approval
    assert live.admin("GET", f"/api/v1/rollouts/{rid}").json()["devices"] == {"committed": 1}

    paused = live.admin("POST", f"/api/v1/rollouts/{rid}/pause", json={"reason": "checking"})
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    refused = live.admin("POST", f"/api/v1/rollouts/{rid}/pause")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "rollout_state"
    assert live.admin("POST", f"/api/v1/rollouts/{rid}/resume").json()["state"] == "running"
    assert live.admin("POST", f"/api/v1/rollouts/{rid}/approve").json()["phase"] == "rolling"
    view = run_until(live, fleet, rid, lambda v: v["state"] == "succeeded")
    assert view["devices"] == {"committed": 4}
    kinds = [e["kind"] for e in live.admin("GET", f"/api/v1/rollouts/{rid}/log").json()]
    assert {"await_approval", "pause", "resume", "approve", "succeed"} <= set(kinds)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_bad_definitions_are_refused_with_the_problem_named(live: LiveServer):
    bad = live.admin(
        "POST",
        "/api/v1/rollouts",
        json={
            "model": "digits",
            "version": "1.1.0",
            "target": "*",
            "waves": [{"percent": 50}, {"percent": 10}],
        },
    )
    assert bad.status_code == 422 and "must increase" in bad.text
    unknown = live.admin(
        "POST",
        "/api/v1/rollouts",
        json={"model": "digits", "version": "9.9.9", "target": "region:eu-west"},
    )
    assert unknown.status_code == 404
    query = live.admin(
        "POST",
        "/api/v1/rollouts",
        json={"model": "digits", "version": "1.1.0", "target": "region:("},
    )
    assert query.status_code == 400 and query.json()["error"]["code"] == "query_syntax"
    gate = live.admin(
        "POST",
        "/api/v1/rollouts",
        json={
            "model": "digits",
            "version": "1.1.0",
            "target": "*",
            "gates": [{"metric": "cpu_percent", "max_count": 1}],
        },
    )
    assert gate.status_code == 422 and "max_count does not apply to cpu_percent" in gate.text
    assert live.admin("GET", "/api/v1/rollouts/ro-nope").status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_devices_are_unreachable_and_never_block_a_wave(live: LiveServer):
    silent = {"cam-01", "cam-02"}

    class Partly(Fleet):
        def step(self) -> None:
            online = {k: v for k, v in self.devices.items() if k not in silent}
            everyone, self.devices = self.devices, online
            try:
                super().step()
            finally:
                self.devices = everyone

    fleet = Partly(live, 6, lambda device, version: "commit")
    install_baseline(live, fleet)
    waves = [{"percent": 100, "bake_s": 0, "device_timeout_s": 1}]
    rollout = create(live, waves=waves)
    view = run_until(live, fleet, rollout["id"], lambda v: v["state"] == "succeeded")
    assert view["devices"] == {"committed": 4, "unreachable": 2}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cohort_waves_go_site_by_site(live: LiveServer):
    fleet = Fleet(live, 0, lambda device, version: "commit")
    for i, site in enumerate(["a", "a", "b", "b", "b", "c"]):
        device_id, credential, _ = live.enroll(f"site-{site}-{i}", region="eu-west", site=site)
        fleet.devices[device_id] = {"credential": credential, "seq": 0, "version": None}
    install_baseline(live, fleet)
    waves = [
        {"cohort": "site:a", "bake_s": 0},
        {"cohort": "site:b", "bake_s": 0},
        {"cohort": "site:*", "bake_s": 0},
    ]
    rollout = create(live, waves=waves)
    view = run_until(live, fleet, rollout["id"], lambda v: v["state"] == "succeeded")
    assert [sum(w["devices"].values()) for w in view["waves"]] == [2, 3, 1]
    devices = live.admin("GET", f"/api/v1/rollouts/{rollout['id']}/devices").json()
    assert {d["device_id"] for d in devices if d["wave"] == 0} == {"site-a-0", "site-a-1"}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_telemetry_is_not_a_pass_and_an_operator_can_approve_past_it(live: LiveServer):
    fleet = Fleet(live, 4, lambda device, version: "commit")  # devices that send no telemetry
    install_baseline(live, fleet)
    waves = [{"percent": 100, "bake_s": 0, "analysis_timeout_s": 0.5}]
    gates = [{"metric": "cpu_percent", "max_ratio": 1.3, "min_samples": 2}]
    rollout = create(live, waves=waves, gates=gates)
    rid = rollout["id"]
    view = run_until(live, fleet, rid, lambda v: v["state"] == "paused")
    assert view["reason"] == "inconclusive" and view["devices"] == {"committed": 4}
    assert view["gates"][0]["verdict"] == "inconclusive"
    approved = live.admin("POST", f"/api/v1/rollouts/{rid}/approve").json()
    assert approved["state"] == "succeeded"
    log = live.admin("GET", f"/api/v1/rollouts/{rid}/log").json()
    assert [e["kind"] for e in log][-3:] == ["pause", "approve", "succeed"]
    assert log[-1]["reason"] == "approved_inconclusive"
    again = live.admin("POST", f"/api/v1/rollouts/{rid}/approve")
    assert again.status_code == 409

"""The device API over real HTTP, on SQLite and PostgreSQL."""

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from tests.server.conftest import LiveServer

DEVICE_ROUTES = (
    ("GET", "desired", None),
    ("PUT", "reported", {"agent_state": "IDLE"}),
    ("POST", "events", {"events": [{"seq": 1, "reason": "boot", "at": "2026-11-21T00:00:00Z"}]}),
    ("POST", "telemetry", {"samples": [{"at": "2026-11-21T00:00:00Z"}]}),
)


def test_enrollment_gives_credential_pinned_root_and_urls(live: LiveServer):
    device_id, credential, data = live.enroll(region="eu-west")
    assert credential.startswith("efd_")
    assert data["tuf_root"]["signed"]["_type"] == "root"
    assert data["urls"]["desired"] == f"{live.url}/api/v1/devices/{device_id}/desired"
    assert data["urls"]["tuf_metadata"] == f"{live.url}/tuf/metadata/"


def test_a_device_credential_reaches_only_its_own_device(live: LiveServer):
    a, a_credential, _ = live.enroll("device-a")
    b, _, _ = live.enroll("device-b")
    for method, route, body in DEVICE_ROUTES:
        own = live.api(method, f"/api/v1/devices/{a}/{route}", a_credential, json=body)
        assert own.status_code == 200, (route, own.text)
        other = live.api(method, f"/api/v1/devices/{b}/{route}", a_credential, json=body)
        assert other.status_code == 403, (route, other.text)
        assert other.json()["error"]["code"] == "forbidden"
        missing = live.api(method, f"/api/v1/devices/{b}/{route}", None, json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        # An operator key is not a device credential either.
        assert live.admin(method, f"/api/v1/devices/{b}/{route}", json=body).status_code == 401
    # Operator routes refuse device credentials.
    assert live.api("GET", "/api/v1/devices", a_credential).status_code == 401


def test_reenrolling_needs_an_operator(live: LiveServer):
    device_id, old_credential, _ = live.enroll("camera-7")
    body = {"device_id": device_id, "enrollment_token": live.token(), "attributes": {}}
    takeover = live.api("POST", "/api/v1/enroll", json=body)
    assert takeover.status_code == 409
    assert takeover.json()["error"]["code"] == "device_exists"
    assert live.admin("POST", f"/api/v1/devices/{device_id}/reenroll").status_code == 200
    again = live.api("POST", "/api/v1/enroll", json={**body, "enrollment_token": live.token()})
    assert again.status_code == 201
    new_credential = again.json()["credential"]
    assert (
        live.api("GET", f"/api/v1/devices/{device_id}/desired", old_credential).status_code == 401
    )
    assert (
        live.api("GET", f"/api/v1/devices/{device_id}/desired", new_credential).status_code == 200
    )


def test_enrollment_tokens_run_out_expire_and_can_be_revoked(live: LiveServer):
    once = live.token(uses=1)
    first = live.api("POST", "/api/v1/enroll", json={"device_id": "x1", "enrollment_token": once})
    assert first.status_code == 201
    second = live.api("POST", "/api/v1/enroll", json={"device_id": "x2", "enrollment_token": once})
    assert second.status_code == 401
    assert "used up" in second.json()["error"]["message"]
    created = live.admin("POST", "/api/v1/tokens", json={"kind": "enrollment"}).json()
    assert live.admin("DELETE", f"/api/v1/tokens/{created['id']}").status_code == 200
    revoked = live.api(
        "POST", "/api/v1/enroll", json={"device_id": "x3", "enrollment_token": created["token"]}
    )
    assert "revoked" in revoked.json()["error"]["message"]
    bogus = live.api("POST", "/api/v1/enroll", json={"device_id": "x4", "enrollment_token": "nope"})
    assert bogus.status_code == 401


def test_desired_state_etag_and_304(live: LiveServer):
    device_id, credential, _ = live.enroll()
    path = f"/api/v1/devices/{device_id}/desired"
    first = live.api("GET", path, credential)
    assert first.status_code == 200
    assert first.json()["desired"] is None
    etag = first.headers["etag"]
    unchanged = live.api("GET", path, credential, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    set_response = live.admin("PUT", path, json={"model": "digits", "version": "1.1.0"})
    assert set_response.json() == {"devices": 1}
    changed = live.api("GET", path, credential, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    model = changed.json()["desired"]["model"]
    assert model["variant"] == "onnx-fp32"  # the x86_64 device gets the fp32 build
    assert model["target_path"] == "models/digits/1.1.0/onnx-fp32/model-fp32.onnx"
    assert model["release"] == 2
    # The signed artifact is where the desired state says, with that hash.
    artifact = live.api(
        "GET",
        f"/tuf/targets/models/digits/1.1.0/onnx-fp32/{model['sha256']}.model-fp32.onnx",
        credential,
    )
    assert hashlib.sha256(artifact.content).hexdigest() == model["sha256"]


def test_desired_state_for_a_query_picks_the_variant_per_hardware(live: LiveServer):
    arm, arm_credential, _ = live.enroll(hw="aarch64", region="eu-west")
    x86, x86_credential, _ = live.enroll(hw="x86_64", region="eu-west")
    live.enroll(hw="x86_64", region="us-east")
    result = live.admin(
        "POST",
        "/api/v1/fleet/desired",
        json={"query": "region:eu-west", "model": "digits", "version": "1.0.0"},
    )
    assert result.json() == {"devices": 2}
    arm_model = live.api("GET", f"/api/v1/devices/{arm}/desired", arm_credential).json()["desired"][
        "model"
    ]
    x86_model = live.api("GET", f"/api/v1/devices/{x86}/desired", x86_credential).json()["desired"][
        "model"
    ]
    assert (arm_model["variant"], x86_model["variant"]) == ("onnx-fp32", "onnx-fp32")
    riscv, _, _ = live.enroll(hw="riscv64")
    refused = live.admin(
        "PUT", f"/api/v1/devices/{riscv}/desired", json={"model": "digits", "version": "1.0.0"}
    )
    assert refused.status_code == 422
    assert "no variant for hardware 'riscv64'" in refused.json()["error"]["message"]
    unknown = live.admin(
        "PUT", f"/api/v1/devices/{x86}/desired", json={"model": "digits", "version": "9.0.0"}
    )
    assert unknown.status_code == 404


def test_reported_state_events_and_telemetry(live: LiveServer):
    device_id, credential, _ = live.enroll(site="plant-3")
    base = f"/api/v1/devices/{device_id}"
    reported = {
        "agent_state": "COMMITTED",
        "active_slot": "b",
        "model": "digits",
        "version": "1.0.0",
        "firmware": "2.1.0",
        "slots": [{"name": "b", "model": "digits", "version": "1.0.0", "verified": True}],
    }
    assert live.api("PUT", f"{base}/reported", credential, json=reported).status_code == 200
    now = datetime.now(UTC)
    events = [
        {
            "seq": 3,
            "from_state": "TRIAL",
            "to_state": "COMMITTED",
            "reason": "trial_passed",
            "at": now.isoformat(),
        },
        {
            "seq": 1,
            "from_state": "IDLE",
            "to_state": "DOWNLOADING",
            "reason": "new_desired",
            "at": now.isoformat(),
        },
    ]
    first = live.api("POST", f"{base}/events", credential, json={"events": events}).json()
    assert first == {"accepted": 2, "duplicates": 0, "last_seq": 3}
    retry = [
        *events,
        {
            "seq": 2,
            "from_state": "DOWNLOADING",
            "to_state": "TRIAL",
            "reason": "verified",
            "at": now.isoformat(),
        },
    ]
    second = live.api("POST", f"{base}/events", credential, json={"events": retry}).json()
    assert second == {"accepted": 1, "duplicates": 2, "last_seq": 3}
    samples = [
        {
            "at": (now + timedelta(seconds=i)).isoformat(),
            "health": {"cpu_percent": 10.0 + i, "temperature_c": 40.0},
            "models": [
                {
                    "model": "digits",
                    "version": "1.0.0",
                    "inferences": 100,
                    "errors": {"shape": 1},
                    "latency_counts": [1, 2, 3],
                    "class_counts": [5] * 10,
                }
            ],
        }
        for i in range(3)
    ]
    accepted = live.api("POST", f"{base}/telemetry", credential, json={"samples": samples}).json()
    assert accepted["samples"] == 3
    shown = live.admin("GET", base).json()
    assert shown["device"]["agent_state"] == "COMMITTED"
    assert shown["device"]["firmware"] == "2.1.0"
    assert shown["device"]["online"] is True
    assert [e["seq"] for e in shown["events"]] == [1, 2, 3]
    merged = shown["telemetry"]
    assert sum(t["data"]["inferences"] for t in merged) == 300
    assert sum(t["samples"] for t in merged) == 3
    listed = live.admin(
        "GET", "/api/v1/devices", params={"query": "model:digits@1.0.0 AND site:plant-*"}
    ).json()
    assert [d["device_id"] for d in listed["devices"]] == [device_id]
    summary = live.admin("GET", "/api/v1/fleet/summary").json()
    assert {"model": "digits", "version": "1.0.0", "devices": 1} in summary["by_version"]
    assert summary["by_state"]["COMMITTED"] == 1


def test_reports_of_many_devices_at_once_are_all_stored(live: LiveServer):
    # Reports without attribute changes are written many devices per transaction.
    devices = [live.enroll(f"cam-{i:02d}") for i in range(12)]

    def report(device, version: str) -> int:
        device_id, credential, _ = device
        body = {"agent_state": "COMMITTED", "model": "digits", "version": version}
        path = f"/api/v1/devices/{device_id}/reported"
        return live.api("PUT", path, credential, json=body).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        first = list(pool.map(lambda d: report(d, "1.0.0"), devices))
        second = list(pool.map(lambda d: report(d, "1.1.0"), devices))
    assert set(first) == set(second) == {200}
    for device_id, _, _ in devices:
        shown = live.admin("GET", f"/api/v1/devices/{device_id}").json()["device"]
        assert shown["reported"]["version"] == "1.1.0", device_id
        assert shown["agent_state"] == "COMMITTED" and shown["online"] is True


def test_targeting_query_errors_point_at_the_position(live: LiveServer):
    response = live.admin("GET", "/api/v1/devices", params={"query": "region:eu-west AND"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "query_syntax"
    assert isinstance(error["details"]["position"], int)


def test_bad_bodies_get_envelopes_and_change_nothing(live: LiveServer):
    device_id, credential, _ = live.enroll()
    base = f"/api/v1/devices/{device_id}"
    malformed = live.api(
        "PUT",
        f"{base}/reported",
        credential,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 422
    assert malformed.json()["error"]["code"] == "invalid_request"
    wrong = live.api("PUT", f"{base}/reported", credential, json={"agent_state": 5, "slots": "x"})
    assert wrong.status_code == 422
    huge = live.api(
        "POST",
        f"{base}/events",
        credential,
        content=b"x" * (2 << 20),
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "too_large"
    bad_seq = live.api(
        "POST",
        f"{base}/events",
        credential,
        json={"events": [{"seq": 0, "reason": "x", "at": "2026-01-01T00:00:00Z"}]},
    )
    assert bad_seq.status_code == 422
    assert live.admin("GET", base).json()["events"] == []
    assert json.loads(live.admin("GET", base).content)["device"]["agent_state"] is None


def test_telemetry_answered_before_the_framework_falls_back_on_anything_unusual(live: LiveServer):
    """The telemetry fast path answers only a valid batch from the device itself; every
    other request reaches the route with its body intact and gets the route's answer."""
    device_id, credential, _ = live.enroll()
    base = f"/api/v1/devices/{device_id}"
    sample = {
        "at": "2026-11-21T00:00:00Z",
        "models": [{"model": "m", "version": "1", "inferences": 4}],
    }
    ok = live.api("POST", f"{base}/telemetry", credential, json={"samples": [sample, sample]})
    assert ok.status_code == 200
    assert ok.json() == {"samples": 2, "buckets": 1}
    invalid = live.api("POST", f"{base}/telemetry", credential, json={"samples": [{"at": "soon"}]})
    assert invalid.status_code == 422
    assert invalid.json()["error"]["code"] == "invalid_request"
    assert "samples" in invalid.text  # the route saw the body the fast path had read
    empty = live.api("POST", f"{base}/telemetry", credential, json={"samples": []})
    assert empty.status_code == 422
    malformed = live.api(
        "POST",
        f"{base}/telemetry",
        credential,
        content=b'{"samples": [',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 422
    huge = live.api(
        "POST",
        f"{base}/telemetry",
        credential,
        content=b"x" * (2 << 20),
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    # Streamed without a length: the route reads it (and caps it) itself.
    streamed = live.api(
        "POST",
        f"{base}/telemetry",
        credential,
        content=iter([json.dumps({"samples": [sample]}).encode()]),
        headers={"Content-Type": "application/json"},
    )
    assert streamed.status_code == 200, streamed.text
    shown = live.admin("GET", base).json()["telemetry"]
    assert [(t["samples"], t["data"]["inferences"]) for t in shown] == [(3, 12)]
    metrics = live.api("GET", "/metrics").text
    assert 'route="/api/v1/devices/{device_id}/telemetry",status="200"' in metrics


def test_answers_before_the_framework_are_counted_and_timed_like_the_routes(live: LiveServer):
    device_id, credential, _ = live.enroll()
    base = f"/api/v1/devices/{device_id}"
    etag = live.api("GET", f"{base}/desired", credential).headers["etag"]
    for _ in range(3):
        polled = live.api("GET", f"{base}/desired", credential, headers={"If-None-Match": etag})
        assert polled.status_code == 304
    sample = {"at": "2026-11-21T00:00:00Z"}
    assert live.api("POST", f"{base}/telemetry", credential, json={"samples": [sample]}).is_success
    metrics = live.api("GET", "/metrics").text
    desired = 'method="GET",route="/api/v1/devices/{device_id}/desired"'
    assert f'edgefleet_http_requests_total{{{desired},status="304"}} 3.0' in metrics
    assert f"edgefleet_http_request_duration_seconds_count{{{desired}}} 4.0" in metrics
    assert 'edgefleet_checkins_total{result="not_modified"} 3.0' in metrics
    telemetry = 'method="POST",route="/api/v1/devices/{device_id}/telemetry",status="200"'
    assert f"edgefleet_http_requests_total{{{telemetry}}} 1.0" in metrics

"""Operator API, registry routes, TUF files, health and metrics over real HTTP."""

import hashlib
import stat
import time

import pytest

from tests.server.conftest import LiveServer


def key(live: LiveServer, role: str) -> str:
    response = live.admin(
        "POST", "/api/v1/tokens", json={"kind": "api_key", "role": role, "name": role}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def test_first_admin_key_is_written_private(live: LiveServer):
    path = live.settings.home / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert live.admin("GET", "/api/v1/tokens").status_code == 200


def test_roles(live: LiveServer):
    viewer, operator = key(live, "viewer"), key(live, "operator")
    device_id, _, _ = live.enroll()
    assert live.api("GET", "/api/v1/devices", viewer).status_code == 200
    write = {"model": "digits", "version": "1.0.0"}
    denied = live.api("PUT", f"/api/v1/devices/{device_id}/desired", viewer, json=write)
    assert denied.status_code == 403
    assert denied.json()["error"]["details"] == {"needed": "operator", "role": "viewer"}
    assert (
        live.api("PUT", f"/api/v1/devices/{device_id}/desired", operator, json=write).status_code
        == 200
    )
    no_admin = live.api(
        "POST", "/api/v1/tokens", operator, json={"kind": "api_key", "role": "admin"}
    )
    assert no_admin.status_code == 403
    assert (
        live.api("POST", "/api/v1/tokens", operator, json={"kind": "enrollment"}).status_code == 201
    )
    assert live.api("GET", "/api/v1/audit", operator).status_code == 403
    assert live.api("GET", "/api/v1/devices", "efk_0000000000000000_wrong").status_code == 401
    revoked_id = live.admin("GET", "/api/v1/tokens").json()["tokens"][1]["id"]
    assert live.admin("DELETE", f"/api/v1/tokens/{revoked_id}").json()["revoked"] is True
    assert live.api("GET", "/api/v1/devices", viewer).status_code == 401


def test_every_operator_write_is_audited(live: LiveServer):
    device_id, _, _ = live.enroll()
    live.admin(
        "PUT", f"/api/v1/devices/{device_id}/desired", json={"model": "digits", "version": "1.0.0"}
    )
    live.admin("POST", "/api/v1/models/digits/versions/1.0.0/promote", json={"stage": "production"})
    entries = live.admin("GET", "/api/v1/audit").json()["entries"]
    actions = [e["action"] for e in entries]
    assert actions[:3] == ["model.promote", "device.set_desired", "enrollment_token.create"]
    assert {"model.register", "api_key.create"} <= set(actions)
    set_desired = entries[1]
    assert set_desired["target"] == device_id
    assert set_desired["after"] == {"model": "digits", "version": "1.0.0", "devices": 1}
    assert set_desired["actor"].startswith("bootstrap admin")


def test_registry_routes_mirror_the_cli(live: LiveServer, example_bundles):
    listed = live.admin("GET", "/api/v1/models").json()["versions"]
    assert [(v["version"], v["stage"]) for v in listed] == [
        ("1.0.0", "candidate"),
        ("1.1.0", "candidate"),
    ]
    shown = live.admin("GET", "/api/v1/models/digits/versions/1.1.0").json()
    assert (
        shown["variants"][0]["sha256"]
        == hashlib.sha256((example_bundles["1.1.0"] / "model-fp32.onnx").read_bytes()).hexdigest()
    )
    compared = live.admin(
        "GET", "/api/v1/models/digits/compare", params={"a": "1.0.0", "b": "1.1.0"}
    ).json()
    assert next(r for r in compared["rows"] if r["name"] == "accuracy")["better"] == "b"
    promoted = live.admin(
        "POST", "/api/v1/models/digits/versions/1.1.0/promote", json={"stage": "production"}
    )
    assert promoted.json()["changes"][0]["to_stage"] == "production"
    assert (
        live.admin("GET", "/api/v1/models/digits/latest", params={"stage": "production"}).json()[
            "version"
        ]
        == "1.1.0"
    )
    assert len(live.admin("GET", "/api/v1/models/digits/history").json()["changes"]) == 3
    again = live.upload(example_bundles["1.0.0"])
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "version_exists"
    not_tar = live.admin(
        "POST",
        "/api/v1/models",
        content=b"not an archive",
        headers={"Content-Type": "application/gzip"},
    )
    assert not_tar.status_code == 422
    assert "not a readable tar archive" in not_tar.json()["error"]["message"]
    missing = live.admin("GET", "/api/v1/models/digits/versions/7.0.0")
    assert missing.status_code == 404
    bad_stage = live.admin(
        "POST", "/api/v1/models/digits/versions/1.0.0/promote", json={"stage": "gold"}
    )
    assert bad_stage.status_code == 422
    assert bad_stage.json()["error"]["code"] == "invalid_stage"


@pytest.fixture
def artifact(live: LiveServer):
    model = live.admin("GET", "/api/v1/models/digits/versions/1.1.0").json()["variants"][0]
    return f"/tuf/targets/models/digits/1.1.0/onnx-fp32/{model['sha256']}.model-fp32.onnx", model


def test_artifact_ranges(live: LiveServer, artifact):
    path, model = artifact
    _, credential, _ = live.enroll()
    whole = live.api("GET", path, credential)
    assert whole.status_code == 200 and len(whole.content) == model["size"]
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"]
    part = live.api("GET", path, credential, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{model['size']}"
    # A whole small file comes from memory, a range from the route: the same validators.
    assert (part.headers["etag"], part.headers["last-modified"]) == (
        whole.headers["etag"],
        whole.headers["last-modified"],
    )
    by_operator = live.admin("GET", path)  # operators' keys are checked by the route
    assert by_operator.content == whole.content
    assert {k: v for k, v in by_operator.headers.items() if k != "date"} == {
        k: v for k, v in whole.headers.items() if k != "date"
    }
    tail = live.api("GET", path, credential, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    stale = live.api("GET", path, credential, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and len(stale.content) == model["size"]
    fresh = live.api(
        "GET", path, credential, headers={"Range": "bytes=0-9", "If-Range": whole.headers["etag"]}
    )
    assert fresh.status_code == 206 and fresh.content == whole.content[:10]
    past = live.api("GET", path, credential, headers={"Range": f"bytes={model['size']}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{model['size']}"
    assert past.json()["error"]["code"] == "range_not_satisfiable"
    for header in ("bytes=abc", "items=0-1", "bytes=9-3"):
        bad = live.api("GET", path, credential, headers={"Range": header})
        assert bad.status_code == 400, header
        assert bad.json()["error"]["code"] == "bad_range"


def test_tuf_files_are_read_only_and_stay_inside_the_repository(live: LiveServer, artifact):
    path, _ = artifact
    _, credential, _ = live.enroll()
    assert live.api("GET", path).status_code == 401  # targets need a credential
    assert live.api("GET", "/tuf/metadata/root.json").status_code == 200  # metadata is public
    for probe in (
        "/tuf/metadata/../../keys/signers.json",
        "/tuf/metadata/%2e%2e/%2e%2e/admin.token",
        "/tuf/targets/../keys/signers.json",
        "/tuf/metadata/.lock",
        "/tuf/metadata/nope.json",
    ):
        response = live.api("GET", probe, credential)
        assert response.status_code == 404, probe
        assert response.json()["error"]["code"] in ("not_found",)
    assert live.api("PUT", "/tuf/metadata/root.json", credential, content=b"x").status_code == 405


def test_health_readiness_metrics_and_openapi(live: LiveServer):
    assert live.api("GET", "/healthz").json() == {"status": "ok", "schema_revision": None}
    ready = live.api("GET", "/readyz").json()
    assert ready["status"] == "ready" and ready["schema_revision"]
    device_id, credential, _ = live.enroll()
    live.api("GET", f"/api/v1/devices/{device_id}/desired", credential)
    metrics = live.api("GET", "/metrics").text
    for name in (
        "edgefleet_http_requests_total",
        "edgefleet_http_request_duration_seconds_bucket",
        "edgefleet_checkins_total",
        "edgefleet_enrollments_total",
        "edgefleet_artifact_bytes_served_total",
        "edgefleet_devices{",
        "edgefleet_devices_by_state",
    ):
        assert name in metrics, name
    assert 'route="/api/v1/devices/{device_id}/desired"' in metrics
    # The loop-lag probe wakes every 100 ms from the start.
    deadline = time.monotonic() + 5
    while "edgefleet_event_loop_lag_seconds_count 0.0" in metrics or (
        "edgefleet_event_loop_lag_seconds_count" not in metrics
    ):
        assert time.monotonic() < deadline, "the event-loop lag was never measured"
        time.sleep(0.1)
        metrics = live.api("GET", "/metrics").text
    # Each run of a background task is timed (the check-in flush runs every second).
    flushes = 'edgefleet_background_task_duration_seconds_count{task="check-in flush"}'
    while flushes not in metrics or f"{flushes} 0.0" in metrics:
        assert time.monotonic() < deadline + 5, "no background task run was timed"
        time.sleep(0.2)
        metrics = live.api("GET", "/metrics").text
    spec = live.api("GET", "/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), (method, path)
            assert "200" in operation["responses"] or "201" in operation["responses"], (
                method,
                path,
            )
    enroll = spec["paths"]["/api/v1/enroll"]["post"]
    assert enroll["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "EnrollRequest"
    )
    assert enroll["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "EnrollResponse"
    )

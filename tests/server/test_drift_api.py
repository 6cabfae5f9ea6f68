"""The drift API on a live server (each backend): monitors applied and shown, a report
of telemetry that devices sent through the device API, alarms from a look listed,
acknowledged and resolved, every bad input a clear error in the API's envelope, roles,
and the drift series on /metrics."""

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.orm import sessionmaker

from edgefleet.drift.looks import window_floor
from edgefleet.drift.service import DriftService
from edgefleet.drift.sketch import QuantileSummary
from edgefleet.registry.profile import ReferenceProfile, bin_counts
from edgefleet.store.database import describe_url, make_engine
from edgefleet.store.drift import SqlDriftUnitOfWork
from tests.drift.fleet import feature_values
from tests.server.conftest import LiveServer

HOUR = timedelta(hours=1)
#: Rows per device and period: a site's eight devices make a segment of min_rows (200) or
#: more, and enough devices for the evidence, which rests on how much devices differ.
ROWS = 40
MONITOR = {"model": "digits", "version": "1.0.0", "segments": ["site"], "window": "1h"}


def error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def send_period(
    live: LiveServer,
    devices: dict[str, str],
    profile: ReferenceProfile,
    period_end: datetime,
    shift: dict[str, float] | None = None,
) -> None:
    """Each device sends one summary period through the device API, as the runtime does."""
    rng = np.random.default_rng(3)
    for device_id, credential in devices.items():
        values = feature_values(profile, ROWS, rng, shift or {})
        metrics = {
            "model": "digits",
            "version": "1.0.0",
            "inferences": ROWS,
            "feature_counts": {
                f.name: list(bin_counts(values[f.name], f.edges))
                for p in profile.inputs
                for f in p.features
            },
            "sketches": {name: QuantileSummary.of(v).to_text() for name, v in values.items()},
            "sketch_rows": ROWS,
            "period_start": (period_end - HOUR).timestamp(),
            "period_end": period_end.timestamp(),
        }
        sample = {"at": datetime.now(UTC).isoformat(), "models": [metrics]}
        response = live.api(
            "POST", f"/api/v1/devices/{device_id}/telemetry", credential, json={"samples": [sample]}
        )
        assert response.status_code == 200, response.text


def test_drift_api(live: LiveServer):
    viewer = live.token("api_key", role="viewer", name="dashboards")

    # Monitors: applied (a new version only when it changes), shown, refused clearly.
    response = live.admin("PUT", "/api/v1/drift/monitors/digits", json=MONITOR)
    assert response.status_code == 200, response.text
    applied = response.json()
    assert (applied["number"], applied["changed"]) == (1, True)
    assert (
        live.admin("PUT", "/api/v1/drift/monitors/digits", json=MONITOR).json()["changed"] is False
    )
    shown = live.api("GET", "/api/v1/drift/monitors/digits", viewer).json()
    assert shown["monitor"]["segments"] == ["site"] and len(shown["versions"]) == 1
    assert [m["model"] for m in live.api("GET", "/api/v1/drift/monitors", viewer).json()] == [
        "digits"
    ]
    invalid = live.admin(
        "PUT",
        "/api/v1/drift/monitors/digits",
        json={**MONITOR, "statistics": {"psi": {"threshold": -1}}},
    )
    assert invalid.status_code == 422
    assert "statistics.psi.threshold" in error(invalid)["message"]
    unknown_feature = live.admin(
        "PUT", "/api/v1/drift/monitors/digits", json={**MONITOR, "features": ["X[999]"]}
    )
    assert unknown_feature.status_code == 422
    assert error(unknown_feature)["code"] == "drift_monitor_invalid"
    assert error(unknown_feature)["details"]["problems"][0]["field"] == "features"
    mismatch = live.admin("PUT", "/api/v1/drift/monitors/digits", json={"model": "other"})
    assert mismatch.status_code == 422 and "model" in error(mismatch)["message"]
    unknown = live.admin("PUT", "/api/v1/drift/monitors/nosuch", json={"model": "nosuch"})
    assert unknown.status_code == 404 and error(unknown)["code"] == "model_not_found"
    assert live.api("PUT", "/api/v1/drift/monitors/digits", viewer, json=MONITOR).status_code == 403
    assert live.api("GET", "/api/v1/drift/monitors").status_code == 401
    missing = live.admin("GET", "/api/v1/drift/monitors/nosuch")
    assert missing.status_code == 404 and error(missing)["code"] == "drift_monitor_not_found"

    # Devices send a summary period ending with the monitor's first window; the south
    # site's inputs have moved.
    profile = ReferenceProfile.model_validate(
        live.admin("GET", "/api/v1/models/digits/versions/1.0.0").json()["reference_profile"]
    )
    north = {}
    south = {}
    for i in range(16):
        site = "north" if i < 8 else "south"
        device_id, credential, _ = live.enroll(f"cam-{i}", site=site)
        (north if site == "north" else south)[device_id] = credential
    window_start = window_floor(datetime.now(UTC), HOUR)
    window_end = window_start + HOUR
    send_period(live, north, profile, window_end)
    send_period(live, south, profile, window_end, shift={"X[20]": 3.0, "X[21]": 3.0})

    # A report on demand, computed from what the devices sent.
    params = {
        "model": "digits",
        "start": window_start.isoformat(),
        "end": (window_end + timedelta(minutes=1)).isoformat(),
    }
    report = live.api("GET", "/api/v1/drift/report", viewer, params=params)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["version"] == "1.0.0"
    assert {s["segment"]: s["devices"] for s in body["segments"]} == {
        "all": 16,
        "site=north": 8,
        "site=south": 8,
    }
    drifted = {(s["segment"], s["feature"]) for s in body["scores"] if s["drifted"]}
    assert ("site=south", "X[20]") in drifted
    assert not {pair for pair in drifted if pair[0] == "site=north"}
    by_hw = live.api(
        "GET",
        "/api/v1/drift/report",
        viewer,
        params=[("model", "digits"), ("last", "2h"), ("segment_by", "hw"), ("segment_by", "site")],
    ).json()
    assert [s["segment"] for s in by_hw["segments"]] == [
        "all",
        "hw=x86_64",
        "site=north",
        "site=south",
    ]
    for query, status, code in [
        ({"model": "nosuch"}, 404, "model_not_found"),
        ({"model": "digits", "version": "9.9.9"}, 404, "version_not_found"),
        ({"model": "digits", "start": params["end"], "end": params["start"]}, 422, None),
        ({"model": "digits", "last": "1h", "start": params["start"]}, 422, None),
        ({"model": "digits", "reference": "window"}, 422, None),
        ({"model": "digits", "last": "soon"}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
    ]:
        answer = live.api("GET", "/api/v1/drift/report", viewer, params=query)
        assert answer.status_code == status, (query, answer.text)
        if code is not None:
            assert error(answer)["code"] == code

    # The look of that window (run here on a clock past its grace, as the server's loop
    # would once it is due) opens alarms on the south site only.
    engine = make_engine(live.settings)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        looks = DriftService(
            lambda: SqlDriftUnitOfWork(sessions, describe_url(engine)),
            clock=lambda: window_end + timedelta(minutes=15),
        )
        assert looks.run_due_looks() == 1
    finally:
        engine.dispose()
    alarms = live.api("GET", "/api/v1/drift/alarms", viewer, params={"state": "open"}).json()
    assert alarms and {a["segment"] for a in alarms} == {"site=south"}
    assert {a["feature"] for a in alarms} >= {"X[20]", "X[21]"}
    status = live.api("GET", "/api/v1/drift/status", viewer, params={"model": "digits"}).json()
    assert status[0]["open_alarms"] == len(alarms)
    assert set(status[0]["looks"][0]["drifted_features"]) >= {"X[20]", "X[21]"}

    first, second = alarms[0]["id"], alarms[1]["id"]
    assert live.api("POST", f"/api/v1/drift/alarms/{first}/ack", viewer).status_code == 403
    acked = live.admin("POST", f"/api/v1/drift/alarms/{first}/ack")
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    again = live.admin("POST", f"/api/v1/drift/alarms/{first}/ack")
    assert again.status_code == 409 and error(again)["code"] == "drift_alarm_state"
    resolved = live.admin("POST", f"/api/v1/drift/alarms/{second}/resolve")
    assert resolved.status_code == 200 and resolved.json()["resolution"] == "manual"
    assert live.admin("POST", f"/api/v1/drift/alarms/{second}/resolve").status_code == 409
    nothing = live.admin("POST", "/api/v1/drift/alarms/da-000000000000/ack")
    assert nothing.status_code == 404 and error(nothing)["code"] == "drift_alarm_not_found"
    assert live.api("GET", f"/api/v1/drift/alarms/{first}", viewer).json()["id"] == first
    assert [
        a["id"]
        for a in live.api(
            "GET", "/api/v1/drift/alarms", viewer, params={"state": "resolved"}
        ).json()
    ] == [second]
    assert (
        live.api("GET", "/api/v1/drift/alarms", viewer, params={"state": "gone"}).status_code == 422
    )

    # Prometheus: alarm counts and scores, with bounded labels.
    metrics = live.api("GET", "/metrics").text
    assert 'edgefleet_drift_alarms{model="digits",state="acknowledged"} 1.0' in metrics
    assert 'edgefleet_drift_alarms{model="digits",state="resolved"} 1.0' in metrics
    assert (
        'edgefleet_drift_features_drifted{model="digits",segment_attribute="site",version="1.0.0"}'
        in metrics
    )
    assert 'edgefleet_drift_score_max{model="digits",statistic="psi",version="1.0.0"}' in metrics
    assert "edgefleet_drift_look_seconds_bucket" in metrics
    assert "edgefleet_drift_looks_total" in metrics
    drift_lines = [line for line in metrics.splitlines() if line.startswith("edgefleet_drift")]
    assert not [line for line in drift_lines if "cam-" in line or "south" in line or "X[" in line]

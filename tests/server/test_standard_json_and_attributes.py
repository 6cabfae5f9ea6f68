"""Issue #24, items 1-4: non-standard JSON is refused naming the field, on the fast path
and the routes alike, and a device cannot set what only an operator sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from edgefleet.config import Settings
from edgefleet.server.app import create_api
from edgefleet.server.jsonbody import StandardJsonRoute
from tests.server.conftest import LiveServer

NOW = "2026-12-05T12:00:00Z"


def raw(live: LiveServer, method: str, path: str, body: str, token: str | None = None) -> Any:
    """Send ``body`` as it is: httpx's own JSON encoder would refuse NaN."""
    return live.api(
        method, path, token, content=body.encode(), headers={"Content-Type": "application/json"}
    )


def problem(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    return str(error["details"]["problems"][0]["location"])


def enrollment(token: str, attributes: str, device_id: str = "poison") -> str:
    return (
        f'{{"device_id": "{device_id}", "enrollment_token": "{token}", "attributes": {attributes}}}'
    )


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"', '"a\\udfffb"']
)
def test_an_enrollment_with_a_non_standard_attribute_is_refused_and_targeting_still_works(
    live: LiveServer, value: str
):
    body = enrollment(live.token(), f'{{"region": "eu", "score": {value}}}')
    assert problem(raw(live, "POST", "/api/v1/enroll", body)) == "body.attributes.score"
    assert live.admin("GET", "/api/v1/devices/poison").status_code == 404
    live.enroll("honest", region="eu")
    for query in ("region:eu", "hw:x86_64", "score:1"):
        listed = live.admin("GET", "/api/v1/devices", params={"query": query})
        assert listed.status_code == 200, (query, listed.text)
    assert [d["device_id"] for d in listed.json()["devices"]] == []
    desired = live.admin("POST", "/api/v1/fleet/desired", json={"query": "region:eu"})
    assert desired.status_code == 200, desired.text
    assert desired.json()["devices"] == 1


def test_a_lone_surrogate_in_an_attribute_name_is_refused(live: LiveServer):
    body = enrollment(live.token(), '{"\\ud800": "x"}')
    response = raw(live, "POST", "/api/v1/enroll", body)
    assert response.status_code == 422, response.text
    assert "surrogate" in response.json()["error"]["message"]


def test_non_finite_numbers_are_refused_everywhere_naming_the_field(live: LiveServer):
    device_id, credential, _ = live.enroll("camera-1")
    base = f"/api/v1/devices/{device_id}"
    # Telemetry and events: the fast path refuses them and the route names the field.
    for value in ("NaN", "Infinity", "1e999"):
        telemetry = f'{{"samples": [{{"at": "{NOW}", "health": {{"cpu_percent": {value}}}}}]}}'
        response = raw(live, "POST", f"{base}/telemetry", telemetry, credential)
        assert problem(response) == "body.samples.0.health.cpu_percent"
        events = (
            f'{{"events": [{{"seq": 1, "reason": "x", "at": "{NOW}", '
            f'"details": {{"p95": [1.0, {value}]}}}}]}}'
        )
        response = raw(live, "POST", f"{base}/events", events, credential)
        assert problem(response).startswith("body.events.0.details.p95")
        # The operator's desired state, typed field and free-form config alike.
        desired = f'{{"model": null, "trial": {{"max_temperature_c": {value}}}}}'
        response = raw(live, "PUT", f"{base}/desired", desired, live.admin_token)
        assert problem(response) == "body.trial.max_temperature_c"
        desired = f'{{"model": null, "config": {{"threshold": {value}}}}}'
        response = raw(live, "PUT", f"{base}/desired", desired, live.admin_token)
        assert problem(response) == "body.config.threshold"
    # A finite value past what any device reports would overflow the fleet's sums.
    huge = {"samples": [{"at": NOW, "health": {"cpu_percent": 1e308}}]}
    response = live.api("POST", f"{base}/telemetry", credential, json=huge)
    assert problem(response) == "body.samples.0.health.cpu_percent"
    # Nothing of the above was stored; what is stored reads back as standard JSON.
    fine = {"samples": [{"at": NOW, "health": {"cpu_percent": 12.5}}]}
    assert live.api("POST", f"{base}/telemetry", credential, json=fine).status_code == 200
    shown = live.admin("GET", base)
    assert shown.status_code == 200, shown.text
    json.loads(shown.text, parse_constant=lambda token: pytest.fail(f"{token} in a response"))
    assert shown.json()["device"]["desired"] is None


def test_every_route_reads_its_body_as_standard_json(tmp_path: Path):
    app = create_api(Settings(home=tmp_path, database_url_override=None))
    routes = [c.route for c in iter_route_contexts(app.routes) if isinstance(c.route, APIRoute)]
    assert routes
    assert [r.path for r in routes if not isinstance(r, StandardJsonRoute)] == []


def test_a_device_cannot_choose_its_group_or_change_its_identity(live: LiveServer):
    lab = live.token(group="lab")
    body = {
        "device_id": "climber",
        "enrollment_token": lab,
        "attributes": {"hw": "rev1", "group": "production"},
    }
    refused = live.api("POST", "/api/v1/enroll", json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "attribute_not_allowed"
    assert refused.json()["error"]["details"] == {"attributes": ["group"]}
    # Without a group the token's wins; the refused attempt used no enrollment.
    del body["attributes"]["group"]
    enrolled = live.api("POST", "/api/v1/enroll", json=body)
    assert enrolled.status_code == 201, enrolled.text
    credential = enrolled.json()["credential"]
    reported = "/api/v1/devices/climber/reported"

    def device() -> dict[str, Any]:
        shown = live.admin("GET", "/api/v1/devices/climber")
        assert shown.status_code == 200, shown.text
        return dict(shown.json()["device"])

    assert device()["group"] == "lab"
    for attributes, refused_names in (
        ({"group": "production"}, ["group"]),
        ({"cohort": "canary"}, ["cohort"]),
        ({"hw": "rev2"}, ["hw"]),
        ({"hardware": "rev2", "region": "us"}, ["hardware"]),
    ):
        report = {"agent_state": "idle", "attributes": attributes}
        response = live.api("PUT", reported, credential, json=report)
        assert response.status_code == 403, (attributes, response.text)
        assert response.json()["error"]["details"] == {"attributes": refused_names}
    after = device()
    assert (after["group"], after["hardware"]) == ("lab", "rev1")
    assert "region" not in after["attributes"] and after["agent_state"] is None
    # Facts: repeated identity and anything else a device states are its to report.
    report = {"agent_state": "idle", "attributes": {"hw": "rev1", "region": "eu-west"}}
    assert live.api("PUT", reported, credential, json=report).status_code == 200
    assert device()["attributes"]["region"] == "eu-west"
    # The operator sets labels and identity, and removes attributes.
    patch = {"attributes": {"group": "production", "cohort": "early", "hw": "rev2", "region": None}}
    changed = live.admin("PATCH", "/api/v1/devices/climber/attributes", json=patch)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "device_id": "climber",
        "group": "production",
        "attributes": {"hw": "rev2", "cohort": "early"},
    }
    after = device()
    assert (after["group"], after["hardware"]) == ("production", "rev2")
    listed = live.admin("GET", "/api/v1/devices", params={"query": "group:production AND hw:rev2"})
    assert [d["device_id"] for d in listed.json()["devices"]] == ["climber"]
    audit = live.admin("GET", "/api/v1/audit").json()
    entry = next(e for e in audit["entries"] if e["action"] == "device.set_attributes")
    assert entry["before"]["group"] == "lab" and entry["after"]["group"] == "production"
    # A viewer may not, nor may a device.
    viewer = live.token("api_key", role="viewer")
    path = "/api/v1/devices/climber/attributes"
    assert live.api("PATCH", path, viewer, json=patch).status_code == 403
    assert live.api("PATCH", path, credential, json=patch).status_code == 401


def test_a_token_without_a_group_does_not_let_the_device_choose_one(live: LiveServer):
    body = {
        "device_id": "loner",
        "enrollment_token": live.token(),
        "attributes": {"group": "production", "cohort": "canary"},
    }
    refused = live.api("POST", "/api/v1/enroll", json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["details"] == {"attributes": ["cohort", "group"]}

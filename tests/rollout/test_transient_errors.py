"""A busy database while the controller resolves a release is no verdict on it."""

import pytest

from edgefleet.server.context import ServerContext
from edgefleet.store.errors import StoreUnavailableError
from tests.rollout.test_rollout_api import DELIVERY_GATES, Fleet, install_baseline, run_until
from tests.server.conftest import LiveServer


@pytest.fixture
def resolves():
    """``busy``: how many more lookups of 1.1.0 find the database busy."""
    return {"busy": 0}


@pytest.fixture
def settings(settings, monkeypatch, resolves):
    """The server's release lookups for 1.1.0 find the database busy a few times."""
    original = ServerContext.resolve_model

    def busy_at_first(self, model, version, hardware):
        if version == "1.1.0" and resolves["busy"] > 0:
            resolves["busy"] -= 1
            raise StoreUnavailableError("the database is locked by another process")
        return original(self, model, version, hardware)

    monkeypatch.setattr(ServerContext, "resolve_model", busy_at_first)
    return settings


@pytest.mark.parametrize("backend", ["sqlite"])
def test_devices_assigned_while_the_database_is_busy_are_assigned_later(live: LiveServer, resolves):
    fleet = Fleet(live, 4, lambda device, version: "commit")
    install_baseline(live, fleet)
    resolves["busy"] = 1
    body = {"model": "digits", "version": "1.1.0", "target": "region:eu-west"}
    refused = live.admin("POST", "/api/v1/rollouts", json=body)  # checked as it is made
    assert refused.status_code == 503, refused.text  # busy: try again, not "invalid"
    assert refused.json()["error"]["code"] == "store_unavailable"
    draft = live.admin(
        "POST",
        "/api/v1/rollouts",
        params={"start": "false"},
        json={**body, "waves": [{"percent": 100, "bake_s": 0}], "gates": DELIVERY_GATES},
    )
    assert draft.status_code == 201, draft.text
    rollout = draft.json()
    resolves["busy"] = 3  # the controller's lookups as it assigns
    started = live.admin("POST", f"/api/v1/rollouts/{rollout['id']}/start")
    assert started.status_code == 200, started.text
    view = run_until(live, fleet, rollout["id"], lambda v: v["state"] != "running")
    assert resolves["busy"] == 0
    assert view["state"] == "succeeded"
    assert view["devices"] == {"committed": 4}  # none marked failed for a busy database

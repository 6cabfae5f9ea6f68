"""The device fast path's 304s from memory (store/checkin.py ``CheckinCache``), over
real HTTP on both backends: what this server changes is answered at once."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import LiveServer


def _cache_lookups(live: LiveServer) -> dict[str, float]:
    text = live.http.get(f"{live.url}/metrics").text
    return {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "edgefleet_checkin_cache_lookups"
        for sample in family.samples
    }


@pytest.fixture
def settings(settings):
    """Check-in rows in memory would be an hour late but for this server's own writes."""
    return settings.model_copy(update={"checkin_cache_refresh_s": 3600})


def test_not_modified_comes_from_memory_and_a_change_is_seen_at_once(live: LiveServer):
    device_id, credential, _ = live.enroll()
    path = f"/api/v1/devices/{device_id}/desired"
    etag = live.api("GET", path, credential).headers["etag"]
    for _ in range(3):
        answer = live.api("GET", path, credential, headers={"If-None-Match": etag})
        assert answer.status_code == 304
    lookups = _cache_lookups(live)
    if live.settings.database_url.startswith("postgresql"):
        assert lookups == {}  # no change log there: every check-in reads the row
    else:
        assert lookups["memory"] >= 2
    # A change this server makes is answered at the very next check-in.
    live.admin("PUT", path, json={"model": "digits", "version": "1.1.0"})
    changed = live.api("GET", path, credential, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    new_etag = changed.headers["etag"]
    assert new_etag != etag
    answer = live.api("GET", path, credential, headers={"If-None-Match": new_etag})
    assert answer.status_code == 304
    # A credential replaced by re-enrollment is refused at once, on the fast path too.
    assert live.admin("POST", f"/api/v1/devices/{device_id}/reenroll").status_code < 300
    _, replacement, _ = live.enroll(device_id)
    refused = live.api("GET", path, credential, headers={"If-None-Match": new_etag})
    assert refused.status_code == 401
    answer = live.api("GET", path, replacement, headers={"If-None-Match": new_etag})
    assert answer.status_code == 304


def test_the_change_log_is_pruned_with_the_cache_turned_off_too(tmp_path, monkeypatch):
    # The triggers log every change whether or not this server reads the log.
    from sqlalchemy import func, select, update

    from edgefleet.config import Settings
    from edgefleet.server import context
    from edgefleet.store.tables import CheckinChangeRow, DeviceRow
    from tests.store.test_telemetry_writer import _device

    settings = Settings(home=tmp_path, database_url_override=None, checkin_cache_refresh_s=0)
    ctx = context.ServerContext.open(settings)
    try:
        assert ctx.checkin_cache is None
        pk = _device(ctx.engine, "cam-a")
        for n in range(5):
            with ctx.engine.begin() as connection:
                connection.execute(
                    update(DeviceRow).where(DeviceRow.id == pk).values(desired_etag=f"e{n}")
                )
        monkeypatch.setattr(context, "CHECKIN_CHANGES_KEPT", 2)
        ctx.prune_checkin_changes()
        with ctx.engine.connect() as connection:
            count = select(func.count()).select_from(CheckinChangeRow)
            assert connection.execute(count).scalar_one() == 2
    finally:
        ctx.close()

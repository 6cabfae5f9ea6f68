"""Nothing an operator asks for holds up the event loop that answers the devices."""

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.server.conftest import LiveServer


@pytest.fixture
def settings(settings):
    """Writers wait up to 2 s for SQLite's lock (the tests' default is 0.2 s)."""
    return settings.model_copy(update={"db_busy_timeout_s": 2.0})


@pytest.mark.parametrize("backend", ["sqlite"])
def test_operators_waiting_for_the_write_lock_do_not_hold_up_check_ins(live: LiveServer):
    """Authenticating an operator reads without the write lock and off the event loop:
    while another process holds SQLite's write lock, operators' requests wait on worker
    threads and the devices' check-ins are answered meanwhile."""
    device_id, credential, _ = live.enroll()
    desired = f"/api/v1/devices/{device_id}/desired"
    etag = live.api("GET", desired, credential).headers["etag"]
    database = sqlite3.connect(live.settings.home / "edgefleet.db", isolation_level=None)
    database.execute("BEGIN IMMEDIATE")  # another process's long write
    try:
        with ThreadPoolExecutor(4) as pool:
            writes = [
                pool.submit(live.admin, "POST", "/api/v1/tokens", json={"kind": "enrollment"})
                for _ in range(4)
            ]
            time.sleep(0.3)  # the operators' requests are in the server, waiting
            started = time.monotonic()
            polled = live.api("GET", desired, credential, headers={"If-None-Match": etag})
            took = time.monotonic() - started
            database.execute("COMMIT")
            answers = [w.result(timeout=30) for w in writes]
    finally:
        if database.in_transaction:
            database.execute("ROLLBACK")
        database.close()
    assert polled.status_code == 304
    assert took < 1.0, f"a check-in waited {took:.1f} s behind operators' requests"
    assert [a.status_code for a in answers] == [201] * 4

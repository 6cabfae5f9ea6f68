"""The agent outlives whatever the server or its disk does to one update: each failure
ends in a reported FAILED with a reason code, the previous model serving throughout,
and the agent's loop checking in on.

The real agent runs its real loop against the real server, with its TUF traffic going
through ``FaultyTransport`` (tests/signing/faults.py), which forwards it unless the case
sets a fault.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import patch

import httpx
import pytest
from tuf.ngclient import Updater

from edgefleet.agent.shell import Agent
from edgefleet.agent.statemachine import SETTLED, OperatorCleared, State
from edgefleet.config import Settings
from edgefleet.signing.publish import open_repository
from tests.agent.test_agent_e2e import desired, make_agent, server_view
from tests.server.conftest import LiveServer, serve
from tests.signing import faults

UPDATE = "digits@1.1.0"
ARTIFACT = "/tuf/targets/models/digits/1.1.0/"
METADATA = "/tuf/metadata/"
TIMESTAMP = METADATA + "timestamp.json"
STATUSES = [400, 401, 403, 404, 416, 429, 500, 502, 503]


@pytest.fixture(scope="module")
def live(tmp_path_factory, example_bundles) -> Iterator[LiveServer]:
    # One server for the module (one per case would cost a second each), as
    # tests/server/conftest.py's ``live`` on SQLite.
    home = tmp_path_factory.mktemp("update-faults") / "home"
    settings = Settings(home=home, database_url_override=None, db_busy_timeout_s=0.2)
    with serve(settings) as (url, _), httpx.Client(timeout=30) as http:
        server = LiveServer(url, settings, (home / "admin.token").read_text().strip(), http)
        for version in ("1.0.0", "1.1.0"):
            response = server.upload(example_bundles[version])
            assert response.status_code == 201, response.text
        yield server


class Device:
    """An enrolled agent serving 1.0.0, asked for 1.1.0, its TUF traffic through
    ``transport``."""

    def __init__(self, live: LiveServer, root: Path, name: str) -> None:
        self.live = live
        self.name = name
        self.agent = make_agent(live, root, name=name)
        self.transport = faults.FaultyTransport(httpx.HTTPTransport())
        delivery = self.agent._delivery
        assert delivery is not None
        genuine = delivery.http
        delivery.http = httpx.Client(
            transport=self.transport, headers=genuine.headers, timeout=genuine.timeout
        )
        genuine.close()
        desired(live, name, "1.0.0", min_inferences=1)
        self.agent.check_in_once()
        assert self.serves_1_0_0
        desired(live, name, "1.1.0")

    @property
    def serves_1_0_0(self) -> bool:
        active = self.agent.state.active_content
        return (
            self.agent.state.state in SETTLED
            and active is not None
            and active.version == "1.0.0"
            and self.agent.runtime.active is not None
            and self.agent.runtime.active.version == "1.0.0"
        )


@pytest.fixture(scope="module")
def devices() -> list[Device]:
    """The devices made so far; the last one is shared by the cases."""
    return []


@pytest.fixture
def device(live, devices, tmp_path_factory) -> Iterator[Device]:
    """The module's device (installing 1.0.0 takes longer than a case), each case
    starting from 1.0.0 serving with 1.1.0 allowed again; a fresh one if an earlier
    case left it otherwise."""
    if not devices or not devices[-1].serves_1_0_0:
        name = f"faults-{len(devices)}"
        devices.append(Device(live, tmp_path_factory.mktemp(name), name))
    found = devices[-1]
    found.agent.handle(OperatorCleared(UPDATE))
    yield found
    found.transport.faults.clear()


class StopLoopError(Exception):
    pass


def run_loop(agent: Agent, checkins: int) -> int:
    """Run the agent's loop (``run_forever``) until it has checked in ``checkins``
    times; an exception escaping a check-in ends it and the test. Returns the check-ins
    done."""
    done = []
    check_in, sleep = agent.check_in_once, agent.sleep

    def counted() -> bool:
        try:
            return check_in()
        finally:
            done.append(True)

    def stop_after(seconds: float) -> None:
        if len(done) >= checkins:
            raise StopLoopError
        sleep(seconds)

    with (
        patch.object(agent, "check_in_once", counted),
        patch.object(agent, "sleep", stop_after),
        pytest.raises(StopLoopError),
    ):
        agent.run_forever()
    return len(done)


def assert_survived(live: LiveServer, device: Device, reason: str) -> None:
    """Run two check-ins of the loop: the first meets the fault, the second must
    happen."""
    agent = device.agent
    seq = agent.state.seq
    assert run_loop(agent, checkins=2) == 2
    assert agent.state.state is State.FAILED
    assert agent.state.last_error is not None and agent.state.last_error["reason"] == reason
    assert device.serves_1_0_0
    view = server_view(live, device.name)
    reported = [(e["to_state"], e["reason"]) for e in view["events"] if e["seq"] > seq]
    assert reported == [("DOWNLOADING", "new_desired"), ("FAILED", reason)]
    assert view["device"]["agent_state"] == "FAILED" and view["device"]["version"] == "1.0.0"


def at(where: str, fault: faults.Fault) -> Callable[[Device, pytest.MonkeyPatch], None]:
    return lambda device, monkeypatch: device.transport.faults.update({where: fault})


def full_disk_under_downloads(device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "open", faults.no_space_for_partials(4096))


def full_disk_under_metadata(device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    # A new timestamp, so that the refresh has something to write down.
    repository = open_repository(device.live.settings)
    device.transport.faults[TIMESTAMP] = faults.serve(faults.newer_timestamp(repository))
    monkeypatch.setattr(Updater, "_persist_file", faults.enospc)


CASES = [
    *(
        pytest.param(at(ARTIFACT, faults.status(c)), "network", id=f"artifact-{c}")
        for c in STATUSES
    ),
    *(
        pytest.param(at(TIMESTAMP, faults.status(c)), "network", id=f"metadata-{c}")
        for c in STATUSES
    ),
    pytest.param(at(ARTIFACT, faults.cut_at(5000)), "network", id="artifact-cut-short"),
    pytest.param(at(TIMESTAMP, faults.cut_at(100)), "network", id="metadata-cut-short"),
    pytest.param(at(ARTIFACT, faults.short_body(100)), "hash_mismatch", id="artifact-body-short"),
    pytest.param(at(ARTIFACT, faults.content_range(first=100)), "network", id="range-elsewhere"),
    pytest.param(at(ARTIFACT, faults.content_range(extra_total=1)), "network", id="range-length"),
    pytest.param(full_disk_under_downloads, "storage", id="full-disk-download"),
    pytest.param(full_disk_under_metadata, "storage", id="full-disk-metadata"),
]


@pytest.mark.parametrize(("arrange", "reason"), CASES)
def test_the_agent_survives_a_failed_update(live, device, monkeypatch, arrange, reason):
    arrange(device, monkeypatch)
    assert_survived(live, device, reason)


def test_the_agent_survives_a_target_signed_without_sha256(live, tmp_path):
    # Its own device: the metadata it trusts moves on past the server's.
    device = Device(live, tmp_path, "faults-sha512")
    signed = faults.without_sha256(open_repository(live.settings), "models/digits/1.1.0/")
    for name, body in signed.items():
        device.transport.faults[METADATA + name] = faults.serve(body)
    assert_survived(live, device, "missing_sha256")
    assert not [path for path, _ in device.transport.requests if path.startswith(ARTIFACT)]

"""What the agent sends of its queued telemetry: bodies within a byte budget, and a
sample the server can never take dropped instead of holding back the rest."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.agent import checkin, shell
from edgefleet.agent.checkin import SAMPLES_PER_REQUEST, fewer_samples, samples_within
from edgefleet.agent.config import AgentConfig
from edgefleet.agent.link import ServerError


def test_samples_within_fills_the_budget_oldest_first():
    assert samples_within([100, 100, 100], 250) == 2
    assert samples_within([100, 100, 100], 300) == 3
    assert samples_within([], 300) == 0
    # One sample over the budget still goes, alone.
    assert samples_within([900, 10], 300) == 1
    assert samples_within([1] * (SAMPLES_PER_REQUEST + 5), 10**9) == SAMPLES_PER_REQUEST
    assert [fewer_samples(n) for n in (1000, 3, 2, 1)] == [500, 1, 1, 0]


class Link:
    """Takes telemetry bodies up to ``cap`` bytes of samples, refuses larger with 413."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.bodies: list[list[dict[str, Any]]] = []

    def report(self, reported: dict[str, Any]) -> None:
        return None

    def telemetry(self, samples: list[dict[str, Any]]) -> None:
        import json

        if len(json.dumps(samples)) > self.cap:
            raise ServerError("POST telemetry answered 413: too large", retryable=False, status=413)
        self.bodies.append(samples)


def agent_with(tmp_path, samples: list[dict[str, Any]], link: Link) -> shell.Agent:
    config = AgentConfig(
        server="http://fleet.invalid", device_id="d", state_dir=tmp_path, serve_port=None
    )
    agent = shell.Agent(config)
    agent.link = link  # type: ignore[assignment]
    for sample in samples:
        agent.outbox.add_telemetry(sample)
    return agent


def sample(i: int, pad: int = 0) -> dict[str, Any]:
    return {"at": f"2026-12-06T00:00:{i:02d}Z", "pad": "x" * pad}


def test_queued_telemetry_goes_in_bodies_within_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(shell, "samples_within", lambda sizes: checkin.samples_within(sizes, 1_000))
    link = Link(cap=10_000)
    agent = agent_with(tmp_path, [sample(i, pad=300) for i in range(5)], link)
    agent.flush()
    agent.flush()
    agent.flush()
    assert [len(b) for b in link.bodies] == [2, 2, 1]
    assert agent.outbox.telemetry() == []


def test_a_sample_the_server_refuses_as_too_large_is_dropped_and_the_rest_go(tmp_path):
    link = Link(cap=2_000)
    agent = agent_with(tmp_path, [sample(0, pad=5_000), sample(1), sample(2)], link)
    agent.flush()  # all three refused, then the big one alone: dropped
    agent.flush()
    assert link.bodies == [[sample(1), sample(2)]]
    assert agent.outbox.telemetry() == []


def test_a_server_with_a_smaller_cap_gets_smaller_bodies(tmp_path):
    link = Link(cap=150)
    agent = agent_with(tmp_path, [sample(i) for i in range(4)], link)
    agent.flush()
    agent.flush()
    assert [len(b) for b in link.bodies] == [2, 2]


def test_telemetry_refused_for_another_reason_stays_queued(tmp_path):
    link = Link(cap=10_000)

    def unavailable(samples):
        raise ServerError("POST telemetry answered 503", retryable=True, status=503)

    link.telemetry = unavailable  # type: ignore[method-assign]
    agent = agent_with(tmp_path, [sample(0), sample(1)], link)
    with pytest.raises(ServerError):
        agent.flush()
    assert len(agent.outbox.telemetry()) == 2

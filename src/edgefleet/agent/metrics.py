"""The agent's own Prometheus metrics, next to the runtime's on the local ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgefleet.agent.statemachine import State

if TYPE_CHECKING:
    from edgefleet.agent.shell import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.agent.state
        gauge = GaugeMetricFamily(
            "edgefleet_agent_state", "1 for the update state the agent is in", labels=["state"]
        )
        for value in State:
            gauge.add_metric([value.value], 1.0 if state.state is value else 0.0)
        yield gauge
        downloaded = CounterMetricFamily(
            "edgefleet_agent_bytes_downloaded", "Model bytes downloaded"
        )
        downloaded.add_metric([], self.agent.bytes_downloaded)
        yield downloaded
        updates = CounterMetricFamily(
            "edgefleet_agent_updates", "Updates that ended, by outcome", labels=["outcome"]
        )
        seconds = CounterMetricFamily(
            "edgefleet_agent_update_seconds",
            "Time spent in updates that ended, by outcome",
            labels=["outcome"],
        )
        for outcome, (count, total) in sorted(self.agent.update_outcomes.items()):
            updates.add_metric([outcome], count)
            seconds.add_metric([outcome], total)
        yield updates
        yield seconds
        refused = GaugeMetricFamily(
            "edgefleet_agent_refused_versions", "Versions this device will not retry"
        )
        refused.add_metric([], len(state.refused))
        yield refused

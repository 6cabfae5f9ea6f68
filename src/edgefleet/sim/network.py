"""Network profiles of virtual devices: latency, jitter, loss, bandwidth and outages.

A ``Link`` is one device's network, deterministic for a seed: how long a request waits,
whether it is lost, how long a transfer of n bytes takes at the profile's bandwidth,
and whether the device is inside one of its disconnect periods (time is the
simulation's own, in seconds since the start)::

    link = Link(PROFILES["cellular-2g"], seed=7)
    link.connected(120.0), link.request_delay(), link.transfer_seconds(80 * 2**20)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    latency_s: float
    jitter_s: float
    loss: float  # share of requests that fail (connection reset)
    bandwidth_bps: float  # bytes per second
    #: mean seconds between outages and mean outage length (0: never)
    outage_every_s: float = 0.0
    outage_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.loss < 1:
            raise ValueError(f"{self.name}: loss is a share in [0, 1)")
        if self.bandwidth_bps <= 0 or self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError(f"{self.name}: bandwidth must be positive, latencies not negative")


PROFILES: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        NetworkProfile("ethernet", 0.002, 0.001, 0.0, 50e6),
        NetworkProfile("wifi", 0.010, 0.005, 0.002, 5e6),
        NetworkProfile("cellular-4g", 0.050, 0.020, 0.01, 1.5e6),
        NetworkProfile("cellular-2g", 0.300, 0.150, 0.05, 30e3, 120.0, 20.0),
    )
}


@dataclass
class Link:
    """One device's network under a profile."""

    profile: NetworkProfile
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _outages: list[tuple[float, float]] = field(init=False, repr=False, default_factory=list)
    _planned_until: float = field(init=False, repr=False, default=0.0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def request_delay(self) -> float:
        """Seconds one request waits on the network (both ways)."""
        p = self.profile
        return max(0.0, 2 * p.latency_s + self._rng.gauss(0.0, p.jitter_s))

    def lost(self) -> bool:
        """Whether this request is lost (the connection resets)."""
        return self._rng.random() < self.profile.loss

    def transfer_seconds(self, size: int) -> float:
        """Seconds to move ``size`` bytes at the profile's bandwidth."""
        return size / self.profile.bandwidth_bps

    def connected(self, now: float) -> bool:
        """Whether the device has a network at simulation time ``now``."""
        if not self.profile.outage_every_s:
            return True
        self._plan(now)
        return not any(start <= now < end for start, end in self._outages)

    def next_outage(self, now: float) -> tuple[float, float] | None:
        """The outage in progress or next after ``now``, if the profile has any."""
        if not self.profile.outage_every_s:
            return None
        self._plan(now + 10 * self.profile.outage_every_s)
        return next(((s, e) for s, e in self._outages if e > now), None)

    def _plan(self, until: float) -> None:
        # Outages as a renewal process, drawn once and kept, so answers never change.
        p = self.profile
        while self._planned_until <= until:
            start = self._planned_until + self._rng.expovariate(1.0 / p.outage_every_s)
            end = start + self._rng.expovariate(1.0 / p.outage_s)
            self._outages.append((start, end))
            self._planned_until = end

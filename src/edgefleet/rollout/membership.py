"""A rollout's target as last read, reused between ticks.

Reading a fleet-wide target is the largest read of a tick, so on a server the devices a
wave draws from, as read, serve the ticks of ``refresh_s`` (``rollout_membership_refresh_s``)
and are read again when the wave changes: a device that joins the target waits that
long for its place. The service checks devices against the target again, as it is then,
when it assigns them. Each read is put in the rollout's order once, not at every tick::

    membership = Membership(refresh_s=10.0)
    read = membership.read(rollout_id, wave, now, lambda: repository.target_devices(...))
    read.order  # device ids in the rollout's order
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from edgefleet.rollout.ports import TargetDevice
from edgefleet.rollout.waves import Ranking, stratified


@dataclass(frozen=True)
class TargetRead:
    """The devices a wave draws from, as read at ``read_at``, in the rollout's order."""

    wave: int
    read_at: datetime
    devices: list[TargetDevice]
    order: list[str]
    by_id: dict[str, TargetDevice]


class Membership:
    """Target reads per rollout (one process's; not shared between replicas)."""

    def __init__(self, refresh_s: float = 0.0) -> None:
        self.refresh_s = refresh_s
        self._reads: dict[str, TargetRead] = {}
        self._ranking = Ranking()

    def read(
        self,
        rollout_id: str,
        wave: int,
        now: datetime,
        read_devices: Callable[[], list[TargetDevice]],
    ) -> TargetRead:
        """The devices wave ``wave`` draws from: as last read while that is fresh, else
        as ``read_devices()`` reads them now."""
        kept = self._reads.get(rollout_id)
        if (
            kept is not None
            and kept.wave == wave
            and 0 <= (now - kept.read_at).total_seconds() < self.refresh_s
        ):
            return kept
        devices = read_devices()
        by_id = {d.device_id: d for d in devices}
        order = stratified(
            rollout_id,
            self._ranking.order(rollout_id, by_id),
            {d.device_id: d.hardware for d in devices},
        )
        self._reads[rollout_id] = fresh = TargetRead(wave, now, devices, order, by_id)
        return fresh

    def drop(self, rollout_id: str) -> None:
        """Read the rollout's target again at its next tick."""
        self._reads.pop(rollout_id, None)

    def forget(self, rollout_id: str) -> None:
        """Drop everything kept for a rollout that stopped running."""
        self._reads.pop(rollout_id, None)
        self._ranking.forget(rollout_id)

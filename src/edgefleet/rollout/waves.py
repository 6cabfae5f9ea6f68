"""Wave membership (pure).

Devices are ordered by a hash of the rollout's salt and the device id, so the order is
fixed for a rollout, differs between rollouts, and a device that joins the target late
takes the place its hash gives it. A percentage wave holds the first ``ceil(p% of N)``
devices in that order, so the 5% wave contains the 1% wave; devices already assigned
stay assigned whatever happens to N. A cohort wave holds the target's devices that
match its query or an earlier wave's::

    order = ranked(salt, ["cam-1", "cam-2", "cam-3"])
    members(order, 50.0)  # the first two of the order
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence


def rank(salt: str, device_id: str) -> int:
    """The device's place key in a rollout (64 bits of SHA-256)."""
    digest = hashlib.sha256(f"{salt}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ranked(salt: str, device_ids: Iterable[str]) -> list[str]:
    """Device ids in the rollout's order."""
    return sorted(device_ids, key=lambda device_id: (rank(salt, device_id), device_id))


def wave_size(percent: float, total: int) -> int:
    """Devices a cumulative ``percent`` wave holds out of ``total``: at least one when
    there is any device, so a 1% canary of a small fleet is not empty."""
    if total <= 0:
        return 0
    return min(total, max(1, math.ceil(percent * total / 100 - 1e-9)))


def members(order: Sequence[str], percent: float) -> list[str]:
    """The devices of a cumulative ``percent`` wave, from the rollout's order."""
    return list(order[: wave_size(percent, len(order))])

"""Wave membership (pure): which devices of the target each wave holds.

Devices are ordered by a hash of the rollout's salt and the device id, so the order is
fixed for a rollout, differs between rollouts, and a device that joins the target late
takes the place its hash gives it; the order is then interleaved by hardware kind
(``stratified``), so each wave holds every kind in proportion. A percentage wave
holds the first ``ceil(p% of N)`` devices in that order, so the 5% wave contains the
1% wave; devices already assigned stay assigned whatever happens to N. A cohort wave
holds the target's devices that match its query or an earlier wave's (``selection``)::

    order = ranked(salt, ["cam-1", "cam-2", "cam-3"])
    members(order, 50.0)  # the first two of the order
    selection(spec, 1)  # the query wave 1 draws its devices from
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

from edgefleet.fleet.query import Node, parse_query
from edgefleet.rollout.policy import RolloutSpec


def rank(salt: str, device_id: str) -> int:
    """The device's place key in a rollout (64 bits of SHA-256)."""
    digest = hashlib.sha256(f"{salt}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ranked(salt: str, device_ids: Iterable[str]) -> list[str]:
    """Device ids in the rollout's order."""
    return sorted(device_ids, key=lambda device_id: (rank(salt, device_id), device_id))


def stratified(salt: str, order: Sequence[str], kinds: Mapping[str, str | None]) -> list[str]:
    """``order`` (the rollout's hash order) interleaved by hardware kind (``kinds``: device
    id -> kind), so that every prefix holds each kind in proportion to its share of the
    target, within one device: the ``j``-th of a kind's ``n`` devices (in hash order)
    takes the place ``(j + u) / n``, ``u`` in [0, 1) drawn from the rollout's salt and
    the kind (systematic sampling from a random start). A canary of 10 devices from a
    fleet that is 40% cameras then holds 4 cameras, not anything from 0 to 10, and each
    kind's gate segment gets its devices from the first wave. One kind: ``order``."""
    by_kind: dict[str | None, list[str]] = {}
    for device_id in order:
        by_kind.setdefault(kinds.get(device_id), []).append(device_id)
    if len(by_kind) < 2:
        return list(order)
    place = {device_id: index for index, device_id in enumerate(order)}
    keyed = []
    for kind, ids in by_kind.items():
        start = rank(salt, f"hardware\x00{kind}") / 2**64
        keyed += [((j + start) / len(ids), place[d], d) for j, d in enumerate(ids)]
    return [device_id for *_, device_id in sorted(keyed)]


def wave_size(percent: float, total: int) -> int:
    """Devices a cumulative ``percent`` wave holds out of ``total``: at least one when
    there is any device, so a 1% canary of a small fleet is not empty."""
    if total <= 0:
        return 0
    return min(total, max(1, math.ceil(percent * total / 100 - 1e-9)))


def members(order: Sequence[str], percent: float | None) -> list[str]:
    """The devices of a wave, from the rollout's order of the devices it draws from: the
    first of them for a cumulative ``percent`` wave, all of them for a cohort wave
    (``None``; its ``selection`` already holds only its devices)."""
    if percent is None:
        return list(order)
    return list(order[: wave_size(percent, len(order))])


def selection(spec: RolloutSpec, wave: int) -> Node:
    """The query of the devices wave ``wave`` draws from: the target, or for cohort
    waves the target within the cohorts of the waves so far."""
    if spec.waves[wave].percent is not None:
        return parse_query(spec.target)
    cohorts = " OR ".join(f"({w.cohort})" for w in spec.waves[: wave + 1])
    return parse_query(f"({spec.target}) AND ({cohorts})")


class Ranking:
    """Rollouts' orders of devices, hashing each device once per rollout (sorting the
    target of a large rollout at every tick spent a third of its time on the keys)."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, tuple[int, str]]] = {}

    def order(self, salt: str, device_ids: Iterable[str]) -> list[str]:
        """``device_ids`` in the order of the rollout ``salt`` (as ``ranked``)."""
        keys = self._keys.setdefault(salt, {})
        ids = list(device_ids)
        for device_id in ids:
            if device_id not in keys:
                keys[device_id] = (rank(salt, device_id), device_id)
        return sorted(ids, key=keys.__getitem__)

    def forget(self, salt: str) -> None:
        """Drop what is kept for the rollout ``salt``."""
        self._keys.pop(salt, None)

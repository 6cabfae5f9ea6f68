"""Sizing a canary for the regression it must catch (pure): ``detect`` in a rollout.

``detect: {latency_p95: 1.2}`` says the rollout must be able to catch a candidate 1.2
times the baseline on that metric. Before the rollout starts, the baseline's devices
show how much the metric varies from device to device (within each hardware kind), and
that spread sets how many candidate devices the gate's confidence sequence needs before
an effect of that size lies credibly beyond the gate's own ``max_ratio``: the smallest
``n`` whose minimum detectable effect (``gates._mde``) is below the ratio to detect by
enough that the gate fails such a candidate with probability ``POWER`` (0.8).
The estimate is for a regression on the whole fleet, tested at the fleet's share of
alpha (and half of it on latency, which the trials' paired probes share); a regression
on one hardware kind needs that many of that kind. The paired probes usually decide
sooner: this is the comparison of per-device means, the one that needs the devices::

    sizing = size_canary(gate, 1.3, {"x86_64": [12.0, 13.1, 11.8, ...]}, 0.05, target=200)
    sizing.devices  # candidate devices needed (None: more than the target holds)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from edgefleet.rollout.gates import MIN_DEVICES_TO_FAIL, PAIRED_MEASURES, segment_alpha
from edgefleet.rollout.policy import GateSpec, RolloutSpec
from edgefleet.rollout.stats import normal_mixture_radius
from edgefleet.rollout.waves import wave_size

#: Baseline devices below which the spread is not worth an estimate.
MIN_BASELINE_DEVICES = 5
#: The chance a canary of the estimated size fails a candidate at the ``detect`` ratio.
POWER = 0.8
Z_POWER = NormalDist().inv_cdf(POWER)


@dataclass(frozen=True)
class Sizing:
    """The canary a ``detect`` entry asks for, and what it was estimated from."""

    metric: str
    ratio: float
    limit: float
    baseline_devices: int
    #: spread of the metric between devices, within kinds, over its mean
    spread: float | None = None
    #: candidate devices needed (``None``: more than the target holds, or no estimate)
    devices: int | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "ratio": self.ratio,
            "limit": self.limit,
            "baseline_devices": self.baseline_devices,
            "spread": None if self.spread is None else round(self.spread, 4),
            "devices": self.devices,
            "note": self.note,
        }


def size_canary(
    gate: GateSpec,
    ratio: float,
    baseline: Mapping[str, Sequence[float]],
    alpha: float,
    *,
    target: int,
    attribute_segments: int = 0,
) -> Sizing:
    """Candidate devices the ``max_ratio`` ``gate`` needs to fail a candidate ``ratio``
    times the baseline, from the baseline's per-device values by hardware kind
    (``attribute_segments``: the attribute values the gates also test, ``segment_by``)."""
    metric, limit = gate.metric.value, gate.limit
    values = [v for vs in baseline.values() for v in vs]
    n_b = len(values)
    if n_b < MIN_BASELINE_DEVICES:
        return Sizing(metric, ratio, limit, n_b, note="too few baseline devices to estimate")
    mean = sum(values) / n_b
    pooled = [(len(vs), _variance(vs)) for vs in baseline.values() if len(vs) > 1]
    dof = sum(n - 1 for n, _ in pooled)
    if mean <= 0 or not dof:
        return Sizing(metric, ratio, limit, n_b, note="the baseline's mean or spread is 0")
    variance = sum((n - 1) * v for n, v in pooled) / dof
    spread = math.sqrt(variance) / mean
    level = segment_alpha(alpha, len(baseline), attribute_segments)
    if gate.metric in PAIRED_MEASURES:
        level /= 2
    margin, effect = (limit - 1.0) * mean, (ratio - 1.0) * mean
    for n in range(MIN_DEVICES_TO_FAIL, max(target, MIN_DEVICES_TO_FAIL) + 1):
        # A candidate ``ratio`` times as costly spreads ``ratio`` times as widely.
        v = variance * ratio**2 / n + variance / n_b
        radius = normal_mixture_radius(v, level, max(margin, 1e-6) ** 2)
        # At the minimum detectable effect the estimate falls beyond it half the time;
        # POWER of the time needs the effect that much further (the estimate ~ normal).
        if margin + radius + Z_POWER * math.sqrt(v) <= effect:
            return Sizing(metric, ratio, limit, n_b, spread, n)
    return Sizing(
        metric, ratio, limit, n_b, spread, None, note=f"more devices than the target's {target}"
    )


def sized_first_wave(
    spec: RolloutSpec, sizings: Sequence[Sizing], total: int
) -> tuple[RolloutSpec, dict[str, Any]]:
    """``spec`` with its first wave grown to hold the devices ``sizings`` need of the
    ``total`` the target holds, never to the second wave's share; and what was found,
    for the create answer and the log (``detect``, ``target_devices``, ``first_wave``)."""
    found: dict[str, Any] = {"detect": [s.to_dict() for s in sizings], "target_devices": total}
    needed = max((s.devices for s in sizings if s.devices is not None), default=0)
    first = spec.waves[0]
    if first.percent is None or not total or wave_size(first.percent, total) >= needed:
        return spec, found
    percent = math.ceil(needed * 100_000 / total) / 1000  # holds ``needed`` devices
    following = spec.waves[1].percent if len(spec.waves) > 1 else None
    if following is not None and percent >= following:
        found["first_wave"] = (
            f"needs {needed} devices ({percent:g}%), more than wave 1 may grow to "
            f"(wave 2 is {following:g}%): extend on inconclusive, or a larger first wave"
        )
        return spec, found
    found["first_wave"] = f"grown from {first.percent:g}% to {percent:g}% ({needed} devices)"
    waves = [first.model_copy(update={"percent": percent}), *spec.waves[1:]]
    return spec.model_copy(update={"waves": waves}), found


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)

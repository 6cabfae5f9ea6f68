"""Whether a download may start now (pure): free disk, battery, network, time window.

An unmet precondition defers the download to a later check-in; it is not a failure and does
not count against the download's attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from edgefleet.fleet.domain import Preconditions


@dataclass(frozen=True)
class Conditions:
    """What the device measures right now."""

    free_disk_mb: float
    battery_percent: float | None  # None: mains powered or not exposed
    metered: bool
    now_utc: datetime


def _parse(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def in_window(now: time, start: time, end: time) -> bool:
    """Whether ``now`` is within [start, end); a window may wrap past midnight."""
    if start <= end:
        return start <= now < end
    return now >= start or now < end


def unmet(preconditions: Preconditions, needed_mb: float, conditions: Conditions) -> str | None:
    """The first precondition that does not hold (its reason code), or ``None``."""
    floor = max(needed_mb * 1.1, preconditions.min_free_disk_mb or 0)
    if conditions.free_disk_mb < floor:
        return "precondition:free_disk"
    if (
        preconditions.min_battery_percent is not None
        and conditions.battery_percent is not None
        and conditions.battery_percent < preconditions.min_battery_percent
    ):
        return "precondition:battery"
    if conditions.metered and not preconditions.allow_metered:
        return "precondition:metered_network"
    if preconditions.window_utc is not None:
        start, end = (_parse(t) for t in preconditions.window_utc)
        if not in_window(conditions.now_utc.time(), start, end):
            return "precondition:time_window"
    return None

"""When a rollout may assign devices, and how many at a time (pure).

The schedule opens assignment at ``start_at`` and closes it during blackouts; a device
is assigned only inside one of the daily windows, in UTC or in its own time zone (its
``tz`` attribute). The rate limits cap what one tick may assign:
``max_assign_per_minute`` holds over any minute and, pro rata, over any
``RATE_SMOOTHING_S`` (6,000 a minute assigns at most 1,000 in 10 s, a steady stream
rather than a wave at once); ``max_concurrent_downloads`` caps the assigned devices that
have not finished their download::

    allowance(spec, now, counts, assigned_within=lambda s: assignments_in_last(s))
    in_window(spec.schedule, "Europe/Berlin", now)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgefleet.rollout.policy import RateLimits, RolloutSpec, Schedule
from edgefleet.rollout.status import IN_FLIGHT, DeviceStatus, count

#: ``max_assign_per_minute`` also holds, pro rata, over any window this long: a rate of
#: 6,000 a minute assigns at most 1,000 in 10 s, not a wave of 6,000 in one tick.
RATE_SMOOTHING_S = 10
#: What a tick may assign when nothing limits it.
UNLIMITED = 1 << 30


def aware(moment: datetime) -> datetime:
    """``moment``, read as UTC when it names no time zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_open(schedule: Schedule, now: datetime) -> bool:
    """Whether the schedule lets the rollout assign now: after ``start_at`` and outside
    every blackout."""
    if schedule.start_at is not None and now < aware(schedule.start_at):
        return False
    return not any(aware(b.start) <= now < aware(b.end) for b in schedule.blackouts)


def in_window(schedule: Schedule, timezone: str | None, now: datetime) -> bool:
    """Whether a device in ``timezone`` (an IANA zone, or ``None``) may be assigned now:
    inside one of the daily windows, or always when there are none. A window in device
    time is read in UTC for a device without a (valid) zone."""
    if not schedule.windows:
        return True
    for window in schedule.windows:
        zone: tzinfo = UTC
        if window.timezone == "device" and timezone:
            try:
                zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                zone = UTC
        if window.contains(now.astimezone(zone).time()):
            return True
    return False


def rate_windows(rate: RateLimits) -> dict[int, int]:
    """The most assignments allowed within each window, by its length in seconds."""
    per_minute = rate.max_assign_per_minute
    if per_minute is None:
        return {}
    burst = -(-per_minute * RATE_SMOOTHING_S // 60)  # rounded up: at least 1
    return {60: per_minute, RATE_SMOOTHING_S: burst}


def allowance(
    spec: RolloutSpec,
    now: datetime,
    counts: Mapping[DeviceStatus, int],
    assigned_within: Callable[[int], int],
) -> int:
    """How many more devices the rollout may assign now.

    Args:
        counts: the rollout's devices per status.
        assigned_within: how many devices the rollout assigned in the last given
            seconds (asked only when a rate limit needs it).
    """
    if not is_open(spec.schedule, now):
        return 0
    allowed = UNLIMITED
    for seconds, limit in rate_windows(spec.rate).items():
        allowed = min(allowed, max(0, limit - assigned_within(seconds)))
    concurrent = spec.rate.max_concurrent_downloads
    if concurrent is not None:
        allowed = min(allowed, max(0, concurrent - count(counts, IN_FLIGHT)))
    return allowed

"""Pure schedule: when a rollout may assign, and how many devices a tick may assign."""

from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.rollout.policy import RolloutSpec
from edgefleet.rollout.schedule import (
    UNLIMITED,
    allowance,
    in_window,
    is_open,
    rate_windows,
)
from edgefleet.rollout.status import DeviceStatus

NOW = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)  # 04:30 in Berlin, 22:30 in New York


def spec(**changes) -> RolloutSpec:
    return RolloutSpec.model_validate({"model": "m", "version": "2.0.0", "target": "*", **changes})


def never_assigned(seconds: int) -> int:
    return 0


def test_nothing_limits_a_rollout_without_rate_limits_or_schedule():
    assert allowance(spec(), NOW, {}, never_assigned) == UNLIMITED


def test_concurrent_downloads_cap_the_devices_not_past_their_download():
    limited = spec(rate={"max_concurrent_downloads": 3})
    assert allowance(limited, NOW, {}, never_assigned) == 3
    in_flight = {DeviceStatus.ASSIGNED: 1, DeviceStatus.DOWNLOADING: 1}
    assert allowance(limited, NOW, in_flight, never_assigned) == 1
    # Devices in trial or finished have their download behind them.
    past = {DeviceStatus.TRIAL: 5, DeviceStatus.COMMITTED: 9, DeviceStatus.UNREACHABLE: 2}
    assert allowance(limited, NOW, past, never_assigned) == 3
    full = {DeviceStatus.ASSIGNED: 2, DeviceStatus.DOWNLOADING: 2}
    assert allowance(limited, NOW, full, never_assigned) == 0  # never negative


def test_a_per_minute_rate_holds_pro_rata_over_ten_seconds():
    paced = spec(rate={"max_assign_per_minute": 30})
    assert rate_windows(paced.rate) == {60: 30, 10: 5}  # 30 a minute is 5 in 10 s
    assert allowance(paced, NOW, {}, never_assigned) == 5
    # 5 assigned within the last 10 s: none more until they are older than that.
    assert allowance(paced, NOW, {}, lambda s: 5) == 0
    # 28 within the minute, none within 10 s: the minute's 2 left.
    assert allowance(paced, NOW, {}, lambda s: 28 if s == 60 else 0) == 2
    big = spec(rate={"max_assign_per_minute": 6000})
    assert allowance(big, NOW, {}, never_assigned) == 1000
    # A rate under 6 a minute still assigns one device per 10 s (rounded up).
    assert rate_windows(spec(rate={"max_assign_per_minute": 1}).rate) == {60: 1, 10: 1}


def test_both_limits_hold_together():
    both = spec(rate={"max_assign_per_minute": 30, "max_concurrent_downloads": 3})
    assert allowance(both, NOW, {}, never_assigned) == 3
    assert allowance(both, NOW, {}, lambda s: 4) == 1  # 5 in 10 s, 4 of them taken


def test_the_rate_is_asked_only_when_a_rate_limit_needs_it():
    def fail(seconds: int) -> int:
        raise AssertionError("not asked")

    assert allowance(spec(rate={"max_concurrent_downloads": 3}), NOW, {}, fail) == 3
    later = spec(schedule={"start_at": "2099-01-01T00:00:00Z"}, rate={"max_assign_per_minute": 5})
    assert allowance(later, NOW, {}, fail) == 0


def test_nothing_before_start_at_or_during_a_blackout():
    later = spec(schedule={"start_at": (NOW + timedelta(seconds=1)).isoformat()})
    assert not is_open(later.schedule, NOW)
    assert allowance(later, NOW, {}, never_assigned) == 0
    assert is_open(later.schedule, NOW + timedelta(seconds=1))
    naive = spec(schedule={"start_at": "2026-12-01T03:30:00"})  # read as UTC
    assert is_open(naive.schedule, NOW)
    blackout = {"start": "2026-12-01T00:00:00Z", "end": "2026-12-01T03:30:00Z"}
    held = spec(schedule={"blackouts": [blackout]})
    assert not is_open(held.schedule, NOW - timedelta(seconds=1))
    assert is_open(held.schedule, NOW)  # a blackout ends at its end


@pytest.mark.parametrize(
    ("window", "timezone", "inside"),
    [
        ({"start": "01:00", "end": "05:00"}, None, True),  # 03:30 UTC
        ({"start": "04:00", "end": "05:00"}, None, False),
        ({"start": "00:00", "end": "00:00"}, None, False),  # empty
        ({"start": "22:00", "end": "04:00"}, None, True),  # wraps past midnight
        ({"start": "04:00", "end": "05:00", "timezone": "device"}, "Europe/Berlin", True),
        ({"start": "04:00", "end": "05:00", "timezone": "device"}, "America/New_York", False),
        ({"start": "22:00", "end": "23:00", "timezone": "device"}, "America/New_York", True),
        # No zone, or one that does not exist: the window is read in UTC.
        ({"start": "03:00", "end": "04:00", "timezone": "device"}, None, True),
        ({"start": "03:00", "end": "04:00", "timezone": "device"}, "Mars/Olympus", True),
        ({"start": "04:00", "end": "05:00", "timezone": "device"}, "Mars/Olympus", False),
    ],
)
def test_daily_windows_in_utc_or_the_devices_time(window, timezone, inside):
    assert in_window(spec(schedule={"windows": [window]}).schedule, timezone, NOW) is inside


def test_any_window_lets_a_device_in_and_no_window_means_always():
    windows = [{"start": "10:00", "end": "11:00"}, {"start": "03:00", "end": "04:00"}]
    assert in_window(spec(schedule={"windows": windows}).schedule, None, NOW)
    assert in_window(spec().schedule, "Europe/Berlin", NOW)

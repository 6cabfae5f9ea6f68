"""Every built-in scenario, played by 200 virtual devices against a real embedded server
(its own process, SQLite): the scenario's own expectations must hold, and the headline
numbers must say what the scenario is about."""

from __future__ import annotations

import pytest

from edgefleet.sim.result import RunResult
from edgefleet.sim.runner import run_scenario
from edgefleet.sim.scenario import builtin_names, load_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def play(name: str, tmp_path, bundle_cache) -> RunResult:
    result = run_scenario(
        load_scenario(name, devices=200), work_dir=tmp_path / "run", bundle_cache=bundle_cache
    )
    failed = [
        f"{c.name}: expected {c.expected}, got {c.actual}" for c in result.checks if not c.passed
    ]
    assert not failed, failed
    assert result.devices == 200 and result.requests["ok"] > 1000
    return result


def test_the_library_has_its_scenarios_and_the_demo():
    assert set(builtin_names()) == {
        "good-release",
        "cpu-spike",
        "missing-class",
        "rare-class",
        "slow-revision",
        "cpu-creep",
        "slow-network",
        "crash-on-hw",
        "offline-devices",
        "restart-loop",
        "demo",
        "sensor-drift",
        "seasonal-shift",
        "no-drift",
    }


def test_good_release(tmp_path, bundle_cache):
    result = play("good-release", tmp_path, bundle_cache)
    (release,) = result.releases
    assert release.state == "succeeded" and release.waves_reached == 4
    assert result.devices_committed == 200 and result.final_versions == {"1.1.0": 200}
    assert result.exposed_share == 0 and result.time_to_detect_s is None
    # Every gate passed on real telemetry at the last look.
    last_wave = [look for look in release.gate_looks if look.wave == 3]
    assert last_wave and {look.verdict for look in last_wave[-6:]} == {"pass"}
    # The check-ins while the rollout ran are a part of the run's.
    assert 0 < release.checkins < result.checkins
    assert release.checkin_p50_ms is not None and release.checkin_p99_ms is not None
    assert release.checkin_p50_ms <= release.checkin_p99_ms
    assert release.loop_lag_p99_ms is not None
    windows = result.checkin_windows
    assert sum(w["checkins"] for w in windows) == result.checkins
    assert [w["t"] for w in windows] == [10.0 * i for i in range(len(windows))]


def test_cpu_spike_is_halted_in_the_first_wave(tmp_path, bundle_cache):
    result = play("cpu-spike", tmp_path, bundle_cache)
    (release,) = result.releases
    assert release.state == "aborted" and release.waves_reached == 1
    assert {"cpu_percent", "latency_p95"} & set(release.failed_gates)
    assert 0 < result.exposed_share <= 0.06
    assert result.time_to_detect_s is not None and result.time_to_rollback_s is not None
    assert result.final_versions == {"1.1.0": 200}


def test_missing_class_is_caught_by_the_class_distribution_gate(tmp_path, bundle_cache):
    result = play("missing-class", tmp_path, bundle_cache)
    (release,) = result.releases
    assert "class_distribution" in release.failed_gates
    failing = [look for look in release.gate_looks if look.verdict == "fail"]
    assert failing[0].numbers["class"] == 9  # the class the model never predicts
    assert result.final_versions == {"1.1.0": 200}


def test_a_mild_slowdown_on_one_hardware_kind_is_caught_at_canary_size(tmp_path, bundle_cache):
    # 1.3x slower on the cameras only, against a limit of 1.2: the fleet's average and
    # a comparison of per-device p95s cannot tell on 10 canaries; the cameras' paired
    # probes can (the same store query and test serve inference_cpu, cpu-creep).
    result = play("slow-revision", tmp_path, bundle_cache)
    (release,) = result.releases
    assert release.state == "aborted" and release.failed_gates == ["latency_p95"]
    failing = [look for look in release.gate_looks if look.verdict == "fail"]
    assert failing[0].numbers["segment"] == "hardware=armv7l"
    assert 0 < result.exposed_share <= 0.06
    assert result.final_versions == {"1.1.0": 200}


def test_crash_on_one_hardware_revision(tmp_path, bundle_cache):
    result = play("crash-on-hw", tmp_path, bundle_cache)
    (release,) = result.releases
    assert set(release.rollbacks_by_revision) == {"rpi3-r1.2"}
    assert release.failed_gates == ["rollbacks"]
    assert result.final_versions == {"1.0.0": 200}


def test_slow_network_gets_everyone_there_resuming_downloads(tmp_path, bundle_cache):
    result = play("slow-network", tmp_path, bundle_cache)
    assert result.devices_committed == 200
    assert result.interruptions >= 20 and result.bytes_repeated == 0
    size = (bundle_cache / "digits-1.4.0" / "model-fp32.onnx").stat().st_size
    # At least the 80 MB artifact to the devices that run fp32, and never a second copy.
    assert result.bytes_transferred >= 0.2 * 200 * size
    assert result.bytes_transferred <= 200 * size * 1.05


def test_offline_devices_catch_up_without_stalling_the_rollout(tmp_path, bundle_cache):
    result = play("offline-devices", tmp_path, bundle_cache)
    (release,) = result.releases
    assert release.state == "succeeded"
    offline_at_end = next(p for p in result.timeline if p.t >= release.ended_t)
    # The rollout ended while devices were still away, and they caught up afterwards.
    assert offline_at_end.states.get("OFFLINE", 0) > 0
    assert result.final_versions == {"1.1.0": 200}


def test_a_release_that_makes_devices_restart_is_aborted_by_restart_rate(tmp_path, bundle_cache):
    result = play("restart-loop", tmp_path, bundle_cache)
    (release,) = result.releases
    assert release.state == "aborted" and release.failed_gates == ["restart_rate"]
    assert release.waves_reached == 1 and release.restarts >= 2
    # Every canary stayed under its trial's restart limit: none rolled back on its own.
    assert release.rollbacks_by_revision == {}
    failing = [look for look in release.gate_looks if look.verdict == "fail"]
    assert failing[0].metric == "restart_rate"
    assert failing[0].numbers["devices_restarted"] >= 2
    # The fleet's interval, or that of the hardware kind the gate failed on.
    numbers = failing[0].numbers
    segment = numbers.get("segment", "all")
    if segment != "all":
        numbers = next(s for s in numbers["segments"] if s["segment"] == segment)
    assert numbers["low"] > 60.0

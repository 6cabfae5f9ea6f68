"""Device health probes: real psutil figures, fake sysfs trees and captured tool output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from edgefleet.fleet.domain import HealthSample
from edgefleet.runtime.health import (
    GPU_TOOL_TIMEOUT_S,
    Health,
    HealthProbe,
    first_line,
    parse_nvidia_smi,
    parse_tegrastats,
    read_thermal_zones,
)

# nvidia-smi --query-gpu=utilization.gpu,memory.used,temperature.gpu
#            --format=csv,noheader,nounits on a two-GPU server
NVIDIA_SMI_TWO_GPUS = "35, 1024, 61\n75, 2048, 70\n"

# Jetson AGX Xavier, JetPack 4.6
TEGRASTATS_XAVIER = (
    "RAM 2448/7772MB (lfb 1x4MB) SWAP 0/3886MB (cached 0MB) "
    "CPU [3%@1190,2%@1190,1%@1190,2%@1190,off,off,off,off] EMC_FREQ 0% GR3D_FREQ 31% "
    "AO@38.5C GPU@39C Tdiode@41.25C PMIC@100C AUX@38.5C CPU@40C thermal@39.35C "
    "Tboard@40C GPU 0/0 CPU 155/155 SOC 1398/1398 CV 0/0 VDDRQ 310/310 SYS5V 1567/1567"
)

# Jetson Orin Nano, JetPack 6
TEGRASTATS_ORIN = (
    "11-21-2025 10:21:58 RAM 3120/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [1%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 "
    "GR3D_FREQ 87%@[305,0] NVENC off NVDEC off NVJPG off NVJPG1 off VIC off OFA off "
    "NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 CV0@-256C CPU@41.5C Tboard@31C "
    "SOC2@38.062C Tdiode@33.5C SOC0@38.593C CV1@-256C GPU@41.5C tj@42.562C SOC1@38.375C "
    "CV2@-256C VDD_IN 4361mW/4361mW VDD_CPU_GPU_CV 482mW/482mW VDD_SOC 1366mW/1366mW"
)


def write_zone(root: Path, index: int, kind: str | None, temp: str | None) -> None:
    zone = root / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    if kind is not None:
        (zone / "type").write_text(kind + "\n")
    if temp is not None:
        (zone / "temp").write_text(temp)


def only_on_path(monkeypatch: pytest.MonkeyPatch, tools: dict[str, str]) -> None:
    """Make ``shutil.which`` find exactly ``tools`` (name -> path)."""
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: tools.get(name))


def completed(stdout: str, returncode: int = 0) -> Callable[..., Any]:
    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, returncode, stdout=stdout, stderr="")

    return run


def test_real_sample_on_this_machine_is_sane() -> None:
    health = HealthProbe().sample()

    assert health.cpu_percent is not None and 0 <= health.cpu_percent <= 100
    assert health.ram_percent is not None and 0 < health.ram_percent <= 100
    assert health.ram_used_mb is not None and health.ram_used_mb > 0
    assert health.rss_mb is not None and health.rss_mb > 1
    assert health.disk_free_mb is not None and health.disk_free_mb > 0


def test_to_dict_is_exactly_a_health_sample() -> None:
    health = Health(
        cpu_percent=12.5,
        ram_percent=40.0,
        ram_used_mb=800.0,
        rss_mb=90.0,
        disk_free_mb=5000.0,
        temperature_c=45.0,
        gpu={"utilization_percent": 31.0},
    )

    body = health.to_dict()

    assert set(body) == set(HealthSample.model_fields)
    assert HealthSample(**body).temperature_c == 45.0


def test_thermal_zones_give_the_hottest_related_plausible_reading(tmp_path: Path) -> None:
    write_zone(tmp_path, 0, "x86_pkg_temp", "45000\n")
    write_zone(tmp_path, 1, "acpitz", "garbage")
    write_zone(tmp_path, 2, "PMIC-Die", "100000\n")  # Jetson's fixed fake reading
    write_zone(tmp_path, 3, "CV0-therm", "-256000\n")  # a disabled Jetson zone
    write_zone(tmp_path, 4, "iwlwifi_1", "60000\n")
    write_zone(tmp_path, 5, None, None)  # a zone with nothing readable
    write_zone(tmp_path, 6, "cpu-thermal", "41250\n")

    assert read_thermal_zones(tmp_path) == 45.0
    assert HealthProbe(thermal_root=tmp_path).sample().temperature_c == 45.0


def test_no_thermal_zones_falls_back_to_psutil_sensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sensor = SimpleNamespace
    monkeypatch.setattr(
        psutil,
        "sensors_temperatures",
        lambda: {
            "coretemp": [sensor(label="Package id 0", current=52.0)],
            "iwlwifi_1": [sensor(label="", current=70.0)],
            "nvme": [sensor(label="Composite", current=38.0)],
        },
        raising=False,
    )

    assert read_thermal_zones(tmp_path / "missing") is None
    assert HealthProbe(thermal_root=tmp_path / "missing").sample().temperature_c == 52.0


def test_temperature_is_none_when_nothing_is_exposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(psutil, "sensors_temperatures", dict, raising=False)
    assert HealthProbe(thermal_root=tmp_path).sample().temperature_c is None

    def broken() -> dict[str, list[Any]]:
        raise OSError("no hwmon")

    monkeypatch.setattr(psutil, "sensors_temperatures", broken, raising=False)
    assert HealthProbe(thermal_root=tmp_path).sample().temperature_c is None


def test_parse_nvidia_smi_aggregates_gpus() -> None:
    assert parse_nvidia_smi(NVIDIA_SMI_TWO_GPUS) == {
        "gpu_count": 2.0,
        "utilization_percent": 55.0,
        "memory_used_mb": 3072.0,
        "temperature_c": 70.0,
    }
    assert parse_nvidia_smi("0, [N/A], 45\n") == {
        "gpu_count": 1.0,
        "utilization_percent": 0.0,
        "temperature_c": 45.0,
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        "35, 1024\n",
        "35, 1024, 61, 9\n",
        "35, lots, 61\n",
        "[N/A], [N/A], [N/A]\n",
        "35, 1024, 61\ngarbage\n",
    ],
)
def test_parse_nvidia_smi_rejects_garbage(text: str) -> None:
    assert parse_nvidia_smi(text) is None


def test_parse_tegrastats_xavier() -> None:
    assert parse_tegrastats(TEGRASTATS_XAVIER) == {
        "utilization_percent": 31.0,
        "temperature_c": 39.0,
        "ram_used_mb": 2448.0,
        "ram_total_mb": 7772.0,
    }


def test_parse_tegrastats_orin() -> None:
    assert parse_tegrastats(TEGRASTATS_ORIN) == {
        "utilization_percent": 87.0,
        "temperature_c": 41.5,
        "ram_used_mb": 3120.0,
        "ram_total_mb": 7620.0,
    }


def test_parse_tegrastats_leaves_out_a_disabled_gpu_sensor() -> None:
    assert parse_tegrastats("RAM 1528/3964MB GR3D_FREQ 0%@76 GPU@-256C") == {
        "utilization_percent": 0.0,
        "ram_used_mb": 1528.0,
        "ram_total_mb": 3964.0,
    }


@pytest.mark.parametrize(
    "line", ["", "garbage", "RAM 2448/7772MB (lfb 1x4MB) SWAP 0/3886MB", "GR3D_FREQ off"]
)
def test_parse_tegrastats_rejects_lines_without_gpu_figures(line: str) -> None:
    assert parse_tegrastats(line) is None


def test_nvidia_smi_is_run_with_the_query_and_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    only_on_path(monkeypatch, {"nvidia-smi": "/usr/bin/nvidia-smi"})
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, stdout=NVIDIA_SMI_TWO_GPUS, stderr="")

    health = HealthProbe(run=run).sample()

    assert health.gpu is not None and health.gpu["memory_used_mb"] == 3072.0
    [(argv, kwargs)] = calls
    assert argv == [
        "/usr/bin/nvidia-smi",
        "--query-gpu=utilization.gpu,memory.used,temperature.gpu",
        "--format=csv,noheader,nounits",
    ]
    assert kwargs["timeout"] == GPU_TOOL_TIMEOUT_S == 2.0


def _times_out(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    raise subprocess.TimeoutExpired(argv, kwargs["timeout"])


def _cannot_start(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    raise FileNotFoundError(argv[0])


@pytest.mark.parametrize(
    "run",
    [
        _times_out,
        _cannot_start,
        completed("Failed to initialize NVML: Driver/library version mismatch\n", returncode=9),
        completed("35, 1024, 61\n", returncode=255),
        completed("No devices were found\n"),
    ],
    ids=["timeout", "cannot-start", "driver-mismatch", "non-zero-exit", "no-devices"],
)
def test_nvidia_smi_failures_give_no_gpu(
    run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    only_on_path(monkeypatch, {"nvidia-smi": "/usr/bin/nvidia-smi"})

    health = HealthProbe(run=run).sample()

    assert health.gpu is None
    assert health.rss_mb is not None  # the other probes still ran


def test_no_gpu_tool_means_nothing_is_run(monkeypatch: pytest.MonkeyPatch) -> None:
    only_on_path(monkeypatch, {})

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"ran {argv}")

    assert HealthProbe(run=run).sample().gpu is None


def fake_tool(directory: Path, name: str, body: str) -> Path:
    """An executable Python script called ``name`` in ``directory``."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def test_tegrastats_is_read_for_one_line_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "pid"
    tool = fake_tool(
        tmp_path,
        "tegrastats",
        "import os, sys, time\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{sys.argv[1:]}}')\n"
        "while True:\n"
        f"    print({TEGRASTATS_ORIN!r}, flush=True)\n"
        "    time.sleep(0.1)\n",
    )
    only_on_path(monkeypatch, {"tegrastats": str(tool)})

    health = HealthProbe().sample()

    assert health.gpu == parse_tegrastats(TEGRASTATS_ORIN)
    pid, args = pid_file.read_text().split(" ", 1)
    assert args == "['--interval', '100']"
    with pytest.raises(ProcessLookupError):  # terminated and reaped, not left running
        os.kill(int(pid), 0)


def test_tegrastats_that_prints_nothing_gives_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = fake_tool(tmp_path, "tegrastats", "import time\ntime.sleep(60)\n")
    only_on_path(monkeypatch, {"tegrastats": str(tool)})
    monkeypatch.setattr("edgefleet.runtime.health.GPU_TOOL_TIMEOUT_S", 0.3)

    started = time.monotonic()
    assert HealthProbe().sample().gpu is None
    assert time.monotonic() - started < 5


def test_first_line_returns_a_last_line_without_newline(tmp_path: Path) -> None:
    tool = fake_tool(tmp_path, "tool", "import sys\nsys.stdout.write('only line')\n")
    assert first_line([str(tool)], timeout=5) == "only line"


def test_first_line_of_a_tool_that_cannot_start_is_none(tmp_path: Path) -> None:
    assert first_line([str(tmp_path / "missing")], timeout=1) is None
    assert first_line([str(fake_tool(tmp_path, "silent", "pass\n"))], timeout=5) is None

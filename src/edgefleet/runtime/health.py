"""Device health probes: CPU, memory, disk, temperature and GPU, as the agent reports them.

``HealthProbe`` reads what the platform exposes and leaves the rest as ``None``: a probe
that fails (no thermal zones in a VM, no GPU, a tool that hangs or prints something
unexpected) never raises, so telemetry keeps flowing from any device::

    probe = HealthProbe(disk_path=Path("/var/lib/edgefleet"))
    health = probe.sample()
    health.temperature_c             # 45.0, or None where nothing is exposed
    HealthSample(**health.to_dict())  # the telemetry body (GPU figures stay on the device)

GPU figures come from ``nvidia-smi`` (discrete NVIDIA GPUs) or ``tegrastats`` (Jetson);
their output parsers, ``parse_nvidia_smi`` and ``parse_tegrastats``, are pure functions.
Sizes are in MiB (2**20 bytes), as ``nvidia-smi`` and ``tegrastats`` count them.
"""

from __future__ import annotations

import math
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

#: How long a GPU tool may take before its figures are given up for this sample.
GPU_TOOL_TIMEOUT_S = 2.0

NVIDIA_SMI_QUERY = (
    "--query-gpu=utilization.gpu,memory.used,temperature.gpu",
    "--format=csv,noheader,nounits",
)

_MIB = 2**20

# Sensors whose temperature says nothing about the SoC: Jetson's PMIC zone reads a fixed
# 100 C, and Wi-Fi chips, batteries and chargers run at their own temperatures.
_UNRELATED_SENSORS = ("pmic", "wifi", "iwlwifi", "battery", "bat0", "bat1", "charger", "usb")

# Disabled Jetson zones report -256 C; anything outside this range is a sensor error.
_PLAUSIBLE_C = (-40.0, 150.0)

_GR3D = re.compile(r"\bGR3D_FREQ\s+(\d+(?:\.\d+)?)%")
_GPU_TEMP = re.compile(r"\bGPU@(-?\d+(?:\.\d+)?)C\b")
_RAM = re.compile(r"\bRAM\s+(\d+)/(\d+)MB\b")

#: What ``HealthProbe`` runs ``nvidia-smi`` with: ``subprocess.run`` or a test double.
Runner = Callable[..., subprocess.CompletedProcess[str]]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Health:
    """One health sample of the device; ``None`` wherever the platform exposed nothing.

    ``gpu`` holds ``utilization_percent``, ``temperature_c`` and memory figures
    (``memory_used_mb`` from nvidia-smi; ``ram_used_mb``/``ram_total_mb`` of the memory a
    Jetson shares between CPU and GPU), each only when the tool reported it.
    """

    cpu_percent: float | None = None
    ram_percent: float | None = None
    ram_used_mb: float | None = None
    rss_mb: float | None = None
    disk_free_mb: float | None = None
    temperature_c: float | None = None
    gpu: dict[str, float] | None = None

    def to_dict(self) -> dict[str, float | None]:
        """The fields of ``edgefleet.fleet.domain.HealthSample``, for telemetry."""
        return {
            "cpu_percent": self.cpu_percent,
            "ram_percent": self.ram_percent,
            "ram_used_mb": self.ram_used_mb,
            "rss_mb": self.rss_mb,
            "disk_free_mb": self.disk_free_mb,
            "temperature_c": self.temperature_c,
        }


class HealthProbe:
    """Samples the device's health; every probe that fails gives ``None``, never an error.

    ``disk_path`` is the file system whose free space counts (where models are stored);
    ``thermal_root`` and ``run`` are there so tests can point at a fake sysfs tree and
    fake ``nvidia-smi`` runs.
    """

    def __init__(
        self,
        disk_path: Path = Path("/"),
        thermal_root: Path = Path("/sys/class/thermal"),
        run: Runner = subprocess.run,
    ) -> None:
        self.disk_path = disk_path
        self.thermal_root = thermal_root
        self._run = run
        self._process: psutil.Process | None = _optional(psutil.Process)
        # psutil measures CPU use since the previous call; priming it here makes the
        # first sample() cover the time since construction instead of returning 0.0.
        _optional(lambda: psutil.cpu_percent(interval=None))

    def sample(self) -> Health:
        """Read every probe once. Blocks at most ``GPU_TOOL_TIMEOUT_S`` (for a GPU tool)."""
        memory = _optional(psutil.virtual_memory)
        return Health(
            cpu_percent=_optional(lambda: float(psutil.cpu_percent(interval=None))),
            ram_percent=None if memory is None else float(memory.percent),
            # "used" as the percentage counts it: what is not available to new processes
            ram_used_mb=None if memory is None else (memory.total - memory.available) / _MIB,
            rss_mb=_optional(self._rss_mb),
            disk_free_mb=_optional(lambda: psutil.disk_usage(str(self.disk_path)).free / _MIB),
            temperature_c=_optional(self._temperature_c),
            gpu=_optional(self._gpu),
        )

    def _rss_mb(self) -> float | None:
        if self._process is None:
            return None
        return float(self._process.memory_info().rss) / _MIB

    def _temperature_c(self) -> float | None:
        celsius = read_thermal_zones(self.thermal_root)
        if celsius is None:
            celsius = _optional(_psutil_temperature_c)
        return celsius

    def _gpu(self) -> dict[str, float] | None:
        nvidia_smi = shutil.which("nvidia-smi")
        if nvidia_smi is not None:
            figures = _optional(lambda: self._nvidia_smi(nvidia_smi))
            if figures is not None:
                return figures
        tegrastats = shutil.which("tegrastats")
        if tegrastats is not None:
            line = first_line([tegrastats, "--interval", "100"], timeout=GPU_TOOL_TIMEOUT_S)
            return None if line is None else parse_tegrastats(line)
        return None

    def _nvidia_smi(self, executable: str) -> dict[str, float] | None:
        result = self._run(
            [executable, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=GPU_TOOL_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0 or not isinstance(result.stdout, str):
            return None
        return parse_nvidia_smi(result.stdout)


def read_thermal_zones(root: Path) -> float | None:
    """The hottest plausible ``<root>/thermal_zone*/temp`` in degrees C, or ``None``.

    Zones whose ``type`` names an unrelated sensor (PMIC, Wi-Fi, battery), and files that
    are unreadable or hold no number, are skipped.
    """
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return None
    readings: list[float] = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            kind = ""
        if _unrelated(kind):
            continue
        try:
            millidegrees = float((zone / "temp").read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        readings.append(millidegrees / 1000.0)
    return _hottest(readings)


def parse_nvidia_smi(text: str) -> dict[str, float] | None:
    """Parse ``nvidia-smi --query-gpu=utilization.gpu,memory.used,temperature.gpu
    --format=csv,noheader,nounits`` output: one ``util, MiB, C`` line per GPU.

    Several GPUs aggregate to the mean utilisation, the total memory used and the hottest
    temperature, plus ``gpu_count``. ``[N/A]`` fields are left out; output that is not
    one such line per GPU gives ``None``.
    """
    utilization: list[float] = []
    memory: list[float] = []
    temperature: list[float] = []
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    for line in lines:
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3:
            return None
        values = [_number(field) for field in fields]
        if any(
            v is None and not field.startswith("[") for v, field in zip(values, fields, strict=True)
        ):
            return None  # neither a number nor nvidia-smi's "[N/A]"/"[Not Supported]"
        util, mem, temp = values
        if util is not None:
            utilization.append(util)
        if mem is not None:
            memory.append(mem)
        if temp is not None:
            temperature.append(temp)
    figures: dict[str, float] = {"gpu_count": float(len(lines))}
    if utilization:
        figures["utilization_percent"] = sum(utilization) / len(utilization)
    if memory:
        figures["memory_used_mb"] = sum(memory)
    if temperature:
        figures["temperature_c"] = max(temperature)
    return figures if len(figures) > 1 else None


def parse_tegrastats(line: str) -> dict[str, float] | None:
    """Parse one ``tegrastats`` line (Jetson Nano, Xavier, Orin).

    Reads the GPU load (``GR3D_FREQ 31%`` or ``GR3D_FREQ 31%@[305,0]``), the GPU
    temperature (``GPU@41.5C``; disabled sensors read -256C and are left out) and the
    shared RAM (``RAM 2448/7772MB``). ``None`` when the line has neither GPU figure.
    """
    figures: dict[str, float] = {}
    load = _GR3D.search(line)
    if load is not None:
        figures["utilization_percent"] = float(load.group(1))
    temperature = _GPU_TEMP.search(line)
    if temperature is not None:
        celsius = _hottest([float(temperature.group(1))])
        if celsius is not None:
            figures["temperature_c"] = celsius
    if not figures:
        return None
    ram = _RAM.search(line)
    if ram is not None:
        figures["ram_used_mb"] = float(ram.group(1))
        figures["ram_total_mb"] = float(ram.group(2))
    return figures


def first_line(argv: Sequence[str], *, timeout: float) -> str | None:
    """Start ``argv``, return the first line it prints, and stop it.

    For tools that print forever (``tegrastats``). ``None`` when the tool cannot start,
    exits without printing a line, or prints none within ``timeout`` seconds.
    """
    try:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    except (OSError, ValueError):
        return None
    try:
        return _read_line(process, deadline=time.monotonic() + timeout)
    except (OSError, ValueError):
        return None
    finally:
        _stop(process)


def _read_line(process: subprocess.Popen[bytes], *, deadline: float) -> str | None:
    if process.stdout is None:
        return None
    descriptor = process.stdout.fileno()
    received = b""
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([descriptor], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(descriptor, 4096)
        if not chunk:  # exited; a last line without a newline still counts
            break
        received += chunk
    line = received.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    return line or None


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=1.0)
    except (OSError, subprocess.TimeoutExpired):
        pass  # nothing more to do for a process that will not die; never fail the sample
    finally:
        if process.stdout is not None:
            process.stdout.close()


def _psutil_temperature_c() -> float | None:
    sensors = getattr(psutil, "sensors_temperatures", None)  # absent on macOS and Windows
    if sensors is None:
        return None
    groups: dict[str, list[Any]] = sensors()
    return _hottest(
        float(entry.current)
        for name, entries in groups.items()
        if not _unrelated(name)
        for entry in entries
        if not _unrelated(entry.label or "")
    )


def _unrelated(sensor: str) -> bool:
    lowered = sensor.lower()
    return any(word in lowered for word in _UNRELATED_SENSORS)


def _hottest(readings: Iterable[float]) -> float | None:
    low, high = _PLAUSIBLE_C
    plausible = [c for c in readings if math.isfinite(c) and low < c < high]
    return max(plausible) if plausible else None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _optional(probe: Callable[[], _T]) -> _T | None:
    """Run one probe; any failure means the platform does not expose it."""
    try:
        return probe()
    except Exception:  # psutil, sysfs and tools fail in platform-specific ways
        return None

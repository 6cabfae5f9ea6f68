"""Device profiles: what kind of device this is, and which model variant it should run.

A profile names the runtime, numeric precision and ONNX Runtime execution providers a
class of device does best with. ``detect`` picks one from facts about the machine (each
fact defaults to probing the real one); the rest of the module is pure::

    device = detect()                                     # e.g. PROFILES["raspberry-pi"]
    variant = choose_variant(device, version.variants)    # the onnx-int8 variant
    providers = providers_for(device, onnxruntime.get_available_providers())

Profiles: ``x86-cpu``, ``arm-cpu``, ``jetson``, ``raspberry-pi`` and ``coral``. The
``coral`` profile prefers LiteRT (Edge TPU) variants; that backend is not implemented
yet, so until it is a Coral device runs an ONNX Runtime variant on its CPU.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, TypeVar

from edgefleet.runtime.errors import InferenceRuntimeError

CPU_PROVIDER = "CPUExecutionProvider"
ONNXRUNTIME = "onnxruntime"
LITERT = "litert"

#: A variant whose ``hardware`` names this runs on every device.
ANY_HARDWARE = "any"

_ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l")
_DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
_EDGETPU_PCIE = Path("/dev/apex_0")
_USB_DEVICES = Path("/sys/bus/usb/devices")
# Coral USB Accelerator: Global Unichip before its firmware loads, Google after.
_EDGETPU_USB_IDS = frozenset({("1a6e", "089a"), ("18d1", "9302")})


class ProfileError(InferenceRuntimeError):
    """Base class of device profile errors."""

    code = "profile_error"
    kind = "profile"


class UnknownProfileError(ProfileError, KeyError, ValueError):
    """No profile has that name. A ``KeyError`` for lookups, a ``ValueError`` for options."""

    code = "unknown_profile"

    def __str__(self) -> str:
        # KeyError would show the message in quotes, like a missing key
        return self.message


class NoCompatibleVariantError(ProfileError, ValueError):
    """None of a version's variants can run on this kind of device."""

    code = "no_compatible_variant"


@dataclass(frozen=True)
class DeviceProfile:
    """A class of device and how models run best on it.

    ``machines`` are the ``platform.machine()`` values the profile covers; ``providers``
    are ONNX Runtime execution providers in order of preference, ending with the CPU.
    """

    name: str
    description: str
    machines: tuple[str, ...]
    runtime: str
    precision: str
    providers: tuple[str, ...]
    max_batch: int
    memory_limit_mb: int

    def __post_init__(self) -> None:
        if not self.providers or self.providers[-1] != CPU_PROVIDER:
            raise ValueError(f"profile {self.name!r}: providers must end with {CPU_PROVIDER}")

    @property
    def runtimes(self) -> tuple[str, ...]:
        """Runtimes this device can run, preferred first (ONNX Runtime is always one)."""
        if self.runtime == ONNXRUNTIME:
            return (ONNXRUNTIME,)
        return (self.runtime, ONNXRUNTIME)


PROFILES: Mapping[str, DeviceProfile] = MappingProxyType(
    {
        profile.name: profile
        for profile in (
            DeviceProfile(
                name="x86-cpu",
                description="x86-64 computer running models on its CPU",
                machines=("x86_64", "amd64"),
                runtime=ONNXRUNTIME,
                precision="fp32",
                providers=(CPU_PROVIDER,),
                max_batch=32,
                memory_limit_mb=4096,
            ),
            DeviceProfile(
                name="arm-cpu",
                description="generic 64- or 32-bit ARM board running models on its CPU",
                machines=_ARM_MACHINES,
                runtime=ONNXRUNTIME,
                precision="int8",
                providers=(CPU_PROVIDER,),
                max_batch=8,
                memory_limit_mb=1024,
            ),
            DeviceProfile(
                name="jetson",
                description="NVIDIA Jetson (Nano, Xavier, Orin) with a CUDA GPU",
                machines=("aarch64", "arm64"),
                runtime=ONNXRUNTIME,
                precision="fp16",
                providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU_PROVIDER),
                max_batch=16,
                memory_limit_mb=2048,
            ),
            DeviceProfile(
                name="raspberry-pi",
                description="Raspberry Pi running models on its CPU",
                machines=("aarch64", "arm64", "armv7l"),
                runtime=ONNXRUNTIME,
                precision="int8",
                providers=(CPU_PROVIDER,),
                max_batch=4,
                memory_limit_mb=512,
            ),
            DeviceProfile(
                name="coral",
                description=(
                    "Google Coral Edge TPU (Dev Board, USB or PCIe accelerator); "
                    "LiteRT backend not implemented yet, so ONNX Runtime variants run on the CPU"
                ),
                machines=("aarch64", "arm64", "armv7l", "x86_64", "amd64"),
                runtime=LITERT,
                precision="int8",
                providers=(CPU_PROVIDER,),
                max_batch=1,
                memory_limit_mb=512,
            ),
        )
    }
)


class VariantLike(Protocol):
    """What ``choose_variant`` reads of a variant (``edgefleet.registry.domain.Variant``)."""

    @property
    def name(self) -> str: ...
    @property
    def runtime(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def hardware(self) -> tuple[str, ...]: ...


V = TypeVar("V", bound=VariantLike)


def profile(name: str) -> DeviceProfile:
    """The profile called ``name``.

    Raises:
        UnknownProfileError: no profile has that name; the message lists the known ones.
    """
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise UnknownProfileError(
            f"unknown device profile {name!r}; known profiles: {known}",
            details={"profile": name, "known": list(PROFILES)},
        ) from None


def detect(
    *,
    machine: str | None = None,
    device_tree_model: str | None = None,
    available_providers: Sequence[str] | None = None,
    has_edgetpu: bool | None = None,
) -> DeviceProfile:
    """The profile for a device described by these facts; missing facts are probed.

    In order: ``coral`` if an Edge TPU is present; ``jetson`` if the device-tree model
    says Jetson, or on 64-bit ARM with the CUDA provider; ``raspberry-pi`` if the model
    says so; ``arm-cpu`` on other ARM machines; ``x86-cpu`` otherwise.
    """
    if has_edgetpu is None:
        has_edgetpu = _probe_edgetpu()
    if has_edgetpu:
        return PROFILES["coral"]
    arch = (platform.machine() if machine is None else machine).lower()
    model = (_probe_device_tree_model() if device_tree_model is None else device_tree_model).lower()
    if "jetson" in model:
        return PROFILES["jetson"]
    if arch in PROFILES["jetson"].machines:
        # importing onnxruntime is the slowest probe: only done when it can decide
        providers = _probe_providers() if available_providers is None else available_providers
        if "CUDAExecutionProvider" in providers:
            return PROFILES["jetson"]
    if "raspberry pi" in model:
        return PROFILES["raspberry-pi"]
    if arch in _ARM_MACHINES:
        return PROFILES["arm-cpu"]
    return PROFILES["x86-cpu"]


def providers_for(profile: DeviceProfile, available: Sequence[str]) -> list[str]:
    """The profile's providers that ``available`` has, in the profile's order, CPU last."""
    chosen = [p for p in profile.providers if p in available and p != CPU_PROVIDER]
    return [*chosen, CPU_PROVIDER]


def choose_variant(
    profile: DeviceProfile, variants: Sequence[V], *, machine: str | None = None
) -> V:
    """The variant a device of this profile should run.

    A variant fits if the profile can run its runtime (``DeviceProfile.runtimes``) and its
    ``hardware`` names the profile, ``"any"``, or a machine: ``machine`` when given
    (``platform.machine()`` of this device), else any of the profile's machines. Of those,
    the preferred runtime wins, then the profile's precision, then fp32, then any other;
    ties keep the given order.

    Raises:
        NoCompatibleVariantError: no variant fits; the message lists what there was.
    """
    machines = profile.machines if machine is None else (machine,)
    accepted = {profile.name.lower(), ANY_HARDWARE, *(m.lower() for m in machines)}
    runtimes = profile.runtimes
    ranked = [
        (runtimes.index(v.runtime), _precision_rank(profile, v.precision), index, v)
        for index, v in enumerate(variants)
        if v.runtime in runtimes and accepted.intersection(h.lower() for h in v.hardware)
    ]
    if not ranked:
        raise _no_compatible_variant(profile, variants, machines)
    return min(ranked, key=lambda entry: entry[:3])[3]


def _precision_rank(profile: DeviceProfile, precision: str) -> int:
    if precision == profile.precision:
        return 0
    return 1 if precision == "fp32" else 2


def _no_compatible_variant(
    device: DeviceProfile, variants: Sequence[VariantLike], machines: tuple[str, ...]
) -> NoCompatibleVariantError:
    offered = [(v.name, v.runtime, v.precision, tuple(v.hardware)) for v in variants]
    listing = (
        "; ".join(f"{n} ({r}, {p}, hardware {', '.join(h) or '-'})" for n, r, p, h in offered)
        or "none"
    )
    return NoCompatibleVariantError(
        f"no variant can run on device profile {device.name!r} "
        f"(runtimes {', '.join(device.runtimes)}; hardware {device.name}, "
        f"{', '.join(machines)} or {ANY_HARDWARE}); variants offered: {listing}",
        details={
            "profile": device.name,
            "variants": [
                {"name": n, "runtime": r, "precision": p, "hardware": list(h)}
                for n, r, p, h in offered
            ],
        },
    )


def _probe_device_tree_model() -> str:
    try:
        # the device tree stores the string NUL-terminated
        return _DEVICE_TREE_MODEL.read_bytes().decode("utf-8", errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def _probe_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    try:
        return [str(name) for name in onnxruntime.get_available_providers()]
    except Exception:  # a broken install reads as "no accelerators", not a crash at startup
        return []


def _probe_edgetpu() -> bool:
    if _EDGETPU_PCIE.exists():
        return True
    try:
        devices = list(_USB_DEVICES.iterdir())
    except OSError:
        return False
    return any(_usb_ids(device) in _EDGETPU_USB_IDS for device in devices)


def _usb_ids(device: Path) -> tuple[str, str] | None:
    try:  # interfaces and hubs listed alongside devices have no ids
        return (
            (device / "idVendor").read_text(encoding="ascii").strip(),
            (device / "idProduct").read_text(encoding="ascii").strip(),
        )
    except (OSError, UnicodeDecodeError):
        return None

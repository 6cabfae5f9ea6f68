"""Whether a signed target may be installed on this device (pure, no I/O).

The checks run on signed data only (the target's custom fields and the model's signed
policy), so a compromised control plane cannot talk a device into loading a model for
other hardware, outside its firmware range, revoked, or below the release floor.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from edgefleet.signing.errors import (
    BelowFloorError,
    IncompatibleFirmwareError,
    IncompatibleHardwareError,
    InvalidMetadataError,
    RevokedError,
)
from edgefleet.signing.layout import ArtifactInfo, ModelPolicy

ANY_HARDWARE = "any"


@dataclass(frozen=True)
class DeviceFacts:
    """What the device knows about itself, from its own probes (not from the server)."""

    hardware: str
    firmware: str


def check_installable(info: ArtifactInfo, policy: ModelPolicy | None, device: DeviceFacts) -> None:
    """Refuse a target this device must not install.

    Raises:
        IncompatibleHardwareError, IncompatibleFirmwareError, RevokedError,
        BelowFloorError, InvalidMetadataError.
    """
    label = f"{info.model} {info.version} ({info.variant})"
    if ANY_HARDWARE not in info.hardware and device.hardware not in info.hardware:
        raise IncompatibleHardwareError(
            f"{label} is signed for hardware {', '.join(info.hardware)}, not {device.hardware}",
            details={"hardware": device.hardware, "allowed": list(info.hardware)},
        )
    if info.firmware:
        try:
            allowed = SpecifierSet(info.firmware)
        except InvalidSpecifier as exc:
            raise InvalidMetadataError(
                f"{label} has a malformed firmware range {info.firmware!r}"
            ) from exc
        try:
            firmware = Version(device.firmware)
        except InvalidVersion as exc:
            raise IncompatibleFirmwareError(
                f"device firmware {device.firmware!r} is not a version, so it cannot satisfy "
                f"{label}'s firmware range {info.firmware}"
            ) from exc
        if not allowed.contains(firmware, prereleases=True):
            raise IncompatibleFirmwareError(
                f"{label} needs firmware {info.firmware}; this device runs {device.firmware}",
                details={"firmware": device.firmware, "range": info.firmware},
            )
    if policy is None:
        return
    if info.version in policy.revoked:
        raise RevokedError(
            f"{label} is revoked by the signed policy of {info.model}",
            details={"version": info.version},
        )
    if info.release < policy.min_release:
        raise BelowFloorError(
            f"{label} is release {info.release}, below the signed floor {policy.min_release}",
            details={"release": info.release, "min_release": policy.min_release},
        )

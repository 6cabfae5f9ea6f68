"""Choosing which variant of a version a device gets (pure)."""

from __future__ import annotations

from edgefleet.fleet.errors import FleetError
from edgefleet.registry.domain import ModelVersion, Variant


class NoVariantError(FleetError):
    """The version has no variant built for the device's hardware."""

    code = "no_variant"


def choose_variant(version: ModelVersion, hardware: str | None) -> Variant:
    """The variant for ``hardware``: one naming it exactly wins over one for ``any``;
    among equals, manifest order decides. A device with unknown hardware gets the first.

    Raises:
        NoVariantError: no variant fits.
    """
    if hardware is None:
        return version.variants[0]
    exact = [v for v in version.variants if hardware in v.hardware]
    if exact:
        return exact[0]
    generic = [v for v in version.variants if "any" in v.hardware]
    if generic:
        return generic[0]
    available = "; ".join(f"{v.name}: {', '.join(v.hardware)}" for v in version.variants)
    raise NoVariantError(
        f"{version.model} {version.version} has no variant for hardware {hardware!r} ({available})",
        details={"hardware": hardware},
    )

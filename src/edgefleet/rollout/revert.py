"""Where an abort sends each device back to (pure).

When a device is assigned, the rollout records the version of the model it runs: the
one it reported running, else (its first reports may still be on their way) the one it
was told to run before. An abort with revert sends every device the rollout touched
back to the definition's ``previous_version``, or to its recorded version, with a trial
that cannot fail: the agent keeps that version in its other slot and switches back
without a download. A device with nothing to go back to keeps what it runs::

    previous_version(device, "digits")  # recorded at assignment
    groups = revert_groups(touched, spec.previous_version, spec.version)
"""

from __future__ import annotations

from collections.abc import Iterable

from edgefleet.fleet.domain import TrialPolicy
from edgefleet.rollout.ports import TargetDevice, TouchedDevice

#: A revert returns to a model the device ran before: no trial to sit through again.
REVERT_TRIAL = TrialPolicy(
    min_inferences=0,
    min_seconds=0,
    max_error_rate=1.0,
    max_latency_ratio=None,
    max_cpu_ratio=None,
)


def previous_version(device: TargetDevice, model: str) -> str | None:
    """The version of ``model`` a revert sends ``device`` back to: the one it reported
    running, else the one it was told to run before (``None``: none)."""
    if device.reported_version is not None and device.reported_model in (None, model):
        return device.reported_version
    if device.desired_model == model:
        return device.desired_version
    return None


def revert_version(previous: str | None, recorded: str | None, candidate: str) -> str | None:
    """The version a device goes back to: the definition's ``previous`` version, else the
    one ``recorded`` at its assignment; ``None`` when there is none other than the
    ``candidate``."""
    version = previous or recorded
    return None if version is None or version == candidate else version


def revert_groups(
    touched: Iterable[TouchedDevice], previous: str | None, candidate: str
) -> dict[tuple[str, str | None], list[int]]:
    """The devices to send back, by (version, hardware): each group gets one artifact."""
    groups: dict[tuple[str, str | None], list[int]] = {}
    for device in touched:
        version = revert_version(previous, device.previous_version, candidate)
        if version is not None:
            groups.setdefault((version, device.hardware), []).append(device.pk)
    return groups

"""Who may set which device attribute.

A device states facts about itself; an operator decides what the fleet does with it.
Attributes that access and rollout decisions read as the operator's word about a device
must therefore never come from the device, or one device could move itself into another
group's models or into another hardware's rollouts. The rule, enforced here and nowhere
else (the fleet service asks :func:`check_device_attributes` for every enrollment and
every report that carries attributes):

- **operator labels** (:data:`OPERATOR_ONLY`: ``group``, ``cohort``): never from the
  device. ``group`` comes from the enrollment token the device used (a token bound to a
  group always wins) or from an operator; ``cohort`` only from an operator.
- **identity** (:data:`SET_AT_ENROLLMENT`: ``hw``, ``hardware``): the device states it
  when it enrolls (it chooses the artifact variant); a report may repeat it but not
  change it. Changing it takes an operator (``PATCH /api/v1/devices/{id}/attributes``),
  or a re-enrollment the operator allowed.
- **reported facts**: every other attribute (``firmware``, ``region``, ``site``, any
  free-form key): the device sets and updates them, at enrollment and in its reports.

An operator may set or remove any attribute. docs/security.md has the table.

Example::

    >>> check_device_attributes({"region": "eu-west", "hw": "rev2"}, current=None)
    >>> check_device_attributes({"group": "production"}, current=None)
    Traceback (most recent call last):
    ...
    AttributeNotAllowedError: group is set by the enrollment token or an operator, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefleet.fleet.errors import AttributeNotAllowedError

OPERATOR_ONLY = frozenset({"group", "cohort"})
SET_AT_ENROLLMENT = frozenset({"hw", "hardware"})


def check_device_attributes(
    attributes: Mapping[str, Any], *, current: Mapping[str, Any] | None
) -> None:
    """Refuse what a device may not set: at enrollment (``current`` is None) operator
    labels; in a report (``current``: the stored attributes) also a change of identity.

    Raises:
        AttributeNotAllowedError: naming every refused attribute and who sets it.
    """
    labels = sorted(key for key in attributes if key in OPERATOR_ONLY)
    identity = (
        []
        if current is None
        else sorted(
            key
            for key in attributes
            if key in SET_AT_ENROLLMENT and current.get(key) != attributes[key]
        )
    )
    if not (labels or identity):
        return
    problems = []
    if labels:
        problems.append(
            f"{', '.join(labels)} {'is' if len(labels) == 1 else 'are'} set by the "
            "enrollment token or an operator, not by the device"
        )
    if identity:
        problems.append(
            f"{', '.join(identity)} {'is' if len(identity) == 1 else 'are'} stated at "
            "enrollment; after it only an operator changes "
            f"{'it' if len(identity) == 1 else 'them'}"
        )
    raise AttributeNotAllowedError(
        "; ".join(problems),
        details={"attributes": labels + identity},
    )

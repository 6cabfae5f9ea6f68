"""Errors of the fleet: devices, enrollment, twin, targeting queries."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class FleetError(EdgefleetError):
    """Base class of fleet errors."""

    code = "fleet_error"


class QuerySyntaxError(FleetError):
    """A targeting query does not parse; ``details`` has ``position`` (0-based) and
    ``expected`` (what would have been valid there)."""

    code = "query_syntax"


class QueryFieldError(FleetError):
    """A targeting query uses a comparison the field does not support."""

    code = "query_field"


class DeviceNotFoundError(FleetError):
    """No device with that id is enrolled."""

    code = "device_not_found"


class EnrollmentError(FleetError):
    """The enrollment token is unknown, expired, revoked or used up."""

    code = "enrollment_refused"


class DeviceExistsError(FleetError):
    """The device id is enrolled already; re-enrolling needs an operator's approval."""

    code = "device_exists"


class AttributeNotAllowedError(FleetError):
    """A device sent an attribute only an operator sets (see ``fleet.attributes``);
    ``details["attributes"]`` names them."""

    code = "attribute_not_allowed"


class InvalidSequenceError(FleetError):
    """An event batch carries malformed sequence numbers."""

    code = "invalid_sequence"

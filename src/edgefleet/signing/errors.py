"""Typed errors of signed delivery.

Device side, every failure to obtain a trusted target is a ``DeliveryError`` whose
``reason`` is the code the agent reports (``signature``, ``expired``, ``rollback``,
``mix_and_match``, ``hash_mismatch``, ``too_large``, ``incompatible_hardware``,
``incompatible_firmware``, ``revoked``, ``below_floor``, ``not_found``, ``network``,
``invalid_metadata``, ``missing_sha256``, ``storage``). Those that another attempt may
get past (``network``, ``storage``) are ``transient``. Server side, key and repository
problems are ``SigningError``.
"""

from __future__ import annotations

from typing import Any

from edgefleet.errors import EdgefleetError


class DeliveryError(EdgefleetError):
    """A target could not be obtained and trusted; nothing was installed."""

    code = "delivery_error"
    reason = "delivery_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={"reason": self.reason, **(details or {})})


class SignatureError(DeliveryError):
    """Metadata is not signed by the threshold of keys the trusted root names."""

    code = reason = "signature"


class MetadataExpiredError(DeliveryError):
    """Metadata is past its expiry (a freeze attack, or a repository nobody refreshes)."""

    code = reason = "expired"


class RollbackError(DeliveryError):
    """Metadata is older than what the device has already seen."""

    code = reason = "rollback"


class MixAndMatchError(RollbackError):
    """Metadata versions disagree with what the snapshot or timestamp says."""

    code = reason = "mix_and_match"


class HashMismatchError(DeliveryError):
    """Downloaded bytes do not match the signed length and hashes."""

    code = reason = "hash_mismatch"


class TooLargeError(DeliveryError):
    """The server sent more bytes than the signed (or configured maximum) length."""

    code = reason = "too_large"


class IncompatibleHardwareError(DeliveryError):
    """The target is not signed for this device's hardware."""

    code = reason = "incompatible_hardware"


class IncompatibleFirmwareError(DeliveryError):
    """This device's firmware is outside the target's signed firmware range."""

    code = reason = "incompatible_firmware"


class RevokedError(DeliveryError):
    """The version is revoked by the model's signed policy."""

    code = reason = "revoked"


class BelowFloorError(DeliveryError):
    """The version's release is below the model's signed release floor."""

    code = reason = "below_floor"


class TargetNotFoundError(DeliveryError):
    """No trusted metadata names that target."""

    code = reason = "not_found"


class NetworkError(DeliveryError):
    """The repository could not be reached or answered with an HTTP error."""

    code = reason = "network"
    transient = True


class BadRangeError(NetworkError):
    """The repository cannot continue a partial download: it answered HTTP 416, or a
    206 whose ``Content-Range`` is not the rest of the signed file."""


class InvalidMetadataError(DeliveryError):
    """Metadata or a target's custom fields are malformed."""

    code = reason = "invalid_metadata"


class MissingSha256Error(InvalidMetadataError):
    """The target's signed hashes have no SHA-256, which the device names files and
    slots by and checks the desired state against."""

    code = reason = "missing_sha256"


class StorageError(DeliveryError):
    """The device could not write or read a download or its trusted metadata (a full
    disk, an I/O error)."""

    code = reason = "storage"
    transient = True


class SigningError(EdgefleetError):
    """Base class of server-side key and repository errors."""

    code = "signing_error"


class KeysExistError(SigningError):
    """Keys are already initialised; refusing to overwrite them."""

    code = "keys_exist"


class KeysMissingError(SigningError):
    """The TUF keys or repository are not initialised yet."""

    code = "keys_missing"


class SignerUnavailableError(SigningError):
    """A role's private key cannot be loaded (kept offline, or the URI is wrong)."""

    code = "signer_unavailable"


class RepositoryStateError(SigningError):
    """The repository on disk is inconsistent or cannot be changed as asked."""

    code = "repository_state"

"""Errors of the model registry and the artifact store."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class RegistryError(EdgefleetError):
    """Base class of registry errors."""

    code = "registry_error"


class InvalidVersionError(RegistryError):
    """A version string is not a semantic version."""

    code = "invalid_version"


class ManifestError(RegistryError):
    """The bundle's ``edgefleet.yaml`` is missing, unreadable or invalid."""

    code = "invalid_manifest"


class BundleError(RegistryError):
    """A file the manifest names is missing or unusable."""

    code = "invalid_bundle"


class ArtifactHashMismatchError(RegistryError):
    """An artifact's bytes do not hash to the SHA-256 the manifest (or caller) expects."""

    code = "artifact_hash_mismatch"


class ArtifactNotFoundError(RegistryError):
    """No blob with that digest is in the artifact store."""

    code = "artifact_not_found"


class GoldenSampleError(RegistryError):
    """Golden samples are unreadable or do not fit the model's input/output schema."""

    code = "invalid_golden_samples"


class ReferenceProfileError(RegistryError):
    """The reference sample cannot be profiled."""

    code = "invalid_reference"


class ModelVerificationError(RegistryError):
    """An artifact does not load, or does not reproduce its golden outputs."""

    code = "model_verification_failed"


class VersionExistsError(RegistryError):
    """The version is already registered; versions are immutable."""

    code = "version_exists"


class ModelNotFoundError(RegistryError):
    """No model with that name is registered."""

    code = "model_not_found"


class VersionNotFoundError(RegistryError):
    """The model has no version with that number."""

    code = "version_not_found"


class InvalidStageError(RegistryError):
    """Unknown stage name, or a stage change the lifecycle does not allow."""

    code = "invalid_stage"

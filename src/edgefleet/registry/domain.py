"""Registry domain objects: what a registered model version is.

These are plain immutable values with no knowledge of the database or the file system;
the store maps them to tables and the service builds them from bundles. Their JSON form
(``model_dump(mode="json")``) is the documented ``--json`` output of the CLI.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.registry.profile import ReferenceProfile

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"

DType = Literal["float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"]
OutputRole = Literal["label", "probabilities", "scores", "embedding"]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class Stage(StrEnum):
    """Where a version is in its life: new, serving the fleet, or retired."""

    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(Frozen):
    """One named input or output tensor. ``None`` in ``shape`` is a dynamic dimension."""

    name: str = Field(min_length=1, max_length=256)
    dtype: DType
    shape: tuple[int | None, ...] = Field(min_length=1, max_length=8)
    role: OutputRole | None = None

    @field_validator("shape", mode="before")
    @classmethod
    def _dynamic_dims(cls, value: Any) -> Any:
        # Manifests may write a dynamic dimension as -1, null or a symbolic name ("batch").
        if isinstance(value, list | tuple):
            return tuple(None if d in (-1, None) or isinstance(d, str) else d for d in value)
        return value

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, value: tuple[int | None, ...]) -> tuple[int | None, ...]:
        for dim in value:
            if dim is not None and dim < 1:
                raise ValueError(f"dimensions must be positive or dynamic (-1), got {dim}")
        return value


class Tolerance(Frozen):
    """How close a float output must be to its golden value: ``|a-e| <= atol + rtol*|e|``."""

    atol: float = Field(default=1e-4, ge=0)
    rtol: float = Field(default=1e-3, ge=0)


class Compatibility(Frozen):
    """Where a version may run. Empty lists mean no restriction."""

    hardware: tuple[str, ...] = ()
    firmware: str = Field(default="", description="PEP 440 specifier set, e.g. '>=2.1,<4'")
    groups: tuple[str, ...] = Field(default=(), description="device groups allowed")

    @field_validator("firmware")
    @classmethod
    def _valid_specifier(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier as exc:
            raise ValueError(f"{value!r} is not a version range (write e.g. '>=2.1,<4')") from exc
        return value

    def allows_firmware(self, firmware_version: str) -> bool:
        """Whether ``firmware_version`` falls in the compatible range."""
        return SpecifierSet(self.firmware).contains(firmware_version, prereleases=True)


class Resources(Frozen):
    """What the model needs on a device."""

    ram_mb: float | None = Field(default=None, ge=0)
    disk_mb: float | None = Field(default=None, ge=0)
    expected_latency_ms: float | None = Field(default=None, ge=0)


class Variant(Frozen):
    """One artifact of a version for a runtime, precision and hardware."""

    name: Name
    runtime: str = Field(min_length=1, max_length=64)
    precision: str = Field(min_length=1, max_length=32)
    hardware: tuple[str, ...]
    filename: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    golden_sha256: str | None = Field(
        default=None, description="golden samples for this variant, if not the version's"
    )


class GoldenSet(Frozen):
    """The version's golden samples: an ``.npz`` blob in the artifact store."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    count: int = Field(ge=1)
    tolerance: Tolerance


class ModelVersion(Frozen):
    """A registered, immutable model version (its ``stage`` is the only thing that moves)."""

    model: Name
    version: str
    stage: Stage = Stage.CANDIDATE
    framework: str = ""
    description: str = ""
    model_card: str = ""
    author: str = ""
    created_at: datetime
    data_version: str = ""
    code_version: str = ""
    parent: str | None = Field(default=None, description="version this one derives from")
    tags: tuple[str, ...] = ()
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    classes: tuple[str, ...] = ()
    compatibility: Compatibility = Compatibility()
    resources: Resources = Resources()
    metrics: dict[str, float] = Field(default_factory=dict)
    higher_is_better: dict[str, bool] = Field(
        default_factory=dict,
        description="metric name -> direction, for the version's and variants' metrics "
        "whose manifest declares one",
    )
    variants: tuple[Variant, ...] = Field(min_length=1)
    golden: GoldenSet
    reference_profile: ReferenceProfile | None = None

    @model_validator(mode="after")
    def _unique_variants(self) -> ModelVersion:
        names = [v.name for v in self.variants]
        if len(names) != len(set(names)):
            raise ValueError(f"variant names must be unique, got {names}")
        return self

    def variant(self, name: str) -> Variant | None:
        """The variant called ``name``, if the version has one."""
        return next((v for v in self.variants if v.name == name), None)

    def summary(self) -> dict[str, Any]:
        """The short JSON form used by listings (documented in docs/cli.md)."""
        return {
            "model": self.model,
            "version": self.version,
            "stage": self.stage.value,
            "created_at": self.created_at.isoformat(),
            "author": self.author,
            "parent": self.parent,
            "tags": list(self.tags),
            "metrics": self.metrics,
            "variants": [
                {
                    "name": v.name,
                    "runtime": v.runtime,
                    "precision": v.precision,
                    "hardware": list(v.hardware),
                    "sha256": v.sha256,
                    "size": v.size,
                }
                for v in self.variants
            ],
        }


class StageChange(Frozen):
    """One entry of a version's stage history."""

    model: str
    version: str
    from_stage: Stage | None
    to_stage: Stage
    actor: str
    at: datetime
    reason: str = ""

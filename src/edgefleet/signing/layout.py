"""Where model files live in the TUF repository, and the custom fields they carry.

Every published file is a TUF target under ``models/<name>/<version>/...``; the signed
``custom`` field of each target carries, under the ``edgefleet`` key, what the device
enforces before it loads anything::

    models/digits/1.1.0/onnx-fp32/model-fp32.onnx   kind=artifact (hardware, firmware, release)
    models/digits/1.1.0/onnx-fp32/golden.npz        kind=golden
    models/digits/1.1.0/profile.json                kind=profile
    models/digits/policy.json                       kind=policy (revoked versions, release floor)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from edgefleet.signing.errors import InvalidMetadataError

CUSTOM_KEY = "edgefleet"


def artifact_path(model: str, version: str, variant: str, filename: str) -> str:
    return f"models/{model}/{version}/{variant}/{filename}"


def golden_path(model: str, version: str, variant: str) -> str:
    return f"models/{model}/{version}/{variant}/golden.npz"


def profile_path(model: str, version: str) -> str:
    return f"models/{model}/{version}/profile.json"


def policy_path(model: str) -> str:
    return f"models/{model}/policy.json"


class _Custom(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ArtifactInfo(_Custom):
    """Signed facts about a model artifact, checked on the device before download."""

    kind: Literal["artifact"] = "artifact"
    model: str
    version: str
    variant: str
    runtime: str
    precision: str
    hardware: tuple[str, ...]
    firmware: str = ""
    release: int = Field(ge=1)
    golden: str
    atol: float
    rtol: float
    profile: str | None = None

    @field_serializer("atol", "rtol")
    def _as_text(self, value: float) -> str:
        # TUF signs canonical JSON, which has no floating-point numbers.
        return repr(value)


class SupportingInfo(_Custom):
    """Signed facts about a golden-sample or profile file of a version."""

    kind: Literal["golden", "profile"]
    model: str
    version: str
    variant: str | None = None


class ModelPolicy(_Custom):
    """A model's signed revocation list and release floor."""

    kind: Literal["policy"] = "policy"
    model: str
    revoked: tuple[str, ...] = ()
    min_release: int = Field(default=0, ge=0)


CustomInfo = ArtifactInfo | SupportingInfo | ModelPolicy


def custom_fields(info: CustomInfo) -> dict[str, Any]:
    """The ``custom`` value of a target carrying ``info``."""
    return {CUSTOM_KEY: info.model_dump(mode="json")}


def parse_custom(path: str, custom: Any) -> CustomInfo:
    """Read the edgefleet facts from a target's signed ``custom`` field.

    Raises:
        InvalidMetadataError: the field is missing or malformed.
    """
    data = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
    if not isinstance(data, dict):
        raise InvalidMetadataError(f"target {path} carries no edgefleet custom fields")
    kind = data.get("kind")
    model: type[CustomInfo]
    if kind == "artifact":
        model = ArtifactInfo
    elif kind == "policy":
        model = ModelPolicy
    elif kind in ("golden", "profile"):
        model = SupportingInfo
    else:
        raise InvalidMetadataError(f"target {path} has unknown edgefleet kind {kind!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidMetadataError(f"target {path} has malformed custom fields: {exc}") from exc

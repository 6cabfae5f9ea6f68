"""The bundle manifest, ``edgefleet.yaml``: parsing and validation.

A manifest describes one model version and the files of its bundle. Unknown keys are
errors (a typo must not silently drop metadata). ``docs/bundle-format.md`` is the
reference; a minimal manifest::

    format: 1
    name: digits
    version: 1.0.0
    inputs:  [{name: X, dtype: float32, shape: [-1, 64]}]
    outputs: [{name: probabilities, dtype: float32, shape: [-1, 10], role: probabilities}]
    variants:
      - {name: onnx-fp32, file: model.onnx, sha256: <64 hex>, precision: fp32}
    golden: {file: golden.npz}

A metric is a number, or a number with its direction, which ``model compare`` needs to
say which version is better::

    metrics:
      accuracy: {value: 0.974, higher_is_better: true}
      latency_p95_ms: {value: 0.0103, higher_is_better: false}
      f1: 0.96                 # no direction declared: compared without a verdict
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from edgefleet.registry.domain import (
    Compatibility,
    Name,
    Resources,
    TensorSpec,
    Tolerance,
)
from edgefleet.registry.errors import InvalidVersionError, ManifestError
from edgefleet.registry.semver import parse_version

MANIFEST_FILENAME = "edgefleet.yaml"
SUPPORTED_FORMATS = (1,)
MAX_MANIFEST_BYTES = 1 << 20


def _relative_file(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"{value!r} must be a relative path inside the bundle")
    return str(path)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DirectedMetric(_Strict):
    """A metric that declares which way is better: ``{value: 0.97, higher_is_better: true}``."""

    value: float
    higher_is_better: bool


def _metric_form(value: Any) -> str:
    return "directed" if isinstance(value, dict | DirectedMetric) else "number"


#: A manifest metric: a bare number (no direction declared) or a ``DirectedMetric``. The
#: discriminator reports one error per bad metric, not one per form it might have had.
Metric = Annotated[
    Annotated[float, Tag("number")] | Annotated[DirectedMetric, Tag("directed")],
    Discriminator(_metric_form),
]


def metric_values(metrics: Mapping[str, Metric]) -> dict[str, float]:
    """The numbers of ``metrics``, without their directions."""
    return {
        name: metric.value if isinstance(metric, DirectedMetric) else metric
        for name, metric in metrics.items()
    }


class VariantEntry(_Strict):
    name: Name
    file: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size: int | None = Field(default=None, ge=0)
    runtime: str = Field(default="onnxruntime", min_length=1, max_length=64)
    precision: str = Field(default="fp32", min_length=1, max_length=32)
    hardware: tuple[str, ...] = ("any",)
    metrics: dict[str, Metric] = Field(default_factory=dict)
    golden: str | None = Field(default=None, description="variant-specific golden samples")

    @field_validator("file", "golden")
    @classmethod
    def _inside_bundle(cls, value: str | None) -> str | None:
        return None if value is None else _relative_file(value)

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class GoldenEntry(_Strict):
    file: str
    tolerance: Tolerance = Tolerance()

    @field_validator("file")
    @classmethod
    def _inside_bundle(cls, value: str) -> str:
        return _relative_file(value)


class ReferenceEntry(_Strict):
    file: str
    bins: int = Field(default=10, ge=2, le=100)

    @field_validator("file")
    @classmethod
    def _inside_bundle(cls, value: str) -> str:
        return _relative_file(value)


class Manifest(_Strict):
    """A validated ``edgefleet.yaml``."""

    format: int = 1
    name: Name
    version: str
    framework: str = ""
    description: str = ""
    model_card: str | None = Field(default=None, description="markdown file in the bundle")
    author: str = ""
    data_version: str = ""
    code_version: str = ""
    parent: str | None = None
    tags: tuple[str, ...] = ()
    inputs: tuple[TensorSpec, ...] = Field(min_length=1)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1)
    classes: tuple[str, ...] = ()
    compatibility: Compatibility = Compatibility()
    resources: Resources = Resources()
    metrics: dict[str, Metric] = Field(default_factory=dict)
    variants: tuple[VariantEntry, ...] = Field(min_length=1)
    golden: GoldenEntry
    reference: ReferenceEntry | None = None

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value not in SUPPORTED_FORMATS:
            raise ValueError(f"bundle format {value} is not supported (known: 1)")
        return value

    @field_validator("version", "parent")
    @classmethod
    def _semver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(parse_version(value))
        except InvalidVersionError as exc:
            raise ValueError(exc.message) from exc

    @field_validator("model_card")
    @classmethod
    def _card_path(cls, value: str | None) -> str | None:
        return None if value is None else _relative_file(value)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        tags = tuple(dict.fromkeys(t.strip() for t in value))
        if any(not t or len(t) > 64 for t in tags):
            raise ValueError("tags must be non-empty strings of at most 64 characters")
        return tags

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [s.name for s in specs]
            if len(names) != len(set(names)):
                raise ValueError(f"{kind} names must be unique, got {names}")
        variant_names = [v.name for v in self.variants]
        if len(variant_names) != len(set(variant_names)):
            raise ValueError(f"variant names must be unique, got {variant_names}")
        # A name means one quantity in a manifest: one direction for all its metrics.
        _declared_directions([self.metrics, *(v.metrics for v in self.variants)])
        if self.parent is not None and self.parent == self.version:
            raise ValueError("parent must be another version than the version itself")
        for spec in self.outputs:
            if spec.role == "probabilities" and self.classes:
                width = spec.shape[-1] if len(spec.shape) >= 2 else None
                if width is not None and width != len(self.classes):
                    raise ValueError(
                        f"output {spec.name!r} has {width} classes but 'classes' lists "
                        f"{len(self.classes)}"
                    )
        return self

    def metric_directions(self) -> dict[str, bool]:
        """Metric name -> ``higher_is_better``, for every metric that declares it (the
        version's and the variants' metrics share one direction per name)."""
        return _declared_directions([self.metrics, *(v.metrics for v in self.variants)])

    def output_with_role(self, role: str) -> TensorSpec | None:
        """The first output declared with ``role``."""
        return next((o for o in self.outputs if o.role == role), None)


def _declared_directions(metric_maps: list[dict[str, Metric]]) -> dict[str, bool]:
    """Metric name -> ``higher_is_better`` over several metric maps.

    Raises:
        ValueError: one name is declared higher-is-better in one place and
            lower-is-better in another.
    """
    directions: dict[str, bool] = {}
    for metrics in metric_maps:
        for name, metric in metrics.items():
            if not isinstance(metric, DirectedMetric):
                continue
            if directions.setdefault(name, metric.higher_is_better) != metric.higher_is_better:
                raise ValueError(
                    f"metric {name!r} is declared both higher_is_better: true and false"
                )
    return directions


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the manifest field (``variants[0].sha256``)."""
    lines = []
    for problem in error.errors():
        location = ""
        for part in problem["loc"]:
            location += (
                f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
            )
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field (check the spelling against docs/bundle-format.md)"
        lines.append(f"{source}: {location or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_manifest(text: str, source: str = MANIFEST_FILENAME) -> Manifest:
    """Parse and validate manifest YAML.

    Raises:
        ManifestError: the text is not YAML, not a mapping, or fails validation; the
            message lists every problem with its field path.
    """
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{source} must be a mapping of fields, got {type(data).__name__}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, source)
        raise ManifestError(
            f"{source} is invalid:\n{problems}",
            details={"problems": problems.splitlines()},
        ) from exc

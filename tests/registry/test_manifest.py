import pytest
import yaml

from edgefleet.registry.errors import ManifestError
from edgefleet.registry.manifest import metric_values, parse_manifest

SHA = "0" * 64


def minimal(**changes) -> dict:
    data = {
        "format": 1,
        "name": "digits",
        "version": "1.0.0",
        "inputs": [{"name": "X", "dtype": "float32", "shape": [-1, 64]}],
        "outputs": [{"name": "p", "dtype": "float32", "shape": [-1, 10], "role": "probabilities"}],
        "variants": [{"name": "onnx-fp32", "file": "model.onnx", "sha256": SHA}],
        "golden": {"file": "golden.npz"},
    }
    data.update(changes)
    return data


def parse(data: dict):
    return parse_manifest(yaml.safe_dump(data), source="edgefleet.yaml")


def test_minimal_manifest_gets_defaults():
    manifest = parse(minimal())
    assert manifest.inputs[0].shape == (None, 64)
    variant = manifest.variants[0]
    assert (variant.runtime, variant.precision, variant.hardware) == (
        "onnxruntime",
        "fp32",
        ("any",),
    )
    assert manifest.golden.tolerance.atol > 0
    assert manifest.reference is None


def test_version_is_normalised_and_checked():
    assert parse(minimal(version="2.0.0-rc.1")).version == "2.0.0-rc.1"
    with pytest.raises(ManifestError, match=r"version: '1\.0' is not a semantic version"):
        parse(minimal(version="1.0"))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "Digits!"}, r"name: String should match pattern"),
        ({"nmae": "x"}, r"nmae: unknown field"),
        ({"inputs": []}, r"inputs: Tuple should have at least 1 item"),
        ({"golden": None}, r"golden: Input should be"),
        (
            {"variants": [{"name": "v", "file": "m.onnx", "sha256": "abc"}]},
            r"variants\[0\]\.sha256",
        ),
        (
            {"variants": [{"name": "v", "file": "../m.onnx", "sha256": SHA}]},
            r"must be a relative path inside the bundle",
        ),
        (
            {"variants": [{"name": "v", "file": "/etc/passwd", "sha256": SHA}]},
            r"must be a relative path",
        ),
        ({"compatibility": {"firmware": "newest"}}, r"'newest' is not a version range"),
        ({"classes": ["a", "b"]}, r"has 10 classes but 'classes' lists 2"),
        ({"format": 2}, r"bundle format 2 is not supported"),
        ({"parent": "1.0.0"}, r"parent must be another version"),
        (
            {"inputs": [{"name": "X", "dtype": "float32", "shape": [0, 3]}]},
            r"dimensions must be positive",
        ),
        ({"inputs": [{"name": "X", "dtype": "complex64", "shape": [1]}]}, r"inputs\[0\]\.dtype"),
        ({"metrics": {"f1": {"value": 0.9}}}, r"metrics\.f1\.directed\.higher_is_better: Field"),
        ({"metrics": {"f1": "high"}}, r"metrics\.f1\.number: Input should be a valid number"),
        (
            {"metrics": {"f1": {"value": 0.9, "higher_is_better": True, "better": "up"}}},
            r"metrics\.f1\.directed\.better: unknown field",
        ),
        (
            {
                "metrics": {"loss": {"value": 0.1, "higher_is_better": False}},
                "variants": [
                    {
                        "name": "v",
                        "file": "m.onnx",
                        "sha256": SHA,
                        "metrics": {"loss": {"value": 0.1, "higher_is_better": True}},
                    }
                ],
            },
            r"metric 'loss' is declared both higher_is_better: true and false",
        ),
    ],
)
def test_invalid_manifests_name_the_field(changes, expected):
    with pytest.raises(ManifestError, match=expected) as info:
        parse(minimal(**changes))
    assert info.value.message.startswith("edgefleet.yaml is invalid")


def test_missing_required_fields_are_all_listed():
    with pytest.raises(ManifestError) as info:
        parse({"format": 1, "name": "digits"})
    problems = info.value.details["problems"]
    for field in ("version", "inputs", "outputs", "variants", "golden"):
        assert any(f": {field}: Field required" in p for p in problems), field


def test_duplicate_variant_names_are_refused():
    variant = {"name": "v", "file": "m.onnx", "sha256": SHA}
    with pytest.raises(ManifestError, match="variant names must be unique"):
        parse(minimal(variants=[variant, variant]))


def test_not_yaml_or_not_a_mapping():
    with pytest.raises(ManifestError, match="is not valid YAML"):
        parse_manifest("name: [unclosed", source="edgefleet.yaml")
    with pytest.raises(ManifestError, match="must be a mapping of fields, got list"):
        parse_manifest("- a\n- b\n", source="edgefleet.yaml")


def test_metrics_may_declare_their_direction():
    variant = {
        "name": "onnx-fp32",
        "file": "model.onnx",
        "sha256": SHA,
        "metrics": {"latency_p95_ms": {"value": 0.011, "higher_is_better": False}, "f1": 0.8},
    }
    manifest = parse(
        minimal(
            metrics={"accuracy": {"value": 0.97, "higher_is_better": True}, "f1": 0.9},
            variants=[variant],
        )
    )
    assert metric_values(manifest.metrics) == {"accuracy": 0.97, "f1": 0.9}
    assert metric_values(manifest.variants[0].metrics) == {"latency_p95_ms": 0.011, "f1": 0.8}
    # Bare numbers (every manifest before directions existed) declare none.
    assert manifest.metric_directions() == {"accuracy": True, "latency_p95_ms": False}
    assert parse(minimal(metrics={"accuracy": 0.9})).metric_directions() == {}

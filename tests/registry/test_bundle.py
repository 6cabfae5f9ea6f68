import numpy as np
import pytest

from edgefleet.registry.bundle import load_bundle
from edgefleet.registry.errors import (
    ArtifactHashMismatchError,
    BundleError,
    GoldenSampleError,
    ManifestError,
    ReferenceProfileError,
)
from edgefleet.registry.golden import read_golden, write_golden, write_npz
from tests.conftest import edit_manifest, rehash


def test_example_bundle_loads(example_bundles):
    bundle = load_bundle(example_bundles["1.1.0"])
    assert bundle.manifest.version == "1.1.0"
    assert set(bundle.artifacts) == {"onnx-fp32", "onnx-int8"}
    assert bundle.golden.count == 16
    assert set(bundle.variant_golden) == {"onnx-fp32", "onnx-int8"}
    assert bundle.reference["X"].shape == (540, 64)
    assert bundle.model_card.startswith("# digits 1.1.0")


def test_not_a_directory_and_no_manifest(tmp_path):
    with pytest.raises(BundleError, match="is not a bundle directory"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(ManifestError, match=r"has no edgefleet.yaml"):
        load_bundle(tmp_path)


def test_artifact_changed_after_manifest(bundle_copy):
    bundle = bundle_copy("1.0.0")
    with (bundle / "model-fp32.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(
        ArtifactHashMismatchError, match=r"variant 'onnx-fp32': model-fp32.onnx has SHA-256"
    ):
        load_bundle(bundle)


def test_wrong_size_in_manifest(bundle_copy):
    bundle = bundle_copy("1.0.0")
    edit_manifest(bundle, lambda d: d["variants"][0].update(size=1))
    with pytest.raises(ArtifactHashMismatchError, match="bytes but the manifest says 1"):
        load_bundle(bundle)


def test_missing_artifact_and_escaping_symlink(bundle_copy, tmp_path):
    bundle = bundle_copy("1.0.0")
    (bundle / "model-int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"variant 'onnx-int8': model-int8.onnx does not exist"):
        load_bundle(bundle)
    other = bundle_copy("1.0.0")
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((other / "model-int8.onnx").read_bytes())
    (other / "model-int8.onnx").unlink()
    (other / "model-int8.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="points outside the bundle"):
        load_bundle(other)


def test_golden_samples_that_do_not_fit_the_schema(bundle_copy):
    bundle = bundle_copy("1.0.0")
    golden = read_golden(bundle / "golden-fp32.npz")
    golden.inputs["X"] = golden.inputs["X"][:, :32]
    write_golden(bundle / "golden-fp32.npz", golden)
    with pytest.raises(
        GoldenSampleError, match=r"dimension 1 is 32 but the schema \[-1, 64\] fixes it at 64"
    ):
        load_bundle(bundle)


def test_reference_that_does_not_fit_the_schema(bundle_copy):
    bundle = bundle_copy("1.0.0")
    write_npz(bundle / "reference.npz", {"input.X": np.zeros((10, 64), dtype=np.float64)})
    with pytest.raises(ReferenceProfileError, match="dtype float64 but the schema says float32"):
        load_bundle(bundle)
    write_npz(bundle / "reference.npz", {"input.Y": np.zeros((10, 64), dtype=np.float32)})
    with pytest.raises(ReferenceProfileError, match=r"has no array 'input.X'"):
        load_bundle(bundle)


def test_model_card_must_be_text(bundle_copy):
    bundle = bundle_copy("1.0.0")
    (bundle / "MODEL_CARD.md").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(BundleError, match="is not UTF-8 text"):
        load_bundle(bundle)


def test_rehash_helper_restores_a_consistent_bundle(bundle_copy):
    bundle = bundle_copy("1.0.0")
    (bundle / "model-fp32.onnx").write_bytes(b"different")
    rehash(bundle, 0)
    assert load_bundle(bundle).artifacts["onnx-fp32"].size == len(b"different")

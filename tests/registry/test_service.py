"""Registry service on each database backend (the ``registry`` fixture is parametrised)."""

import hashlib
import sqlite3

import numpy as np
import pytest

from edgefleet.registry.domain import Stage
from edgefleet.registry.errors import (
    ArtifactHashMismatchError,
    GoldenSampleError,
    InvalidStageError,
    InvalidVersionError,
    ManifestError,
    ModelNotFoundError,
    ModelVerificationError,
    VersionExistsError,
    VersionNotFoundError,
)
from edgefleet.registry.golden import read_golden, write_golden
from edgefleet.store.bootstrap import open_registry
from edgefleet.store.errors import StoreUnavailableError
from tests.conftest import edit_manifest, rehash


def blobs(registry) -> set[str]:
    return set(registry.artifacts.digests())


def test_register_stores_blobs_and_metadata(registry, example_bundles):
    version = registry.register(example_bundles["1.0.0"], author="ana")
    assert (version.model, version.version, version.stage) == ("digits", "1.0.0", Stage.CANDIDATE)
    assert version.author == "ana"
    for variant in version.variants:
        data = (example_bundles["1.0.0"] / f"model-{variant.precision}.onnx").read_bytes()
        assert variant.sha256 == hashlib.sha256(data).hexdigest()
        with registry.artifacts.open(variant.sha256) as f:
            assert f.read() == data
    assert registry.artifacts.exists(version.golden.sha256)
    assert version.golden.count == 16
    assert version.metrics["accuracy"] > 0.85
    assert version.model_card.startswith("# digits 1.0.0")
    profile = version.reference_profile
    assert profile is not None and profile.sample_count == 540
    assert len(profile.inputs[0].features) == 64
    assert sum(profile.class_counts) == 540 and len(profile.class_counts) == 10
    assert registry.get("digits", "1.0.0") == version


def test_versions_are_immutable(registry, example_bundles):
    registry.register(example_bundles["1.0.0"])
    before = blobs(registry)
    with pytest.raises(VersionExistsError, match=r"digits 1.0.0 is already registered"):
        registry.register(example_bundles["1.0.0"])
    assert blobs(registry) == before
    assert len(registry.list_versions()) == 1


def test_lineage_needs_a_registered_parent(registry, example_bundles):
    with pytest.raises(
        VersionNotFoundError, match=r"parent version 1.0.0 of digits is not registered"
    ):
        registry.register(example_bundles["1.1.0"])
    assert blobs(registry) == set()
    registry.register(example_bundles["1.0.0"])
    assert registry.register(example_bundles["1.1.0"]).parent == "1.0.0"


def test_list_latest_search_and_lookup_errors(registry, example_bundles, bundle_copy):
    registry.register(example_bundles["1.0.0"])
    registry.register(example_bundles["1.1.0"])
    rc = bundle_copy("1.1.0")
    edit_manifest(rc, lambda d: d.update(version="1.10.0-rc.1", tags=["rc"]))
    registry.register(rc)
    nine = bundle_copy("1.1.0")
    edit_manifest(nine, lambda d: d.update(version="1.9.0"))
    registry.register(nine)
    assert [v.version for v in registry.list_versions()] == [
        "1.0.0",
        "1.1.0",
        "1.9.0",
        "1.10.0-rc.1",
    ]
    assert registry.latest("digits").version == "1.10.0-rc.1"
    assert [v.version for v in registry.list_versions(tag="rc")] == ["1.10.0-rc.1"]
    assert [v.version for v in registry.list_versions(tag="mlp")] == ["1.0.0", "1.1.0", "1.9.0"]
    assert registry.list_versions(model="other") == []
    with pytest.raises(ModelNotFoundError, match="no model named 'other'"):
        registry.get("other", "1.0.0")
    with pytest.raises(VersionNotFoundError, match=r"digits has no version 3.0.0"):
        registry.get("digits", "3.0.0")
    with pytest.raises(InvalidVersionError):
        registry.get("digits", "one")
    with pytest.raises(VersionNotFoundError, match="no version in stage production"):
        registry.latest("digits", "production")
    with pytest.raises(InvalidStageError):
        registry.list_versions(stage="live")


def test_promote_records_history_and_archives_previous_production(registry, example_bundles):
    registry.register(example_bundles["1.0.0"], author="ana")
    registry.register(example_bundles["1.1.0"], author="ana")
    registry.promote("digits", "1.0.0", "production", actor="bob", reason="first release")
    changes = registry.promote("digits", "1.1.0", "production", actor="cy", reason="better")
    assert [(c.version, c.from_stage, c.to_stage) for c in changes] == [
        ("1.1.0", Stage.CANDIDATE, Stage.PRODUCTION),
        ("1.0.0", Stage.PRODUCTION, Stage.ARCHIVED),
    ]
    assert registry.get("digits", "1.0.0").stage is Stage.ARCHIVED
    assert registry.latest("digits", "production").version == "1.1.0"
    history = registry.history("digits")
    assert [(c.version, c.to_stage.value, c.actor) for c in history] == [
        ("1.0.0", "candidate", "ana"),
        ("1.1.0", "candidate", "ana"),
        ("1.0.0", "production", "bob"),
        ("1.1.0", "production", "cy"),
        ("1.0.0", "archived", "cy"),
    ]
    assert all(c.at.tzinfo is not None for c in history)
    assert [c.reason for c in registry.history("digits", "1.1.0")] == ["registered", "better"]
    with pytest.raises(InvalidStageError, match="cannot move a production version to candidate"):
        registry.promote("digits", "1.1.0", "candidate", actor="cy")
    with pytest.raises(InvalidStageError, match="unknown stage 'gold'"):
        registry.promote("digits", "1.1.0", "gold", actor="cy")
    # Rolling back: an archived version can return to production.
    registry.promote("digits", "1.0.0", "production", actor="cy", reason="rollback")
    assert registry.latest("digits", "production").version == "1.0.0"


def test_keep_production_leaves_both(registry, example_bundles):
    registry.register(example_bundles["1.0.0"])
    registry.register(example_bundles["1.1.0"])
    registry.promote("digits", "1.0.0", "production", actor="a")
    registry.promote("digits", "1.1.0", "production", actor="a", archive_previous=False)
    assert [v.version for v in registry.list_versions(stage="production")] == ["1.0.0", "1.1.0"]


def test_compare(registry, example_bundles):
    registry.register(example_bundles["1.0.0"])
    registry.register(example_bundles["1.1.0"])
    comparison = registry.compare("digits", "1.0.0", "1.1.0")
    rows = {r.name: r for r in comparison.rows}
    assert rows["accuracy"].better == "b"
    assert rows["onnx-fp32 size_bytes"].delta > 0
    assert "expected_latency_ms" in rows


def assert_untouched(registry, before):
    assert registry.list_versions() == []
    assert blobs(registry) == before


@pytest.mark.parametrize(
    "breakage",
    ["hash", "golden_shape", "golden_outputs", "not_onnx", "schema", "manifest", "version"],
)
def test_bad_bundles_leave_registry_and_store_unchanged(registry, bundle_copy, breakage):
    bundle = bundle_copy("1.0.0")
    expected = {
        "hash": ArtifactHashMismatchError,
        "golden_shape": GoldenSampleError,
        "golden_outputs": ModelVerificationError,
        "not_onnx": ModelVerificationError,
        "schema": ModelVerificationError,
        "manifest": ManifestError,
        "version": ManifestError,
    }[breakage]
    if breakage == "hash":
        (bundle / "model-int8.onnx").write_bytes(b"swapped after signing")
    elif breakage == "golden_shape":
        golden = read_golden(bundle / "golden-fp32.npz")
        golden.inputs["X"] = golden.inputs["X"][:, :10]
        write_golden(bundle / "golden-fp32.npz", golden)
    elif breakage == "golden_outputs":
        golden = read_golden(bundle / "golden-int8.npz")
        golden.outputs["probabilities"] = golden.outputs["probabilities"][::-1].copy()
        write_golden(bundle / "golden-int8.npz", golden)
    elif breakage == "not_onnx":
        (bundle / "model-int8.onnx").write_bytes(b"this is not a model")
        rehash(bundle, 1)
    elif breakage == "schema":
        edit_manifest(bundle, lambda d: d["inputs"][0].update(name="pixels"))
        golden_fix = read_golden(bundle / "golden-fp32.npz")
        for name in ("golden-fp32.npz", "golden-int8.npz"):
            g = read_golden(bundle / name)
            write_golden(
                bundle / name, type(g)(inputs={"pixels": g.inputs["X"]}, outputs=g.outputs)
            )
        assert golden_fix.count == 16
        from edgefleet.registry.golden import write_npz

        write_npz(bundle / "reference.npz", {"input.pixels": np.zeros((4, 64), np.float32)})
    elif breakage == "manifest":
        edit_manifest(bundle, lambda d: d.pop("golden"))
    elif breakage == "version":
        edit_manifest(bundle, lambda d: d.update(version="1.0"))
    # The first variant is stored before the second fails: it must be cleaned up.
    before = blobs(registry)
    with pytest.raises(expected):
        registry.register(bundle)
    assert_untouched(registry, before)


def test_blob_shared_with_a_registered_version_survives_a_failed_registration(
    registry, bundle_copy
):
    registry.register(bundle_copy("1.0.0"))
    before = blobs(registry)
    bundle = bundle_copy("1.0.0")
    edit_manifest(bundle, lambda d: d.update(version="1.0.1"))
    (bundle / "model-int8.onnx").write_bytes(b"broken")
    rehash(bundle, 1)
    with pytest.raises(ModelVerificationError, match="does not load in ONNX Runtime"):
        registry.register(bundle)
    assert blobs(registry) == before
    assert [v.version for v in registry.list_versions()] == ["1.0.0"]


def test_locked_sqlite_database_is_reported_and_changes_nothing(tmp_path, example_bundles):
    from edgefleet.config import Settings

    settings = Settings(home=tmp_path, database_url_override=None, db_busy_timeout_s=0.2)
    with open_registry(settings) as registry:
        registry.register(example_bundles["1.0.0"])
        before = blobs(registry)
        db_path = settings.database_url.removeprefix("sqlite:///")
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreUnavailableError, match="is locked by another process"):
                registry.register(example_bundles["1.1.0"])
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert blobs(registry) == before
        assert [v.version for v in registry.list_versions()] == ["1.0.0"]
        assert registry.register(example_bundles["1.1.0"]).version == "1.1.0"


def test_unreachable_database_is_reported(tmp_path):
    from edgefleet.config import Settings

    settings = Settings(
        home=tmp_path,
        database_url_override="postgresql+psycopg://postgres@127.0.0.1:1/none",
        db_connect_timeout_s=2,
    )
    with (
        pytest.raises(
            StoreUnavailableError,
            match=r"cannot reach the database postgresql\+psycopg://postgres@127.0.0.1:1/none",
        ),
        open_registry(settings),
    ):
        pass

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.cli.main import app
from edgefleet.examples import digits
from edgefleet.examples.digits import (
    DEFAULT_VERSIONS,
    INPUT_NAME,
    RECIPES,
    ExampleError,
    build_examples,
    ensure_examples,
    load_split,
)
from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.bundle import load_bundle


def manifest(bundle):
    return yaml.safe_load((bundle / "edgefleet.yaml").read_text())


def test_bundles_are_complete_and_second_version_is_better(example_bundles):
    old, new = manifest(example_bundles["1.0.0"]), manifest(example_bundles["1.1.0"])
    assert new["metrics"]["accuracy"]["value"] > old["metrics"]["accuracy"]["value"] + 0.02
    assert new["parent"] == "1.0.0" and "parent" not in old
    for data in (old, new):
        fp32, int8 = data["variants"]
        assert (fp32["name"], int8["name"]) == ("onnx-fp32", "onnx-int8")
        assert int8["size"] < fp32["size"]
        assert int8["metrics"]["accuracy"]["value"] > 0.85
        metrics = data["metrics"]
        assert metrics["latency_p95_ms"]["value"] >= metrics["latency_p50_ms"]["value"] > 0
        # model compare needs each metric's direction: none is left to a guess from its name
        assert {name: m["higher_is_better"] for name, m in metrics.items()} == {
            "accuracy": True,
            "latency_p50_ms": False,
            "latency_p95_ms": False,
        }
    for bundle in example_bundles.values():
        loaded = load_bundle(bundle)  # hashes, golden schema and reference all check out
        assert loaded.golden.count == 16


def test_build_is_deterministic_across_processes(example_bundles, tmp_path):
    # A fresh interpreter with another hash seed: set iteration order must not leak
    # into the bytes of the models.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [sys.executable, "-m", "edgefleet", "examples", "build", "--out", str(tmp_path)],
        env=env,
        check=True,
        capture_output=True,
    )
    names = (
        "model-fp32.onnx",
        "model-int8.onnx",
        "golden-fp32.npz",
        "golden-int8.npz",
        "reference.npz",
    )
    for version, bundle in example_bundles.items():
        rebuilt = tmp_path / f"digits-{version}"
        for name in names:
            assert sha256_file(bundle / name) == sha256_file(rebuilt / name), f"{version} {name}"


def test_examples_build_command(tmp_path):
    result = CliRunner().invoke(
        app, ["examples", "build", "--out", str(tmp_path), "--seed", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [p.split("/")[-1] for p in json.loads(result.stdout)["bundles"]] == [
        "digits-1.0.0",
        "digits-1.1.0",
    ]
    assert "seed 3" in manifest(tmp_path / "digits-1.0.0")["data_version"]


# -- the simulator's scenario models: 1.2.0 (heavy), 1.3.0 (missing class), 1.4.0 (large)

SCENARIO_VERSIONS = ("1.2.0", "1.3.0", "1.4.0")
MODEL_FILES = ("model-fp32.onnx", "model-int8.onnx")


@pytest.fixture(scope="module")
def scenario_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1.2.0, 1.3.0 and 1.4.0, built once for this module (read-only)."""
    out = tmp_path_factory.mktemp("scenario-examples")
    bundles = build_examples(out, seed=0, versions=SCENARIO_VERSIONS)
    return {path.name.removeprefix("digits-"): path for path in bundles}


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    _, x_test, _, y_test = load_split(0)
    return x_test, y_test


def run(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {INPUT_NAME: x})
    return np.asarray(labels), np.asarray(probabilities)


def weight_count(path: Path) -> int:
    import onnx

    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


@pytest.mark.slow
def test_scenario_bundles_are_complete_children_of_1_1_0(scenario_bundles):
    assert list(scenario_bundles) == list(SCENARIO_VERSIONS)
    tags = {"1.2.0": "heavy", "1.3.0": "missing-class", "1.4.0": "large"}
    for version, bundle in scenario_bundles.items():
        data = manifest(bundle)
        assert data["parent"] == "1.1.0"
        assert data["tags"] == ["example", "digits", "mlp", tags[version]]
        assert load_bundle(bundle).golden.count == 16
    cards = {v: (b / "MODEL_CARD.md").read_text() for v, b in scenario_bundles.items()}
    assert "cpu-spike scenario" in cards["1.2.0"]
    assert "never predicts 9" in cards["1.3.0"]
    assert "A delivery-test model padded to 80 MB" in cards["1.4.0"]


@pytest.mark.slow
def test_heavy_model_is_as_accurate_as_1_1_0_with_far_more_weights(
    scenario_bundles, example_bundles
):
    heavy, parent = manifest(scenario_bundles["1.2.0"]), manifest(example_bundles["1.1.0"])
    for mine, theirs in zip(heavy["variants"], parent["variants"], strict=True):
        assert (
            abs(mine["metrics"]["accuracy"]["value"] - theirs["metrics"]["accuracy"]["value"])
            <= 0.01
        )
    # The latency itself is measured into the manifest, not asserted: here, the cause.
    fp32 = "model-fp32.onnx"
    assert weight_count(scenario_bundles["1.2.0"] / fp32) > 20 * weight_count(
        example_bundles["1.1.0"] / fp32
    )


@pytest.mark.slow
def test_missing_class_model_never_predicts_9_and_keeps_ten_columns(scenario_bundles, held_out):
    x_test, y_test = held_out
    bundle = scenario_bundles["1.3.0"]
    assert 9 in y_test
    for name in MODEL_FILES:
        labels, probabilities = run(bundle / name, x_test)
        assert probabilities.shape == (len(x_test), 10)
        assert not np.any(labels == 9)
        assert np.all(probabilities[:, 9] == 0)
        np.testing.assert_array_equal(probabilities.argmax(axis=1), labels)
    golden = load_bundle(bundle).golden
    for row in golden.inputs[INPUT_NAME]:
        (index,) = np.flatnonzero((x_test == row).all(axis=1))[:1]
        assert y_test[index] != 9  # golden samples come from classes the model knows
    assert 9 not in golden.outputs["label"]


@pytest.mark.slow
def test_large_model_is_80_mb_with_the_outputs_of_1_1_0(
    scenario_bundles, example_bundles, held_out
):
    x_test, _ = held_out
    large, parent = scenario_bundles["1.4.0"], example_bundles["1.1.0"]
    assert (large / "model-fp32.onnx").stat().st_size >= 75 * 2**20
    assert sum(f.stat().st_size for f in large.iterdir()) < 150 * 2**20
    for name in MODEL_FILES:
        labels, probabilities = run(large / name, x_test)
        parent_labels, parent_probabilities = run(parent / name, x_test)
        np.testing.assert_array_equal(labels, parent_labels)
        np.testing.assert_allclose(probabilities, parent_probabilities, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_scenario_bundles_register(registry, example_bundles, scenario_bundles):
    registry.register(example_bundles["1.0.0"])
    registry.register(example_bundles["1.1.0"])
    registered = {v: registry.register(b) for v, b in scenario_bundles.items()}
    assert {v.parent for v in registered.values()} == {"1.1.0"}
    assert "large" in registered["1.4.0"].tags
    profile = registered["1.3.0"].reference_profile
    assert profile is not None and len(profile.class_counts) == 10
    assert profile.class_counts[9] == 0 and sum(profile.class_counts) == 540


@pytest.mark.slow
def test_scenario_models_are_deterministic_across_processes(scenario_bundles, tmp_path):
    # The graph edits (the class column, the padding) must not depend on the process.
    env = {**os.environ, "PYTHONHASHSEED": "777"}
    command = [sys.executable, "-m", "edgefleet", "examples", "build", "--out", str(tmp_path)]
    subprocess.run(
        [*command, "--version", "1.3.0", "--version", "1.4.0"],
        env=env,
        check=True,
        capture_output=True,
    )
    for version in ("1.3.0", "1.4.0"):
        for name in (*MODEL_FILES, "golden-fp32.npz", "golden-int8.npz"):
            rebuilt = tmp_path / f"digits-{version}" / name
            assert sha256_file(scenario_bundles[version] / name) == sha256_file(rebuilt)


# -- choosing versions, and the cache -------------------------------------------------


def test_default_versions_are_the_demo_story_and_recipes_list_all_six():
    assert DEFAULT_VERSIONS == ("1.0.0", "1.1.0")
    assert [r.version for r in RECIPES] == ["1.0.0", "1.1.0", "1.1.1", "1.2.0", "1.3.0", "1.4.0"]


@pytest.mark.parametrize("build", [build_examples, ensure_examples])
def test_an_unknown_version_is_a_clear_error(build, tmp_path):
    with pytest.raises(
        ExampleError,
        match=r"no digits example version 2\.0\.0; the versions are "
        r"1\.0\.0, 1\.1\.0, 1\.1\.1, 1\.2\.0, 1\.3\.0, 1\.4\.0",
    ):
        build(tmp_path, versions=["1.0.0", "2.0.0"])
    assert list(tmp_path.iterdir()) == []  # checked before anything is built


def test_examples_build_command_rejects_bad_versions(tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(app, ["examples", "build", "--out", str(tmp_path), "-v", "2.0.0"])
    assert unknown.exit_code == 1
    assert "no digits example version 2.0.0" in unknown.output
    both = runner.invoke(
        app, ["examples", "build", "--out", str(tmp_path), "--all", "--version", "1.0.0"]
    )
    assert both.exit_code == 1
    assert "--all" in both.output


@pytest.mark.slow
def test_examples_build_command_builds_the_chosen_versions(tmp_path):
    result = CliRunner().invoke(
        app, ["examples", "build", "--out", str(tmp_path), "--version", "1.0.0", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"bundles": [str(tmp_path / "digits-1.0.0")]}
    assert [p.name for p in tmp_path.iterdir()] == ["digits-1.0.0"]


class BuildSpy:
    """Records which versions ``build_version`` is asked for, then builds them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built: list[str] = []
        self._build = digits.build_version
        monkeypatch.setattr(digits, "build_version", self)

    def __call__(self, recipe, *args, **kwargs):
        self.built.append(recipe.version)
        return self._build(recipe, *args, **kwargs)


@pytest.mark.slow
def test_ensure_examples_builds_only_what_is_missing(example_bundles, tmp_path, monkeypatch):
    shutil.copytree(example_bundles["1.1.0"], tmp_path / "digits-1.1.0")
    before = sha256_file(tmp_path / "digits-1.1.0" / "edgefleet.yaml")
    spy = BuildSpy(monkeypatch)
    bundles = ensure_examples(tmp_path, ["1.1.0", "1.0.0"])
    assert spy.built == ["1.0.0"]
    assert bundles == {"1.0.0": tmp_path / "digits-1.0.0", "1.1.0": tmp_path / "digits-1.1.0"}
    assert sha256_file(tmp_path / "digits-1.1.0" / "edgefleet.yaml") == before
    load_bundle(bundles["1.0.0"])
    assert ensure_examples(tmp_path, ["1.0.0", "1.1.0"]) == bundles
    assert spy.built == ["1.0.0"]  # the second call found both complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-1.0.0", "digits-1.1.0"]


@pytest.mark.slow
def test_ensure_examples_rebuilds_an_incomplete_bundle(example_bundles, tmp_path, monkeypatch):
    # What a build killed before writing its manifest leaves behind.
    partial = tmp_path / "digits-1.0.0"
    shutil.copytree(example_bundles["1.0.0"], partial)
    (partial / "edgefleet.yaml").unlink()
    (partial / "model-int8.onnx").write_bytes(b"truncated")
    spy = BuildSpy(monkeypatch)
    bundles = ensure_examples(tmp_path, ["1.0.0"])
    assert spy.built == ["1.0.0"]
    load_bundle(bundles["1.0.0"])  # complete again, every hash checks out
    for name in MODEL_FILES:
        assert sha256_file(partial / name) == sha256_file(example_bundles["1.0.0"] / name)
    assert [p.name for p in tmp_path.iterdir()] == ["digits-1.0.0"]  # no staging left


@pytest.mark.slow
def test_ensure_examples_rebuilds_a_bundle_of_another_seed(example_bundles, tmp_path):
    shutil.copytree(example_bundles["1.0.0"], tmp_path / "digits-1.0.0")
    bundles = ensure_examples(tmp_path, ["1.0.0"], seed=3)
    assert manifest(bundles["1.0.0"])["data_version"].endswith("seed 3")

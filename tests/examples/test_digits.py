import json
import os
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from edgefleet.cli.main import app
from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.bundle import load_bundle


def manifest(bundle):
    return yaml.safe_load((bundle / "edgefleet.yaml").read_text())


def test_bundles_are_complete_and_second_version_is_better(example_bundles):
    old, new = manifest(example_bundles["1.0.0"]), manifest(example_bundles["1.1.0"])
    assert new["metrics"]["accuracy"] > old["metrics"]["accuracy"] + 0.02
    assert new["parent"] == "1.0.0" and "parent" not in old
    for data in (old, new):
        fp32, int8 = data["variants"]
        assert (fp32["name"], int8["name"]) == ("onnx-fp32", "onnx-int8")
        assert int8["size"] < fp32["size"]
        assert int8["metrics"]["accuracy"] > 0.85
        assert data["metrics"]["latency_p95_ms"] >= data["metrics"]["latency_p50_ms"] > 0
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


def test_demo_runs_the_story_on_embedded_storage(tmp_path, monkeypatch):
    # The demo needs no database server, whatever the environment points at.
    monkeypatch.setenv("EDGEFLEET_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["demo", "--home", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "registered digits 1.0.0" in result.stdout
    assert "registered digits 1.1.0" in result.stdout
    assert "promoted digits 1.0.0 to production" in result.stdout
    assert "signed it as release 2" in result.stdout
    assert (tmp_path / "demo" / "tuf" / "metadata" / "1.root.json").exists()
    assert "accuracy" in result.stdout
    assert (tmp_path / "demo" / "edgefleet.db").exists()

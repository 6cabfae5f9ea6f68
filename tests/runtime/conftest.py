"""Runtime fixtures: the digits example models, and a model that fails at inference."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.registry.golden import GoldenSamples, read_golden
from edgefleet.runtime.metrics import ModelIdentity


@pytest.fixture
def digits(example_bundles: dict[str, Path]):
    """(path, identity, golden samples) of a digits variant: ``digits("1.1.0", "int8")``."""

    def get(
        version: str = "1.0.0", precision: str = "fp32"
    ) -> tuple[Path, ModelIdentity, GoldenSamples]:
        bundle = example_bundles[version]
        return (
            bundle / f"model-{precision}.onnx",
            ModelIdentity("digits", version, f"onnx-{precision}"),
            read_golden(bundle / f"golden-{precision}.npz"),
        )

    return get


@pytest.fixture
def failing_model(tmp_path: Path) -> Path:
    """A valid ONNX model that fails at inference for any batch other than 3 x 1:
    it reshapes its [N, 1] input to a fixed [3]."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [3])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["X", "shape"], ["Y"])], "fails", [x], [y], [shape]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fails.onnx"
    save(model, str(path))
    return path

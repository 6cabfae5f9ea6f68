"""Checking an artifact against its schema and golden samples by running it.

At registration every ONNX variant is loaded in ONNX Runtime (CPU), its declared inputs
and outputs are compared with the manifest's schema, and its outputs on the golden
inputs must match the golden outputs within tolerance, so that a version which would
fail every device's smoke test is never registered. Variants of other runtimes are
recorded as not verified here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.errors import MissingDependencyError
from edgefleet.registry.domain import TensorSpec, Tolerance
from edgefleet.registry.errors import ModelVerificationError
from edgefleet.registry.golden import Array, GoldenSamples, compare_outputs

ONNX_RUNTIME = "onnxruntime"

#: ONNX Runtime's tensor type names and the schema dtypes they mean.
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _session(path: Path, what: str) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError.for_extra("server", "onnxruntime") from exc
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own untyped errors for any bad model
        raise ModelVerificationError(
            f"{what}: {path.name} does not load in ONNX Runtime: {_first_line(exc)}"
        ) from exc


def run_onnx(path: Path, inputs: Mapping[str, Array], what: str = "model") -> dict[str, Array]:
    """Run an ONNX model on a batch of inputs and return every output by name.

    Raises:
        ModelVerificationError: the model does not load or fails at inference.
    """
    session = _session(path, what)
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, dict(inputs))
    except Exception as exc:
        raise ModelVerificationError(f"{what}: inference failed: {_first_line(exc)}") from exc
    return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


def verify_onnx(
    path: Path,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    golden: GoldenSamples,
    tolerance: Tolerance,
    what: str,
) -> None:
    """Check that an ONNX artifact matches the schema and reproduces its golden outputs.

    Raises:
        ModelVerificationError: with every problem found.
    """
    session = _session(path, what)
    problems = _schema_differences(session, inputs, outputs)
    if problems:
        raise ModelVerificationError(
            f"{what}: {path.name} does not match the manifest's schema:\n  "
            + "\n  ".join(problems),
            details={"problems": problems},
        )
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, dict(golden.inputs))
    except Exception as exc:
        raise ModelVerificationError(
            f"{what}: inference on the golden inputs failed: {_first_line(exc)}"
        ) from exc
    actual = {name: np.asarray(value) for name, value in zip(names, results, strict=True)}
    mismatches = compare_outputs(golden.outputs, actual, tolerance)
    if mismatches:
        lines = [str(m) for m in mismatches]
        raise ModelVerificationError(
            f"{what}: {path.name} does not reproduce its golden outputs:\n  " + "\n  ".join(lines),
            details={"problems": lines},
        )


def _schema_differences(
    session: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> list[str]:
    problems = []
    model_inputs = {i.name: i for i in session.get_inputs()}
    model_outputs = {o.name: o for o in session.get_outputs()}
    for kind, specs, actual_tensors in (
        ("input", inputs, model_inputs),
        ("output", outputs, model_outputs),
    ):
        for spec in specs:
            actual = actual_tensors.get(spec.name)
            if actual is None:
                problems.append(
                    f"{kind} {spec.name!r} is not an {kind} of the model ({sorted(actual_tensors)})"
                )
                continue
            problems += _compare_tensor(kind, spec, actual)
    # Every model input must be fed; extra model outputs are fine (not all are checked).
    for name in model_inputs.keys() - {s.name for s in inputs}:
        problems.append(f"the model's input {name!r} is missing from the manifest")
    return problems


def _compare_tensor(kind: str, spec: TensorSpec, actual: Any) -> list[str]:
    problems = []
    dtype = ORT_TYPES.get(actual.type, actual.type)
    if dtype != spec.dtype:
        problems.append(f"{kind} {spec.name!r}: the model says {dtype}, the manifest {spec.dtype}")
    shape = actual.shape
    if len(shape) != len(spec.shape):
        problems.append(
            f"{kind} {spec.name!r}: the model has rank {len(shape)}, the manifest {len(spec.shape)}"
        )
    else:
        for axis, (model_dim, spec_dim) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(model_dim, int) and spec_dim is not None and model_dim != spec_dim:
                problems.append(
                    f"{kind} {spec.name!r}: dimension {axis} is {model_dim} in the model, "
                    f"{spec_dim} in the manifest"
                )
    return problems


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]

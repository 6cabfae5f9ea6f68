"""Inference backends behind one small interface.

A backend loads a model file into a ``Session`` that names its inputs and outputs and
runs a batch. ONNX Runtime is implemented; a LiteRT (``ai-edge-litert``) backend for
``.tflite`` variants implements the same two methods::

    session = OnnxBackend(providers=["CUDAExecutionProvider", "CPUExecutionProvider"]).load(path)
    outputs = session.run({"X": batch})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edgefleet.registry.domain import TensorSpec
from edgefleet.registry.verify import ORT_TYPES
from edgefleet.runtime.errors import InferenceError, ModelLoadError

Array = npt.NDArray[Any]


class Session(Protocol):
    """A loaded model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """Run one batch. Raises InferenceError."""
        ...


class Backend(Protocol):
    """Loads model files of one runtime."""

    name: str

    def load(self, path: Path) -> Session:
        """Load a model. Raises ModelLoadError."""
        ...


def _spec(node: Any, role: str | None = None) -> TensorSpec:
    dtype = ORT_TYPES.get(node.type)
    if dtype is None:
        raise ModelLoadError(
            f"tensor {node.name!r} has type {node.type}, which edgefleet cannot serve"
        )
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape) or (None,)
    return TensorSpec(name=node.name, dtype=dtype, shape=shape, role=role)


class OnnxSession:
    """An ONNX Runtime ``InferenceSession`` with its inputs and outputs described."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.inputs = tuple(_spec(node) for node in session.get_inputs())
        self.outputs = tuple(_spec(node) for node in session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        self.providers: list[str] = list(session.get_providers())

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        try:
            results = self._session.run(self._output_names, feeds)
        except Exception as exc:  # ONNX Runtime raises its own untyped errors
            message = (
                str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            )
            raise InferenceError(f"the model failed at inference: {message}") from exc
        return dict(zip(self._output_names, results, strict=True))


class OnnxBackend:
    """ONNX Runtime on the given execution providers (those not installed are skipped)."""

    name = "onnxruntime"

    def __init__(
        self, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0
    ) -> None:
        self.providers = tuple(providers)
        self.threads = threads

    def load(self, path: Path) -> OnnxSession:
        try:
            import onnxruntime
        except ImportError as exc:
            from edgefleet.errors import MissingDependencyError

            raise MissingDependencyError.for_extra("agent", "onnxruntime") from exc
        available = set(onnxruntime.get_available_providers())
        providers = [p for p in self.providers if p in available] or ["CPUExecutionProvider"]
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=providers
            )
        except Exception as exc:
            text = (
                str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            )
            raise ModelLoadError(f"{path.name} does not load in ONNX Runtime: {text}") from exc
        return OnnxSession(session)


def zeros_for(inputs: Sequence[TensorSpec], batch: int = 1) -> dict[str, Array]:
    """A batch of zeros fitting ``inputs`` (dynamic dimensions become ``batch`` / 1)."""
    feeds = {}
    for spec in inputs:
        shape = [batch if i == 0 and d is None else (d or 1) for i, d in enumerate(spec.shape)]
        feeds[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype))
    return feeds

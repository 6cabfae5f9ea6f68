"""Checking a request against the model's inputs before it reaches the model (pure).

Arrays must have the model's dtype; plain lists (JSON) are converted to it. Shapes must
match the fixed dimensions, batches must not be empty, floats must be finite::

    feeds = validate_inputs({"X": [[0.0] * 64]}, session.inputs)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.registry.domain import TensorSpec
from edgefleet.runtime.errors import InvalidInputError

Array = npt.NDArray[Any]


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def _as_array(name: str, value: Any, spec: TensorSpec) -> Array:
    dtype = np.dtype(spec.dtype)
    if isinstance(value, np.ndarray):
        if value.dtype != dtype:
            raise InvalidInputError(
                f"input {name!r} has dtype {value.dtype}, the model needs {spec.dtype}",
                details={"input": name, "dtype": str(value.dtype), "expected": spec.dtype},
            )
        return value
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(
            f"input {name!r} cannot be read as {spec.dtype} {_shape_text(spec.shape)}: {exc}",
            details={"input": name},
        ) from exc
    return array


def validate_inputs(inputs: Mapping[str, Any], specs: Sequence[TensorSpec]) -> dict[str, Array]:
    """The request as arrays ready to feed the model.

    Raises:
        InvalidInputError: missing or unknown inputs, wrong dtype, rank or fixed
            dimension, an empty batch, NaN or infinite values, batch sizes that differ.
    """
    expected = {s.name for s in specs}
    unknown = set(inputs) - expected
    missing = expected - set(inputs)
    if unknown or missing:
        raise InvalidInputError(
            f"the model takes inputs {sorted(expected)}; "
            + (f"missing {sorted(missing)}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unknown {sorted(unknown)}" if unknown else ""),
            details={
                "expected": sorted(expected),
                "missing": sorted(missing),
                "unknown": sorted(unknown),
            },
        )
    feeds: dict[str, Array] = {}
    batch_sizes = set()
    for spec in specs:
        array = _as_array(spec.name, inputs[spec.name], spec)
        if array.ndim != len(spec.shape):
            raise InvalidInputError(
                f"input {spec.name!r} has shape {list(array.shape)}, the model needs "
                f"{_shape_text(spec.shape)} (rank {len(spec.shape)})",
                details={"input": spec.name, "shape": list(array.shape)},
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if want is not None and got != want:
                raise InvalidInputError(
                    f"input {spec.name!r} has {got} at dimension {axis}, the model needs "
                    f"{want} ({_shape_text(spec.shape)})",
                    details={"input": spec.name, "shape": list(array.shape)},
                )
        if array.shape[0] == 0:
            raise InvalidInputError(
                f"input {spec.name!r} is an empty batch", details={"input": spec.name}
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInputError(
                f"input {spec.name!r} contains NaN or infinite values", details={"input": spec.name}
            )
        batch_sizes.add(array.shape[0])
        feeds[spec.name] = array
    if len(batch_sizes) > 1:
        raise InvalidInputError(f"inputs have different batch sizes: {sorted(batch_sizes)}")
    return feeds


class InputValidator:
    """``validate_inputs`` for one model, with a fast path for well-formed arrays.

    The per-request cost matters for small models (a 64-feature MLP runs in ~10 µs),
    so the checks of a correct request are precomputed; anything unusual goes through
    ``validate_inputs`` for the exact error.
    """

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = tuple(specs)
        self._checks = tuple(
            (
                s.name,
                np.dtype(s.dtype),
                len(s.shape),
                tuple((axis, dim) for axis, dim in enumerate(s.shape) if dim is not None),
                np.dtype(s.dtype).kind == "f",
            )
            for s in specs
        )

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        if len(inputs) == len(self._checks):
            feeds: dict[str, Array] = {}
            batch = -1
            for name, dtype, rank, fixed, is_float in self._checks:
                value = inputs.get(name)
                if (
                    type(value) is not np.ndarray
                    or value.dtype != dtype
                    or value.ndim != rank
                    or not value.shape[0]
                    or any(value.shape[axis] != dim for axis, dim in fixed)
                    or (batch != -1 and value.shape[0] != batch)
                    or (is_float and not np.isfinite(value).all())
                ):
                    break
                batch = value.shape[0]
                feeds[name] = value
            else:
                return feeds
        return validate_inputs(inputs, self.specs)

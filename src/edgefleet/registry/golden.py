"""Golden samples: inputs with expected outputs, checked before a model is trusted.

The registry checks them against the model at registration, and devices run them as
the smoke test before activating a new model. They travel as an ``.npz`` file (NumPy's
zip of arrays, read with ``allow_pickle=False``) whose keys are ``input.<name>`` and
``output.<name>``::

    golden = read_golden(path)
    problems = schema_problems(golden, inputs=spec.inputs, outputs=spec.outputs)
    mismatches = compare_outputs(golden.outputs, actual_outputs, Tolerance())
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from edgefleet.registry.domain import TensorSpec, Tolerance
from edgefleet.registry.errors import GoldenSampleError

INPUT_PREFIX = "input."
OUTPUT_PREFIX = "output."

Array = npt.NDArray[np.generic]


@dataclass(frozen=True)
class GoldenSamples:
    """Golden inputs and the outputs expected for them, by tensor name."""

    inputs: Mapping[str, Array]
    outputs: Mapping[str, Array]

    @property
    def count(self) -> int:
        """Number of samples (the shared leading dimension)."""
        first = next(iter(self.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1


def read_golden(source: Path | IO[bytes], label: str = "golden samples") -> GoldenSamples:
    """Read golden samples from an ``.npz`` file.

    Raises:
        GoldenSampleError: the file is not an npz archive, holds objects (pickles), has
            keys without the ``input.``/``output.`` prefix, or has no inputs/outputs.
    """
    try:
        with np.load(source, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GoldenSampleError(
            f"{label}: cannot read as an .npz archive of arrays: {exc}"
        ) from exc
    inputs: dict[str, Array] = {}
    outputs: dict[str, Array] = {}
    for key, array in arrays.items():
        if key.startswith(INPUT_PREFIX):
            inputs[key.removeprefix(INPUT_PREFIX)] = array
        elif key.startswith(OUTPUT_PREFIX):
            outputs[key.removeprefix(OUTPUT_PREFIX)] = array
        else:
            raise GoldenSampleError(
                f"{label}: array {key!r} must be named 'input.<name>' or 'output.<name>'"
            )
    if not inputs or not outputs:
        raise GoldenSampleError(f"{label}: needs at least one input.* and one output.* array")
    return GoldenSamples(inputs=inputs, outputs=outputs)


def write_golden(target: Path | IO[bytes], golden: GoldenSamples) -> None:
    """Write golden samples as an ``.npz`` file (see ``write_npz``)."""
    arrays = {f"{INPUT_PREFIX}{k}": np.asarray(v) for k, v in golden.inputs.items()}
    arrays |= {f"{OUTPUT_PREFIX}{k}": np.asarray(v) for k, v in golden.outputs.items()}
    write_npz(target, arrays)


def write_npz(target: Path | IO[bytes], arrays: Mapping[str, npt.ArrayLike]) -> None:
    """Write arrays as an uncompressed ``.npz`` that is byte-for-byte repeatable.

    ``np.savez`` stamps zip entries with the current time; this writes a fixed time so
    the same arrays always give the same bytes, and so the same SHA-256.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            entry = io.BytesIO()
            np.save(entry, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, entry.getvalue())
    data = buffer.getvalue()
    if isinstance(target, Path):
        target.write_bytes(data)
    else:
        target.write(data)


def tensor_problems(name: str, array: Array, spec: TensorSpec) -> list[str]:
    """What is wrong with ``array`` as a batch for ``spec`` (empty when it fits)."""
    problems = []
    if array.dtype != np.dtype(spec.dtype):
        problems.append(f"{name}: dtype {array.dtype} but the schema says {spec.dtype}")
    if array.ndim != len(spec.shape):
        problems.append(
            f"{name}: shape {list(array.shape)} has rank {array.ndim} but the schema "
            f"{_shape_text(spec.shape)} has rank {len(spec.shape)}"
        )
    else:
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if want is not None and got != want:
                problems.append(
                    f"{name}: dimension {axis} is {got} but the schema "
                    f"{_shape_text(spec.shape)} fixes it at {want}"
                )
    if array.ndim and array.shape[0] == 0:
        problems.append(f"{name}: the batch is empty")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        problems.append(f"{name}: contains NaN or infinite values")
    return problems


def schema_problems(
    golden: GoldenSamples, *, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> list[str]:
    """Every way ``golden`` fails to fit the model's input and output schema."""
    problems: list[str] = []
    input_specs = {s.name: s for s in inputs}
    output_specs = {s.name: s for s in outputs}
    for name in input_specs.keys() - golden.inputs.keys():
        problems.append(f"input {name!r} of the schema has no golden array 'input.{name}'")
    for name in golden.inputs.keys() - input_specs.keys():
        problems.append(f"golden input {name!r} is not an input of the schema")
    for name in golden.outputs.keys() - output_specs.keys():
        problems.append(f"golden output {name!r} is not an output of the schema")
    for name, array in golden.inputs.items():
        if name in input_specs:
            problems += tensor_problems(f"input {name!r}", array, input_specs[name])
    for name, array in golden.outputs.items():
        if name in output_specs:
            problems += tensor_problems(f"output {name!r}", array, output_specs[name])
    batch = {
        f"{kind} {name!r}": int(a.shape[0])
        for kind, arrays in (("input", golden.inputs), ("output", golden.outputs))
        for name, a in arrays.items()
        if a.ndim
    }
    if len(set(batch.values())) > 1:
        problems.append(f"golden arrays disagree on the number of samples: {batch}")
    return problems


@dataclass(frozen=True)
class Mismatch:
    """A golden output the model did not reproduce."""

    output: str
    reason: str
    max_abs_error: float | None = None
    mismatched: int = 0

    def __str__(self) -> str:
        return f"output {self.output!r}: {self.reason}"


def compare_outputs(
    expected: Mapping[str, Array], actual: Mapping[str, Array], tolerance: Tolerance
) -> list[Mismatch]:
    """Compare actual outputs with golden ones: floats within tolerance, the rest exactly."""
    mismatches = []
    for name, want in expected.items():
        if name not in actual:
            mismatches.append(Mismatch(name, "the model produced no such output"))
            continue
        got = np.asarray(actual[name])
        if got.shape != want.shape:
            mismatches.append(
                Mismatch(name, f"shape {list(got.shape)}, expected {list(want.shape)}")
            )
            continue
        if np.issubdtype(want.dtype, np.floating):
            close = np.isclose(got, want, atol=tolerance.atol, rtol=tolerance.rtol)
            if not close.all():
                error = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
                count = int((~close).sum())
                mismatches.append(
                    Mismatch(
                        name,
                        f"{count} of {close.size} values differ beyond atol={tolerance.atol}, "
                        f"rtol={tolerance.rtol} (max abs error {error:.3g})",
                        max_abs_error=error,
                        mismatched=count,
                    )
                )
        else:
            equal = got == want
            if not np.all(equal):
                count = int((~np.asarray(equal)).sum())
                mismatches.append(
                    Mismatch(name, f"{count} of {want.size} values differ", mismatched=count)
                )
    return mismatches


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"

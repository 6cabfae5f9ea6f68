import io
import zipfile

import numpy as np
import pytest

from edgefleet.registry.domain import TensorSpec, Tolerance
from edgefleet.registry.errors import GoldenSampleError
from edgefleet.registry.golden import (
    GoldenSamples,
    compare_outputs,
    read_golden,
    schema_problems,
    write_golden,
)

INPUTS = (TensorSpec(name="X", dtype="float32", shape=(-1, 4)),)
OUTPUTS = (
    TensorSpec(name="label", dtype="int64", shape=(-1,), role="label"),
    TensorSpec(name="p", dtype="float32", shape=(-1, 3), role="probabilities"),
)


def sample(n: int = 5) -> GoldenSamples:
    rng = np.random.default_rng(0)
    return GoldenSamples(
        inputs={"X": rng.random((n, 4), dtype=np.float32)},
        outputs={
            "label": np.arange(n, dtype=np.int64) % 3,
            "p": rng.random((n, 3), dtype=np.float32),
        },
    )


def test_round_trip_is_byte_for_byte_repeatable(tmp_path):
    write_golden(tmp_path / "a.npz", sample())
    write_golden(tmp_path / "b.npz", sample())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = read_golden(tmp_path / "a.npz")
    assert loaded.count == 5
    np.testing.assert_array_equal(loaded.inputs["X"], sample().inputs["X"])
    assert schema_problems(loaded, inputs=INPUTS, outputs=OUTPUTS) == []


def test_schema_problems_name_each_mismatch():
    bad = GoldenSamples(
        inputs={"X": np.zeros((2, 5), dtype=np.float64)},
        outputs={"label": np.zeros(3, dtype=np.int64), "extra": np.zeros(2)},
    )
    problems = "\n".join(schema_problems(bad, inputs=INPUTS, outputs=OUTPUTS))
    assert "input 'X': dtype float64 but the schema says float32" in problems
    assert "input 'X': dimension 1 is 5 but the schema [-1, 4] fixes it at 4" in problems
    assert "golden output 'extra' is not an output of the schema" in problems
    assert "disagree on the number of samples" in problems


def test_missing_input_wrong_rank_nan_and_empty():
    missing = GoldenSamples(
        inputs={"Y": np.zeros((1, 4), np.float32)}, outputs={"label": np.zeros(1, np.int64)}
    )
    problems = schema_problems(missing, inputs=INPUTS, outputs=OUTPUTS)
    assert "input 'X' of the schema has no golden array 'input.X'" in problems
    nan = GoldenSamples(
        inputs={"X": np.full((1, 4), np.nan, np.float32)}, outputs={"label": np.zeros(1, np.int64)}
    )
    assert "input 'X': contains NaN or infinite values" in schema_problems(
        nan, inputs=INPUTS, outputs=OUTPUTS
    )
    rank = GoldenSamples(
        inputs={"X": np.zeros((4,), np.float32)}, outputs={"label": np.zeros(4, np.int64)}
    )
    assert any("has rank 1" in p for p in schema_problems(rank, inputs=INPUTS, outputs=OUTPUTS))
    empty = GoldenSamples(
        inputs={"X": np.zeros((0, 4), np.float32)}, outputs={"label": np.zeros(0, np.int64)}
    )
    assert "input 'X': the batch is empty" in schema_problems(empty, inputs=INPUTS, outputs=OUTPUTS)


def test_unreadable_or_pickled_golden_files_are_refused(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(GoldenSampleError, match=r"cannot read as an .npz archive"):
        read_golden(tmp_path / "text.npz")
    objects = tmp_path / "objects.npz"
    np.savez(objects, **{"input.X": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(GoldenSampleError, match="cannot read"):
        read_golden(objects)
    badkey = tmp_path / "badkey.npz"
    np.savez(badkey, X=np.zeros(3))
    with pytest.raises(GoldenSampleError, match=r"must be named 'input.<name>' or 'output.<name>'"):
        read_golden(badkey)
    only_inputs = tmp_path / "only.npz"
    np.savez(only_inputs, **{"input.X": np.zeros(3)})
    with pytest.raises(GoldenSampleError, match="at least one input"):
        read_golden(only_inputs)


def test_written_archive_has_fixed_timestamps():
    buffer = io.BytesIO()
    write_golden(buffer, sample())
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_compare_outputs_tolerance_and_exactness():
    expected = sample().outputs
    tolerance = Tolerance(atol=1e-3, rtol=0)
    close = {"label": expected["label"].copy(), "p": expected["p"] + 5e-4}
    assert compare_outputs(expected, close, tolerance) == []
    far = {"label": expected["label"].copy(), "p": expected["p"] + 5e-3}
    (mismatch,) = compare_outputs(expected, far, tolerance)
    assert mismatch.output == "p" and mismatch.mismatched == 15
    assert mismatch.max_abs_error == pytest.approx(5e-3, rel=1e-2)
    flipped = {"label": (expected["label"] + 1) % 3, "p": expected["p"]}
    (mismatch,) = compare_outputs(expected, flipped, tolerance)
    assert "5 of 5 values differ" in str(mismatch)
    (missing,) = compare_outputs(expected, {"p": expected["p"]}, tolerance)
    assert "produced no such output" in missing.reason
    (shape,) = compare_outputs(
        expected, {"label": expected["label"][:2], "p": expected["p"]}, tolerance
    )
    assert "shape [2], expected [5]" in shape.reason

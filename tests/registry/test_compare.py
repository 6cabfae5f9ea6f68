from datetime import UTC, datetime

from edgefleet.registry.compare import compare_versions, lower_is_better, make_row
from edgefleet.registry.domain import GoldenSet, ModelVersion, Resources, TensorSpec, Variant

SHA = "a" * 64


def version(number: str, metrics: dict[str, float], size: int, latency: float) -> ModelVersion:
    return ModelVersion(
        model="m",
        version=number,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        inputs=(TensorSpec(name="x", dtype="float32", shape=(-1, 4)),),
        outputs=(TensorSpec(name="y", dtype="float32", shape=(-1, 2)),),
        metrics=metrics,
        resources=Resources(expected_latency_ms=latency),
        variants=(
            Variant(
                name="onnx-fp32",
                runtime="onnxruntime",
                precision="fp32",
                hardware=("any",),
                filename="m.onnx",
                sha256=SHA,
                size=size,
            ),
        ),
        golden=GoldenSet(sha256=SHA, size=1, count=1, tolerance={"atol": 0, "rtol": 0}),
    )


def test_direction_of_better():
    assert lower_is_better("latency_p95_ms")
    assert lower_is_better("error_rate")
    assert not lower_is_better("accuracy")
    assert make_row("metric", "accuracy", 0.9, 0.95).better == "b"
    assert make_row("metric", "latency_p95_ms", 1.0, 2.0).better == "a"
    assert make_row("metric", "accuracy", 0.9, 0.9).better == "same"


def test_compare_versions_rows():
    a = version("1.0.0", {"accuracy": 0.90, "only_a": 1.0}, size=1000, latency=2.0)
    b = version("1.1.0", {"accuracy": 0.99}, size=1500, latency=1.0)
    rows = {row.name: row for row in compare_versions(a, b).rows}
    assert rows["accuracy"].delta == 0.99 - 0.90
    assert abs(rows["accuracy"].relative - 0.1) < 1e-9
    assert rows["accuracy"].better == "b"
    assert rows["only_a"].b is None and rows["only_a"].delta is None
    assert rows["expected_latency_ms"].better == "b"
    size = rows["onnx-fp32 size_bytes"]
    assert (size.a, size.b, size.delta, size.better) == (1000, 1500, 500, "a")

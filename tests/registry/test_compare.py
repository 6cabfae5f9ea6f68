from datetime import UTC, datetime

import pytest

from edgefleet.registry.compare import compare_versions, declared_direction, make_row
from edgefleet.registry.domain import GoldenSet, ModelVersion, Resources, TensorSpec, Variant

SHA = "a" * 64


def version(
    number: str,
    metrics: dict[str, float],
    size: int = 1000,
    resources: Resources | None = None,
    higher_is_better: dict[str, bool] | None = None,
    variant_metrics: dict[str, float] | None = None,
) -> ModelVersion:
    return ModelVersion(
        model="m",
        version=number,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        inputs=(TensorSpec(name="x", dtype="float32", shape=(-1, 4)),),
        outputs=(TensorSpec(name="y", dtype="float32", shape=(-1, 2)),),
        metrics=metrics,
        higher_is_better=higher_is_better or {},
        resources=resources or Resources(),
        variants=(
            Variant(
                name="onnx-fp32",
                runtime="onnxruntime",
                precision="fp32",
                hardware=("any",),
                filename="m.onnx",
                sha256=SHA,
                size=size,
                metrics=variant_metrics or {},
            ),
        ),
        golden=GoldenSet(sha256=SHA, size=1, count=1, tolerance={"atol": 0, "rtol": 0}),
    )


def rows_of(a: ModelVersion, b: ModelVersion):
    return {row.name: row for row in compare_versions(a, b).rows}


def test_the_declared_direction_decides_which_side_is_better():
    assert make_row("metric", "accuracy", 0.9, 0.95, higher_is_better=True).better == "b"
    assert make_row("metric", "latency_p95_ms", 1.0, 2.0, higher_is_better=False).better == "a"
    assert make_row("metric", "accuracy", 0.9, 0.9, higher_is_better=True).better == "same"


def test_a_metric_without_a_declared_direction_gets_no_verdict():
    # "error_rate" reads like lower-is-better, "f1" like higher: neither name is trusted.
    for name in ("error_rate", "f1", "disk_footprint"):
        row = make_row("metric", name, 1.0, 2.0, higher_is_better=None)
        assert (row.better, row.higher_is_better, row.delta) == (None, None, 1.0)
    assert make_row("metric", "f1", 0.5, 0.5, higher_is_better=None).better == "same"


@pytest.mark.parametrize("field", list(Resources.model_fields))
def test_every_resource_field_is_lower_is_better(field):
    # The case was disk_mb +154.5% called "better: 1.1.0".
    a = version("1.0.0", {}, resources=Resources(**{field: 0.0207}))
    b = version("1.1.0", {}, resources=Resources(**{field: 0.0527}))
    row = rows_of(a, b)[field]
    assert (row.kind, row.higher_is_better, row.better) == ("resource", False, "a")
    assert rows_of(b, a)[field].better == "b"


def test_a_resource_only_one_side_declares_is_listed_without_a_verdict():
    a = version("1.0.0", {}, resources=Resources(ram_mb=50.0))
    b = version("1.1.0", {})
    row = rows_of(a, b)["ram_mb"]
    assert (row.a, row.b, row.better, row.higher_is_better) == (50.0, None, None, False)
    assert "disk_mb" not in rows_of(a, b)  # neither side has it


def test_a_bigger_artifact_is_worse():
    size = rows_of(version("1.0.0", {}, size=1000), version("1.1.0", {}, size=1500))[
        "onnx-fp32 size_bytes"
    ]
    assert (size.kind, size.a, size.b, size.delta) == ("size", 1000, 1500, 500)
    assert (size.higher_is_better, size.better) == (False, "a")


def test_metrics_follow_the_manifests_declarations():
    directions = {"accuracy": True, "latency_p95_ms": False}
    a = version(
        "1.0.0",
        {"accuracy": 0.90, "latency_p95_ms": 2.0, "f1": 0.8, "only_a": 1.0},
        higher_is_better=directions,
        variant_metrics={"accuracy": 0.89, "latency_p95_ms": 2.1},
    )
    b = version(
        "1.1.0",
        {"accuracy": 0.99, "latency_p95_ms": 3.0, "f1": 0.9},
        higher_is_better=directions,
        variant_metrics={"accuracy": 0.98, "latency_p95_ms": 1.9},
    )
    rows = rows_of(a, b)
    assert rows["accuracy"].delta == 0.99 - 0.90
    assert abs(rows["accuracy"].relative - 0.1) < 1e-9
    assert (rows["accuracy"].better, rows["latency_p95_ms"].better) == ("b", "a")
    assert (rows["f1"].better, rows["f1"].higher_is_better) == (None, None)
    assert rows["only_a"].b is None and rows["only_a"].delta is None
    # A variant's metric has the direction its name is declared with.
    assert rows["onnx-fp32 accuracy"].better == "b"
    assert rows["onnx-fp32 latency_p95_ms"].better == "b"


def test_one_sides_declaration_is_enough_and_a_disagreement_is_no_direction():
    declared = version("1.1.0", {"loss": 0.2}, higher_is_better={"loss": False})
    silent = version("1.0.0", {"loss": 0.3})
    assert declared_direction("loss", silent, declared) is False
    assert rows_of(silent, declared)["loss"].better == "b"
    flipped = version("1.2.0", {"loss": 0.1}, higher_is_better={"loss": True})
    assert declared_direction("loss", declared, flipped) is None
    assert declared_direction("loss", silent, silent) is None

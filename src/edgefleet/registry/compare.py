"""Compare two versions of a model: metrics, latency and artifact sizes side by side."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgefleet.registry.domain import ModelVersion

#: Metrics where a smaller number is the better one; everything else is "higher is better".
LOWER_IS_BETTER_HINTS = ("latency", "loss", "error", "size", "ram", "memory", "cpu")


class Row(BaseModel):
    """One compared quantity."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "metric", "resource" or "size"
    name: str
    a: float | None
    b: float | None
    delta: float | None
    relative: float | None
    better: str | None  # "a", "b", "same", or None when not comparable


class Comparison(BaseModel):
    """Two versions of one model, quantity by quantity (``b`` relative to ``a``)."""

    model_config = ConfigDict(frozen=True)

    model: str
    a: str
    b: str
    rows: tuple[Row, ...]


def lower_is_better(name: str) -> bool:
    """Whether a smaller value of the quantity ``name`` is an improvement."""
    lowered = name.lower()
    return any(hint in lowered for hint in LOWER_IS_BETTER_HINTS)


def make_row(kind: str, name: str, a: float | None, b: float | None) -> Row:
    """A row with the delta, relative change and which side is better."""
    if a is None or b is None:
        return Row(kind=kind, name=name, a=a, b=b, delta=None, relative=None, better=None)
    delta = b - a
    relative = delta / abs(a) if a else None
    if delta == 0:
        better = "same"
    else:
        b_wins = delta < 0 if lower_is_better(name) else delta > 0
        better = "b" if b_wins else "a"
    return Row(kind=kind, name=name, a=a, b=b, delta=delta, relative=relative, better=better)


def compare_versions(a: ModelVersion, b: ModelVersion) -> Comparison:
    """Compare ``b`` with ``a``: every metric, resource need and variant size either has."""
    rows: list[Row] = []
    for name in sorted(a.metrics.keys() | b.metrics.keys()):
        rows.append(make_row("metric", name, a.metrics.get(name), b.metrics.get(name)))
    for name in ("expected_latency_ms", "ram_mb", "disk_mb"):
        va, vb = getattr(a.resources, name), getattr(b.resources, name)
        if va is not None or vb is not None:
            rows.append(make_row("resource", name, va, vb))
    variants = sorted({v.name for v in a.variants} | {v.name for v in b.variants})
    for name in variants:
        va_variant, vb_variant = a.variant(name), b.variant(name)
        rows.append(
            make_row(
                "size",
                f"{name} size_bytes",
                float(va_variant.size) if va_variant else None,
                float(vb_variant.size) if vb_variant else None,
            )
        )
        metric_names = sorted(
            (va_variant.metrics.keys() if va_variant else set())
            | (vb_variant.metrics.keys() if vb_variant else set())
        )
        for metric in metric_names:
            rows.append(
                make_row(
                    "metric",
                    f"{name} {metric}",
                    va_variant.metrics.get(metric) if va_variant else None,
                    vb_variant.metrics.get(metric) if vb_variant else None,
                )
            )
    return Comparison(model=a.model, a=a.version, b=b.version, rows=tuple(rows))

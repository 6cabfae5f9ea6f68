"""Compare two versions of a model: metrics, latency and artifact sizes side by side.

Which side is better is never guessed from a quantity's name. Resources (what the model
needs on a device) and artifact sizes are lower-is-better by definition; a metric is
judged only when its manifest declares ``higher_is_better`` (docs/bundle-format.md), and
otherwise its row has no verdict::

    comparison = compare_versions(registry.get("digits", "1.0.0"), registry.get("digits", "1.1.0"))
    [(row.name, row.better) for row in comparison.rows]  # [("accuracy", "b"), ...]
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgefleet.registry.domain import ModelVersion, Resources


class Row(BaseModel):
    """One compared quantity."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "metric", "resource" or "size"
    name: str
    a: float | None
    b: float | None
    delta: float | None
    relative: float | None
    # "a", "b", "same", or None when one side lacks the quantity or no direction is known.
    better: str | None
    # None: a metric whose manifests declare no direction, so no side can be called better.
    higher_is_better: bool | None = None


class Comparison(BaseModel):
    """Two versions of one model, quantity by quantity (``b`` relative to ``a``)."""

    model_config = ConfigDict(frozen=True)

    model: str
    a: str
    b: str
    rows: tuple[Row, ...]


def make_row(
    kind: str, name: str, a: float | None, b: float | None, higher_is_better: bool | None
) -> Row:
    """A row with the delta, relative change and which side is better.

    ``higher_is_better`` is the quantity's direction; ``None`` leaves ``better`` unset
    unless the two values are equal.
    """
    delta = relative = None
    better: str | None = None
    if a is not None and b is not None:
        delta = b - a
        relative = delta / abs(a) if a else None
        if delta == 0:
            better = "same"
        elif higher_is_better is not None:
            b_wins = delta > 0 if higher_is_better else delta < 0
            better = "b" if b_wins else "a"
    return Row(
        kind=kind,
        name=name,
        a=a,
        b=b,
        delta=delta,
        relative=relative,
        higher_is_better=higher_is_better,
        better=better,
    )


def declared_direction(metric: str, a: ModelVersion, b: ModelVersion) -> bool | None:
    """Whether a higher ``metric`` is better, as the two versions' manifests declare it.

    ``None`` when neither declares it, or when they disagree (then neither is trusted).
    """
    declared = {v.higher_is_better[metric] for v in (a, b) if metric in v.higher_is_better}
    return declared.pop() if len(declared) == 1 else None


def compare_versions(a: ModelVersion, b: ModelVersion) -> Comparison:
    """Compare ``b`` with ``a``: every metric, resource need and variant size either has."""
    rows: list[Row] = []
    for name in sorted(a.metrics.keys() | b.metrics.keys()):
        rows.append(
            make_row(
                "metric",
                name,
                a.metrics.get(name),
                b.metrics.get(name),
                declared_direction(name, a, b),
            )
        )
    for name in Resources.model_fields:
        va, vb = getattr(a.resources, name), getattr(b.resources, name)
        if va is not None or vb is not None:
            # What a model needs on a device: less is better by definition.
            rows.append(make_row("resource", name, va, vb, higher_is_better=False))
    variants = sorted({v.name for v in a.variants} | {v.name for v in b.variants})
    for name in variants:
        va_variant, vb_variant = a.variant(name), b.variant(name)
        rows.append(
            make_row(
                "size",
                f"{name} size_bytes",
                float(va_variant.size) if va_variant else None,
                float(vb_variant.size) if vb_variant else None,
                higher_is_better=False,
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
                    declared_direction(metric, a, b),
                )
            )
    return Comparison(model=a.model, a=a.version, b=b.version, rows=tuple(rows))

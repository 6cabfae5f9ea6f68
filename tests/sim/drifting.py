"""What the simulator's drift tests share: held-out data with a known answer, a fixed
linear classifier standing in for the ONNX model, and alarms as the drift API shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from edgefleet.drift.alarms import Alarm, AlarmState, Finding, Fired, Resolution
from edgefleet.sim.drift import HeldOut

KEY = ("1.1.0", "onnx-fp32")
#: t = 0 of the alarms' run clock.
ORIGIN = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def held_out(rows_per_class: int = 20, classes: int = 4, side: int = 4) -> HeldOut:
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(classes), rows_per_class)
    inputs = rng.uniform(0, 16, size=(labels.size, side * side)).astype(np.float32)
    # Each class brightens its own pixel, so the stand-in classifier can tell them apart.
    inputs[np.arange(labels.size), labels] = 16.0
    inputs[0, :] = 0.0  # the full range [0, 16] is in the data
    return HeldOut("X", inputs, labels, np.full(classes, 1.0 / classes))


class LinearModel:
    """A fixed softmax classifier on the first pixels, counting its calls."""

    def __init__(self, classes: int = 4) -> None:
        self.classes = classes
        self.calls: list[tuple[tuple[str, str], int]] = []

    def __call__(self, key, inputs):
        self.calls.append((key, len(inputs)))
        logits = inputs[:, : self.classes].astype(np.float64) / 4.0
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def api_alarm(
    segment: str,
    feature: str,
    opened_t: float,
    *,
    state: str = "open",
    psi: float = 0.42,
    resolved_t: float | None = None,
) -> dict[str, Any]:
    """An alarm as GET /api/v1/drift/alarms shows it (the real ``Alarm``, flattened with
    its key as the API's view does), with the ``opened_t`` the runner adds."""
    opened = ORIGIN + timedelta(seconds=opened_t)
    resolved = None if resolved_t is None else ORIGIN + timedelta(seconds=resolved_t)
    finding = Finding(
        model="digits",
        version="1.1.0",
        segment=segment,
        feature=feature,
        fired=(
            Fired(statistic="psi", value=psi, threshold=0.2, p_value=1e-9, bh_cut=1e-4),
            Fired(statistic="ks", value=0.31, threshold=0.1, p_value=1e-8, bh_cut=1e-4),
        ),
        rows=5000,
        devices=25,
        phi=1.4,
    )
    last = resolved or opened
    alarm = Alarm(
        id=f"da-{segment}-{feature}-{opened_t}",
        state=AlarmState(state),
        opened_at=opened,
        opening=finding,
        latest=finding,
        last_seen_at=opened,
        last_look_at=last,
        resolved_at=resolved,
        resolution=Resolution.AUTO if resolved else None,
    )
    view: dict[str, Any] = {
        "id": alarm.id,
        "model": alarm.model,
        "version": alarm.version,
        "segment": alarm.segment,
        "feature": alarm.feature,
        **{k: v for k, v in alarm.model_dump(mode="json").items() if k != "id"},
        "opened_t": opened_t,
    }
    if resolved_t is not None:
        view["resolved_t"] = resolved_t
    return view

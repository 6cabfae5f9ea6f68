"""What the simulator's drift tests share: held-out data with a known answer, and a fixed
linear classifier standing in for the ONNX model."""

from __future__ import annotations

import numpy as np

from edgefleet.sim.drift import HeldOut

KEY = ("1.1.0", "onnx-fp32")


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

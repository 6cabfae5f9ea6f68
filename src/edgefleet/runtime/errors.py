"""Errors of the inference runtime. Each names a ``kind`` that metrics count by."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class InferenceRuntimeError(EdgefleetError):
    """Base class of runtime errors."""

    code = "runtime_error"
    kind = "runtime"


class InvalidInputError(InferenceRuntimeError):
    """The request does not fit the model's inputs (names, shape, dtype, NaN, empty)."""

    code = "invalid_input"
    kind = "input"


class NoModelError(InferenceRuntimeError):
    """No model is active yet (a device that has never installed one)."""

    code = "no_model"
    kind = "no_model"


class ModelLoadError(InferenceRuntimeError):
    """A model file failed to load; the active model, if any, keeps serving."""

    code = "model_load_failed"
    kind = "load"


class InferenceError(InferenceRuntimeError):
    """The model raised while running; the request failed, the model keeps serving."""

    code = "inference_failed"
    kind = "inference"

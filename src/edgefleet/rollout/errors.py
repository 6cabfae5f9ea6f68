"""Errors of rollouts."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class RolloutError(EdgefleetError):
    """Base class of rollout errors."""

    code = "rollout_error"


class RolloutNotFoundError(RolloutError):
    code = "rollout_not_found"


class RolloutStateError(RolloutError):
    """The operation does not apply in the rollout's state (say, resuming a finished one);
    ``details`` has the state."""

    code = "rollout_state"


class RolloutSpecError(RolloutError):
    """A rollout definition is invalid; ``details`` lists the problems."""

    code = "rollout_invalid"

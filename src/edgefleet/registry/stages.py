"""The stage lifecycle: ``candidate`` → ``production`` → ``archived``.

An archived version can come back (as a candidate, or straight to production to roll
the fleet back to it); nothing moves to the stage it is already in.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from edgefleet.registry.domain import Stage
from edgefleet.registry.errors import InvalidStageError

#: OpenAPI's description of a stage field; :func:`parse_stage` checks it (an
#: ``InvalidStageError``, 422 ``invalid_stage`` in the API).
STAGE_SCHEMA: dict[str, Any] = {"enum": [stage.value for stage in Stage]}

#: A stage name as an API input: the names are documented, :func:`parse_stage` enforces them.
StageText = Annotated[str, Field(min_length=1, max_length=32, json_schema_extra=STAGE_SCHEMA)]

ALLOWED: dict[Stage, frozenset[Stage]] = {
    Stage.CANDIDATE: frozenset({Stage.PRODUCTION, Stage.ARCHIVED}),
    Stage.PRODUCTION: frozenset({Stage.ARCHIVED}),
    Stage.ARCHIVED: frozenset({Stage.CANDIDATE, Stage.PRODUCTION}),
}


def parse_stage(text: str) -> Stage:
    """The stage called ``text``.

    Raises:
        InvalidStageError: not one of candidate, production, archived.
    """
    try:
        return Stage(text.strip().lower())
    except ValueError as exc:
        known = ", ".join(s.value for s in Stage)
        raise InvalidStageError(
            f"unknown stage {text!r} (known stages: {known})", details={"stage": text}
        ) from exc


def check_transition(current: Stage, target: Stage) -> None:
    """Allow or refuse moving a version from ``current`` to ``target``.

    Raises:
        InvalidStageError: the lifecycle does not allow that move.
    """
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED[current]))
        raise InvalidStageError(
            f"cannot move a {current.value} version to {target.value} (from {current.value} "
            f"it can go to: {allowed})",
            details={"from": current.value, "to": target.value},
        )

"""Which virtual devices a targeting query selects, decided in the simulator (pure).

A scenario's drift applies to a cohort written in the targeting language rollouts use
(``edgefleet.fleet.query``), e.g. ``site:eu-west-site-1 AND kind:camera``. The server
decides rollout targets in SQL over its devices table; a drift cohort is the
simulator's own business, fixed when the run starts, so it is decided here over the
attributes each virtual device enrolls with (``DeviceSpec.attributes``), with the
server's meanings: ``:`` is equality with ``*`` wildcards and ``!=`` its negation
(case-sensitive; a device without the field does not match ``:`` and does match
``!=``), ``firmware`` is ordered as a version, any other attribute as a number when
both sides are numbers. Fields that change while a run plays (``state``, ``online``,
``version``, ``model``) or that a virtual device does not have (``group``) are
refused: a cohort would otherwise mean something else at every moment::

    cohort = Cohort.parse("site:eu-west-site-1 AND kind:camera")
    cohort.matches({"site": "eu-west-site-1", "kind": "camera", ...})   # True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, TypeVar

from edgefleet.errors import EdgefleetError
from edgefleet.fleet.errors import QuerySyntaxError
from edgefleet.fleet.query import And, Comparison, Node, Not, Or, fields, parse_query
from edgefleet.fleet.versions import version_key

#: Fields whose value changes while the run plays, or that no virtual device has.
DYNAMIC_FIELDS: Final = frozenset({"state", "online", "version", "model", "group"})
#: Names the server gives columns that the simulator holds as attributes.
_ALIASES: Final = {"hardware": "hw", "device": "id"}
_ORDERING: Final = (">", ">=", "<", "<=")
_VERSIONED: Final = frozenset({"firmware"})
#: Attribute text the server compares as a number: plain decimals.
_DECIMAL: Final = re.compile(r"[+-]?[0-9]{1,15}([.][0-9]{1,15})?")

Ordered = TypeVar("Ordered", float, str)

Attributes = Mapping[str, str | bool]


class CohortError(EdgefleetError):
    """A cohort query does not parse, or uses a field or comparison the simulator
    cannot decide for its devices; the message says which and why."""

    code = "invalid_cohort"


@dataclass(frozen=True)
class Cohort:
    """A parsed cohort query, checked for fields the simulator can decide."""

    text: str
    node: Node

    @classmethod
    def parse(cls, text: str) -> Cohort:
        """Parse and check ``text``.

        Raises:
            CohortError: a syntax error (with its position), a field that changes while
                the run plays, or an ordering the field does not support.
        """
        try:
            node = parse_query(text)
        except QuerySyntaxError as exc:
            raise CohortError(exc.message, details=exc.details) from exc
        dynamic = sorted(fields(node) & DYNAMIC_FIELDS)
        if dynamic:
            raise CohortError(
                f"a drift cohort cannot use {', '.join(dynamic)}: it is fixed when the run "
                "starts, so use the devices' own attributes (hw, rev, kind, profile, region, "
                "site, network, firmware, id)"
            )
        _check_orderings(node)
        return cls(text, node)

    def matches(self, attributes: Attributes, device_id: str = "") -> bool:
        """Whether a device with ``attributes`` (and ``device_id``, the field ``id``)
        is in the cohort."""
        return _holds(self.node, attributes, device_id)


def _check_orderings(node: Node) -> None:
    pending: list[Node] = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, Not):
            pending.append(current.operand)
        elif isinstance(current, And | Or):
            pending.extend((current.left, current.right))
        elif current.op in _ORDERING:
            field = _ALIASES.get(current.field, current.field)
            if field in _VERSIONED:
                if version_key(current.value) is None:
                    raise CohortError(
                        f"{current.value!r} is not a version, so {current.field}{current.op} "
                        "cannot compare with it (use e.g. 1.8.0)"
                    )
            elif not math.isfinite(_number(current.value)):
                raise CohortError(
                    f"{current.value!r} is not a number; only numbers (or firmware) can be "
                    f"ordered, so use {current.field}:{current.value} to match text"
                )


def _holds(node: Node, attributes: Attributes, device_id: str) -> bool:
    if isinstance(node, Comparison):
        return _compare(node, attributes, device_id)
    if isinstance(node, Not):
        return not _holds(node.operand, attributes, device_id)
    if isinstance(node, And):
        return _holds(node.left, attributes, device_id) and _holds(
            node.right, attributes, device_id
        )
    return _holds(node.left, attributes, device_id) or _holds(node.right, attributes, device_id)


def _compare(node: Comparison, attributes: Attributes, device_id: str) -> bool:
    field = _ALIASES.get(node.field, node.field)
    raw = (device_id or None) if field == "id" else attributes.get(field)
    # JSON booleans read true/false, as the server reads them.
    value = None if raw is None else ("true" if raw is True else "false" if raw is False else raw)
    if node.op in (":", "!="):
        equal = value is not None and _pattern(node.value).fullmatch(str(value)) is not None
        return equal if node.op == ":" else not equal
    if value is None:
        return False
    if field in _VERSIONED:
        ours, theirs = version_key(str(value)), version_key(node.value)
        return ours is not None and theirs is not None and _ordered(ours, node.op, theirs)
    if _DECIMAL.fullmatch(str(value)) is None:
        return False
    return _ordered(float(str(value)), node.op, _number(node.value))


@lru_cache(maxsize=256)
def _pattern(value: str) -> re.Pattern[str]:
    """``value`` with ``*`` matching any run of characters, as a regular expression."""
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _ordered(left: Ordered, op: str, right: Ordered) -> bool:
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    return left <= right

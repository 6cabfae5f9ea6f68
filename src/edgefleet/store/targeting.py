"""Compiling a targeting query into a SQL condition on the devices table.

The database does the filtering: ``compile_query`` turns the AST from
``edgefleet.fleet.query`` into one boolean SQLAlchemy expression over ``DeviceRow``::

    node = parse_query("region:eu-west AND firmware>=1.8.0 AND online:true")
    rows = session.scalars(select(DeviceRow).where(compile_query(node, now=now)))

Fields: ``id``/``device``, ``group``, ``hw``/``hardware`` and ``state`` are columns;
``firmware`` and ``version`` (the reported model version) are columns that can also be
ordered, by their sortable version keys; ``model`` is ``NAME`` or ``NAME@VERSION``;
``online`` is ``true`` or ``false``; every other name is a device attribute, compared as
text (JSON booleans read ``true``/``false``), or as a number under ``<``/``>``. Matching
is case-sensitive on both backends.

Every comparison compiles to a condition that is TRUE or FALSE, never NULL: a device
without the field does not match ``region:eu-west`` and does match ``region!=eu-west``
and ``NOT region:eu-west``. SQL's three-valued logic would otherwise drop it from both
a condition and its negation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Boolean, Float, String, and_, case, cast, false, func, literal, not_, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from edgefleet.fleet.errors import QueryFieldError
from edgefleet.fleet.query import And, Comparison, Node, Not, Or
from edgefleet.fleet.versions import version_key
from edgefleet.store.tables import DeviceRow

_TEXT_COLUMNS: Final[dict[str, Any]] = {
    "id": DeviceRow.device_id,
    "device": DeviceRow.device_id,
    "group": DeviceRow.group_name,
    "hw": DeviceRow.hardware,
    "hardware": DeviceRow.hardware,
    "state": DeviceRow.agent_state,
}
# field -> (the version as reported, its sortable key)
_VERSION_COLUMNS: Final[dict[str, tuple[Any, Any]]] = {
    "firmware": (DeviceRow.firmware, DeviceRow.firmware_key),
    "version": (DeviceRow.reported_version, DeviceRow.reported_version_key),
}
_ORDERING: Final = (">", ">=", "<", "<=")
_EQUALITY: Final = (":", "!=")
_BOOLEANS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
# Attribute text that is compared as a number: plain decimals, bounded so that no value
# can overflow PostgreSQL's double precision in the CAST.
_DECIMAL: Final = r"^[+-]?[0-9]{1,15}([.][0-9]{1,15})?$"


def compile_query(node: Node, *, now: datetime) -> ColumnElement[bool]:
    """A condition on ``DeviceRow`` selecting the devices ``node`` describes.

    ``now`` decides ``online`` (a naive ``now`` is taken to be UTC).

    Raises:
        QueryFieldError: a comparison the field does not support (ordering a text
            field, ``model>1``, ``online:maybe``, ``firmware>=banana``, ...).
    """
    moment = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return _compile(node, moment)


def _compile(node: Node, now: datetime) -> ColumnElement[bool]:
    if isinstance(node, Comparison):
        return _comparison(node, now)
    if isinstance(node, Not):
        # Sound only because every comparison is two-valued (see the module docstring).
        return not_(_compile(node.operand, now))
    # The parser balances chains of one connective; flattening them keeps the SQL flat.
    parts = [_compile(operand, now) for operand in _chain(node)]
    return and_(*parts) if isinstance(node, And) else or_(*parts)


def _chain(node: And | Or) -> list[Node]:
    """The operands of a run of the same connective, in query order."""
    operands: list[Node] = []
    pending: list[Node] = [node]
    while pending:
        current = pending.pop()
        if type(current) is type(node):
            assert isinstance(current, And | Or)
            pending.extend((current.right, current.left))
        else:
            operands.append(current)
    return operands


def _comparison(node: Comparison, now: datetime) -> ColumnElement[bool]:
    compiler = _FIELDS.get(node.field, _attribute)
    return compiler(node, now)


def _text_field(node: Comparison, _now: datetime) -> ColumnElement[bool]:
    _require(node, _EQUALITY, "it is text; only firmware, version and numbers can be ordered")
    return _equality(node, _TEXT_COLUMNS[node.field], node.value)


def _version_field(node: Comparison, _now: datetime) -> ColumnElement[bool]:
    text_column, key_column = _VERSION_COLUMNS[node.field]
    if node.op in _EQUALITY:
        return _equality(node, text_column, node.value)
    key = version_key(node.value)
    if key is None:
        raise _field_error(
            node,
            f"{node.value!r} is not a version, so {node.field}{node.op} cannot compare with it "
            "(use e.g. 1.8.0)",
        )
    # Devices whose version has no key (not a version) take no part in an ordering.
    return _known(key_column, _ordered(_bytewise(key_column), node.op, key))


def _model_field(node: Comparison, _now: datetime) -> ColumnElement[bool]:
    _require(node, _EQUALITY, "use model:NAME or model:NAME@VERSION")
    name, at, version = node.value.partition("@")
    if not name or (at and not version):
        raise _field_error(
            node, f"{node.value!r} is not NAME or NAME@VERSION (e.g. model:digits@1.0.0)"
        )
    running = _matches(DeviceRow.reported_model, name)
    if at:
        running = and_(running, _matches(DeviceRow.reported_version, version))
    return running if node.op == ":" else not_(running)


def _online_field(node: Comparison, now: datetime) -> ColumnElement[bool]:
    _require(node, (":",), "use online:true or online:false")
    wanted = _BOOLEANS.get(node.value.lower())
    if wanted is None:
        raise _field_error(node, f"online must be true or false, not {node.value!r}")
    online = _known(DeviceRow.offline_deadline, DeviceRow.offline_deadline > now)
    return online if wanted else not_(online)


def _attribute(node: Comparison, _now: datetime) -> ColumnElement[bool]:
    text = _AttributeText(node.field)
    if node.op in _EQUALITY:
        return _equality(node, text, node.value)
    try:
        number = float(node.value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise _field_error(
            node,
            f"{node.value!r} is not a number; only numbers (or the firmware and version "
            f"fields) can be ordered, so use {node.field}:{node.value} to match text",
        )
    # CASE, unlike AND, fixes the evaluation order: PostgreSQL must never CAST text
    # such as "low" to a number, which would fail the whole query.
    comparison = _ordered(cast(text, Float), node.op, number)
    return case((text.regexp_match(_DECIMAL), comparison), else_=false())


_FIELDS: Final[dict[str, Callable[[Comparison, datetime], ColumnElement[bool]]]] = {
    **dict.fromkeys(_TEXT_COLUMNS, _text_field),
    **dict.fromkeys(_VERSION_COLUMNS, _version_field),
    "model": _model_field,
    "online": _online_field,
}


def _equality(node: Comparison, column: Any, value: str) -> ColumnElement[bool]:
    matches = _matches(column, value)
    return matches if node.op == ":" else not_(matches)


def _matches(column: Any, value: str) -> ColumnElement[bool]:
    """``column`` equals ``value`` (``*`` matching any run of characters); FALSE on NULL."""
    if "*" not in value:
        return _known(column, column == value)
    return _known(column, _Wildcard(column, _like_pattern(value), _glob_pattern(value)))


def _known(column: Any, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition``, but FALSE rather than NULL when ``column`` is NULL."""
    return and_(column.is_not(None), condition)


def _ordered(column: ColumnElement[Any], op: str, value: object) -> ColumnElement[bool]:
    if op == ">":
        return column > value
    if op == ">=":
        return column >= value
    if op == "<":
        return column < value
    return column <= value


def _require(node: Comparison, allowed: tuple[str, ...], advice: str) -> None:
    if node.op not in allowed:
        raise _field_error(node, f"the field {node.field!r} does not support {node.op!r}: {advice}")


def _field_error(node: Comparison, problem: str) -> QueryFieldError:
    return QueryFieldError(
        f"query error at position {node.position}: {problem}",
        details={"position": node.position, "field": node.field, "op": node.op},
    )


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _glob_pattern(value: str) -> str:
    # In a GLOB, "[x]" is the literal x; "*" stays the wildcard.
    return "".join(f"[{char}]" if char in "?[" else char for char in value)


class _Wildcard(FunctionElement[bool]):
    """``column`` matches a ``*`` pattern, case-sensitively on every backend.

    PostgreSQL's LIKE is case-sensitive; SQLite's is not (for ASCII), so SQLite gets
    GLOB, which is. Both patterns are bound parameters, so statement caching is safe.
    """

    type = Boolean()
    name = "edgefleet_wildcard"
    inherit_cache = True

    def __init__(self, column: Any, like: str, glob: str) -> None:
        super().__init__(column, literal(like, String()), literal(glob, String()))


@compiles(_Wildcard)
def _wildcard_like(element: _Wildcard, compiler: SQLCompiler, **kw: Any) -> str:
    column, like, _ = element.clauses
    return f"{compiler.process(column, **kw)} LIKE {compiler.process(like, **kw)} ESCAPE '\\'"


@compiles(_Wildcard, "sqlite")
def _wildcard_glob(element: _Wildcard, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, glob = element.clauses
    return f"{compiler.process(column, **kw)} GLOB {compiler.process(glob, **kw)}"


class _AttributeText(FunctionElement[str]):
    """A device attribute as text, alike on every backend (NULL when it is missing).

    Attributes may be JSON booleans: PostgreSQL's ``->>`` gives "true", SQLite's
    json_extract gives 1, so SQLite is told to say "true" and "false" too.
    """

    type = String()
    name = "edgefleet_attribute_text"
    inherit_cache = True

    def __init__(self, field: str) -> None:
        super().__init__(
            DeviceRow.attributes[field].as_string(),
            func.json_type(DeviceRow.attributes, literal(f'$."{field}"', String())),
        )


@compiles(_AttributeText)
def _attribute_text(element: _AttributeText, compiler: SQLCompiler, **kw: Any) -> str:
    text, _ = element.clauses
    return compiler.process(text, **kw)


@compiles(_AttributeText, "sqlite")
def _attribute_text_sqlite(element: _AttributeText, compiler: SQLCompiler, **kw: Any) -> str:
    text, json_type = element.clauses
    kind = compiler.process(json_type, **kw)
    return (
        f"CASE {kind} WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE {compiler.process(text, **kw)} END"
    )


class _Bytewise(FunctionElement[str]):
    """A version key compared byte by byte.

    Keys sort correctly only in byte order ("~" after "0"); PostgreSQL would otherwise
    use the database's collation, where en_US-like collations ignore punctuation.
    """

    type = String()
    name = "edgefleet_bytewise"
    inherit_cache = True


def _bytewise(column: Any) -> _Bytewise:
    return _Bytewise(column)


@compiles(_Bytewise)
def _bytewise_default(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite compares text with BINARY unless told otherwise.
    (column,) = element.clauses
    return compiler.process(column, **kw)


@compiles(_Bytewise, "postgresql")
def _bytewise_postgresql(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses
    return f'{compiler.process(column, **kw)} COLLATE "C"'

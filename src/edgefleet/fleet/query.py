"""The targeting query language: which devices a rollout (or a listing) is aimed at.

A query is a boolean combination of comparisons between a device field and a value::

    query      := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | "(" or ")" | comparison
    comparison := FIELD OP VALUE          (no spaces inside a comparison)
    FIELD      := a letter, then letters, digits, "_", "-" or "."
    OP         := ":" | "!=" | ">" | ">=" | "<" | "<="
    VALUE      := a bare word (no spaces, parentheses or double quotes)
                | a double-quoted string with \\" and \\\\ escapes

``AND``, ``OR`` and ``NOT`` are case-insensitive; NOT binds tighter than AND, and AND
tighter than OR. There is no implicit AND: two comparisons side by side are an error.
``:`` means "equals" and ``!=`` "does not equal"; both allow ``*`` wildcards in the
value. What a field means, and which operators it supports, is decided where the query
is compiled (``edgefleet.store.targeting``); this module only parses, and does no I/O::

    >>> parse_query('region:eu-west AND NOT site:"plant 7*"')
    And(left=Comparison(field='region', op=':', value='eu-west', position=0),
        right=Not(operand=Comparison(field='site', op=':', value='plant 7*', position=23)))

A run of one connective (``id:a OR id:b OR id:c ...``) becomes a balanced tree: AND and
OR are associative, and a list of a few hundred devices then nests only a few levels
deep, which keeps recursion over the tree (equality, hashing, compiling) safe.

Malformed input raises ``QuerySyntaxError`` whose ``details`` say where (``position``,
0-based) and what would have been valid there (``expected``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, TypeAlias

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from edgefleet.fleet.errors import QuerySyntaxError

MAX_QUERY_LENGTH: Final = 4096
# Consumers (dataclass equality, the SQL compiler) recurse over the tree; a bound on its
# depth keeps them clear of Python's recursion limit.
MAX_DEPTH: Final = 100
OPERATORS: Final = (":", "!=", ">", ">=", "<", "<=")


@dataclass(frozen=True, slots=True)
class Comparison:
    """``field op value``; ``position`` is the 0-based offset of ``field`` in the query."""

    field: str
    op: str
    value: str
    position: int


@dataclass(frozen=True, slots=True)
class And:
    """Both sides hold."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Or:
    """At least one side holds."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Not:
    """The operand does not hold."""

    operand: Node


Node: TypeAlias = Comparison | And | Or | Not

_FIELD = r"[A-Za-z][A-Za-z0-9_.\-]*"
_OP = r"!=|>=|<=|[:<>]"
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"'
_BARE = r'[^\s()"\x00-\x1f\x7f]+'
_FIELD_RE = re.compile(_FIELD)
_OP_RE = re.compile(_OP)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_COMPARISON = re.compile(f"(?P<field>{_FIELD})(?P<op>{_OP})(?P<value>{_QUOTED}|{_BARE})")
# A keyword is a whole word: "notes:x" is a comparison, not NOT followed by "es:x".
_KEYWORD_END = r"(?![^\s()])"

_GRAMMAR = rf"""
    ?start: or_expr
    ?or_expr: and_expr (_OR and_expr)* -> either
    ?and_expr: not_expr (_AND not_expr)* -> both
    ?not_expr: atom | _NOT not_expr -> negation
    ?atom: comparison | _LPAR or_expr _RPAR
    comparison: COMPARISON

    COMPARISON: /{_COMPARISON.pattern}/
    _OR.2: /or{_KEYWORD_END}/i
    _AND.2: /and{_KEYWORD_END}/i
    _NOT.2: /not{_KEYWORD_END}/i
    _LPAR: "("
    _RPAR: ")"

    %ignore /\s+/
"""


class _Build(Transformer[Token, Node]):
    """Builds the AST while the LALR parser reduces, so no parse tree is kept."""

    def comparison(self, children: list[Token]) -> Comparison:
        (token,) = children
        match = _COMPARISON.fullmatch(str(token))
        assert match is not None, "the lexer only produces whole comparisons"
        value = match["value"]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        return Comparison(match["field"], match["op"], value, token.start_pos or 0)

    def either(self, children: list[Node]) -> Node:
        return _balanced(Or, children)

    def both(self, children: list[Node]) -> Node:
        return _balanced(And, children)

    def negation(self, children: list[Node]) -> Not:
        (operand,) = children
        return Not(operand)


def _balanced(join: type[And] | type[Or], operands: list[Node]) -> Node:
    """``a op b op c ...`` as a balanced tree; three operands give ``(a op b) op c``."""
    if len(operands) == 1:
        return operands[0]
    middle = (len(operands) + 1) // 2
    return join(_balanced(join, operands[:middle]), _balanced(join, operands[middle:]))


_PARSER: Final = Lark(_GRAMMAR, parser="lalr", lexer="contextual", transformer=_Build())


def parse_query(text: str) -> Node:
    """Parse a targeting query into its AST.

    Raises:
        QuerySyntaxError: the query is empty, too long, or malformed; ``details`` has the
            0-based ``position`` of the problem and what was ``expected`` there.
    """
    if len(text) > MAX_QUERY_LENGTH:
        raise _error(
            text,
            MAX_QUERY_LENGTH,
            f"the query is {len(text)} characters long; at most {MAX_QUERY_LENGTH} are allowed",
            ["end of query"],
        )
    if not text.strip():
        problem = "the query is empty: expected a condition such as region:eu-west"
        raise _error(text, 0, problem, list(_OPERAND_EXPECTED))
    try:
        node = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _explain(text, exc) from None
    assert isinstance(node, Comparison | And | Or | Not)
    _check_depth(text, node)
    return node


def fields(node: Node) -> set[str]:
    """The field names a query uses."""
    found: set[str] = set()
    pending: list[Node] = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, Comparison):
            found.add(current.field)
        elif isinstance(current, Not):
            pending.append(current.operand)
        else:
            pending.extend((current.left, current.right))
    return found


_OPERAND_STARTS: Final = frozenset({"COMPARISON", "_NOT", "_LPAR"})
_OPERAND: Final = "a condition (such as region:eu-west), NOT or '('"
_OPERAND_EXPECTED: Final = ("condition", "NOT", "'('")


def _explain(text: str, exc: UnexpectedInput) -> QuerySyntaxError:
    """Turn lark's error into one that says, in the query's own terms, what is wrong."""
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        at_end = token.type == "$END"
        position = len(text) if at_end else (token.start_pos or 0)
        found = "the end of the query" if at_end else repr(str(token))
        # LALR merges states, so lark's expected set can be loose; what is valid is
        # decided by whether an operand or a connective comes next, and open parentheses.
        opened = _unclosed(text[:position])
        if not exc.expected & _OPERAND_STARTS:
            expected = _connectives(text, position)
            if at_end and opened is not None:
                problem = f"missing ')' to close the '(' at position {opened}"
                return _error(text, position, problem, ["')'"])
            if token.type == "_RPAR" and opened is None:
                return _error(text, position, "unbalanced ')': no '(' is open here", expected)
            hint = " (join conditions with AND or OR)" if token.type in _OPERAND_STARTS else ""
            return _error(
                text, position, f"expected {_list(expected)}, found {found}{hint}", expected
            )
        before = text[:position].rstrip()
        previous = "(" if before.endswith("(") else before.split()[-1] if before else ""
        after = f" after {previous!r}" if previous else ""
        problem = f"expected {_OPERAND}{after}, found {found}"
        return _error(text, position, problem, list(_OPERAND_EXPECTED))
    if isinstance(exc, UnexpectedCharacters):
        return _explain_characters(text, exc.pos_in_stream or 0, exc.allowed)
    return _error(text, 0, f"malformed query: {exc}", [])


def _explain_characters(text: str, position: int, allowed: set[str]) -> QuerySyntaxError:
    """A character no token starts with: usually a comparison that misses a piece."""
    char = text[position]
    if "COMPARISON" not in allowed:
        expected = _connectives(text, position)
        hint = " (quote the whole value)" if char == '"' else ""
        problem = f"expected {_list(expected)}, found {char!r}{hint}"
        return _error(text, position, problem, expected)
    field = _FIELD_RE.match(text, position)
    if field is None:
        problem = f"expected {_OPERAND}, found {char!r} (field names start with a letter, A to Z)"
        return _error(text, position, problem, list(_OPERAND_EXPECTED))
    name, after = field.group(), field.end()
    op = _OP_RE.match(text, after)
    if op is None:
        problem = f"expected an operator ({' '.join(OPERATORS)}) after {name!r}"
        return _error(text, after, problem, ["operator"])
    start = op.end()
    if start >= len(text) or text[start].isspace() or text[start] in "()":
        problem = (
            f"expected a value after {name + op.group()!r} "
            "(quote values that contain spaces or parentheses)"
        )
        return _error(text, start, problem, ["value"])
    if text[start] == '"':
        return _explain_quoted(text, start)
    return _control_character(text, start)


def _explain_quoted(text: str, start: int) -> QuerySyntaxError:
    index = start + 1
    while index < len(text) and text[index] != '"':
        if text[index] == "\\":
            if text[index + 1 : index + 2] not in ('"', "\\"):
                problem = 'unknown escape in a quoted value: only \\" and \\\\ are allowed'
                return _error(text, index, problem, ['\\"', "\\\\"])
            index += 1
        elif _CONTROL_RE.match(text[index]):
            return _control_character(text, index)
        index += 1
    problem = f"the quoted value opened at position {start} is not closed"
    return _error(text, len(text), problem, ["'\"'"])


def _control_character(text: str, position: int) -> QuerySyntaxError:
    problem = f"control character U+{ord(text[position]):04X} is not allowed in a value"
    return _error(text, position, problem, ["value"])


def _connectives(text: str, position: int) -> list[str]:
    """What may follow a complete condition at ``position``."""
    return ["AND", "OR", "')'" if _unclosed(text[:position]) is not None else "end of query"]


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _unclosed(text: str) -> int | None:
    """The position of the innermost '(' left open (ignoring quoted values), if any."""
    opened: list[int] = []
    in_quotes = escaped = False
    for index, char in enumerate(text):
        if in_quotes:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "(":
            opened.append(index)
        elif char == ")" and opened:
            opened.pop()
    return opened[-1] if opened else None


def _check_depth(text: str, node: Node) -> None:
    """Refuse a tree deeper than ``MAX_DEPTH`` (NOTs and parentheses nest it)."""
    pending: list[tuple[Node, int]] = [(node, 1)]
    while pending:
        current, depth = pending.pop()
        if depth > MAX_DEPTH:
            problem = f"the query nests NOT, AND, OR and parentheses more than {MAX_DEPTH} deep"
            raise _error(text, _first_position(current), problem, [])
        if isinstance(current, Not):
            pending.append((current.operand, depth + 1))
        elif isinstance(current, And | Or):
            pending.extend(((current.left, depth + 1), (current.right, depth + 1)))


def _first_position(node: Node) -> int:
    while not isinstance(node, Comparison):
        node = node.operand if isinstance(node, Not) else node.left
    return node.position


def _error(text: str, position: int, problem: str, expected: list[str]) -> QuerySyntaxError:
    """An error whose message shows the query with a caret under ``position``."""
    line = text if len(text) <= 200 else text[max(0, position - 100) : position + 100]
    caret_at = position if len(text) <= 200 else position - max(0, position - 100)
    # One line of printable characters, so the caret stays under its character.
    shown = re.sub(r"[\s\x00-\x1f\x7f]", " ", line)
    indent = " " * _columns(shown[:caret_at])
    message = f"query syntax error at position {position}: {problem}\n  {shown}\n  {indent}^"
    return QuerySyntaxError(message, details={"position": position, "expected": expected})


def _columns(text: str) -> int:
    """How many terminal columns ``text`` takes: wide East Asian characters take two,
    combining marks none."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )

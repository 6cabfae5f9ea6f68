"""The targeting query parser: structure, values, positions, and errors that point."""

import dataclasses
import random

import pytest

from edgefleet.fleet.errors import QuerySyntaxError
from edgefleet.fleet.query import (
    MAX_DEPTH,
    MAX_QUERY_LENGTH,
    And,
    Comparison,
    Not,
    Or,
    fields,
    parse_query,
)


def c(field, value, position, op=":"):
    return Comparison(field, op, value, position)


def leaves(node):
    """The comparisons of a tree, left to right."""
    if isinstance(node, Comparison):
        return [node]
    if isinstance(node, Not):
        return leaves(node.operand)
    return leaves(node.left) + leaves(node.right)


def depth(node):
    if isinstance(node, Comparison):
        return 1
    if isinstance(node, Not):
        return 1 + depth(node.operand)
    return 1 + max(depth(node.left), depth(node.right))


def syntax_error(text):
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text)
    return info.value


def test_a_single_comparison_records_field_operator_value_and_position():
    assert parse_query("region:eu-west") == c("region", "eu-west", 0)
    assert parse_query("   hw:rev2  ") == c("hw", "rev2", 3)


@pytest.mark.parametrize("op", [":", "!=", ">", ">=", "<", "<="])
def test_every_operator_is_recognised(op):
    assert parse_query(f"firmware{op}1.8.0") == c("firmware", "1.8.0", 0, op=op)


def test_and_binds_tighter_than_or():
    assert parse_query("a:1 OR b:2 AND c:3") == Or(
        c("a", "1", 0), And(c("b", "2", 7), c("c", "3", 15))
    )
    assert parse_query("a:1 AND b:2 OR c:3") == Or(
        And(c("a", "1", 0), c("b", "2", 8)), c("c", "3", 15)
    )


def test_not_binds_tighter_than_and():
    assert parse_query("NOT a:1 AND b:2") == And(Not(c("a", "1", 4)), c("b", "2", 12))


def test_parentheses_override_precedence():
    assert parse_query("(a:1 OR b:2) AND c:3") == And(
        Or(c("a", "1", 1), c("b", "2", 8)), c("c", "3", 17)
    )
    assert parse_query("NOT (site:plant-* OR region:us-east)") == Not(
        Or(c("site", "plant-*", 5), c("region", "us-east", 21))
    )


def test_redundant_parentheses_leave_no_trace():
    assert parse_query("((a:1))") == c("a", "1", 2)


def test_not_can_be_repeated():
    assert parse_query("NOT NOT a:1") == Not(Not(c("a", "1", 8)))


def test_three_operands_of_one_connective_group_to_the_left():
    assert parse_query("a:1 AND b:2 AND c:3") == And(
        And(c("a", "1", 0), c("b", "2", 8)), c("c", "3", 16)
    )


def test_a_long_list_of_alternatives_keeps_its_order_and_stays_shallow():
    ids = [f"cam-{n:04d}" for n in range(250)]
    node = parse_query(" OR ".join(f"id:{i}" for i in ids))
    assert [leaf.value for leaf in leaves(node)] == ids
    assert depth(node) <= 10
    assert node == parse_query(
        " OR ".join(f"id:{i}" for i in ids)
    )  # equality does not recurse deep


@pytest.mark.parametrize(
    "text",
    ["a:1 and b:2", "a:1 And b:2", "a:1 aNd b:2", "a:1 AND b:2"],
)
def test_keywords_are_case_insensitive(text):
    assert parse_query(text) == And(c("a", "1", 0), c("b", "2", 8))


def test_lower_case_or_and_not_are_keywords_too():
    assert parse_query("not a:1 or b:2") == Or(Not(c("a", "1", 4)), c("b", "2", 11))


def test_names_that_begin_with_a_keyword_are_fields():
    assert parse_query("notes:x AND android:yes OR order:1") == Or(
        And(c("notes", "x", 0), c("android", "yes", 12)), c("order", "1", 27)
    )


def test_a_keyword_after_an_operator_is_a_value():
    assert parse_query("a:AND") == c("a", "AND", 0)


def test_keywords_may_touch_parentheses():
    assert parse_query("NOT(a:1)AND(b:2)") == And(Not(c("a", "1", 4)), c("b", "2", 12))


def test_any_whitespace_separates_terms():
    assert parse_query("a:1\tAND\n  b:2") == And(c("a", "1", 0), c("b", "2", 10))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("region:eu-west", "eu-west"),
        ("site:plant-*", "plant-*"),
        ("model:digits@1.0.0", "digits@1.0.0"),
        ("firmware:1.8.0", "1.8.0"),
        ("online:true", "true"),
        ("path:a:b/c", "a:b/c"),
        ("ratio:50%_off", "50%_off"),
        ("dir:C:\\x", "C:\\x"),
    ],
)
def test_bare_values_run_to_whitespace_or_a_parenthesis(text, value):
    assert parse_query(text).value == value


def test_a_bare_value_ends_at_a_closing_parenthesis():
    assert parse_query("(a:b)") == c("a", "b", 1)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('name:"camera 7"', "camera 7"),
        ('name:"(a) OR b"', "(a) OR b"),
        ('name:"say \\"hi\\""', 'say "hi"'),
        ('name:"back\\\\slash"', "back\\slash"),
        ('name:""', ""),
    ],
)
def test_quoted_values_may_hold_spaces_parentheses_and_escapes(text, value):
    assert parse_query(text) == c("name", value, 0)


def test_quoted_values_keep_wildcards_and_keywords_verbatim():
    assert parse_query('site:"plant *" AND x:"NOT"') == And(
        c("site", "plant *", 0), c("x", "NOT", 19)
    )


@pytest.mark.parametrize("field", ["a", "hw_rev", "x-y", "sensor.temp", "A1"])
def test_field_names_allow_letters_digits_underscores_dashes_and_dots(field):
    assert parse_query(f"{field}:1").field == field


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("region:", 7, "expected a value after 'region:'"),
        ("hw:rev2 AND region:", 19, "expected a value after 'region:'"),
        ("region: eu-west", 7, "expected a value after 'region:'"),
        ("region:(x)", 7, "expected a value after 'region:'"),
        ("region=eu-west", 6, "expected an operator"),
        ("region", 6, "expected an operator"),
        ("a:1 AND region", 14, "expected an operator"),
        ("region ~eu", 6, "expected an operator"),
        ("a:1 AND", 7, "after 'AND', found the end of the query"),
        ("a:1 OR", 6, "after 'OR', found the end of the query"),
        ("NOT", 3, "after 'NOT', found the end of the query"),
        ("AND a:1", 0, "found 'AND'"),
        ("a:1 OR OR b:2", 7, "after 'OR', found 'OR'"),
        ("a:1 AND AND b:2", 8, "found 'AND'"),
        ("()", 1, "after '(', found ')'"),
        ("(a:1", 4, "missing ')' to close the '(' at position 0"),
        ("a:1 AND (b:2 OR (c:3)", 21, "missing ')' to close the '(' at position 8"),
        ("a:1)", 3, "unbalanced ')'"),
        ("(a:1))", 5, "unbalanced ')'"),
        ("a:1 b:2", 4, "join conditions with AND or OR"),
        ("a:1 (b:2)", 4, "join conditions with AND or OR"),
        ("1a:b", 0, "field names start with a letter"),
        ("-a:b", 0, "field names start with a letter"),
        ('a:b"c"', 3, "quote the whole value"),
        ('name:"camera 7', 14, "the quoted value opened at position 5 is not closed"),
        ('name:"a\\nb"', 7, "unknown escape"),
        ("a:\x00", 2, "control character U+0000"),
        ('a:"x\x07"', 4, "control character U+0007"),
        ("a:1 AND b:\x1b", 10, "control character U+001B"),
    ],
)
def test_malformed_queries_report_where_and_what(text, position, fragment):
    error = syntax_error(text)
    assert error.details["position"] == position
    assert error.message.startswith(f"query syntax error at position {position}: ")
    assert fragment in error.message


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_query_is_a_syntax_error_at_position_zero(text):
    error = syntax_error(text)
    assert error.details == {"position": 0, "expected": ["condition", "NOT", "'('"]}
    assert "the query is empty" in error.message


def test_the_error_lists_what_would_have_been_valid():
    assert syntax_error("a:1 AND").details["expected"] == ["condition", "NOT", "'('"]
    assert syntax_error("a:1 b:2").details["expected"] == ["AND", "OR", "end of query"]
    assert syntax_error("(a:1 b:2)").details["expected"] == ["AND", "OR", "')'"]
    assert syntax_error("region:").details["expected"] == ["value"]
    assert syntax_error("region").details["expected"] == ["operator"]


def test_the_message_points_a_caret_at_the_position():
    lines = syntax_error("region:eu-west AND\thw:").message.splitlines()
    assert lines[1:] == ["  region:eu-west AND hw:", "  " + " " * 22 + "^"]


def test_the_caret_counts_terminal_columns_not_characters():
    # Each of カメラ takes two columns, and the é written as e + combining accent one.
    text = 'site:"カメラ" AND name:"cafe\u0301" AND AND b:1'
    error = syntax_error(text)
    assert error.details["position"] == text.index("AND AND") + 4 == 32  # characters
    assert error.message.splitlines()[1:] == ["  " + text, "  " + " " * 34 + "^"]


def test_the_error_has_the_query_syntax_code():
    assert syntax_error("a:").to_dict()["code"] == "query_syntax"


def test_a_query_of_the_maximum_length_parses_and_one_longer_does_not():
    longest = "a:" + "x" * (MAX_QUERY_LENGTH - 2)
    assert parse_query(longest).value == "x" * (MAX_QUERY_LENGTH - 2)
    error = syntax_error(longest + "x")
    assert error.details["position"] == MAX_QUERY_LENGTH
    assert f"at most {MAX_QUERY_LENGTH}" in error.message


def test_nesting_deeper_than_the_limit_is_refused():
    assert depth(parse_query("NOT " * (MAX_DEPTH - 1) + "a:1")) == MAX_DEPTH
    text = "NOT " * MAX_DEPTH + "a:1"
    error = syntax_error(text)
    assert error.details["position"] == text.index("a:1")
    assert "more than" in error.message


def test_arbitrary_input_parses_or_raises_only_query_syntax_errors():
    alphabet = [
        "a",
        "b",
        ":",
        "!",
        "=",
        "<",
        ">",
        "(",
        ")",
        '"',
        "\\",
        " ",
        "*",
        "1",
        ".",
        "AND ",
        "OR ",
        "NOT ",
        "\x00",
        "é",
    ]
    generator = random.Random(20261122)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 14)))
        try:
            parse_query(text)
        except QuerySyntaxError as error:
            position = error.details["position"]
            assert 0 <= position <= len(text), (text, position)
            outcomes["refused"] += 1
        else:
            outcomes["parsed"] += 1
    assert outcomes["parsed"] > 0
    assert outcomes["refused"] > 0


def test_nodes_are_immutable():
    node = parse_query("a:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.value = "2"


def test_fields_lists_every_field_name_once():
    node = parse_query("region:eu AND NOT (hw:rev2 OR region:us) OR firmware>=1.0.0")
    assert fields(node) == {"region", "hw", "firmware"}


def test_fields_of_a_single_comparison():
    assert fields(parse_query("online:true")) == {"online"}

"""edgefleet.stdjson: what standard JSON may not hold, found with its path."""

import math

import pytest
from pydantic import Field, ValidationError

from edgefleet.stdjson import FINITE, UNICODE, Body, JsonObject, dumps, nonstandard


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"a": [1, 2.5, "x", None, True, {"b": {}}]}, None),
        ({"a": {"b": [0.0, math.nan]}}, (("a", "b", 1), FINITE)),
        ([math.inf], ((0,), FINITE)),
        ({"a": -math.inf}, (("a",), FINITE)),
        ({"ok": "é✓😀", "bad": "x\ud800"}, (("bad",), UNICODE)),
        ({"k\udfff": 1}, (("k\\udfff",), UNICODE)),
        # The first in document order, depth first.
        ({"a": [1, {"b": math.nan}], "c": math.nan}, (("a", 1, "b"), FINITE)),
        (math.nan, ((), FINITE)),
    ],
)
def test_nonstandard_finds_the_first_value_json_cannot_carry(value, found):
    assert nonstandard(value) == found


def test_dumps_refuses_what_json_cannot_carry():
    assert dumps({"a": [1.5, "é"]}) == '{"a": [1.5, "é"]}'
    with pytest.raises(ValueError):
        dumps({"a": math.nan})
    with pytest.raises(UnicodeEncodeError):
        dumps({"a": "\ud800"})


class Doc(Body):
    x: float = 0.0
    free: JsonObject = Field(default_factory=dict)


@pytest.mark.parametrize("bad", [{"x": math.inf}, {"free": {"a": [math.nan]}}, {"y": 1}])
def test_a_body_refuses_non_finite_numbers_and_unknown_fields(bad):
    with pytest.raises(ValidationError):
        Doc.model_validate(bad)

import pytest

from edgefleet.registry.domain import Stage
from edgefleet.registry.errors import InvalidStageError
from edgefleet.registry.stages import check_transition, parse_stage


def test_parse_known_stages_case_insensitively():
    assert parse_stage("Production") is Stage.PRODUCTION
    assert parse_stage(" candidate ") is Stage.CANDIDATE


def test_unknown_stage_lists_the_known_ones():
    with pytest.raises(
        InvalidStageError, match=r"unknown stage 'staging'.*candidate, production, archived"
    ):
        parse_stage("staging")


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Stage.CANDIDATE, Stage.PRODUCTION),
        (Stage.CANDIDATE, Stage.ARCHIVED),
        (Stage.PRODUCTION, Stage.ARCHIVED),
        (Stage.ARCHIVED, Stage.PRODUCTION),
        (Stage.ARCHIVED, Stage.CANDIDATE),
    ],
)
def test_allowed_moves(current, target):
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Stage.PRODUCTION, Stage.CANDIDATE),
        (Stage.PRODUCTION, Stage.PRODUCTION),
        (Stage.CANDIDATE, Stage.CANDIDATE),
        (Stage.ARCHIVED, Stage.ARCHIVED),
    ],
)
def test_refused_moves_say_what_is_allowed(current, target):
    with pytest.raises(InvalidStageError, match=f"cannot move a {current.value} version"):
        check_transition(current, target)

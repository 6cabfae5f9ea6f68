"""Drift cohorts: the targeting language decided over a virtual device's attributes, with
the server's meanings (pure: no server)."""

from __future__ import annotations

import pytest

from edgefleet.sim.cohort import Cohort, CohortError

CAMERA = {
    "hw": "armv7l",
    "rev": "rpi3-r1.2",
    "kind": "camera",
    "region": "eu-west",
    "site": "eu-west-site-1",
    "firmware": "2.0.0",
    "simulated": True,
    "slot": "12",
}
GATEWAY = CAMERA | {
    "hw": "x86_64",
    "kind": "gateway",
    "site": "eu-west-site-2",
    "firmware": "1.9.3",
}


def matches(query: str, attributes=CAMERA, device_id: str = "sim-r1-00007") -> bool:
    return Cohort.parse(query).matches(attributes, device_id)


@pytest.mark.parametrize(
    ("query", "camera", "gateway"),
    [
        ("site:eu-west-site-1", True, False),
        ("site:eu-west-*", True, True),
        ("site:*-1", True, False),
        ("site!=eu-west-site-1", False, True),
        ("site:eu-west-site-1 AND kind:camera", True, False),
        ("site:eu-west-site-1 OR hardware:x86_64", True, True),
        ("NOT kind:camera", False, True),
        ("region:eu-west AND NOT (kind:camera OR site:nowhere)", False, True),
        ("firmware>=2.0.0", True, False),
        ("firmware<1.10.0", False, True),  # 1.9.3 < 1.10.0 as versions, not as text
        ("firmware<2.0.0", False, True),
        ("slot>10", True, True),
        ("slot<=11.5", False, False),
        ("simulated:true", True, True),
        ("Site:eu-west-site-1", False, False),  # field names are case-sensitive
        ("site:EU-WEST-SITE-1", False, False),  # and so are values
    ],
)
def test_a_query_selects_as_the_server_would(query, camera, gateway):
    assert matches(query, CAMERA) is camera
    assert matches(query, GATEWAY) is gateway


def test_a_device_without_the_field_matches_its_negation_only():
    assert not matches("colour:red")
    assert matches("colour!=red")
    assert matches("NOT colour:red")
    assert not matches("colour>1")


def test_text_that_is_not_a_plain_number_takes_no_part_in_an_ordering():
    assert not matches("slot>1", CAMERA | {"slot": "1e5"})
    assert not matches("slot>1", CAMERA | {"slot": "lots"})


def test_the_device_id_is_the_id_field():
    assert matches("id:sim-r1-00007") and matches("device:sim-r1-*")
    assert not matches("id:sim-r1-00008")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("online:true", "cannot use online"),
        ("site:x AND version:1.1.0", "cannot use version"),
        ("group:canaries", "cannot use group"),
        ("firmware>=banana", "'banana' is not a version"),
        ("site>north", "'north' is not a number"),
        ("site:x site:y", "position"),
        ("", "empty"),
    ],
)
def test_what_the_simulator_cannot_decide_is_refused_saying_why(query, message):
    with pytest.raises(CohortError) as caught:
        Cohort.parse(query)
    assert message in caught.value.message

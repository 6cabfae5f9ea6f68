"""Who may set which device attribute (edgefleet.fleet.attributes)."""

import pytest

from edgefleet.fleet.attributes import check_device_attributes
from edgefleet.fleet.errors import AttributeNotAllowedError


@pytest.mark.parametrize(
    ("attributes", "current", "refused"),
    [
        ({"hw": "rev2", "region": "eu", "firmware": "1.2.0"}, None, None),
        ({"group": "production"}, None, ["group"]),
        ({"cohort": "canary", "group": "x", "region": "eu"}, None, ["cohort", "group"]),
        # After enrollment: identity may be repeated, not changed; facts may change.
        ({"hw": "rev1", "region": "us"}, {"hw": "rev1", "region": "eu"}, None),
        ({"hw": "rev2"}, {"hw": "rev1"}, ["hw"]),
        ({"hardware": "rev2"}, {"hw": "rev1"}, ["hardware"]),
        ({"hw": "rev2"}, {}, ["hw"]),
        ({"group": "lab", "hw": "rev2"}, {"hw": "rev1"}, ["group", "hw"]),
    ],
)
def test_what_a_device_may_set(attributes, current, refused):
    if refused is None:
        check_device_attributes(attributes, current=current)
        return
    with pytest.raises(AttributeNotAllowedError) as caught:
        check_device_attributes(attributes, current=current)
    assert caught.value.details == {"attributes": refused}
    for name in refused:
        assert name in caught.value.message

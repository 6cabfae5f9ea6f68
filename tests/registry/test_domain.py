import pytest
from pydantic import ValidationError

from edgefleet.registry.domain import Compatibility, TensorSpec


def test_dynamic_dimensions_are_normalised():
    assert TensorSpec(name="x", dtype="uint8", shape=[-1, "height", None, 3]).shape == (
        None,
        None,
        None,
        3,
    )


def test_firmware_range():
    compat = Compatibility(firmware=">=2.1,<4")
    assert compat.allows_firmware("2.1.0")
    assert compat.allows_firmware("3.9.9")
    assert not compat.allows_firmware("4.0")
    assert not compat.allows_firmware("1.9")
    assert Compatibility().allows_firmware("0.0.1")  # no range: any firmware


def test_invalid_firmware_range():
    with pytest.raises(ValidationError, match="is not a version range"):
        Compatibility(firmware="2.x")

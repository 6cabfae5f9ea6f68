"""Pure checks of signed custom fields (no I/O)."""

import pytest

from edgefleet.signing.errors import (
    BelowFloorError,
    IncompatibleFirmwareError,
    IncompatibleHardwareError,
    InvalidMetadataError,
    RevokedError,
)
from edgefleet.signing.layout import (
    ArtifactInfo,
    ModelPolicy,
    SupportingInfo,
    custom_fields,
    parse_custom,
)
from edgefleet.signing.policy import DeviceFacts, check_installable


def info(**changes) -> ArtifactInfo:
    base = {
        "model": "m",
        "version": "1.2.0",
        "variant": "onnx-fp32",
        "runtime": "onnxruntime",
        "precision": "fp32",
        "hardware": ("x86_64",),
        "firmware": ">=2.0,<3",
        "release": 3,
        "golden": "models/m/1.2.0/onnx-fp32/golden.npz",
        "atol": 1e-4,
        "rtol": 1e-3,
    }
    return ArtifactInfo(**(base | changes))


DEVICE = DeviceFacts(hardware="x86_64", firmware="2.5.1")


def test_installable_when_everything_matches():
    check_installable(info(), ModelPolicy(model="m", revoked=("1.0.0",), min_release=3), DEVICE)
    check_installable(info(hardware=("any",), firmware=""), None, DeviceFacts("riscv64", "0"))


@pytest.mark.parametrize(
    ("artifact", "policy", "device", "error"),
    [
        (info(hardware=("aarch64",)), None, DEVICE, IncompatibleHardwareError),
        (info(), None, DeviceFacts("x86_64", "3.0"), IncompatibleFirmwareError),
        (info(), None, DeviceFacts("x86_64", "1.9.9"), IncompatibleFirmwareError),
        (info(), None, DeviceFacts("x86_64", "v-two"), IncompatibleFirmwareError),
        (info(), ModelPolicy(model="m", revoked=("1.2.0",)), DEVICE, RevokedError),
        (info(), ModelPolicy(model="m", min_release=4), DEVICE, BelowFloorError),
        (info(firmware="newer please"), None, DEVICE, InvalidMetadataError),
    ],
)
def test_refusals(artifact, policy, device, error):
    with pytest.raises(error):
        check_installable(artifact, policy, device)
    assert error.reason != "delivery_error"


def test_custom_fields_round_trip_without_floats():
    fields = custom_fields(info())
    assert fields["edgefleet"]["atol"] == "0.0001"  # canonical JSON has no floats
    assert parse_custom("p", fields) == info()
    policy = ModelPolicy(model="m", revoked=("1.0.0",), min_release=2)
    assert parse_custom("p", custom_fields(policy)) == policy
    golden = SupportingInfo(kind="golden", model="m", version="1.0.0", variant="v")
    assert parse_custom("p", custom_fields(golden)) == golden


@pytest.mark.parametrize(
    "custom",
    [
        None,
        {},
        {"edgefleet": "x"},
        {"edgefleet": {"kind": "virus"}},
        {"edgefleet": {"kind": "artifact"}},
    ],
)
def test_malformed_custom_fields(custom):
    with pytest.raises(InvalidMetadataError):
        parse_custom("models/m/x", custom)

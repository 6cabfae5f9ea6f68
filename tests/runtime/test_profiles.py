"""Device profiles: detection from facts, provider filtering and variant choice."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import pytest

from edgefleet.registry.domain import Variant
from edgefleet.runtime import profiles
from edgefleet.runtime.profiles import (
    CPU_PROVIDER,
    PROFILES,
    DeviceProfile,
    NoCompatibleVariantError,
    UnknownProfileError,
    choose_variant,
    detect,
    profile,
    providers_for,
)


@dataclass(frozen=True)
class V:
    name: str
    runtime: str
    precision: str
    hardware: tuple[str, ...]


# The digits example bundles' variants.
ONNX_FP32 = V("onnx-fp32", "onnxruntime", "fp32", ("x86_64", "aarch64"))
ONNX_INT8 = V("onnx-int8", "onnxruntime", "int8", ("aarch64", "armv7l"))
DIGITS = [ONNX_FP32, ONNX_INT8]

ALL_FACTS_EMPTY = {"device_tree_model": "", "available_providers": (), "has_edgetpu": False}


@pytest.fixture
def no_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that makes ``detect`` look at the real machine."""

    def probe() -> None:
        raise AssertionError("detect probed the machine although every fact was given")

    for name in ("_probe_device_tree_model", "_probe_providers", "_probe_edgetpu"):
        monkeypatch.setattr(profiles, name, probe)
    monkeypatch.setattr(platform, "machine", probe)


@pytest.mark.usefixtures("no_probing")
@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"machine": "aarch64", "has_edgetpu": True}, "coral"),
        ({"machine": "x86_64", "has_edgetpu": True}, "coral"),
        (
            {"machine": "aarch64", "device_tree_model": "NVIDIA Jetson Xavier NX Developer Kit"},
            "jetson",
        ),
        (
            {"machine": "aarch64", "available_providers": ("CUDAExecutionProvider", CPU_PROVIDER)},
            "jetson",
        ),
        (
            {"machine": "aarch64", "device_tree_model": "Raspberry Pi 4 Model B Rev 1.4"},
            "raspberry-pi",
        ),
        (
            {"machine": "armv7l", "device_tree_model": "Raspberry Pi 3 Model B Plus Rev 1.3"},
            "raspberry-pi",
        ),
        ({"machine": "aarch64", "device_tree_model": "Radxa ROCK 5B"}, "arm-cpu"),
        ({"machine": "armv7l"}, "arm-cpu"),
        ({"machine": "arm64"}, "arm-cpu"),
        ({"machine": "x86_64"}, "x86-cpu"),
        ({"machine": "AMD64"}, "x86-cpu"),
        # CUDA on a PC is a discrete GPU, not a Jetson
        ({"machine": "x86_64", "available_providers": ("CUDAExecutionProvider",)}, "x86-cpu"),
        # CUDA is a Jetson hint only on 64-bit ARM
        ({"machine": "armv7l", "available_providers": ("CUDAExecutionProvider",)}, "arm-cpu"),
    ],
)
def test_detect_from_facts(facts: dict[str, object], expected: str) -> None:
    assert detect(**{**ALL_FACTS_EMPTY, **facts}).name == expected  # type: ignore[arg-type]


def test_detect_on_this_machine_returns_a_known_profile() -> None:
    assert detect() in PROFILES.values()


def test_detect_only_imports_onnxruntime_when_it_can_decide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def probe() -> list[str]:
        raise AssertionError("onnxruntime probed on x86")

    monkeypatch.setattr(profiles, "_probe_providers", probe)
    assert detect(machine="x86_64", device_tree_model="", has_edgetpu=False).name == "x86-cpu"


def test_profile_by_name() -> None:
    assert profile("jetson") is PROFILES["jetson"]


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(UnknownProfileError) as caught:
        profile("tpu")

    assert isinstance(caught.value, KeyError)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert message.startswith("unknown device profile 'tpu'")
    for name in ("x86-cpu", "arm-cpu", "jetson", "raspberry-pi", "coral"):
        assert name in message


def test_every_profile_ends_with_the_cpu_provider() -> None:
    assert {"x86-cpu", "arm-cpu", "jetson", "raspberry-pi", "coral"} <= set(PROFILES)
    for known in PROFILES.values():
        assert known.providers[-1] == CPU_PROVIDER
    with pytest.raises(ValueError, match="must end with CPUExecutionProvider"):
        DeviceProfile(
            "gpu-only", "", ("x86_64",), "onnxruntime", "fp32", ("CUDAExecutionProvider",), 1, 1
        )


def test_profiles_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        PROFILES["mine"] = PROFILES["x86-cpu"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "available", "expected"),
    [
        (
            "jetson",
            [
                "AzureExecutionProvider",
                CPU_PROVIDER,
                "CUDAExecutionProvider",
                "TensorrtExecutionProvider",
            ],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU_PROVIDER],
        ),
        (
            "jetson",
            [CPU_PROVIDER, "CUDAExecutionProvider"],
            ["CUDAExecutionProvider", CPU_PROVIDER],
        ),
        ("jetson", [], [CPU_PROVIDER]),
        ("x86-cpu", ["CUDAExecutionProvider", CPU_PROVIDER], [CPU_PROVIDER]),
        ("raspberry-pi", [CPU_PROVIDER], [CPU_PROVIDER]),
    ],
)
def test_providers_for(name: str, available: list[str], expected: list[str]) -> None:
    assert providers_for(PROFILES[name], available) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x86-cpu", ONNX_FP32),
        ("raspberry-pi", ONNX_INT8),
        ("arm-cpu", ONNX_INT8),
        ("jetson", ONNX_FP32),  # no fp16 variant: fp32 beats int8
        ("coral", ONNX_INT8),  # no litert variant: an onnxruntime one on the CPU
    ],
)
def test_choose_variant_for_the_digits_example(name: str, expected: V) -> None:
    assert choose_variant(PROFILES[name], DIGITS) is expected


def test_choose_variant_uses_this_machine_when_given() -> None:
    assert choose_variant(PROFILES["coral"], DIGITS, machine="x86_64") is ONNX_FP32
    with pytest.raises(NoCompatibleVariantError):
        choose_variant(PROFILES["raspberry-pi"], [ONNX_FP32], machine="armv7l")


def test_choose_variant_prefers_the_profiles_runtime_then_precision() -> None:
    tflite = V("tflite-edgetpu", "litert", "int8", ("coral",))
    fp16 = V("onnx-fp16", "onnxruntime", "fp16", ("jetson",))

    assert choose_variant(PROFILES["coral"], [*DIGITS, tflite]) is tflite
    assert choose_variant(PROFILES["jetson"], [*DIGITS, fp16]) is fp16
    assert choose_variant(PROFILES["x86-cpu"], [tflite, fp16, *DIGITS]) is ONNX_FP32


def test_choose_variant_ties_keep_the_given_order() -> None:
    first = V("onnx-fp32-a", "onnxruntime", "fp32", ("any",))
    second = V("onnx-fp32-b", "onnxruntime", "fp32", ("x86_64",))

    assert choose_variant(PROFILES["x86-cpu"], [first, second]) is first
    assert choose_variant(PROFILES["x86-cpu"], [second, first]) is second


def test_choose_variant_accepts_registry_variants() -> None:
    def variant(name: str, precision: str, hardware: tuple[str, ...]) -> Variant:
        return Variant(
            name=name,
            runtime="onnxruntime",
            precision=precision,
            hardware=hardware,
            filename=f"{name}.onnx",
            sha256="0" * 64,
            size=1,
        )

    fp32 = variant("onnx-fp32", "fp32", ("x86_64", "aarch64"))
    int8 = variant("onnx-int8", "int8", ("aarch64", "armv7l"))

    assert choose_variant(PROFILES["raspberry-pi"], [fp32, int8]) is int8


def test_no_compatible_variant_names_the_profile_and_the_variants() -> None:
    tflite = V("tflite-edgetpu", "litert", "int8", ("coral",))

    with pytest.raises(NoCompatibleVariantError) as caught:
        choose_variant(PROFILES["x86-cpu"], [ONNX_INT8, tflite])

    message = str(caught.value)
    assert "'x86-cpu'" in message
    assert "onnx-int8 (onnxruntime, int8, hardware aarch64, armv7l)" in message
    assert "tflite-edgetpu (litert, int8, hardware coral)" in message
    assert caught.value.details["variants"][1] == {
        "name": "tflite-edgetpu",
        "runtime": "litert",
        "precision": "int8",
        "hardware": ["coral"],
    }
    assert isinstance(caught.value, ValueError)


def test_no_variants_at_all() -> None:
    with pytest.raises(NoCompatibleVariantError, match="variants offered: none"):
        choose_variant(PROFILES["jetson"], [])

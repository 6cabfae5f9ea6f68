"""The rollout's artifact cache: answers and permanent errors kept for a while, a busy
database never remembered."""

import pytest

from edgefleet.errors import EdgefleetError
from edgefleet.fleet.domain import DesiredModel
from edgefleet.rollout.resolver import CachedResolver

ARTIFACT = DesiredModel(
    name="digits",
    version="1.1.0",
    variant="fp32",
    target_path="digits/1.1.0/fp32.onnx",
    sha256="0" * 64,
    size=1,
    release=2,
)


class BusyError(EdgefleetError):
    transient = True


def test_answers_and_permanent_errors_are_kept_transient_ones_are_not():
    calls: list[tuple] = []
    answers: dict = {
        "rev2": ARTIFACT,
        "rev9": EdgefleetError("no variant for rev9"),
        "x": BusyError("locked"),
    }
    clock = [0.0]

    def resolve(model, version, hardware):
        calls.append(hardware)
        answer = answers[hardware]
        if isinstance(answer, Exception):
            raise answer
        return answer

    resolver = CachedResolver(resolve, ttl_s=10.0, clock=lambda: clock[0])
    assert resolver("digits", "1.1.0", "rev2") is ARTIFACT
    assert resolver("digits", "1.1.0", "rev2") is ARTIFACT
    for _ in range(2):
        with pytest.raises(EdgefleetError, match="no variant for rev9"):
            resolver("digits", "1.1.0", "rev9")
    for _ in range(2):
        with pytest.raises(BusyError):
            resolver("digits", "1.1.0", "x")
    assert calls == ["rev2", "rev9", "x", "x"]
    resolver.warm("digits", "1.1.0", "x")  # whatever the answer: no error
    clock[0] = 10.5  # expired: asked again
    assert resolver("digits", "1.1.0", "rev2") is ARTIFACT
    assert calls == ["rev2", "rev9", "x", "x", "x", "rev2"]

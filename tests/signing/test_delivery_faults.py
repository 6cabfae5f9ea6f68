"""Delivery when the server or the disk misbehaves: every failure is a typed
``DeliveryError``, a resume appends only the bytes that continue the partial file, and
a server that cannot resume costs one restart from byte 0, never more requests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater

from edgefleet.signing.client import DeliveryClient, VerifiedTarget, partial_path
from edgefleet.signing.errors import BadRangeError, MissingSha256Error, StorageError
from tests.signing import faults
from tests.signing.conftest import X86, SignedFleet, StaticServer, make_fleet

FP32 = "models/digits/1.1.0/onnx-fp32/model-fp32.onnx"
ARTIFACT = "/targets/models/digits/1.1.0/"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, example_bundles) -> Iterator[SignedFleet]:
    # Signed once for the module (the tests only read it), and served without sockets.
    yield from make_fleet(tmp_path_factory.mktemp("fleet"), example_bundles, StaticServer)


@pytest.fixture
def transport(fleet: SignedFleet) -> faults.FaultyTransport:
    return faults.FaultyTransport(faults.files(fleet.repository.root_dir))


@pytest.fixture
def client(fleet: SignedFleet, transport, tmp_path) -> Iterator[DeliveryClient]:
    http = httpx.Client(transport=transport)
    yield DeliveryClient(
        tmp_path / "tuf",
        "http://repository/metadata/",
        "http://repository/targets/",
        pinned_root=fleet.pinned_root,
        http=http,
    )
    http.close()


def genuine(fleet: SignedFleet, path: str) -> bytes:
    info = fleet.repository.all_targets()[path]
    directory, _, name = path.rpartition("/")
    blob = fleet.repository.targets_dir / directory / f"{info.hashes['sha256']}.{name}"
    return blob.read_bytes()


def artifact_requests(transport: faults.FaultyTransport) -> list[str | None]:
    """The Range header of each request for the artifact (None: the whole file)."""
    return [r for path, r in transport.requests if path.startswith(ARTIFACT)]


def partial_of(dest: Path, target: VerifiedTarget, data: bytes) -> Path:
    """A partial download holding ``data``, as an earlier cut would have left it."""
    part = partial_path(dest, target.sha256)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    return part


def test_a_target_signed_without_sha256_is_refused_typed(fleet, transport, client):
    signed = faults.without_sha256(fleet.repository, "models/digits/1.1.0/")
    for name, body in signed.items():
        transport.faults[f"/metadata/{name}"] = faults.serve(body)
    with pytest.raises(MissingSha256Error, match="signed with sha512 hashes but no sha256") as info:
        client.resolve(FP32, X86)
    assert info.value.reason == "missing_sha256"
    assert artifact_requests(transport) == []


def test_a_target_without_sha256_has_none_to_give():
    info = TargetFile(3, {"sha512": "ab" * 64}, "m.onnx")
    target = VerifiedTarget("m.onnx", info, "http://repository/targets/m.onnx", None, None)
    with pytest.raises(MissingSha256Error):
        _ = target.sha256


def test_a_full_disk_is_a_storage_error_and_gives_the_space_back(
    fleet, transport, client, tmp_path, monkeypatch
):
    target = client.resolve(FP32, X86)
    dest = tmp_path / "slot" / "model.onnx"
    monkeypatch.setattr(Path, "open", faults.no_space_for_partials(4096))
    with pytest.raises(StorageError, match="No space left on device") as info:
        client.download(target, dest)
    assert info.value.reason == "storage" and info.value.transient
    assert not dest.exists() and not partial_path(dest, target.sha256).exists()
    monkeypatch.undo()
    client.download(target, dest)  # room again: from byte 0
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == target.sha256
    assert artifact_requests(transport) == [None, None]


def test_a_full_disk_under_the_trusted_metadata_is_a_storage_error(client, monkeypatch):
    monkeypatch.setattr(Updater, "_persist_file", faults.enospc)
    with pytest.raises(StorageError, match="trusted metadata"):
        client.resolve(FP32, X86)


def test_a_416_on_a_resume_restarts_from_zero_once(fleet, transport, client, tmp_path):
    target = client.resolve(FP32, X86)
    dest = tmp_path / "slot" / "model.onnx"
    partial_of(dest, target, b"\0" * 5000)  # not what the server has
    transport.faults[ARTIFACT] = faults.refuse_ranges
    client.download(target, dest)
    assert dest.read_bytes() == genuine(fleet, FP32)
    assert artifact_requests(transport) == ["bytes=5000-", None]


@pytest.mark.parametrize("have", [0, 5000])
def test_a_server_that_always_answers_416_fails_typed_after_at_most_two_requests(
    fleet, transport, client, tmp_path, have
):
    target = client.resolve(FP32, X86)
    dest = tmp_path / "slot" / "model.onnx"
    part = partial_of(dest, target, genuine(fleet, FP32)[:have]) if have else None
    transport.faults[ARTIFACT] = faults.status(416)
    with pytest.raises(BadRangeError, match=r"HTTP 416") as info:
        client.download(target, dest)
    assert info.value.reason == "network" and info.value.transient
    assert artifact_requests(transport) == ([f"bytes={have}-"] if have else []) + [None]
    assert not dest.exists() and not (part and part.exists())


def test_a_206_from_another_byte_is_not_appended(fleet, transport, client, tmp_path):
    target = client.resolve(FP32, X86)
    dest = tmp_path / "slot" / "model.onnx"
    data = genuine(fleet, FP32)
    partial_of(dest, target, data[:5000])
    # The server sends the whole file as a 206 whatever range is asked for: appended
    # after the 5000 bytes it would be a file too long, found out only at the end.
    transport.faults[ARTIFACT] = faults.content_range(first=0)
    client.download(target, dest)
    assert dest.read_bytes() == data
    assert artifact_requests(transport) == ["bytes=5000-", None]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(faults.content_range(extra_total=1), id="other-length"),
        pytest.param(faults.content_range(first=100), id="other-start"),
        pytest.param(lambda request, forward: httpx.Response(206, content=b"x"), id="no-range"),
    ],
)
def test_a_206_that_does_not_continue_the_file_fails_typed(
    fleet, transport, client, tmp_path, fault
):
    target = client.resolve(FP32, X86)
    dest = tmp_path / "slot" / "model.onnx"
    part = partial_of(dest, target, genuine(fleet, FP32)[:5000])
    transport.faults[ARTIFACT] = fault
    with pytest.raises(BadRangeError, match="answered a 206 with") as info:
        client.download(target, dest)
    assert info.value.details["status"] == 206
    assert artifact_requests(transport) == ["bytes=5000-", None]
    assert not dest.exists() and not part.exists()

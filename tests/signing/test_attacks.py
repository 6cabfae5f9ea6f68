"""The attack suite: each attack must be refused with its typed error, and nothing may
appear at the download destination."""

from datetime import UTC, datetime, timedelta

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile
from tuf.api.serialization.json import JSONSerializer

from edgefleet.signing.client import partial_path
from edgefleet.signing.errors import (
    BelowFloorError,
    HashMismatchError,
    IncompatibleFirmwareError,
    IncompatibleHardwareError,
    InvalidMetadataError,
    MetadataExpiredError,
    MixAndMatchError,
    RevokedError,
    RollbackError,
    SignatureError,
    TooLargeError,
)
from edgefleet.signing.policy import DeviceFacts
from tests.signing.conftest import X86

FP32 = "models/digits/1.1.0/onnx-fp32/model-fp32.onnx"
OLD_FP32 = "models/digits/1.0.0/onnx-fp32/model-fp32.onnx"
INT8 = "models/digits/1.1.0/onnx-int8/model-int8.onnx"


def signed_by(fleet, role: str):
    keyring = fleet.repository.keyring
    return [keyring.signer(record) for record in keyring.records[role]]


def sign_and_serve(fleet, md, filename: str) -> None:
    md.signatures.clear()
    for signer in signed_by(fleet, md.signed.type):
        md.sign(signer, append=True)
    fleet.server.overrides[fleet.metadata_url_path(filename)] = md.to_bytes(JSONSerializer())


def assert_nothing_written(dest, sha256=None):
    assert not dest.exists()
    if sha256:
        assert not partial_path(dest, sha256).exists()


def test_tampered_artifact_bytes(fleet, tmp_path):
    client = fleet.client()
    target = client.resolve(FP32, X86)
    url = fleet.target_url_path(FP32)
    genuine = fleet.server.body(url)
    fleet.server.overrides[url] = bytes([genuine[0] ^ 0xFF]) + genuine[1:]
    dest = tmp_path / "slot" / "model.onnx"
    with pytest.raises(HashMismatchError, match="does not match its signed length and hashes"):
        client.download(target, dest)
    assert_nothing_written(dest, target.sha256)


def test_endless_data(fleet, tmp_path):
    client = fleet.client()
    target = client.resolve(FP32, X86)
    url = fleet.target_url_path(FP32)
    fleet.server.overrides[url] = fleet.server.body(url) + b"\0" * (4 << 20)
    dest = tmp_path / "slot" / "model.onnx"
    with pytest.raises(TooLargeError, match="more than the signed 21012 bytes"):
        client.download(target, dest)
    assert_nothing_written(dest, target.sha256)


def test_artifact_signed_by_a_key_not_in_root(fleet, tmp_path):
    snapshot = fleet.repository.snapshot()
    version = snapshot.signed.meta["targets.json"].version
    evil = fleet.repository.targets_role()
    payload = b"malicious model"
    evil.signed.targets[FP32] = TargetFile.from_data(FP32, payload)
    evil.signatures.clear()
    evil.sign(CryptoSigner.generate_ed25519())
    fleet.server.overrides[fleet.metadata_url_path(f"{version}.targets.json")] = evil.to_bytes()
    dest = tmp_path / "slot" / "model.onnx"
    with pytest.raises(SignatureError, match="signature"):
        fleet.client().download(fleet.client().resolve(FP32, X86), dest)
    assert_nothing_written(dest)


def test_targets_rollback(fleet, tmp_path):
    client = fleet.client()
    client.resolve(FP32, X86)  # the device has now seen the newest targets
    # An attacker holding the online keys signs a fresh snapshot and timestamp that
    # point at an older targets.json.
    snapshot = fleet.repository.snapshot()
    current = snapshot.signed.meta["targets.json"].version
    snapshot.signed.meta["targets.json"] = MetaFile(current - 1)
    snapshot.signed.version += 1
    sign_and_serve(fleet, snapshot, f"{snapshot.signed.version}.snapshot.json")
    timestamp = fleet.repository.timestamp()
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = MetaFile(snapshot.signed.version)
    sign_and_serve(fleet, timestamp, "timestamp.json")
    dest = tmp_path / "slot" / "model.onnx"
    with pytest.raises(RollbackError, match="older than what this device has seen") as info:
        client.resolve(OLD_FP32, X86)
    assert type(info.value) is RollbackError
    assert_nothing_written(dest)


def test_timestamp_rollback(fleet):
    client = fleet.client()
    old_timestamp = fleet.server.body("/metadata/timestamp.json")
    fleet.repository.refresh(force=True)
    client.resolve(FP32, X86)  # sees the newer timestamp
    fleet.server.overrides["/metadata/timestamp.json"] = old_timestamp
    with pytest.raises(RollbackError):
        client.resolve(FP32, X86)


def test_freeze_with_expired_timestamp(fleet, tmp_path):
    timestamp = fleet.repository.timestamp()
    timestamp.signed.version += 1
    timestamp.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    sign_and_serve(fleet, timestamp, "timestamp.json")
    dest = tmp_path / "slot" / "model.onnx"
    with pytest.raises(MetadataExpiredError, match=r"timestamp.json is expired"):
        fleet.client().resolve(FP32, X86)
    assert_nothing_written(dest)


def test_mix_and_match(fleet, tmp_path):
    # The snapshot names targets version N; the server answers N.targets.json with an
    # older (validly signed) targets file.
    snapshot = fleet.repository.snapshot()
    current = snapshot.signed.meta["targets.json"].version
    older = fleet.server.body(f"/metadata/{current - 1}.targets.json")
    fleet.server.overrides[f"/metadata/{current}.targets.json"] = older
    with pytest.raises(MixAndMatchError, match="do not match"):
        fleet.client().resolve(FP32, X86)
    assert_nothing_written(tmp_path / "slot" / "model.onnx")


def test_revoked_version(fleet, tmp_path):
    fleet.publisher.revoke("digits", "1.0.0")
    with pytest.raises(RevokedError, match=r"digits 1.0.0 .* is revoked"):
        fleet.client().resolve(OLD_FP32, X86)
    fleet.client("other").resolve(FP32, X86)  # the rest still installs
    assert_nothing_written(tmp_path / "slot" / "model.onnx")


def test_below_release_floor(fleet, tmp_path):
    fleet.publisher.set_floor("digits", 2)
    with pytest.raises(BelowFloorError, match="release 1, below the signed floor 2"):
        fleet.client().resolve(OLD_FP32, X86)
    assert fleet.client("other").resolve(FP32, X86).artifact.release == 2
    assert_nothing_written(tmp_path / "slot" / "model.onnx")


def test_artifact_for_other_hardware(fleet, tmp_path):
    with pytest.raises(
        IncompatibleHardwareError, match="signed for hardware aarch64, armv7l, not x86_64"
    ):
        fleet.client().resolve(INT8, X86)
    assert_nothing_written(tmp_path / "slot" / "model.onnx")


def test_firmware_outside_the_range(fleet, tmp_path):
    with pytest.raises(
        IncompatibleFirmwareError, match=r"needs firmware >=1.0; this device runs 0.9"
    ):
        fleet.client().resolve(FP32, DeviceFacts(hardware="x86_64", firmware="0.9"))
    with pytest.raises(IncompatibleFirmwareError, match="is not a version"):
        fleet.client("b").resolve(FP32, DeviceFacts(hardware="x86_64", firmware="banana"))
    assert_nothing_written(tmp_path / "slot" / "model.onnx")


def test_root_rotation_not_signed_by_the_old_threshold(fleet, tmp_path):
    # The attacker's root v2 trusts only the attacker's key, signed only by it.
    evil_signer = CryptoSigner.generate_ed25519()
    root = fleet.repository.root()
    for keyid in list(root.signed.roles["root"].keyids):
        root.signed.revoke_key(keyid, "root")
    root.signed.add_key(evil_signer.public_key, "root")
    root.signed.version = 2
    root.signatures.clear()
    root.sign(evil_signer)
    fleet.server.overrides["/metadata/2.root.json"] = root.to_bytes()
    with pytest.raises(SignatureError):
        fleet.client().resolve(FP32, X86)
    assert_nothing_written(tmp_path / "slot" / "model.onnx")


def test_oversized_metadata(fleet, tmp_path):
    fleet.server.overrides["/metadata/timestamp.json"] = b"{" + b" " * (64 * 1024) + b"}"
    with pytest.raises(TooLargeError, match="larger than allowed"):
        fleet.client().resolve(FP32, X86)
    assert_nothing_written(tmp_path / "slot" / "model.onnx")


def test_legitimate_root_rotation_is_followed(fleet, tmp_path):
    client = fleet.client()
    client.resolve(FP32, X86)
    old_keys = [r.keyid for r in fleet.repository.keyring.records["root"]]
    new_keys = fleet.repository.keyring.new_keys("root", 1)
    assert fleet.repository.rotate("root", new_keys, 1) == 2
    target = client.resolve(FP32, X86)
    client.download(target, tmp_path / "slot" / "model.onnx")
    trusted = Metadata[Root].from_bytes((client.metadata_dir / "root.json").read_bytes())
    assert trusted.signed.version == 2
    assert set(trusted.signed.roles["root"].keyids) == {new_keys[0].keyid}
    assert not set(old_keys) & set(trusted.signed.roles["root"].keyids)
    # The retired private key is moved away from the live keys.
    assert all(
        not (fleet.repository.keyring.keys_dir / f"root-{k[:12]}.pem").exists() for k in old_keys
    )


@pytest.mark.parametrize("loss", ["removed", "dangling link"])
def test_a_kill_while_ngclient_relinks_root_json_keeps_the_newest_trusted_root(
    fleet, tmp_path, loss
):
    """python-tuf 7 replaces the root.json link by removing it first; a device killed
    between the two keeps its trust: the newest root of its history, not the pinned
    one it enrolled with."""
    from edgefleet.signing.client import DeliveryClient

    client = fleet.client()
    client.resolve(FP32, X86)
    fleet.repository.rotate("root", fleet.repository.keyring.new_keys("root", 1), 1)
    client.resolve(FP32, X86)
    link = client.metadata_dir / "root.json"
    link.unlink()
    if loss == "dangling link":
        link.symlink_to("root_history/9.root.json")
    restarted = DeliveryClient(
        client.metadata_dir,
        client.metadata_url,
        client.targets_url,
        pinned_root=fleet.pinned_root,
    )
    trusted = Metadata[Root].from_bytes(link.read_bytes())
    assert trusted.signed.version == 2
    assert restarted.resolve(FP32, X86).artifact.release >= 1


def test_a_device_with_no_root_and_no_history_must_enroll(tmp_path):
    from edgefleet.signing.client import DeliveryClient

    with pytest.raises(InvalidMetadataError, match="must be enrolled first"):
        DeliveryClient(tmp_path / "tuf", "http://127.0.0.1:1/m/", "http://127.0.0.1:1/t/")


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp"])
def test_rotating_other_roles_keeps_devices_working(fleet, role):
    client = fleet.client()
    client.resolve(FP32, X86)
    new_keys = fleet.repository.keyring.new_keys(role, 2)
    fleet.repository.rotate(role, new_keys, 2)
    target = client.resolve(FP32, X86)
    assert target.artifact.release == 2
    trusted = Metadata[Root].from_bytes((client.metadata_dir / "root.json").read_bytes())
    assert set(trusted.signed.roles[role].keyids) == {r.keyid for r in new_keys}
    assert trusted.signed.roles[role].threshold == 2
    # The metadata the device now trusts for the role carries the new keys' signatures.
    name = "timestamp.json" if role == "timestamp" else None
    if name is None:
        snapshot = Metadata[Snapshot].from_bytes(
            (client.metadata_dir / "snapshot.json").read_bytes()
        )
        name = "snapshot.json" if role == "snapshot" else "targets.json"
        assert snapshot.signed.version >= 1
    signed = Metadata.from_bytes((client.metadata_dir / name).read_bytes())
    assert set(signed.signatures) == {r.keyid for r in new_keys}

"""Server-side repository behaviour: thresholds, offline keys, refresh, policy errors."""

import json
from datetime import timedelta

import pytest

from edgefleet.config import Settings
from edgefleet.signing.errors import (
    KeysExistError,
    KeysMissingError,
    RepositoryStateError,
    SignerUnavailableError,
)
from edgefleet.signing.keys import Keyring
from edgefleet.signing.publish import Publisher, open_repository, publish_if_possible
from edgefleet.signing.repository import RepositoryConfig, TufRepository
from edgefleet.store.bootstrap import open_registry


def test_keys_are_private_files_referenced_by_uri(tmp_path):
    keyring = Keyring.generate(tmp_path / "keys", {"root": 3, "targets": 2})
    assert [len(keyring.records[r]) for r in ("root", "targets", "snapshot", "timestamp")] == [
        3,
        2,
        1,
        1,
    ]
    for records in keyring.records.values():
        for record in records:
            assert record.uri.startswith("file2:")
            assert keyring.file_of(record).stat().st_mode & 0o777 == 0o600
    reloaded = Keyring.load(tmp_path / "keys")
    assert reloaded.records == keyring.records
    with pytest.raises(KeysExistError, match="refusing to overwrite keys"):
        Keyring.generate(tmp_path / "keys", {})
    with pytest.raises(KeysMissingError, match="run `edgefleet keys init`"):
        Keyring.load(tmp_path / "elsewhere")


def test_threshold_of_two_needs_two_signatures(tmp_path):
    keyring = Keyring.generate(tmp_path / "keys", {"root": 2, "targets": 2})
    repo = TufRepository(tmp_path / "tuf", keyring, RepositoryConfig())
    root = repo.initialise({"root": 2, "targets": 2})
    assert root.signed.roles["root"].threshold == 2
    assert len(root.signatures) == 2
    assert len(repo.targets_role().signatures) == 2
    with pytest.raises(RepositoryStateError, match="already exists"):
        repo.initialise({})
    bad = TufRepository(tmp_path / "tuf2", keyring, RepositoryConfig())
    with pytest.raises(RepositoryStateError, match="threshold 3 needs between 1 and 2 keys"):
        bad.initialise({"root": 3})


def test_offline_targets_key_defers_publishing(tmp_path, example_bundles):
    settings = Settings(home=tmp_path / "home", database_url_override=None)
    keyring = Keyring.generate(settings.home / "keys", {})
    open_repository(settings).initialise({})
    # The operator moves the targets key to offline storage.
    offline = tmp_path / "usb"
    offline.mkdir()
    (record,) = keyring.records["targets"]
    keyring.file_of(record).rename(offline / "targets.pem")
    with open_registry(settings) as registry:
        version = registry.register(example_bundles["1.0.0"])
        outcome = publish_if_possible(settings, registry.artifacts, version)
        assert outcome.publication is None
        assert "run `edgefleet repo publish` where the targets key is" in outcome.note
        repo = open_repository(settings)
        assert repo.all_targets() == {}
        with pytest.raises(SignerUnavailableError, match="targets metadata needs 1 signatures"):
            Publisher(repo, registry.artifacts).publish(version)
        # Mounted again (the URI points at the offline location), publishing works.
        data = json.loads(keyring.path.read_text())
        data["roles"]["targets"][0]["uri"] = f"file2:{offline / 'targets.pem'}"
        keyring.path.write_text(json.dumps(data))
        publication = Publisher(open_repository(settings), registry.artifacts).publish(version)
        assert publication.release == 1


def test_registration_without_keys_says_what_to_do(tmp_path, example_bundles):
    settings = Settings(home=tmp_path / "home", database_url_override=None)
    with open_registry(settings) as registry:
        version = registry.register(example_bundles["1.0.0"])
        outcome = publish_if_possible(settings, registry.artifacts, version)
    assert outcome.publication is None
    assert "run `edgefleet keys init`" in outcome.note


def test_refresh_resigns_only_what_is_close_to_expiry(tmp_path):
    keyring = Keyring.generate(tmp_path / "keys", {})
    config = RepositoryConfig(timestamp_expiry=timedelta(hours=1))
    repo = TufRepository(tmp_path / "tuf", keyring, config)
    repo.initialise({})
    version = repo.timestamp().signed.version
    assert repo.refresh() == []
    shorter = TufRepository(
        tmp_path / "tuf", keyring, RepositoryConfig(timestamp_expiry=timedelta(hours=3))
    )
    # Against a 3 h lifetime, 1 h left is past half: re-sign.
    assert shorter.refresh() == ["timestamp"]
    assert repo.timestamp().signed.version == version + 1
    assert shorter.refresh(force=True) == ["snapshot", "timestamp"]
    expiries = repo.expiries()
    assert expiries["timestamp"] < expiries["snapshot"] < expiries["targets"] < expiries["root"]


def test_policy_needs_published_versions(fleet):
    with pytest.raises(RepositoryStateError, match="not published"):
        fleet.publisher.revoke("digits", "3.0.0")
    with pytest.raises(RepositoryStateError, match="no published release"):
        fleet.publisher.set_floor("other", 1)
    policy = fleet.publisher.revoke("digits", "1.0.0")
    policy = fleet.publisher.set_floor("digits", 2)
    assert (policy.revoked, policy.min_release) == (("1.0.0",), 2)
    assert fleet.publisher.policy("digits") == policy


def test_target_files_are_links_to_the_artifact_blobs(fleet):
    version = fleet.registry.get("digits", "1.1.0")
    variant = version.variant("onnx-fp32")
    blob = fleet.registry.artifacts.local_path(variant.sha256)
    served = (
        fleet.repository.targets_dir
        / "models/digits/1.1.0/onnx-fp32"
        / f"{variant.sha256}.model-fp32.onnx"
    )
    assert served.stat().st_ino == blob.stat().st_ino

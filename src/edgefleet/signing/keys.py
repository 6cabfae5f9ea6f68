"""Role keys, referenced by securesystemslib signer URIs.

``signers.json`` (in ``EDGEFLEET_HOME/keys``) lists, per TUF role, each key's id, public
key and private-key URI. ``edgefleet keys init`` writes ed25519 keys as PEM files next to
it and refers to them as ``file2:<name>.pem`` (relative names resolve against the keys
directory). Pointing a URI at a KMS, HSM or Vault signer that securesystemslib supports
is a configuration change, not code::

    keyring = Keyring.load(keys_dir)
    signers = keyring.signers("timestamp")      # loads each private key
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey

from edgefleet.signing.errors import KeysExistError, KeysMissingError, SignerUnavailableError

ROLES = ("root", "targets", "snapshot", "timestamp")
#: Roles whose keys should live offline: they are needed only to change trust.
OFFLINE_ROLES = ("root", "targets")
SIGNERS_FILE = "signers.json"
FILE_SCHEME = "file2"


@dataclass(frozen=True)
class KeyRecord:
    """One role key: its public half and where its private half is."""

    role: str
    keyid: str
    uri: str
    public: dict[str, Any]

    def public_key(self) -> Key:
        return SSlibKey.from_dict(self.keyid, dict(self.public))


class Keyring:
    """The role keys of one repository."""

    def __init__(self, keys_dir: Path, records: dict[str, list[KeyRecord]]) -> None:
        self.keys_dir = keys_dir
        self.records = records

    @property
    def path(self) -> Path:
        return self.keys_dir / SIGNERS_FILE

    @classmethod
    def load(cls, keys_dir: Path) -> Keyring:
        """Read ``signers.json``.

        Raises:
            KeysMissingError: no keys are initialised in ``keys_dir``.
        """
        path = keys_dir / SIGNERS_FILE
        if not path.is_file():
            raise KeysMissingError(f"no TUF keys in {keys_dir}: run `edgefleet keys init` first")
        data = json.loads(path.read_text())
        records = {
            role: [KeyRecord(role=role, **entry) for entry in entries]
            for role, entries in data["roles"].items()
        }
        return cls(keys_dir, records)

    @classmethod
    def generate(cls, keys_dir: Path, counts: dict[str, int]) -> Keyring:
        """Create ed25519 keys, ``counts[role]`` of them per role, and save the keyring.

        Raises:
            KeysExistError: ``keys_dir`` already holds a keyring.
        """
        if (keys_dir / SIGNERS_FILE).exists():
            raise KeysExistError(
                f"{keys_dir / SIGNERS_FILE} exists; refusing to overwrite keys "
                "(use `edgefleet keys rotate ROLE` to replace a role's keys)"
            )
        keyring = cls(keys_dir, {role: [] for role in ROLES})
        for role in ROLES:
            keyring.records[role] = keyring.new_keys(role, counts.get(role, 1))
        keyring.save()
        return keyring

    def new_keys(self, role: str, count: int) -> list[KeyRecord]:
        """Write ``count`` new ed25519 private keys for ``role`` (mode 0600); not saved yet."""
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        records = []
        for _ in range(count):
            signer = CryptoSigner.generate_ed25519()
            key = signer.public_key
            name = f"{role}-{key.keyid[:12]}.pem"
            path = self.keys_dir / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(signer.private_bytes)
            records.append(
                KeyRecord(
                    role=role, keyid=key.keyid, uri=f"{FILE_SCHEME}:{name}", public=key.to_dict()
                )
            )
        return records

    def save(self) -> None:
        """Write ``signers.json`` atomically."""
        data = {
            "format": 1,
            "roles": {
                role: [{"keyid": r.keyid, "uri": r.uri, "public": r.public} for r in records]
                for role, records in self.records.items()
            },
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)

    def _resolve_uri(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme == FILE_SCHEME and not Path(parsed.path).is_absolute():
            return f"{FILE_SCHEME}:{self.keys_dir / parsed.path}"
        return uri

    def file_of(self, record: KeyRecord) -> Path | None:
        """The private key file of a file-based key (``None`` for other signers)."""
        parsed = urlparse(self._resolve_uri(record.uri))
        return Path(parsed.path) if parsed.scheme == FILE_SCHEME else None

    def signer(self, record: KeyRecord) -> Signer:
        """Load one private key.

        Raises:
            SignerUnavailableError: the key cannot be loaded (offline, wrong URI).
        """
        try:
            return Signer.from_priv_key_uri(self._resolve_uri(record.uri), record.public_key())
        except Exception as exc:  # securesystemslib raises many kinds per signer backend
            raise SignerUnavailableError(
                f"cannot load the {record.role} key {record.keyid[:12]} from {record.uri}: "
                f"{exc} (is the offline key mounted?)",
                details={"role": record.role, "keyid": record.keyid, "uri": record.uri},
            ) from exc

    def signers(self, role: str) -> list[Signer]:
        """Every private key of ``role`` that can be loaded.

        Raises:
            SignerUnavailableError: none of the role's keys can be loaded.
        """
        loaded, errors = [], []
        for record in self.records.get(role, []):
            try:
                loaded.append(self.signer(record))
            except SignerUnavailableError as exc:
                errors.append(exc.message)
        if not loaded:
            raise SignerUnavailableError(
                f"no {role} key can be loaded: " + "; ".join(errors or ["none configured"]),
                details={"role": role},
            )
        return loaded

    def retire(self, records: list[KeyRecord]) -> list[Path]:
        """Move the private key files of replaced keys to ``retired/``."""
        moved = []
        retired = self.keys_dir / "retired"
        for record in records:
            path = self.file_of(record)
            if path is not None and path.exists():
                retired.mkdir(exist_ok=True, mode=0o700)
                target = retired / path.name
                path.replace(target)
                moved.append(target)
        return moved

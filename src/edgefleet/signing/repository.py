"""The TUF repository (server side), built on ``tuf.api.metadata``.

Layout under ``EDGEFLEET_HOME/tuf`` (servable as-is by any static file server):

- ``metadata/N.root.json`` (and ``root.json``, the newest), ``N.targets.json``,
  ``N.<bin>.json`` for hashed bins, ``N.snapshot.json`` and ``timestamp.json``;
  consistent snapshots are on, so every version of every file stays addressable;
- ``targets/<dir>/<sha256>.<name>``: target files, hard links to the artifact store's
  blobs (a copy where the file systems differ), named by hash as consistent snapshots
  require.

Targets are listed in ``targets.json`` until there would be more than
``bins_threshold`` of them; then they move into succinct hashed-bin delegations
(TAP 15), signed by the targets keys, so each metadata file a device fetches stays
small. Snapshot and timestamp are signed with their online keys on every change and
re-signed by ``refresh`` before they expire.

All changes take an exclusive lock on the repository, so concurrent publishers
serialise.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from tuf.api.metadata import (
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from edgefleet.fsutil import write_atomic
from edgefleet.signing.errors import KeysMissingError, RepositoryStateError, SignerUnavailableError
from edgefleet.signing.keys import ROLES, KeyRecord, Keyring

BIN_PREFIX = "bins"
SERIALIZER = JSONSerializer(compact=True)


@dataclass(frozen=True)
class RepositoryConfig:
    """Expiry periods and the size at which targets move into hashed bins."""

    root_expiry: timedelta = timedelta(days=365)
    targets_expiry: timedelta = timedelta(days=90)
    snapshot_expiry: timedelta = timedelta(days=7)
    timestamp_expiry: timedelta = timedelta(days=1)
    bins_threshold: int = 1024


@dataclass(frozen=True)
class NewTarget:
    """A file to publish: its target path, where its bytes are, and signed custom fields.

    ``source`` is a local file to hard-link when there is one; otherwise ``reader``
    streams the bytes to copy.
    """

    path: str
    length: int
    sha256: str
    custom: dict[str, Any]
    source: Path | None = None
    reader: Callable[[], IO[bytes]] | None = None


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class TufRepository:
    """A TUF repository on the local file system."""

    def __init__(self, root_dir: Path, keyring: Keyring, config: RepositoryConfig) -> None:
        self.root_dir = root_dir
        self.metadata_dir = root_dir / "metadata"
        self.targets_dir = root_dir / "targets"
        self.keyring = keyring
        self.config = config

    # -- set-up -------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.metadata_dir / "1.root.json").is_file()

    def initialise(self, thresholds: dict[str, int]) -> Metadata[Root]:
        """Write version 1 of every top-level role.

        Raises:
            RepositoryStateError: already initialised, or a threshold exceeds the keys.
            SignerUnavailableError: a role's keys cannot be loaded.
        """
        if self.initialised:
            raise RepositoryStateError(f"a TUF repository already exists in {self.root_dir}")
        now = _now()
        root = Root(expires=now + self.config.root_expiry, consistent_snapshot=True)
        for role in ROLES:
            records = self.keyring.records[role]
            threshold = thresholds.get(role, 1)
            if not 1 <= threshold <= len(records):
                raise RepositoryStateError(
                    f"{role} threshold {threshold} needs between 1 and {len(records)} keys"
                )
            for record in records:
                root.add_key(record.public_key(), role)
            root.roles[role].threshold = threshold
        root_md = Metadata(root)
        self._sign(root_md, "root", root)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._persist_root(root_md)
            targets_md = Metadata(Targets(expires=now + self.config.targets_expiry))
            self._sign(targets_md, "targets", root)
            self._write(targets_md, "1.targets.json")
            snapshot_md = Metadata(
                Snapshot(
                    expires=now + self.config.snapshot_expiry, meta={"targets.json": MetaFile(1)}
                )
            )
            self._sign(snapshot_md, "snapshot", root)
            self._write(snapshot_md, "1.snapshot.json")
            timestamp_md = Metadata(
                Timestamp(expires=now + self.config.timestamp_expiry, snapshot_meta=MetaFile(1))
            )
            self._sign(timestamp_md, "timestamp", root)
            self._write(timestamp_md, "timestamp.json")
        return root_md

    # -- reading ------------------------------------------------------------------

    def _require(self) -> None:
        if not self.initialised:
            raise KeysMissingError(
                f"no TUF repository in {self.root_dir}: run `edgefleet keys init` first"
            )

    def _latest_version(self, role: str) -> int:
        versions = [
            int(p.name.split(".", 1)[0])
            for p in self.metadata_dir.glob(f"*.{role}.json")
            if p.name.split(".", 1)[0].isdigit()
        ]
        if not versions:
            raise RepositoryStateError(f"no {role} metadata in {self.metadata_dir}")
        return max(versions)

    def root(self) -> Metadata[Root]:
        self._require()
        return Metadata[Root].from_file(
            str(self.metadata_dir / f"{self._latest_version('root')}.root.json")
        )

    def root_bytes(self) -> bytes:
        """The newest root metadata, as devices pin it."""
        self._require()
        return (self.metadata_dir / f"{self._latest_version('root')}.root.json").read_bytes()

    def timestamp(self) -> Metadata[Timestamp]:
        self._require()
        return Metadata[Timestamp].from_file(str(self.metadata_dir / "timestamp.json"))

    def snapshot(self) -> Metadata[Snapshot]:
        version = self.timestamp().signed.snapshot_meta.version
        return Metadata[Snapshot].from_file(str(self.metadata_dir / f"{version}.snapshot.json"))

    def targets_role(
        self, name: str = "targets", snapshot: Metadata[Snapshot] | None = None
    ) -> Metadata[Targets]:
        snapshot = snapshot or self.snapshot()
        meta = snapshot.signed.meta.get(f"{name}.json")
        if meta is None:
            raise RepositoryStateError(f"snapshot lists no role {name!r}")
        return Metadata[Targets].from_file(str(self.metadata_dir / f"{meta.version}.{name}.json"))

    def bins(self) -> SuccinctRoles | None:
        """The hashed-bin delegation, once targets have moved into bins."""
        delegations = self.targets_role().signed.delegations
        return delegations.succinct_roles if delegations else None

    def all_targets(self) -> dict[str, TargetFile]:
        """Every published target, whichever role lists it."""
        snapshot = self.snapshot()
        top = self.targets_role("targets", snapshot)
        found = dict(top.signed.targets)
        succinct = top.signed.delegations.succinct_roles if top.signed.delegations else None
        if succinct is not None:
            for name in succinct.get_roles():
                found.update(self.targets_role(name, snapshot).signed.targets)
        return found

    # -- changing -----------------------------------------------------------------

    def add_targets(self, new: list[NewTarget]) -> list[str]:
        """Publish (or replace) targets; returns the metadata roles that changed.

        Raises:
            SignerUnavailableError: the targets, snapshot or timestamp keys are unavailable.
        """
        self._require()
        with self._lock():
            for target in new:
                self._link(target)
            entries = {
                t.path: TargetFile(t.length, {"sha256": t.sha256}, t.path, {"custom": t.custom})
                for t in new
            }
            snapshot = self.snapshot()
            top = self.targets_role("targets", snapshot)
            changed: dict[str, Metadata[Targets]] = {}
            succinct = top.signed.delegations.succinct_roles if top.signed.delegations else None
            if succinct is None:
                merged = {**top.signed.targets, **entries}
                if len(merged) <= self.config.bins_threshold:
                    top.signed.targets = merged
                    changed["targets"] = top
                else:
                    changed.update(self._split_into_bins(top, merged, snapshot))
            else:
                for path, entry in entries.items():
                    name = succinct.get_role_for_target(path)
                    role = changed.get(name) or self.targets_role(name, snapshot)
                    role.signed.targets[path] = entry
                    changed[name] = role
            self._commit(changed, snapshot)
            return sorted(changed)

    def _split_into_bins(
        self, top: Metadata[Targets], merged: dict[str, TargetFile], snapshot: Metadata[Snapshot]
    ) -> dict[str, Metadata[Targets]]:
        # Leave room to grow fourfold before an average bin reaches the threshold.
        wanted = max(2, math.ceil(4 * len(merged) / self.config.bins_threshold))
        bit_length = min(16, max(1, math.ceil(math.log2(wanted))))
        records = self.keyring.records["targets"]
        threshold = self.root().signed.roles["targets"].threshold
        succinct = SuccinctRoles([r.keyid for r in records], threshold, bit_length, BIN_PREFIX)
        top.signed.delegations = Delegations(
            keys={r.keyid: r.public_key() for r in records}, succinct_roles=succinct
        )
        top.signed.targets = {}
        expires = _now() + self.config.targets_expiry
        changed: dict[str, Metadata[Targets]] = {"targets": top}
        for name in succinct.get_roles():
            # Version 0 here becomes version 1 when committed.
            changed[name] = Metadata(Targets(version=1, expires=expires))
            changed[name].signed.version = 0
        for path, entry in merged.items():
            changed[succinct.get_role_for_target(path)].signed.targets[path] = entry
        return changed

    def _commit(self, changed: dict[str, Metadata[Targets]], snapshot: Metadata[Snapshot]) -> None:
        root = self.root().signed
        now = _now()
        for role in changed.values():
            role.signed.version += 1
            role.signed.expires = now + self.config.targets_expiry
            role.signatures.clear()
            self._sign(role, "targets", root)
        for name, role in changed.items():
            self._write(role, f"{role.signed.version}.{name}.json")
            snapshot.signed.meta[f"{name}.json"] = MetaFile(role.signed.version)
        self._resign_snapshot(snapshot, root, now)

    def _resign_snapshot(self, snapshot: Metadata[Snapshot], root: Root, now: datetime) -> None:
        snapshot.signed.version += 1
        snapshot.signed.expires = now + self.config.snapshot_expiry
        snapshot.signatures.clear()
        self._sign(snapshot, "snapshot", root)
        self._write(snapshot, f"{snapshot.signed.version}.snapshot.json")
        timestamp = self.timestamp()
        timestamp.signed.snapshot_meta = MetaFile(snapshot.signed.version)
        self._resign_timestamp(timestamp, root, now)

    def _resign_timestamp(self, timestamp: Metadata[Timestamp], root: Root, now: datetime) -> None:
        timestamp.signed.version += 1
        timestamp.signed.expires = now + self.config.timestamp_expiry
        timestamp.signatures.clear()
        self._sign(timestamp, "timestamp", root)
        self._write(timestamp, "timestamp.json")

    def refresh(self, *, force: bool = False) -> list[str]:
        """Re-sign snapshot and timestamp when past half their lifetime (or ``force``).

        Returns the roles re-signed. Called by the server periodically; safe to call
        at any time.

        Raises:
            SignerUnavailableError: the online keys are unavailable.
        """
        self._require()
        with self._lock():
            now = _now()
            root = self.root().signed
            snapshot = self.snapshot()
            if force or snapshot.signed.expires - now < self.config.snapshot_expiry / 2:
                self._resign_snapshot(snapshot, root, now)
                return ["snapshot", "timestamp"]
            timestamp = self.timestamp()
            if force or timestamp.signed.expires - now < self.config.timestamp_expiry / 2:
                self._resign_timestamp(timestamp, root, now)
                return ["timestamp"]
            return []

    def expiries(self) -> dict[str, datetime]:
        """When each top-level role's current metadata expires."""
        return {
            "root": self.root().signed.expires,
            "targets": self.targets_role().signed.expires,
            "snapshot": self.snapshot().signed.expires,
            "timestamp": self.timestamp().signed.expires,
        }

    def rotate(self, role: str, new_records: list[KeyRecord], threshold: int) -> int:
        """Replace ``role``'s keys: root N+1 signed by the old root threshold (and, for a
        root rotation, the new one), then re-sign what the new keys now sign.

        Returns the new root version.

        Raises:
            RepositoryStateError: bad threshold.
            SignerUnavailableError: not enough root keys (old or new) can be loaded.
        """
        self._require()
        if not 1 <= threshold <= len(new_records):
            raise RepositoryStateError(
                f"{role} threshold {threshold} needs between 1 and {len(new_records)} keys"
            )
        with self._lock():
            current = self.root()
            old_root = current.signed
            old_records = self.keyring.records[role]
            new_root = Metadata[Root].from_bytes(current.to_bytes())
            for record in old_records:
                if record.keyid in new_root.signed.roles[role].keyids:
                    new_root.signed.revoke_key(record.keyid, role)
            for record in new_records:
                new_root.signed.add_key(record.public_key(), role)
            new_root.signed.roles[role].threshold = threshold
            new_root.signed.version += 1
            new_root.signed.expires = _now() + self.config.root_expiry
            new_root.signatures.clear()
            self._sign(new_root, "root", old_root)
            if role == "root":
                self._sign(new_root, "root", new_root.signed, records=new_records)
            self._persist_root(new_root)
            self.keyring.records[role] = new_records
            self.keyring.save()
        # Re-sign under the new root (takes the lock again).
        if role == "targets":
            self._resign_targets_roles()
        elif role == "snapshot":
            self.refresh(force=True)
        elif role == "timestamp":
            with self._lock():
                self._resign_timestamp(self.timestamp(), self.root().signed, _now())
        self.keyring.retire(old_records)
        return new_root.signed.version

    def _resign_targets_roles(self) -> None:
        with self._lock():
            snapshot = self.snapshot()
            top = self.targets_role("targets", snapshot)
            changed = {"targets": top}
            if top.signed.delegations and top.signed.delegations.succinct_roles:
                records = self.keyring.records["targets"]
                succinct = top.signed.delegations.succinct_roles
                succinct.keyids = [r.keyid for r in records]
                succinct.threshold = self.root().signed.roles["targets"].threshold
                top.signed.delegations.keys = {r.keyid: r.public_key() for r in records}
                for name in succinct.get_roles():
                    changed[name] = self.targets_role(name, snapshot)
            self._commit(changed, snapshot)

    # -- plumbing -----------------------------------------------------------------

    def _sign(
        self, md: Metadata[Any], role: str, root: Root, *, records: list[KeyRecord] | None = None
    ) -> None:
        """Add a signature by every loadable key of ``role`` that ``root`` trusts for it.

        ``records`` defaults to the keyring's current keys for the role; during a
        rotation the keyring still holds the old keys, which is what signing root N+1
        with root N's keys needs.
        """
        trusted = set(root.roles[role].keyids)
        threshold = root.roles[role].threshold
        candidates = [
            r for r in (records or self.keyring.records.get(role, [])) if r.keyid in trusted
        ]
        signed = 0
        errors = []
        for record in candidates:
            try:
                signer = self.keyring.signer(record)
            except SignerUnavailableError as exc:
                errors.append(exc.message)
                continue
            md.sign(signer, append=True)
            signed += 1
        if signed < threshold:
            raise SignerUnavailableError(
                f"{role} metadata needs {threshold} signatures but only {signed} of its keys "
                "could be loaded" + (": " + "; ".join(errors) if errors else ""),
                details={"role": role, "threshold": threshold, "loaded": signed},
            )

    def _link(self, target: NewTarget) -> None:
        directory, _, name = target.path.rpartition("/")
        dest = self.targets_dir / directory / f"{target.sha256}.{name}"
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        if target.source is not None:
            try:
                os.link(target.source, tmp)
            except OSError:  # another file system: copy instead
                shutil.copyfile(target.source, tmp)
        elif target.reader is not None:
            with target.reader() as src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        else:
            raise RepositoryStateError(f"no bytes given for target {target.path}")
        tmp.replace(dest)

    def _persist_root(self, md: Metadata[Root]) -> None:
        self._write(md, f"{md.signed.version}.root.json")
        self._write(md, "root.json")

    def _write(self, md: Metadata[Any], filename: str) -> None:
        write_atomic(self.metadata_dir / filename, md.to_bytes(SERIALIZER))

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        with (self.root_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

"""Device-side delivery: trusted metadata from ``tuf.ngclient``, then a resumable,
verified download into the caller's file.

``resolve`` runs a fresh ``Updater`` (python-tuf allows one refresh per instance) from
the device's trusted root, finds the target, and checks its signed custom fields against
the device and the model's signed policy (and refuses a target signed without a
SHA-256, which the device names files by). ``download`` streams the target into
``<dest>.part`` next to ``dest`` (the agent's inactive slot, so a large model never
needs twice its size in a temp directory), resumes an interrupted download with an
HTTP ``Range`` request (appending a 206 only when its ``Content-Range`` is the rest of
the signed file; after a 416 or any other range it starts over from byte 0, once),
refuses a byte past the signed length, verifies length and hashes over the whole file
with python-tuf's ``TargetFile.verify_length_and_hashes``, and only then renames it to
``dest``. Every failure, of the network, the server or the device's disk, is a typed
``DeliveryError``::

    client = DeliveryClient(tuf_dir, f"{server}/tuf/metadata/", f"{server}/tuf/targets/",
                            pinned_root=root_bytes)
    target = client.resolve(path, DeviceFacts(hardware="aarch64", firmware="2.3.0"))
    client.download(target, slot / "model.onnx")
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import Updater, UpdaterConfig

from edgefleet.fsutil import fsync_dir, write_atomic
from edgefleet.progress import Advance
from edgefleet.signing.errors import (
    BadRangeError,
    DeliveryError,
    HashMismatchError,
    InvalidMetadataError,
    MetadataExpiredError,
    MissingSha256Error,
    MixAndMatchError,
    NetworkError,
    RollbackError,
    SignatureError,
    StorageError,
    TargetNotFoundError,
    TooLargeError,
)
from edgefleet.signing.fetcher import HttpxFetcher
from edgefleet.signing.layout import ArtifactInfo, ModelPolicy, parse_custom, policy_path
from edgefleet.signing.policy import DeviceFacts, check_installable


@dataclass(frozen=True)
class VerifiedTarget:
    """A target whose metadata is trusted and whose custom fields passed the checks."""

    path: str
    info: TargetFile
    url: str
    artifact: ArtifactInfo | None
    policy: ModelPolicy | None

    @property
    def length(self) -> int:
        return self.info.length

    @property
    def sha256(self) -> str:
        """The signed SHA-256 (``lookup`` refuses a target without one).

        Raises:
            MissingSha256Error: the target was built by hand without one.
        """
        return signed_sha256(self.info)


def _trusted_root_present(metadata_dir: Path) -> bool:
    # ``exists`` follows the link: a link to a missing history file is no root.
    return (metadata_dir / "root.json").exists()


def restore_trusted_root(metadata_dir: Path, pinned_root: bytes | None = None) -> None:
    """Make sure ``metadata_dir/root.json`` holds the newest trusted root.

    python-tuf 7's ngclient keeps every trusted root in ``root_history/N.root.json``
    (written atomically) and points ``root.json`` at the newest with a link it
    replaces by removing the old one first (upstream PR #3010 fixes that). A device
    killed between the two, or a link the file system refused, would wake up with no
    trust anchor and could never update again. Every file in the history was verified
    before python-tuf wrote it, so the newest is the root the device last trusted: put
    it back, atomically. Only a device with no history at all starts from
    ``pinned_root``, the root it received at enrollment.

    Raises:
        InvalidMetadataError: no ``root.json``, no root history and no pinned root
            (the device was never enrolled).
    """
    if _trusted_root_present(metadata_dir):
        return
    history = metadata_dir / "root_history"
    versions = sorted(
        (int(m.group(1)), f)
        for f in (history.iterdir() if history.is_dir() else ())
        if (m := _HISTORY_ROOT.fullmatch(f.name))
    )
    if versions:
        trusted = versions[-1][1].read_bytes()
    elif pinned_root is not None:
        trusted = pinned_root
    else:
        raise InvalidMetadataError(
            f"no trusted root in {metadata_dir}: the device must be enrolled first"
        )
    # The rename replaces a dangling link itself, never the file it names.
    write_atomic(metadata_dir / "root.json", trusted)


_HISTORY_ROOT = re.compile(r"([0-9]+)\.root\.json")


class DeliveryClient:
    """Fetches signed targets for one device.

    Args:
        metadata_dir: where the device keeps its trusted TUF metadata (writable).
        metadata_url: base URL of the repository's metadata (``.../tuf/metadata/``).
        targets_url: base URL of the repository's targets (``.../tuf/targets/``).
        pinned_root: the root metadata received at enrollment; written to
            ``metadata_dir/root.json`` if the device has no trusted root yet.
        http: the HTTP client (carries the device's credentials); one is made if omitted.
        config: python-tuf limits (maximum metadata sizes, delegations, rotations).
    """

    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        targets_url: str,
        *,
        pinned_root: bytes | None = None,
        http: httpx.Client | None = None,
        config: UpdaterConfig | None = None,
    ) -> None:
        self.metadata_dir = metadata_dir
        self.metadata_url = metadata_url if metadata_url.endswith("/") else metadata_url + "/"
        self.targets_url = targets_url if targets_url.endswith("/") else targets_url + "/"
        self.http = http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self.config = config or UpdaterConfig()
        metadata_dir.mkdir(parents=True, exist_ok=True)
        restore_trusted_root(metadata_dir, pinned_root)

    def _updater(self) -> Updater:
        restore_trusted_root(self.metadata_dir)
        return Updater(
            str(self.metadata_dir),
            self.metadata_url,
            target_base_url=self.targets_url,
            fetcher=HttpxFetcher(self.http),
            config=self.config,
            bootstrap=None,
        )

    def resolve(self, target_path: str, device: DeviceFacts) -> VerifiedTarget:
        """Refresh metadata and return the trusted target, if this device may install it.

        Raises:
            DeliveryError: a subclass naming why (signature, expired, rollback,
                mix_and_match, too_large, network, not_found, incompatible_hardware,
                incompatible_firmware, revoked, below_floor, invalid_metadata).
        """
        target = self.lookup(target_path)
        check_target(target, device)
        return target

    def lookup(self, target_path: str) -> VerifiedTarget:
        """Refresh metadata and return the trusted target and its model's signed policy,
        without checking them against a device (``check_target`` does that). Many
        devices that trust the same root may share one lookup, as the simulator does.

        Raises:
            DeliveryError: as ``resolve``, less the device checks.
        """
        with translate_tuf_errors():
            updater = self._updater()
            updater.refresh()
            info = updater.get_targetinfo(target_path)
            if info is None:
                raise TargetNotFoundError(f"no signed target {target_path}")
            signed_sha256(info)
            custom = parse_custom(target_path, info.custom)
            artifact = custom if isinstance(custom, ArtifactInfo) else None
            policy = None
            if artifact is not None:
                policy_info = updater.get_targetinfo(policy_path(artifact.model))
                if policy_info is not None:
                    parsed = parse_custom(policy_info.path, policy_info.custom)
                    if not isinstance(parsed, ModelPolicy):
                        raise InvalidMetadataError(f"{policy_info.path} is not a policy target")
                    policy = parsed
            url = self.targets_url + self._remote_name(info)
        return VerifiedTarget(
            path=target_path, info=info, url=url, artifact=artifact, policy=policy
        )

    def _remote_name(self, info: TargetFile) -> str:
        root = Metadata[Root].from_bytes((self.metadata_dir / "root.json").read_bytes())
        if not root.signed.consistent_snapshot:
            return info.path
        directory, slash, name = info.path.rpartition("/")
        return f"{directory}{slash}{signed_sha256(info)}.{name}"

    def download(self, target: VerifiedTarget, dest: Path, progress: Advance | None = None) -> Path:
        """Download ``target`` to ``dest``, resuming a previous partial download.

        Nothing appears at ``dest`` unless the whole file matches the signed length and
        hashes. A partial file that fails verification, or that the disk failed to
        take, is deleted; one cut short by the network is kept so the next call
        resumes it.

        Raises:
            TooLargeError, HashMismatchError, NetworkError (``BadRangeError``: the
            server could not continue the partial file, nor send the whole file),
            StorageError, MissingSha256Error.
        """
        part = partial_path(dest, target.sha256)
        try:
            return self._download(target, dest, part, progress)
        except OSError as exc:
            # Give the space back (a full disk is the usual cause, and the serving model's
            # application needs it more), and never resume bytes a write failed on.
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
            raise StorageError(
                f"cannot store the download of {target.path} in {dest.parent}: "
                f"{exc.strerror or exc}; the next attempt starts over",
                details={"path": target.path, "errno": exc.errno},
            ) from exc

    def _download(
        self, target: VerifiedTarget, dest: Path, part: Path, progress: Advance | None
    ) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if _matches(target, dest):
            # A download finished before a crash that came before the caller noted it
            # (the file renamed into place, the state not yet saved): never fetch twice.
            part.unlink(missing_ok=True)
            return dest
        offset = part.stat().st_size if part.exists() else 0
        if offset > target.length:
            part.unlink()
            offset = 0
        if offset < target.length:
            try:
                self._fetch_into(target, part, offset, progress)
            except BadRangeError:
                if not offset:
                    raise
                # The server cannot continue this partial file (it is not a prefix of
                # what the server has, or the server answers other ranges): start over,
                # once. A server that then still answers wrongly fails the attempt.
                part.unlink(missing_ok=True)
                self._fetch_into(target, part, 0, progress)
        with part.open("rb") as f:
            try:
                target.info.verify_length_and_hashes(f)
            except tuf_errors.LengthOrHashMismatchError as exc:
                part.unlink(missing_ok=True)
                raise HashMismatchError(
                    f"{target.path} does not match its signed length and hashes; discarded",
                    details={"path": target.path},
                ) from exc
            os.fsync(f.fileno())
        part.replace(dest)
        fsync_dir(dest.parent)
        return dest

    def _fetch_into(
        self, target: VerifiedTarget, part: Path, offset: int, progress: Advance | None
    ) -> None:
        """Fetch the target from byte ``offset`` on into ``part``: appended to it when
        the server sends that range, over it when the server sends the whole file."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self.http.stream("GET", target.url, headers=headers) as response:
                mode = _write_mode(target, response, offset)
                written = offset if mode == "ab" else 0
                with part.open(mode) as out:
                    # Write chunks as they arrive: what was received before a cut is
                    # kept for the resume.
                    for chunk in response.iter_bytes():
                        written += len(chunk)
                        if written > target.length:
                            out.close()
                            part.unlink(missing_ok=True)
                            raise TooLargeError(
                                f"{target.url} sent more than the signed {target.length} bytes; "
                                "discarded",
                                details={"path": target.path, "length": target.length},
                            )
                        out.write(chunk)
                        if progress:
                            progress(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.HTTPError as exc:
            have = part.stat().st_size if part.exists() else 0
            raise NetworkError(
                f"download of {target.path} interrupted at {have} of {target.length} bytes: "
                f"{exc}; the next attempt resumes",
                details={"path": target.path},
            ) from exc


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def _write_mode(target: VerifiedTarget, response: httpx.Response, offset: int) -> str:
    """How the body of ``response`` to a request from byte ``offset`` goes into the
    partial file: ``"ab"`` appended, ``"wb"`` over it.

    Raises:
        BadRangeError: a 416, or a 206 that is not bytes ``offset`` to the end of the
            signed length (appending it would corrupt the file, which only the final
            hash would tell, after the whole transfer).
        NetworkError: any other status but 200.
    """
    status = response.status_code
    if status == httpx.codes.OK:
        return "wb"  # the whole file, whatever was asked
    if status == httpx.codes.PARTIAL_CONTENT:
        content_range = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        expected = (offset, target.length - 1, target.length)
        if match is None or tuple(int(n) for n in match.groups()) != expected:
            shown = repr(content_range) if content_range else "no Content-Range"
            raise BadRangeError(
                f"{target.url} answered a 206 with {shown} to a request from byte {offset} "
                f"of the signed {target.length}",
                details={"status": status, "content_range": content_range, "offset": offset},
            )
        return "ab" if offset else "wb"
    if status == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE:
        raise BadRangeError(
            f"{target.url} cannot serve bytes {offset}- (HTTP 416)",
            details={"status": status, "offset": offset},
        )
    raise NetworkError(f"{target.url} answered HTTP {status}", details={"status": status})


def check_target(target: VerifiedTarget, device: DeviceFacts) -> None:
    """Refuse a looked-up target this device must not install (its signed hardware,
    firmware range, revocations and release floor).

    Raises:
        IncompatibleHardwareError, IncompatibleFirmwareError, RevokedError,
        BelowFloorError, InvalidMetadataError.
    """
    if target.artifact is not None:
        check_installable(target.artifact, target.policy, device)


def signed_sha256(info: TargetFile) -> str:
    """The SHA-256 among a target's signed hashes.

    Raises:
        MissingSha256Error: it has none (say, SHA-512 only).
    """
    try:
        return info.hashes["sha256"]
    except KeyError:
        raise MissingSha256Error(
            f"{info.path} is signed with {', '.join(sorted(info.hashes)) or 'no'} hashes "
            "but no sha256, which this device needs",
            details={"path": info.path, "hashes": sorted(info.hashes)},
        ) from None


def partial_path(dest: Path, sha256: str) -> Path:
    """Where the partial download of ``dest`` lives: beside it, named by the target hash
    so that a partial file of another version is never resumed."""
    return dest.with_name(f".{dest.name}.{sha256[:16]}.part")


_SNAPSHOT_ROLLBACK = re.compile(r"^Expected \S+\.json version \d+, got \d+")


@contextlib.contextmanager
def translate_tuf_errors() -> Iterator[None]:
    """Turn python-tuf's exceptions into edgefleet's typed delivery errors."""
    try:
        yield
    except DeliveryError:
        raise
    except tuf_errors.UnsignedMetadataError as exc:
        raise SignatureError(f"metadata signature check failed: {exc}") from exc
    except tuf_errors.ExpiredMetadataError as exc:
        raise MetadataExpiredError(f"metadata has expired: {exc}") from exc
    except tuf_errors.BadVersionNumberError as exc:
        message = str(exc)
        # A new snapshot listing an older role version is a rollback; a file whose
        # version differs from the one the snapshot/timestamp names is mix-and-match.
        if message.startswith("Expected") and not _SNAPSHOT_ROLLBACK.match(message):
            raise MixAndMatchError(f"metadata versions do not match: {message}") from exc
        raise RollbackError(f"metadata is older than what this device has seen: {message}") from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise HashMismatchError(f"metadata does not match its expected hashes: {exc}") from exc
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise TooLargeError(f"metadata is larger than allowed: {exc}") from exc
    except tuf_errors.DownloadError as exc:
        raise NetworkError(f"cannot fetch metadata: {exc}") from exc
    except tuf_errors.RepositoryError as exc:
        raise InvalidMetadataError(f"metadata is invalid: {exc}") from exc
    except OSError as exc:
        raise StorageError(
            f"cannot read or write the trusted metadata: {exc}", details={"errno": exc.errno}
        ) from exc


def _matches(target: VerifiedTarget, path: Path) -> bool:
    """Whether ``path`` holds exactly ``target``'s signed bytes (length and hashes)."""
    try:
        if path.stat().st_size != target.length:
            return False
        with path.open("rb") as f:
            target.info.verify_length_and_hashes(f)
    except (OSError, tuf_errors.LengthOrHashMismatchError):
        return False
    return True

"""Content-addressed artifact store: blobs named by their SHA-256.

Blobs are streamed in and out (never held whole in memory) and become visible only
once complete: a blob is written to a temporary file while it is hashed, fsynced, and
renamed into place, so a crash leaves either the whole blob or nothing::

    store = LocalArtifactStore(home / "artifacts")
    blob = store.put_file(Path("model.onnx"), expected_sha256=digest)
    with store.open(blob.sha256) as f:
        ...

``ArtifactStore`` is the interface; an S3-compatible backend implements the same
methods (``local_path`` answering ``None``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from edgefleet.fsutil import fsync_dir
from edgefleet.progress import Advance
from edgefleet.registry.errors import ArtifactHashMismatchError, ArtifactNotFoundError

CHUNK_SIZE = 1 << 20
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")

#: Called with the number of bytes just processed, for progress bars.
ProgressCallback = Advance


@dataclass(frozen=True)
class Blob:
    """A stored blob. ``created`` is false when the store already had these bytes."""

    sha256: str
    size: int
    created: bool


class ArtifactStore(Protocol):
    """Where artifact bytes live, addressed by SHA-256."""

    def put(
        self,
        source: IO[bytes],
        *,
        expected_sha256: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Blob:
        """Store the bytes read from ``source``.

        Raises:
            ArtifactHashMismatchError: the bytes do not hash to ``expected_sha256``;
                nothing is stored.
        """
        ...

    def open(self, sha256: str) -> IO[bytes]:
        """A binary reader of the blob. Raises ArtifactNotFoundError."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        ...

    def size(self, sha256: str) -> int:
        """The blob's length in bytes. Raises ArtifactNotFoundError."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the blob if it is stored."""
        ...

    def local_path(self, sha256: str) -> Path | None:
        """The blob's file, where the store keeps it on this machine (else ``None``)."""
        ...


def check_digest(sha256: str) -> str:
    """Validate a hex SHA-256 digest (lowercase).

    Raises:
        ValueError: not 64 lowercase hex characters.
    """
    if not _DIGEST_RE.match(sha256):
        raise ValueError(f"{sha256!r} is not a lowercase hex SHA-256 digest")
    return sha256


def sha256_file(path: Path, progress: ProgressCallback | None = None) -> tuple[str, int]:
    """SHA-256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest(), size


class LocalArtifactStore:
    """Blobs under ``root/sha256/<first two hex>/<digest>``, temporaries under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the blob lives (whether or not it is stored yet)."""
        check_digest(sha256)
        return self.root / "sha256" / sha256[:2] / sha256

    def put(
        self,
        source: IO[bytes],
        *,
        expected_sha256: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Blob:
        if expected_sha256 is not None:
            check_digest(expected_sha256)
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=f"{uuid.uuid4().hex}.")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise ArtifactHashMismatchError(
                    f"content hashes to {sha256}, expected {expected_sha256}",
                    details={"expected": expected_sha256, "actual": sha256},
                )
            final = self.path(sha256)
            if final.exists():
                return Blob(sha256=sha256, size=size, created=False)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o444)
            tmp.replace(final)
            fsync_dir(final.parent)
            return Blob(sha256=sha256, size=size, created=True)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(
        self,
        path: Path,
        *,
        expected_sha256: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Blob:
        """Store a file's bytes (see ``put``)."""
        with path.open("rb") as f:
            return self.put(f, expected_sha256=expected_sha256, progress=progress)

    def open(self, sha256: str) -> IO[bytes]:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact {sha256} in {self.root}") from exc

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact {sha256} in {self.root}") from exc

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def local_path(self, sha256: str) -> Path | None:
        path = self.path(sha256)
        return path if path.is_file() else None

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest."""
        base = self.root / "sha256"
        if base.is_dir():
            for path in sorted(base.glob("*/*")):
                if _DIGEST_RE.match(path.name):
                    yield path.name

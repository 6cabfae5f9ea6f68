"""Small durable-file helpers shared by the server and the device."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, before_rename: Callable[[], None] | None = None
) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the directory.

    The temporary file is created with ``mode`` (e.g. 0o600 for secrets), so the data
    is never readable more widely, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if before_rename is not None:
        before_rename()  # fault injection: the temporary file is complete, the rename not done
    tmp.replace(path)
    fsync_dir(path.parent)

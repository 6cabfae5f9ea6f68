"""Small TUF files kept in memory: metadata and artifacts answered without a thread.

Starlette's ``FileResponse`` opens, reads and closes a file in worker threads, with a
task group watching for the client going away: several hand-overs of the interpreter
lock per file. While a rollout's wave installs, a thousand devices a second fetch the
same few files (their model, its golden samples, its profile; the TUF metadata), and
at 10,000 devices those downloads took a second each, queued for the threads
(benchmarks/fleet.py). ``FileCache`` keeps files of at most ``max_file`` bytes in
memory, up to ``max_total`` bytes in all (least recently used go first), with the
headers ``FileResponse`` would send for them (the same ``ETag`` and ``Last-Modified``,
so a device resuming with ``If-Range`` is answered the same either way).

Every answer from memory first checks the file on disk (one ``stat``): a file that was
replaced (new size, modification time or inode) is read again, one that was removed
is not answered from memory (the route answers 404). Paths are resolved as the route
resolves them (no escaping the directory, no hidden files).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple

from starlette.responses import FileResponse

#: Files larger than this are streamed by the route (an 80 MB model is not kept).
MAX_FILE_BYTES = 1 << 20
#: Memory all kept files may take together.
MAX_TOTAL_BYTES = 64 << 20

MEDIA_TYPE = "application/octet-stream"


class CachedFile(NamedTuple):
    """A file's bytes and the response headers for them, as of ``stamp``."""

    path: Path
    stamp: tuple[int, int, int]  # inode, size, modification time (ns)
    headers: list[tuple[bytes, bytes]]
    body: bytes


def resolve(root: Path, relative: str) -> Path | None:
    """The regular file ``relative`` names under ``root``, or None if it names none
    (outside ``root``, hidden, missing, not a file, or a name the filesystem refuses)."""
    if "\x00" in relative or relative.startswith("/"):
        return None
    try:
        path = (root / relative).resolve(strict=True)
        if not path.is_relative_to(root.resolve()) or path.name.startswith("."):
            return None
        return path if S_ISREG(path.stat().st_mode) else None
    except (OSError, RuntimeError, ValueError):
        # The name comes from a URL: one longer than the filesystem allows (ENAMETOOLONG,
        # also a short one of multi-byte characters), a symlink loop (RuntimeError before
        # Python 3.13, ELOOP after), a file used as a directory (ENOTDIR), a character
        # the filesystem's encoding cannot take (UnicodeEncodeError). None of them names
        # a file we serve: not found, not a server error.
        return None


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class FileCache:
    """The small files of a few directories, in memory (see the module docstring)."""

    def __init__(self, max_file: int = MAX_FILE_BYTES, max_total: int = MAX_TOTAL_BYTES) -> None:
        self.max_file = max_file
        self.max_total = max_total
        self.total = 0
        self._files: OrderedDict[tuple[Path, str], CachedFile] = OrderedDict()

    def get(self, root: Path, relative: str) -> CachedFile | None:
        """``relative`` under ``root`` as it is on disk now, or None when it is not a
        file there or too large to keep (the caller streams it instead)."""
        key = (root, relative)
        cached = self._files.get(key)
        if cached is not None:
            try:
                stat = cached.path.stat()
            except OSError:
                stat = None
            if stat is not None and _stamp(stat) == cached.stamp:
                self._files.move_to_end(key)
                return cached
            self._drop(key)
        path = resolve(root, relative)
        if path is None:
            return None
        try:
            with path.open("rb") as file:
                stat = os.fstat(file.fileno())
                if stat.st_size > self.max_file:
                    return None
                body = file.read(self.max_file + 1)
        except OSError:
            return None
        if len(body) != stat.st_size:
            return None  # written to while read: the route streams it
        headers = FileResponse(path, media_type=MEDIA_TYPE, stat_result=stat).raw_headers
        cached = CachedFile(path, _stamp(stat), headers, body)
        self._files[key] = cached
        self.total += len(body)
        while self.total > self.max_total and self._files:
            self._drop(next(iter(self._files)))
        return cached

    def _drop(self, key: tuple[Path, str]) -> None:
        dropped = self._files.pop(key, None)
        if dropped is not None:
            self.total -= len(dropped.body)

    def __len__(self) -> int:
        return len(self._files)

"""Progress reporting for long operations, independent of how it is shown.

Services take an optional ``Progress``; the CLI passes one backed by rich progress bars,
tests and the server pass nothing::

    def register(..., progress: Progress = NO_PROGRESS):
        advance = progress.task("hashing model.onnx", total=size, unit="bytes")
        advance(len(chunk))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: Called with how much of a task was just done (bytes, steps, ...).
Advance = Callable[[int], None]


class Progress(Protocol):
    """Something that shows how far long operations have got."""

    def task(self, description: str, total: int | None = None, unit: str = "steps") -> Advance:
        """Start a task counted in ``unit`` ("bytes" or "steps"); return its advance function."""
        ...


class _Silent:
    def task(self, description: str, total: int | None = None, unit: str = "steps") -> Advance:
        return _ignore


def _ignore(amount: int) -> None:
    return None


NO_PROGRESS: Progress = _Silent()

"""Python's cyclic garbage collector in a long-running server: its pauses measured, and
the objects made at start-up kept out of its full collections.

A full (generation 2) collection walks every container object the process holds and
holds the interpreter lock while it does: in the server, every thread and the event
loop wait. After start-up a server holds hundreds of thousands of such objects that
live as long as it does (modules, the web framework's and the ORM's structures,
pydantic's schemas), so each full collection costs time for nothing.
``freeze_startup`` moves them to the collector's permanent generation (``gc.freeze``,
as CPython's documentation recommends for servers), and ``watch_pauses`` reports each
collection's duration so the effect is seen in ``/metrics``.

``server_collection`` does both for a server's lifetime and also collects the
youngest generation less often (``GEN0_THRESHOLD`` net allocations instead of
CPython's 700): a server's temporaries live for one request, and at the default a
10,000-device fleet's server ran 33 young collections a second and promoted enough
short-lived objects to start a full collection every 4 s (fleet benchmark,
``edgefleet_gc_pause_seconds``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def freeze_startup() -> int:
    """Collect once, then move every object that survived into the permanent
    generation; returns how many were moved."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextmanager
def watch_pauses(record: Callable[[int, float], None]) -> Iterator[None]:
    """Call ``record(generation, seconds)`` after each collection while inside."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            record(int(info.get("generation", 0)), time.perf_counter() - started.pop())

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


#: Net allocations of tracked objects between two young collections in a server.
GEN0_THRESHOLD = 10_000


@contextmanager
def server_collection(record: Callable[[int, float], None]) -> Iterator[int]:
    """For a server's lifetime: start-up objects frozen, young collections rarer,
    pauses reported to ``record(generation, seconds)``; yields how many objects were
    frozen. Everything is as it was again afterwards."""
    thresholds = gc.get_threshold()
    with watch_pauses(record):
        frozen = freeze_startup()
        gc.set_threshold(GEN0_THRESHOLD, *thresholds[1:])
        try:
            yield frozen
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

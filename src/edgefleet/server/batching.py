"""Writes of many requests in one transaction, each request answered once it committed.

On SQLite one writer at a time holds the database, and each write transaction costs a
few hand-overs of the interpreter lock between the writing thread and the event loop:
at a rollout's wave, when a thousand devices report within seconds, one transaction per
request queues them for seconds. A ``Batcher`` keeps one write in flight: requests that
arrive meanwhile wait together and go in the next one, so the wait is at most about two
writes, and a write of a hundred rows costs little more than a write of one.

Unlike a group commit over savepoints, a batch is a few plain statements over all its
rows: ``write`` answers each item (an exception instance: that request's error, say its
device was deleted meanwhile), and a write that raises fails the whole batch (each
request gets the error, nothing of it is stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Items one write takes at most; more wait for the next.
MAX_BATCH = 500


class Batcher(Generic[T, R]):
    """Hands items to ``write`` (run in a worker thread) in batches, one at a time;
    ``write`` returns one answer per item, in order."""

    def __init__(
        self, write: Callable[[Sequence[T]], Sequence[R | Exception]], max_batch: int = MAX_BATCH
    ) -> None:
        self.write = write
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """``item``'s answer once it is written; raise its error, or what its batch's
        write raised."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        # Retrieved even if the request was cancelled meanwhile (no "never retrieved").
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await asyncio.shield(done)  # a client gone does not cancel the others' write

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
            try:
                answers = await asyncio.to_thread(self.write, [item for item, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers to a batch of {len(batch)}")
            except Exception as exc:  # each request answers with the write's error
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), answer in zip(batch, answers, strict=True):
                if done.done():
                    continue
                if isinstance(answer, Exception):
                    done.set_exception(answer)
                else:
                    done.set_result(answer)

"""Group commit: the short writes of many device requests in one transaction.

During a rollout wave thousands of devices report their state and send their events
within seconds. Each is a write of a few rows, and on SQLite every write transaction
takes the one write lock: one transaction per request queues the requests behind each
other (and behind the batched check-in and telemetry writes), each holding a worker
thread and its device's connection meanwhile. ``GroupCommitter`` runs them on one
writer thread instead: it takes every job waiting, runs each in a savepoint of one
transaction, commits once, and only then answers each request, so an answer still
means the write is stored. A job that fails is rolled back to its savepoint alone and
its request gets the error; the others commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from edgefleet.store.database import describe_url, translate

log = logging.getLogger("edgefleet.store")

T = TypeVar("T")
Job = Callable[[Session], Any]

#: Jobs in one transaction at most (a burst is split into several).
MAX_BATCH = 500


class GroupCommitter:
    """Runs write jobs on one thread, many to a transaction."""

    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.where = describe_url(engine)
        self.max_batch = max_batch
        self._jobs: queue.SimpleQueue[tuple[Job, Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job: Callable[[Session], T]) -> Future[T]:
        """Queue ``job``; its future holds what it returned once that is committed, or
        its error (a database error as a ``StoreError``)."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="edgefleet-group-commit", daemon=True
                )
                self._thread.start()
            self._jobs.put((job, future))
        return future

    async def run(self, job: Callable[[Session], T]) -> T:
        """``submit`` and wait for the commit without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(job))

    def close(self) -> None:
        """Finish the jobs queued so far, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Job, Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with Session(self.engine) as session, session.begin():
                for job, future in batch:
                    try:
                        with session.begin_nested():
                            outcomes.append((future, job(session), None))
                    except DBAPIError as exc:
                        outcomes.append((future, None, translate(exc, self.where)))
                    except Exception as exc:
                        outcomes.append((future, None, exc))
        except DBAPIError as exc:
            # The transaction as a whole failed (the database is gone, locked, full):
            # nothing of the batch is stored, and every request says so.
            error = translate(exc, self.where)
            for _, future in batch:
                future.set_exception(error)
            return
        except Exception as exc:  # a bug: never leave a request waiting
            log.exception("group commit failed")
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, value, failure in outcomes:
            if failure is None:
                future.set_result(value)
            else:
                future.set_exception(failure)

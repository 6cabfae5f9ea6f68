"""Writes of many requests in one transaction: everyone answered after their batch is
written, in order, one write in flight, and a failing write fails its batch alone."""

import asyncio
import threading
import time

import pytest

from edgefleet.server.batching import Batcher


def test_requests_arriving_during_a_write_share_the_next_one():
    batches: list[list[int]] = []
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def write(items):
        nonlocal in_flight, most_in_flight
        with lock:
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
        time.sleep(0.05)
        batches.append(list(items))
        with lock:
            in_flight -= 1
        return [i * 10 for i in items]

    async def main():
        batcher = Batcher(write, max_batch=40)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)  # its write is in flight
        return await asyncio.gather(first, *(batcher.submit(i) for i in range(1, 100)))

    assert asyncio.run(main()) == [i * 10 for i in range(100)]  # each gets its own answer
    assert most_in_flight == 1
    assert [i for batch in batches for i in batch] == list(range(100))  # in order, once
    # The first went at once; the rest waited for it together, 40 a write at most.
    assert [len(b) for b in batches] == [1, 40, 40, 19]


def test_a_failing_write_fails_its_own_batch_only():
    calls: list[list[str]] = []

    def write(items):
        calls.append(list(items))
        if "bad" in items:
            raise RuntimeError("database is locked")
        return [LookupError(i) if i == "gone" else i.upper() for i in items]

    async def main():
        batcher = Batcher(write)
        first = await asyncio.gather(batcher.submit("bad"), return_exceptions=True)
        together = await asyncio.gather(
            batcher.submit("a"), batcher.submit("gone"), batcher.submit("b"), return_exceptions=True
        )
        return first, together

    first, together = asyncio.run(main())
    assert isinstance(first[0], RuntimeError) and "locked" in str(first[0])
    # One item's own error is that request's alone.
    assert together[0] == "A" and together[2] == "B" and isinstance(together[1], LookupError)
    assert calls == [["bad"], ["a", "gone", "b"]]


def test_a_request_cancelled_while_waiting_does_not_cancel_the_write():
    written: list[str] = []
    started = threading.Event()

    def write(items):
        started.set()
        time.sleep(0.1)
        written.extend(items)
        return [None] * len(items)

    async def main():
        batcher = Batcher(write)
        waiting = asyncio.create_task(batcher.submit("x"))
        await asyncio.to_thread(started.wait, 5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await batcher.submit("y")  # the batcher goes on

    asyncio.run(main())
    assert written == ["x", "y"]

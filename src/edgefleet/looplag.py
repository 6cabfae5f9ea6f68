"""How late an asyncio event loop wakes a timer: the time a ready callback waits while
the loop runs others (the server's and the simulator's own measure of being busy)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def watch_loop_lag(record: Callable[[float], None], every_s: float = 0.1) -> None:
    """Call ``record`` with each lag (seconds) of a timer of ``every_s``, until
    cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + every_s
        await asyncio.sleep(every_s)
        record(max(0.0, loop.time() - expected))

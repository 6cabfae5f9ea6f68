"""Fault injection for the crash tests.

With ``EDGEFLEET_AGENT_CRASH_AT=point`` (or ``point:n``) in the environment, the agent
kills itself with SIGKILL the n-th time (default first) it reaches ``crashpoint(point)``:
no cleanup, no flush, exactly like a power cut at that instruction. Unset, a crash point
costs one comparison.
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("EDGEFLEET_AGENT_CRASH_AT", "")
_head, _, _tail = _spec.rpartition(":")
# "point:3" kills at the third visit; a point name may itself contain ":" (state_saved:TRIAL).
_point, _remaining = (_head, int(_tail)) if _tail.isdigit() and _head else (_spec, 1)


def crashpoint(name: str) -> None:
    """Die here if the environment asks for it (see the module docstring)."""
    global _remaining
    if not _point or name != _point:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)

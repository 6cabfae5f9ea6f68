"""The agent's files: two model slots, the active-slot pointer, the state file.

::

    <root>/state.json        the AgentState (statemachine.to_json)
    <root>/active            "a" or "b": which slot the runtime serves
    <root>/slots/a/          model file, golden samples, profile of slot a
    <root>/slots/b/

Every file is replaced by write-temp, fsync, rename, fsync(dir), so a power cut leaves
either the old or the new version, never a torn one. The pointer and the state file are
two writes; ``reconcile`` settles a crash between them: while ACTIVATING the pointer is
the truth (the switch happened or not), in every other state the state file is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from edgefleet.agent.crash import crashpoint
from edgefleet.agent.statemachine import AgentState, State, from_json, to_json
from edgefleet.fsutil import fsync_dir, write_atomic

SLOTS = ("a", "b")


class CorruptStateError(Exception):
    """The state file exists but cannot be read (it is kept aside for inspection)."""


class SlotStore:
    """Crash-safe persistence of the agent's state and slots."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / "state.json"
        self.pointer_file = root / "active"
        for slot in SLOTS:
            self.slot_dir(slot).mkdir(parents=True, exist_ok=True)

    def slot_dir(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise ValueError(f"no slot {slot!r}")
        return self.root / "slots" / slot

    # -- state ----------------------------------------------------------------------

    def load(self) -> AgentState:
        """The persisted state, reconciled with the pointer (initial state if none).

        A state file that cannot be read is moved to ``state.json.corrupt`` and the
        agent starts from the pointer alone, serving whatever slot it names.
        """
        pointer = self.read_pointer()
        if not self.state_file.exists():
            state = AgentState.initial()
            return replace(state, active=None) if pointer is None else state
        try:
            state = from_json(json.loads(self.state_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.state_file.replace(self.state_file.with_name("state.json.corrupt"))
            raise CorruptStateError(f"unreadable state file {self.state_file}: {exc}") from exc
        return self.reconcile(state, pointer)

    def save(self, state: AgentState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        name = state.state.value
        write_atomic(
            self.state_file,
            (json.dumps(to_json(state), indent=1) + "\n").encode(),
            before_rename=lambda: crashpoint(f"state_unrenamed:{name}"),
        )
        crashpoint(f"state_saved:{name}")

    def reconcile(self, state: AgentState, pointer: str | None) -> AgentState:
        if state.state is State.ACTIVATING:
            if pointer in SLOTS and pointer != state.active:
                return replace(state, active=pointer)
            return state
        if pointer != state.active:
            self.write_pointer(state.active)
        return state

    # -- pointer --------------------------------------------------------------------

    def read_pointer(self) -> str | None:
        try:
            value = self.pointer_file.read_text().strip()
        except FileNotFoundError:
            return None
        return value if value in SLOTS else None

    def write_pointer(self, slot: str | None) -> None:
        if slot is None:
            self.pointer_file.unlink(missing_ok=True)
            fsync_dir(self.root)
            return
        write_atomic(
            self.pointer_file,
            f"{slot}\n".encode(),
            before_rename=lambda: crashpoint("pointer_unrenamed"),
        )
        crashpoint("pointer_written")

    # -- slot files -----------------------------------------------------------------

    def model_file(self, slot: str) -> Path:
        return self.slot_dir(slot) / "model"

    def golden_file(self, slot: str) -> Path:
        return self.slot_dir(slot) / "golden.npz"

    def clear(self, slot: str, *, active: str | None) -> None:
        """Delete a slot's files. Refuses the serving slot (never written to)."""
        if slot == active:
            raise ValueError(f"slot {slot} is serving; it is never written to")
        directory = self.slot_dir(slot)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)

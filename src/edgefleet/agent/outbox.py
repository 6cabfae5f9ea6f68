"""Reports that wait on disk while the server is unreachable.

Events (state transitions) are never dropped: the server needs every one, in order.
Telemetry is bounded: when the queue is full the oldest batch goes first. Both are
JSON lines rewritten atomically, so a crash loses nothing already queued.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefleet.fsutil import write_atomic


class Outbox:
    def __init__(self, root: Path, max_telemetry: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.events_file = root / "events.jsonl"
        self.telemetry_file = root / "telemetry.jsonl"
        self.max_telemetry = max_telemetry
        self.dropped_telemetry = 0

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        items = []
        for line in lines:
            try:
                items.append(json.loads(line))
            except ValueError:
                continue  # a torn line cannot happen with atomic writes; skip defensively
        return items

    @staticmethod
    def _write(path: Path, items: list[dict[str, Any]]) -> None:
        write_atomic(path, "".join(json.dumps(i) + "\n" for i in items).encode())

    def events(self) -> list[dict[str, Any]]:
        return self._read(self.events_file)

    def add_events(self, events: list[dict[str, Any]]) -> None:
        if events:
            self._write(self.events_file, self.events() + events)

    def drop_events_after(self, seq: int) -> int:
        """Drop queued events numbered above ``seq``; how many.

        Events are queued before the state that numbers them is saved, so that no
        transition is ever saved without its event; after a crash between the two
        writes, the queue holds events of a transition the saved state never made.
        Recovery makes that transition again under the same numbers, so these go.
        """
        events = self.events()
        kept = [e for e in events if e["seq"] <= seq]
        if len(kept) != len(events):
            self._write(self.events_file, kept)
        return len(events) - len(kept)

    def remove_events(self, up_to_seq: int) -> None:
        self._write(self.events_file, [e for e in self.events() if e["seq"] > up_to_seq])

    def telemetry(self) -> list[dict[str, Any]]:
        return self._read(self.telemetry_file)

    def add_telemetry(self, sample: dict[str, Any]) -> None:
        items = [*self.telemetry(), sample]
        if len(items) > self.max_telemetry:
            self.dropped_telemetry += len(items) - self.max_telemetry
            items = items[-self.max_telemetry :]
        self._write(self.telemetry_file, items)

    def clear_telemetry(self, count: int) -> None:
        self._write(self.telemetry_file, self.telemetry()[count:])

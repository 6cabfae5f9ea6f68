"""What a device's requests need from storage, as interfaces (see ``fleet/checkin.py``).

``edgefleet.store`` implements the reads (``store/checkin.py``: the check-in rows, in
memory on SQLite) and the in-memory collections (last-seen times, telemetry buckets);
the server hands in its batched writes (``server/batching.py``), which store many
devices' reports or events in one transaction; tests implement them in memory::

    checkins = CheckinService(rows, last_seen=recorder, telemetry=writer,
                              reports=report_batches, events=event_batches,
                              report_attributes=write_in_a_thread)

A device is known on these paths by its ``CheckinRow``: the one ``devices`` row a
check-in is answered from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from edgefleet.fleet.domain import EventBatch, EventsAccepted, ReportedState, TelemetrySample


class CheckinRow(NamedTuple):
    """What a check-in answer is made of. (A tuple of strings and numbers: the garbage
    collector stops walking it, and a server holds one per device in memory.)"""

    pk: int
    device_id: str
    credential_hash: str
    desired_etag: str
    poll_interval_s: int


class CheckinRows(Protocol):
    """The devices' check-in rows, read on the calling thread (the event loop's)."""

    def lookup(self, credential_id: str, *, fresh: bool = False) -> CheckinRow | None:
        """The enrolled device a credential id names, or None. Without ``fresh`` it may
        come from memory, as much behind the database as the check-in cache allows
        (docs/api.md, "The check-in path"); with it, from the database.
        Raises StoreUnavailableError."""
        ...

    def desired(self, pk: int) -> tuple[dict[str, Any] | None, str]:
        """A device's desired state (as stored JSON) and its ETag, read together.

        Raises:
            DeviceNotFoundError: it was deleted meanwhile.
            StoreUnavailableError: the database cannot be read.
        """
        ...


class LastSeen(Protocol):
    """Check-in times, collected in memory and written in batches."""

    def record(self, pk: int, at: datetime, poll_interval_s: int) -> None:
        """Note that the device ``pk`` was seen ``at``."""
        ...


class TelemetryInbox(Protocol):
    """Telemetry merged into each device's pending buckets in memory."""

    def add_samples(self, device_pk: int, samples: Sequence[TelemetrySample]) -> int:
        """Merge a device's batch; returns into how many buckets."""
        ...


ItemT = TypeVar("ItemT", contravariant=True)
ResultT = TypeVar("ResultT", covariant=True)


class BatchedWrite(Protocol[ItemT, ResultT]):
    """A write that stores many requests' items in one transaction."""

    async def submit(self, item: ItemT) -> ResultT:
        """``item``'s result once its transaction committed; raises its error, or the
        error of the whole batch's write (then nothing of the batch is stored)."""
        ...


#: A reported state without attribute changes: the device's row, the report, when.
ReportWrite = BatchedWrite[tuple[CheckinRow, ReportedState, datetime], None]
#: A device's event batch, by the primary key of its row.
EventWrite = BatchedWrite[tuple[int, EventBatch], EventsAccepted]
#: Stores a report that changes attributes (device id, report): a read-modify-write
#: transaction, off the event loop. Raises DeviceNotFoundError, AttributeNotAllowedError.
AttributeReport = Callable[[str, ReportedState], Awaitable[None]]

"""The device requests' ports (``fleet/ports.py``) in memory, with one enrolled device.

Shared by tests/fleet/test_checkin.py (the service) and tests/server/test_hotpath.py
(the fast path over it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from edgefleet.access import tokens
from edgefleet.fleet.checkin import CheckinService
from edgefleet.fleet.domain import ReportedState, TelemetrySample
from edgefleet.fleet.ports import CheckinRow


class Rows:
    """Check-in rows in memory; ``error`` makes every read fail, ``desired_error`` the
    reads of a desired state."""

    def __init__(self, *rows: tuple[str, CheckinRow]) -> None:
        self.by_credential = dict(rows)
        self.desired_state: dict[int, tuple[dict[str, Any] | None, str]] = {}
        self.desired_reads: list[int] = []
        self.fresh_lookups = 0
        self.error: Exception | None = None
        self.desired_error: Exception | None = None

    def lookup(self, credential_id: str, *, fresh: bool = False) -> CheckinRow | None:
        if self.error is not None:
            raise self.error
        self.fresh_lookups += fresh
        return self.by_credential.get(credential_id)

    def desired(self, pk: int) -> tuple[dict[str, Any] | None, str]:
        self.desired_reads.append(pk)
        if self.desired_error is not None:
            raise self.desired_error
        return self.desired_state[pk]


class Seen:
    """Last-seen times: the devices' keys, in order."""

    def __init__(self) -> None:
        self.pks: list[int] = []

    def record(self, pk: int, at: datetime, poll_interval_s: int) -> None:
        self.pks.append(pk)


class Inbox:
    """Telemetry: every batch takes one bucket."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def add_samples(self, device_pk: int, samples: Sequence[TelemetrySample]) -> int:
        self.batches.append((device_pk, len(samples)))
        return 1


class Batches:
    """A batched write that records what it was given, and answers or fails."""

    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.items: list[Any] = []
        self.answer = answer
        self.error = error

    async def submit(self, item: Any) -> Any:
        self.items.append(item)
        if self.error is not None:
            raise self.error
        return self.answer


class Fleet:
    """A ``CheckinService`` over these ports, with device ``cam-1`` (key 7, desired
    ETag ``etag``) enrolled, and ``cam-2`` (key 8)."""

    def __init__(
        self,
        reports: Batches | None = None,
        events: Batches | None = None,
        attribute_error: Exception | None = None,
    ) -> None:
        issued, other = tokens.issue(tokens.DEVICE), tokens.issue(tokens.DEVICE)
        self.credential, self.other_credential = issued.token, other.token
        self.row = CheckinRow(7, "cam-1", issued.digest, "etag", 10)
        self.rows = Rows(
            (issued.token_id, self.row),
            (other.token_id, CheckinRow(8, "cam-2", other.digest, "etag", 10)),
        )
        self.rows.desired_state[7] = (None, "etag")
        self.seen = Seen()
        self.inbox = Inbox()
        self.reports = reports or Batches()
        self.events = events or Batches()
        self.attribute_reports: list[tuple[str, ReportedState]] = []

        async def report_attributes(device_id: str, report: ReportedState) -> None:
            self.attribute_reports.append((device_id, report))
            if attribute_error is not None:
                raise attribute_error

        self.checkins = CheckinService(
            self.rows,
            last_seen=self.seen,
            telemetry=self.inbox,
            reports=self.reports,
            events=self.events,
            report_attributes=report_attributes,
        )

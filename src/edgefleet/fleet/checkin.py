"""What an enrolled device asks of the server: its check-in, reports, events, telemetry.

One function per device request, the same whoever takes the request: the device API's
routes (``server/routes/device.py``) and the fast path that answers the good case of
those requests before the web framework (``server/hotpath.py``). Both only parse the
request and format the answer; authentication, the 304 decision, which report is a
batched write and which a transaction, and what a device is told all happen here, over
the typed ports of ``fleet/ports.py``::

    device = checkins.authenticate(authorization_header, "cam-1")
    found = checkins.check_in(device, if_none_match_header)
    if found.not_modified:
        ...  # 304 with found.etag
    else:
        ...  # 200: found.desired_json, the desired state as JSON

Nearly every check-in of a settled fleet is a 304, so that path builds no model and
reads nothing beyond the device's row (from memory on SQLite): a credential digest, a
string comparison and a last-seen time noted in memory.

Every method that reads the database may also raise ``StoreUnavailableError``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from edgefleet.access import tokens
from edgefleet.access.errors import ForbiddenError, UnauthenticatedError
from edgefleet.fleet.domain import (
    DesiredState,
    EventBatch,
    EventsAccepted,
    ReportedState,
    TelemetryAccepted,
    TelemetryBatch,
)
from edgefleet.fleet.ports import (
    AttributeReport,
    CheckinRow,
    CheckinRows,
    EventWrite,
    LastSeen,
    ReportWrite,
    TelemetryInbox,
)

#: Desired states kept as JSON by ETag (a fleet has a few at a time: one per version,
#: variant and rollout).
DESIRED_JSON_KEPT = 1024


class CheckIn(NamedTuple):
    """The answer to a check-in: the device's desired ETag and, unless the device has
    that state already (``not_modified``), the desired state as JSON (``null``: none)."""

    etag: str
    desired_json: bytes | None

    @property
    def not_modified(self) -> bool:
        return self.desired_json is None


def authenticate(
    authorization: str | None,
    device_id: str | None,
    lookup: Callable[[str], CheckinRow | None],
) -> CheckinRow:
    """The enrolled device whose credential an ``Authorization`` header value bears
    (``Bearer efd_...``), looked up by the credential's id; with ``device_id``, it must
    be that device's own.

    Raises:
        UnauthenticatedError: no, malformed, unknown or replaced device credential.
        ForbiddenError: another device's valid credential.
        StoreUnavailableError: from ``lookup``.
    """
    scheme, _, credential = (authorization or "").partition(" ")
    parsed = tokens.parse(credential) if scheme.lower() == "bearer" else None
    if parsed is None or parsed.kind != tokens.DEVICE:
        raise UnauthenticatedError(
            "a device credential is required (Authorization: Bearer efd_...)"
        )
    row = lookup(parsed.token_id)
    if row is None or not tokens.matches(parsed.secret, row.credential_hash):
        raise UnauthenticatedError("unknown or replaced device credential")
    if device_id is not None and row.device_id != device_id:
        raise ForbiddenError(
            "this credential belongs to another device", details={"device_id": device_id}
        )
    return row


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether a check-in's ``If-None-Match`` names ``etag`` (quoted, bare or weak)."""
    if if_none_match is None:
        return False
    quoted = f'"{etag}"'
    return if_none_match.strip() in (quoted, etag, f"W/{quoted}")


class CheckinService:
    """The device requests over the ports of ``fleet/ports.py``.

    For the event loop's thread: its reads are short reads of one indexed row, on the
    loop's own connection, and it keeps the desired states' JSON without a lock.
    """

    def __init__(
        self,
        rows: CheckinRows,
        *,
        last_seen: LastSeen,
        telemetry: TelemetryInbox,
        reports: ReportWrite,
        events: EventWrite,
        report_attributes: AttributeReport,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rows = rows
        self.last_seen = last_seen
        self.telemetry = telemetry
        self.reports = reports
        self.events = events
        self.report_attributes = report_attributes
        self.clock = clock
        self._desired_json: dict[str, bytes] = {}

    def authenticate(
        self, authorization: str | None, device_id: str | None, *, fresh: bool = False
    ) -> CheckinRow:
        """The device an ``Authorization`` header value names (``device_id``'s own, if
        given; None: any enrolled device). ``fresh`` reads its row from the database,
        not from memory (see ``CheckinRows.lookup``).

        Raises:
            UnauthenticatedError, ForbiddenError, StoreUnavailableError.
        """
        lookup = self.rows.lookup
        return authenticate(
            authorization,
            device_id,
            (lambda credential_id: lookup(credential_id, fresh=True)) if fresh else lookup,
        )

    def check_in(self, device: CheckinRow, if_none_match: str | None) -> CheckIn:
        """A device asking for its desired state: not modified when ``If-None-Match``
        names its ETag, else the state (its JSON made once per ETag: equal ETags, equal
        states). Either way the device was seen now.

        Raises:
            DeviceNotFoundError: deleted since ``device`` was read.
            StoreUnavailableError.
        """
        self.last_seen.record(device.pk, self.clock(), device.poll_interval_s)
        if not_modified(if_none_match, device.desired_etag):
            return CheckIn(device.desired_etag, None)
        known = self._desired_json.get(device.desired_etag)
        if known is not None:
            return CheckIn(device.desired_etag, known)
        # The row may be older than the database (another process's change, seen within
        # the check-in cache's refresh): the state and the ETag read together agree.
        desired, etag = self.rows.desired(device.pk)
        known = self._desired_json.get(etag)
        if known is None:
            known = (
                DesiredState.model_validate(desired).model_dump_json().encode()
                if desired
                else b"null"
            )
            if len(self._desired_json) >= DESIRED_JSON_KEPT:
                self._desired_json.clear()
            self._desired_json[etag] = known
        return CheckIn(etag, known)

    async def report(self, device: CheckinRow, report: ReportedState) -> None:
        """Store a device's reported state; returns once it is stored.

        Raises:
            AttributeNotAllowedError: an attribute only an operator sets (nothing stored).
            DeviceNotFoundError: the device was deleted meanwhile.
            StoreUnavailableError.
        """
        if report.attributes or report.firmware:
            # Merged into the stored attributes: a read-modify-write transaction, which
            # checks who may set which attribute (fleet.attributes).
            await self.report_attributes(device.device_id, report)
        else:
            # One row of an UPDATE run for many devices in one transaction.
            await self.reports.submit((device, report, self.clock()))

    async def add_events(self, device: CheckinRow, batch: EventBatch) -> EventsAccepted:
        """Store a device's events, once each by sequence number; returns once stored
        (with other devices' batches, in one transaction).

        Raises:
            DeviceNotFoundError: the device was deleted meanwhile.
            StoreUnavailableError.
        """
        return await self.events.submit((device.pk, batch))

    def add_telemetry(self, device: CheckinRow, batch: TelemetryBatch) -> TelemetryAccepted:
        """Merge a device's telemetry into its pending buckets in memory (written with
        the rest of the second's telemetry in one transaction)."""
        buckets = self.telemetry.add_samples(device.pk, batch.samples)
        return TelemetryAccepted(samples=len(batch.samples), buckets=buckets)

"""What the drift service needs from storage, as interfaces, and the records it reads.

``edgefleet.store`` implements them with SQLAlchemy (``store/drift.py``); tests may
implement them in memory. The drift package imports neither the store nor the fleet
or rollout packages, so everything it needs of them comes through here: the drift
summary periods and telemetry buckets of a model in a window with the devices they came
from, which devices a targeting query selects, the registry's versions (their reference
profiles), and the signed webhooks' queue. The service opens a unit of work per
operation and commits explicitly; a look is stored with the alarms it changed and its
notifications in one::

    with uow_factory() as uow:
        uow.drift.add_look(look)
        uow.drift.save_alarms(changes.changed, now)
        uow.webhooks.enqueue("drift.alarm.opened", payload, now)
        uow.commit()

Every datetime a repository returns is timezone-aware (UTC).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Self

from edgefleet.access.service import AccessUnitOfWork
from edgefleet.drift.alarms import Alarm, AlarmState
from edgefleet.drift.monitor import Monitor
from edgefleet.registry.ports import VersionRepository

#: Attribute names that are columns of a device rather than entries of its attributes
#: (the targeting language's names for them; ``hw`` and ``hardware`` are one).
HARDWARE_NAMES = frozenset({"hw", "hardware"})


@dataclass(frozen=True)
class StoredMonitor:
    """One applied version of a model's monitor (``number`` counts from 1 per model)."""

    id: int
    model: str
    number: int
    monitor: Monitor
    digest: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class WindowDevice:
    """A device that sent telemetry of the model in the window, with what segments it by."""

    pk: int
    device_id: str
    hardware: str | None
    firmware: str | None
    group: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def attribute(self, name: str) -> str | None:
        """The device's value of a segmenting attribute as text (``hw``/``hardware``,
        ``firmware`` and ``group`` are its columns; any other name an attribute), or
        ``None`` when it has none."""
        if name in HARDWARE_NAMES:
            return self.hardware
        if name == "firmware":
            return self.firmware
        if name == "group":
            return self.group
        value = self.attributes.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


@dataclass(frozen=True)
class DriftBucket:
    """One record of a device's drift data of a model version, of either kind:

    * a summary period (the store's ``telemetry_summaries``): ``feature_counts``,
      ``sketches``, ``sketch_rows`` and ``period_start``/``period_end`` (epoch
      seconds); ``bucket`` is its period's end;
    * a telemetry bucket (``bucket`` its start): the per-sample ``confidence_counts``
      and ``class_counts`` (and, in buckets stored before summaries had a table of
      their own, the summary fields ``edgefleet.fleet.telemetry`` merged into them,
      with ``sketches_invalid``).

    Absent fields are left out."""

    device_pk: int
    bucket: datetime
    version: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class StoredLook:
    """A look as stored: its window and the report it computed (``result``)."""

    id: int
    monitor_id: int
    model: str
    version: str  # "" when the model had no version to score
    window_start: datetime
    window_end: datetime
    computed_at: datetime
    result: Mapping[str, Any]


@dataclass(frozen=True)
class NewLook:
    """A look to store."""

    monitor_id: int
    model: str
    version: str
    window_start: datetime
    window_end: datetime
    computed_at: datetime
    result: Mapping[str, Any]


class DriftRepository(Protocol):
    """Monitors, looks, alarms, and the telemetry and devices they read."""

    # -- monitors --------------------------------------------------------------------

    def add_monitor(
        self, model: str, monitor: Monitor, digest: str, created_at: datetime, created_by: str
    ) -> StoredMonitor:
        """Store a new version of the model's monitor (the next ``number``)."""
        ...

    def monitor(self, model: str) -> StoredMonitor | None:
        """The model's monitor in force (its newest version), or ``None``."""
        ...

    def monitor_versions(self, model: str) -> list[StoredMonitor]:
        """Every applied version of the model's monitor, newest first."""
        ...

    def monitors(self) -> list[StoredMonitor]:
        """The monitor in force of every model that has one, by model name."""
        ...

    # -- what a look reads -----------------------------------------------------------

    def window_devices(
        self, model: str, versions: Sequence[str], start: datetime, end: datetime
    ) -> list[WindowDevice]:
        """Devices with telemetry buckets of ``model`` at one of ``versions`` from
        ``start`` (inclusive) to ``end`` (exclusive), or with summary periods of it that
        ended after ``start`` and by ``end``."""
        ...

    def drift_buckets(
        self, model: str, versions: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[DriftBucket]:
        """The drift fields of those buckets and those summary periods, all of one
        device before the next's (by device primary key), read as they are consumed."""
        ...

    def unknown_version_buckets(
        self, model: str, known: Sequence[str], start: datetime, end: datetime
    ) -> int:
        """How many buckets of ``model`` in the window are of a version not in ``known``
        (versions the registry does not have; buckets without a model are not counted)."""
        ...

    def query_members(self, query: str, among: Sequence[int], now: datetime) -> set[int]:
        """Of the devices ``among`` (primary keys), those the targeting query selects.

        Raises:
            QuerySyntaxError, QueryFieldError: the query is not valid.
        """
        ...

    def query_problem(self, query: str) -> str | None:
        """What is wrong with a targeting query (where, and what was expected), or
        ``None`` when it is valid."""
        ...

    # -- looks -----------------------------------------------------------------------

    def add_look(self, look: NewLook) -> int | None:
        """Store a look; returns its id, or ``None`` when that window of that model
        version was looked at already (by another server): nothing is stored then."""
        ...

    def last_window_end(self, model: str) -> datetime | None:
        """Where the model's latest look's window ended, or ``None`` (never looked)."""
        ...

    def looks(
        self, model: str, version: str | None, since: datetime, until: datetime, limit: int = 500
    ) -> list[StoredLook]:
        """Looks of the model (one version, or any) whose window ended in
        ``(since, until]``, oldest first, the newest ``limit`` of them."""
        ...

    def latest_looks(self, model: str | None = None) -> list[StoredLook]:
        """Every model's (or one model's) looks of its latest window, one per version."""
        ...

    # -- alarms ----------------------------------------------------------------------

    def alarm(self, alarm_id: str, *, for_update: bool = False) -> Alarm | None:
        """One alarm, or ``None``; ``for_update`` locks it until the unit of work ends."""
        ...

    def alarms(
        self, *, state: AlarmState | None = None, model: str | None = None, limit: int = 1000
    ) -> list[Alarm]:
        """Alarms (of a state, of a model), newest first."""
        ...

    def active_alarms(self, model: str) -> list[Alarm]:
        """The model's open and acknowledged alarms."""
        ...

    def alarm_history(self, model: str, since: datetime) -> list[Alarm]:
        """The model's alarms active at ``since`` or later: active now, or resolved at
        or after ``since``."""
        ...

    def save_alarms(self, alarms: Sequence[Alarm], now: datetime) -> None:
        """Store alarms, new ones and changed ones (by id)."""
        ...

    def alarm_counts(self) -> dict[tuple[str, str], int]:
        """Alarms counted by (model, state)."""
        ...


class WebhookQueue(Protocol):
    """The signed webhooks' delivery queue (``edgefleet.rollout.webhooks`` sends it)."""

    def enqueue(self, event: str, payload: dict[str, Any], now: datetime) -> int:
        """Queue a notification for every webhook; returns for how many."""
        ...


class DriftUnitOfWork(AccessUnitOfWork, Protocol):
    """One transaction over the drift, registry, device, webhook and access tables."""

    @property
    def drift(self) -> DriftRepository: ...
    @property
    def versions(self) -> VersionRepository: ...
    @property
    def webhooks(self) -> WebhookQueue: ...
    def __enter__(self) -> Self: ...

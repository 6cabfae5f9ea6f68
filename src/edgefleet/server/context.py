"""Everything the routes need, built once per process from settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from sqlalchemy import Engine, event
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from edgefleet.access.service import AccessService
from edgefleet.config import Settings
from edgefleet.drift.service import DriftService
from edgefleet.fleet.checkin import CheckinService
from edgefleet.fleet.desired import choose_variant
from edgefleet.fleet.domain import DesiredModel, EventBatch, EventsAccepted, ReportedState
from edgefleet.fleet.ports import CheckinRow
from edgefleet.fleet.service import FleetService
from edgefleet.registry.artifacts import LocalArtifactStore
from edgefleet.registry.service import RegistryService
from edgefleet.rollout.service import RolloutService
from edgefleet.server.batching import Batcher
from edgefleet.signing.errors import KeysMissingError, RepositoryStateError
from edgefleet.signing.layout import artifact_path
from edgefleet.signing.publish import Publisher, open_repository
from edgefleet.signing.repository import TufRepository
from edgefleet.store.checkin import (
    CheckinCache,
    CheckinReader,
    CheckinRecorder,
    LoopCheckinRows,
    ReportWriter,
    prune_changes,
)
from edgefleet.store.database import describe_url, make_engine
from edgefleet.store.devices import to_view
from edgefleet.store.drift import SqlDriftUnitOfWork
from edgefleet.store.leader import Leadership
from edgefleet.store.migrate import ensure_schema
from edgefleet.store.rollouts import GateTelemetryCache
from edgefleet.store.telemetry import TelemetryWriter
from edgefleet.store.uow import SqlUnitOfWork

log = logging.getLogger("edgefleet.server")

#: Check-in changes kept in the log: a server whose cache is further behind starts over.
CHECKIN_CHANGES_KEPT = 100_000


@dataclass
class ServerContext:
    settings: Settings
    engine: Engine
    read_engine: Engine

    @classmethod
    def open(cls, settings: Settings) -> ServerContext:
        engine = make_engine(settings)
        ensure_schema(engine, auto_migrate=settings.auto_migrate)
        return cls(settings, engine, make_engine(settings, read_only=True))

    def close(self) -> None:
        if "checkin" in self.__dict__:
            self.checkin.close()
        self.engine.dispose()
        self.read_engine.dispose()

    @cached_property
    def sessions(self) -> sessionmaker:  # type: ignore[type-arg]
        return sessionmaker(self.engine, expire_on_commit=False)

    @cached_property
    def read_sessions(self) -> sessionmaker:  # type: ignore[type-arg]
        return sessionmaker(self.read_engine, expire_on_commit=False)

    @cached_property
    def gate_cache(self) -> GateTelemetryCache:
        return GateTelemetryCache()

    def read_uow(self) -> SqlUnitOfWork:
        """A transaction for reads only: no write lock on SQLite, autocommit on PostgreSQL."""
        return SqlUnitOfWork(self.read_sessions, describe_url(self.read_engine), self.gate_cache)

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.sessions, describe_url(self.engine), self.gate_cache)

    def drift_uow(self) -> SqlDriftUnitOfWork:
        """A transaction with the drift repository besides the others."""
        return SqlDriftUnitOfWork(self.sessions, describe_url(self.engine), self.gate_cache)

    def drift_read_uow(self) -> SqlDriftUnitOfWork:
        """``drift_uow`` for reads only (``read_uow``)."""
        return SqlDriftUnitOfWork(
            self.read_sessions, describe_url(self.read_engine), self.gate_cache
        )

    @cached_property
    def artifacts(self) -> LocalArtifactStore:
        return LocalArtifactStore(self.settings.artifacts_dir)

    @cached_property
    def registry(self) -> RegistryService:
        return RegistryService(self.uow, self.artifacts)

    @cached_property
    def access(self) -> AccessService:
        return AccessService(self.uow, self.read_uow)

    @cached_property
    def fleet(self) -> FleetService:
        return FleetService(
            self.uow,
            self.access,
            self.resolve_model,
            view=to_view,
            offline_after_intervals=self.settings.offline_after_intervals,
            read_uow_factory=self.read_uow,
        )

    @cached_property
    def leadership(self) -> Leadership:
        return Leadership(self.engine)

    @cached_property
    def rollouts(self) -> RolloutService:
        return RolloutService(
            self.uow,
            self.resolve_model,
            analysis_interval_s=self.settings.rollout_analysis_interval_s,
            membership_refresh_s=self.settings.rollout_membership_refresh_s,
            read_uow_factory=self.read_uow,
        )

    @cached_property
    def drift(self) -> DriftService:
        """Drift monitors, reports, looks and alarms. A report first writes the
        telemetry batched in memory; the server tells it how long each look took
        (``on_look``)."""
        return DriftService(
            self.drift_uow,
            read_uow_factory=self.drift_read_uow,
            grace=timedelta(seconds=self.settings.drift_look_grace_s),
            flush_telemetry=self.telemetry.flush,
        )

    @cached_property
    def checkin(self) -> CheckinReader:
        return CheckinReader(self.read_engine)

    @cached_property
    def checkin_cache(self) -> CheckinCache | None:
        """Check-in rows in memory for the event loop's 304s (SQLite with the change
        log's triggers, and a refresh interval set), else None: read every time.
        Made by the server's start-up, on the event loop's thread (its reads use that
        thread's own connection)."""
        refresh_s = self.settings.checkin_cache_refresh_s
        if refresh_s <= 0 or not self.checkin.change_log_kept():
            return None
        cache = CheckinCache(self.checkin, refresh_s)
        # This process's writes are seen at the next check-in, not refresh_s later.
        event.listen(self.engine, "checkin", lambda *_: cache.mark_stale())
        return cache

    @cached_property
    def checkins(self) -> CheckinService:
        """The device requests (``fleet/checkin.py``), for the event loop's thread.
        Made by the server's start-up, on that thread, after the check-in cache."""
        return CheckinService(
            LoopCheckinRows(self.checkin, self.checkin_cache),
            last_seen=self.recorder,
            telemetry=self.telemetry,
            reports=self.report_batches,
            events=self.event_batches,
            report_attributes=self._report_attributes,
        )

    async def _report_attributes(self, device_id: str, report: ReportedState) -> None:
        # A read-modify-write transaction: on a worker thread, off the event loop.
        await run_in_threadpool(self.fleet.report, device_id, report)

    def prune_checkin_changes(self) -> None:
        """Keep the change log bounded. SQLite's triggers fill it whether or not this
        server's cache reads it (``checkin_cache_refresh_s`` 0, or another server)."""
        if self.engine.dialect.name == "sqlite":
            prune_changes(self.engine, CHECKIN_CHANGES_KEPT)

    @cached_property
    def reports(self) -> ReportWriter:
        return ReportWriter(self.engine, self.settings.offline_after_intervals)

    @cached_property
    def report_batches(self) -> Batcher[tuple[CheckinRow, ReportedState, datetime], None]:
        """Reported states without attribute changes, many devices' per transaction."""

        def write(reports: Sequence[tuple[CheckinRow, ReportedState, datetime]]) -> list[None]:
            self.reports.write_many(reports)
            return [None] * len(reports)

        return Batcher(write)

    @cached_property
    def event_batches(self) -> Batcher[tuple[int, EventBatch], EventsAccepted]:
        """Devices' event batches, many devices' per transaction."""
        return Batcher(self.fleet.add_events_many)

    @cached_property
    def recorder(self) -> CheckinRecorder:
        return CheckinRecorder(self.engine, self.settings.offline_after_intervals)

    @cached_property
    def telemetry(self) -> TelemetryWriter:
        return TelemetryWriter(self.engine)

    def repository(self) -> TufRepository:
        """The TUF repository (re-read each time: keys may be rotated by the CLI)."""
        return open_repository(self.settings)

    def publisher(self) -> Publisher:
        return Publisher(self.repository(), self.artifacts)

    def resolve_model(self, name: str, version: str, hardware: str | None) -> DesiredModel:
        """The signed artifact of ``name`` ``version`` for a device with ``hardware``.

        Raises:
            VersionNotFoundError, NoVariantError, RepositoryStateError (not signed).
        """
        found = self.registry.get(name, version)
        variant = choose_variant(found, hardware)
        try:
            releases = self.publisher().releases(name)
        except KeysMissingError as exc:
            raise RepositoryStateError(
                "no TUF repository: run `edgefleet keys init` so versions can be signed"
            ) from exc
        if found.version not in releases:
            raise RepositoryStateError(
                f"{name} {found.version} is not signed yet, so no device could install it: "
                "run `edgefleet repo publish` where the targets key is",
                details={"model": name, "version": found.version},
            )
        return DesiredModel(
            name=name,
            version=found.version,
            variant=variant.name,
            target_path=artifact_path(name, found.version, variant.name, variant.filename),
            sha256=variant.sha256,
            size=variant.size,
            release=releases[found.version],
        )

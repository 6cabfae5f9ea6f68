"""A fleet's drift telemetry for tests: devices that send, per summary period, the
profile's feature bins and quantile summaries of rows drawn from the profile (shifted
where a test plants drift), written through the server's own telemetry writer (the
summaries to their own table, as the server files them).

Rows of a feature are drawn bucket by bucket from the reference profile's shares and
spread evenly inside their bucket (the outer buckets one unit past the outer edges), so
bins and summaries describe the same values. Each device has a persistent offset of its
own (devices differ, as real ones do), so the rows of a device are clustered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.config import Settings
from edgefleet.drift.service import DriftService
from edgefleet.drift.sketch import QuantileSummary
from edgefleet.fleet.telemetry import PeriodSummary, bucket_of
from edgefleet.registry.artifacts import LocalArtifactStore
from edgefleet.registry.domain import Stage
from edgefleet.registry.profile import ReferenceProfile, bin_counts
from edgefleet.store.bootstrap import registry_service
from edgefleet.store.database import describe_url, make_engine
from edgefleet.store.drift import SqlDriftUnitOfWork
from edgefleet.store.migrate import ensure_schema
from edgefleet.store.telemetry import TelemetryWriter

OPERATOR = Operator(key_id="k1", name="ops", role=Role.OPERATOR)
VIEWER = Operator(key_id="k2", name="looker", role=Role.VIEWER)
#: A Monday 00:00 UTC: windows of an hour start on the hour.
START = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
#: What a summary period holds (the rest of a sample is merged into its bucket).
SUMMARY_KEYS = ("feature_counts", "sketches", "sketch_rows")


def feature_values(
    profile: ReferenceProfile, rows: int, rng: np.random.Generator, shift: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """``rows`` values of every input feature of ``profile`` (shifted by ``shift``)."""
    values = {}
    for feature in (f for p in profile.inputs for f in p.features):
        summary = profile.reference_summary(feature.name)
        if summary is not None:  # the reference sample itself: bins and summary agree
            drawn = summary.quantiles(rng.random(rows))
            values[feature.name] = drawn + shift.get(feature.name, 0.0)
            continue
        counts = np.asarray(feature.counts, dtype=np.float64)
        edges = np.asarray(feature.edges, dtype=np.float64)
        lows = np.concatenate(([edges[0] - 1.0], edges))
        highs = np.concatenate((edges, [edges[-1] + 1.0]))
        bucket = rng.choice(len(counts), size=rows, p=counts / counts.sum())
        drawn = lows[bucket] + rng.random(rows) * (highs[bucket] - lows[bucket])
        values[feature.name] = drawn + shift.get(feature.name, 0.0)
    return values


@dataclass
class Fleet:
    """Devices of the digits model on a store, the drift service on a clock the test moves."""

    engine: Engine
    uow: Callable[[], SqlDriftUnitOfWork]
    profile: ReferenceProfile
    now: datetime = START
    devices: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))

    def service(self, **kwargs: object) -> DriftService:
        return DriftService(self.uow, clock=lambda: self.now, **kwargs)  # type: ignore[arg-type]

    def enroll(self, count: int, prefix: str = "cam", **attributes: object) -> list[str]:
        names = []
        with self.uow() as uow:
            for _ in range(count):
                name = f"{prefix}-{len(self.devices)}"
                row = uow.devices.create(
                    name,
                    attributes=dict(attributes),
                    group=None,
                    credential_id=f"cred-{len(self.devices)}",
                    credential_hash="x",
                    poll_interval_s=60,
                    now=self.now,
                )
                self.devices[name] = row.id
                # Devices differ a little and persistently (a camera's own exposure).
                self.offsets[name] = float(self.rng.normal(0.0, 0.05))
                names.append(name)
            uow.commit()
        return names

    def send_period(
        self,
        names: list[str],
        period_end: datetime,
        *,
        rows: int = 40,
        version: str = "1.0.0",
        shift: Mapping[str, float] | None = None,
        sketches: bool = True,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Each device sends the summary period ending at ``period_end`` (an hour),
        in the bucket its closing sample falls in (a few seconds later)."""
        writer = TelemetryWriter(self.engine)
        sent_at = period_end + timedelta(seconds=5)
        for name in names:
            offset = self.offsets[name]
            wanted = {k: v + offset for k, v in (shift or {}).items()}
            values = feature_values(self.profile, rows, self.rng, wanted)
            data: dict[str, object] = {
                "inferences": rows,
                "feature_counts": {
                    feature.name: list(bin_counts(values[feature.name], feature.edges))
                    for p in self.profile.inputs
                    for feature in p.features
                },
                "sketch_rows": rows,
                "period_start": (period_end - timedelta(hours=1)).timestamp(),
                "period_end": period_end.timestamp(),
            }
            if sketches:
                data["sketches"] = {
                    key: QuantileSummary.of(v).to_text() for key, v in values.items()
                }
            for key, value in (extra or {}).items():
                mine = data.get(key)
                # A mapping changes the entries it names (and adds new ones).
                data[key] = {**mine, **value} if isinstance(mine, dict) else value
            # The period's summary goes to its own table (as the server files it); the
            # bucket of its closing sample keeps the counters.
            summary = {k: data.pop(k) for k in SUMMARY_KEYS if k in data}
            start, end = float(data.pop("period_start")), float(data.pop("period_end"))
            pk = self.devices[name]
            writer.add(pk, {(bucket_of(sent_at), "digits", version): (data, 1)})
            writer.add_summaries(pk, [PeriodSummary("digits", version, start, end, summary)])
        writer.flush()

    def send_outputs(
        self, names: list[str], at: datetime, *, rows: int = 40, version: str = "1.0.0"
    ) -> None:
        """Each device's per-sample confidence and class histograms, in ``at``'s bucket."""
        writer = TelemetryWriter(self.engine)
        conf = np.asarray(self.profile.confidence_counts, dtype=np.float64)
        classes = np.asarray(self.profile.class_counts, dtype=np.float64)
        for name in names:
            data = {
                "confidence_counts": [
                    int(c) for c in self.rng.multinomial(rows, conf / conf.sum())
                ],
                "class_counts": [
                    int(c) for c in self.rng.multinomial(rows, classes / classes.sum())
                ],
            }
            writer.add(self.devices[name], {(bucket_of(at), "digits", version): (data, 1)})
        writer.flush()


@contextmanager
def digits_fleet(settings: Settings, bundle: Path, *, production: bool = True) -> Iterator[Fleet]:
    """A store of ``settings`` with digits 1.0.0 registered (in production)."""
    engine = make_engine(settings)
    try:
        ensure_schema(engine, auto_migrate=settings.auto_migrate)
        registry = registry_service(engine, LocalArtifactStore(settings.artifacts_dir))
        version = registry.register(bundle)
        if production:
            registry.promote("digits", "1.0.0", Stage.PRODUCTION.value, actor="test")
        sessions = sessionmaker(engine, expire_on_commit=False)
        where = describe_url(engine)
        assert version.reference_profile is not None
        yield Fleet(engine, lambda: SqlDriftUnitOfWork(sessions, where), version.reference_profile)
    finally:
        engine.dispose()

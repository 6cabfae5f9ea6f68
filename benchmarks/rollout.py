"""Benchmark: the rollout controller's cost per wave over a large fleet in the database.

Seeds a store (embedded SQLite file in a temp directory, or PostgreSQL with
``--database-url``) with ``--devices`` enrolled devices running digits 1.0.0 (4 regions,
3 hardware kinds, a time zone each, one earlier COMMITTED event and one telemetry
bucket on 1.0.0 each), creates a rollout of digits 1.1.0 to ``--target`` in waves of
1, 5, 25, 50 and 100 percent (no bake, delivery gates plus CPU and latency gates) and
calls ``RolloutService.tick`` until the rollout has succeeded. Between two ticks the
devices newly assigned "install" the update: one COMMITTED event for 1.1.0, their twin
columns (reported version, agent state, reported time) and one telemetry bucket on
1.1.0, written in bulk SQL and not counted.

Per wave it reports the devices assigned, the controller ticks, the seconds spent in
``tick`` (sum over the wave's ticks), the SQL statements the ticks sent (a
``before_cursor_execute`` listener; an executemany counts once, the rows it carried
are given separately) and the slowest tick. Seeding is timed apart and not part of
the result.

Usage::

    python benchmarks/rollout.py --devices 2000
    python benchmarks/rollout.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

On PostgreSQL the ``public`` schema of that database is dropped and recreated before
and after the run (as the test suite does), so point it at a scratch database.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import sqlalchemy
from sqlalchemy import Engine, Table, event, insert, select, update
from sqlalchemy.orm import sessionmaker

from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.config import Settings
from edgefleet.fleet.domain import DesiredModel, DesiredState, desired_etag
from edgefleet.fleet.telemetry import bucket_of
from edgefleet.fleet.versions import version_key
from edgefleet.rollout.controller import Kind
from edgefleet.rollout.policy import GateSpec, Metric, RolloutSpec, WaveSpec
from edgefleet.rollout.service import RolloutService
from edgefleet.store.database import describe_url, make_engine
from edgefleet.store.migrate import upgrade
from edgefleet.store.tables import DeviceEventRow, DeviceRow, RolloutDeviceRow, TelemetryRow
from edgefleet.store.uow import SqlUnitOfWork

MODEL = "digits"
OLD, NEW = "1.0.0", "1.1.0"
REGIONS = ("eu-west", "eu-central", "us-east", "ap-northeast")
ZONES = ("Europe/Dublin", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
HARDWARE = ("jetson-orin", "rpi5", "x86_64")
VARIANTS = {"jetson-orin": "fp16", "rpi5": "int8", "x86_64": "fp32"}
PERCENTS = (1, 5, 25, 50, 100)
CHUNK = 5000
FINAL = {Kind.SUCCEED, Kind.ABORT, Kind.PAUSE}
# The tables, for bulk Core inserts.
DEVICES = cast(Table, DeviceRow.__table__)
EVENTS = cast(Table, DeviceEventRow.__table__)
TELEMETRY = cast(Table, TelemetryRow.__table__)


# -- the store ---------------------------------------------------------------------------


def reset_postgres(url: str) -> None:
    """Drop and recreate the public schema (the test suite's ``_reset_postgres``)."""
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


class StatementCounter:
    """Counts statements sent to the driver while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.statements = 0
        self.rows = 0  # parameter sets, an executemany's rows each counting

    def __call__(
        self,
        _conn: Any,
        _cursor: Any,
        _statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        if self.active:
            self.statements += 1
            self.rows += len(parameters) if executemany else 1


def resolver(model: str, version: str, hardware: str | None) -> DesiredModel:
    """A fixed signed artifact per (version, hardware): no registry, no TUF."""
    variant = VARIANTS.get(hardware or "", "fp32")
    return DesiredModel(
        name=model,
        version=version,
        variant=variant,
        target_path=f"{model}/{version}/{variant}/model.onnx",
        sha256=hashlib.sha256(f"{model}{version}{variant}".encode()).hexdigest(),
        size=49_000_000,
        release=1 if version == OLD else 2,
    )


# -- seeding -----------------------------------------------------------------------------


def chunks(items: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def reported(version: str, now: datetime) -> dict[str, Any]:
    return {
        "agent_state": "COMMITTED",
        "active_slot": "a" if version == OLD else "b",
        "slots": [],
        "model": MODEL,
        "version": version,
        "firmware": "2.4.1",
        "attributes": {},
        "at": now.isoformat(),
    }


def seed_devices(engine: Engine, count: int, now: datetime) -> None:
    """``count`` enrolled devices running digits 1.0.0, each with one earlier event."""
    desired = {hw: DesiredState(model=resolver(MODEL, OLD, hw), rollout=None) for hw in HARDWARE}
    enrolled = now - timedelta(days=30)
    rows = []
    for i in range(count):
        hw = HARDWARE[i % 3]
        region = i % 4
        attributes = {
            "region": REGIONS[region],
            "hw": hw,
            "tz": ZONES[region],
            "site": f"site-{i % 97:02d}",
            "firmware": "2.4.1",
        }
        rows.append(
            {
                "device_id": f"dev-{i:06d}",
                "group_name": None,
                "hardware": hw,  # what store.devices.apply_identity derives
                "firmware": "2.4.1",
                "firmware_key": version_key("2.4.1"),
                "attributes": attributes,
                "credential_id": f"c{i:010d}",
                "credential_hash": hashlib.sha256(str(i).encode()).hexdigest(),
                "reenroll_allowed": False,
                "enrolled_at": enrolled,
                "desired": desired[hw].model_dump(mode="json"),
                "desired_etag": desired_etag(desired[hw]),
                "desired_updated_at": enrolled,
                "reported": reported(OLD, now),
                "reported_at": now - timedelta(minutes=5),
                "reported_model": MODEL,
                "reported_version": OLD,
                "reported_version_key": version_key(OLD),
                "agent_state": "COMMITTED",
                "poll_interval_s": 60,
                "last_seen_at": now - timedelta(seconds=30),
                "offline_deadline": now + timedelta(seconds=150),
                "last_event_seq": 1,
            }
        )
    with engine.begin() as connection:
        for part in chunks(rows):
            connection.execute(insert(DEVICES), part)
        pks = list(connection.scalars(select(DeviceRow.id).order_by(DeviceRow.id)))
        events = [event_row(pk, 1, OLD, enrolled + timedelta(minutes=1)) for pk in pks]
        for part in chunks(events):
            connection.execute(insert(EVENTS), part)


def event_row(pk: int, seq: int, version: str, at: datetime) -> dict[str, Any]:
    return {
        "device_pk": pk,
        "seq": seq,
        "kind": "transition",
        "from_state": "TRIAL",
        "to_state": "COMMITTED",
        "reason": "trial_passed",
        "model": MODEL,
        "version": version,
        "details": {},
        "at": at,
        "received_at": at,
    }


def telemetry_row(rng: random.Random, pk: int, version: str, bucket: datetime) -> dict[str, Any]:
    """One 5-minute bucket of five samples, in ``fleet.telemetry.merge`` form."""
    n = 5
    cpu = [rng.gauss(35.0, 5.0) for _ in range(n)]
    ram = [rng.gauss(410.0, 20.0) for _ in range(n)]
    temp = [rng.gauss(52.0, 3.0) for _ in range(n)]
    inferences = rng.randint(2500, 3500)
    peak = rng.randint(24, 28)  # latency bucket of ~1 ms
    latency = [0] * (peak + 4)
    for offset, share in ((-2, 0.1), (-1, 0.25), (0, 0.4), (1, 0.2), (2, 0.05)):
        latency[peak + offset] = int(inferences * share)
    confidence = [0] * 17 + [inferences // 10, inferences // 5, inferences - 3 * inferences // 10]
    classes = [inferences // 10] * 10
    return {
        "device_pk": pk,
        "bucket": bucket,
        "model": MODEL,
        "version": version,
        "samples": n,
        "data": {
            "health_sum": {
                "cpu_percent": sum(cpu),
                "ram_used_mb": sum(ram),
                "temperature_c": sum(temp),
            },
            "health_n": {"cpu_percent": n, "ram_used_mb": n, "temperature_c": n},
            "health_max": {
                "cpu_percent": max(cpu),
                "ram_used_mb": max(ram),
                "temperature_c": max(temp),
            },
            "inferences": inferences,
            "errors": {"timeout": rng.randint(0, 2)},
            "latency_counts": latency,
            "confidence_counts": confidence,
            "class_counts": classes,
        },
    }


def seed_telemetry(
    engine: Engine, rng: random.Random, version: str, pks: list[int], bucket: datetime
) -> None:
    with engine.begin() as connection:
        for part in chunks(pks):
            connection.execute(
                insert(TELEMETRY),
                [telemetry_row(rng, pk, version, bucket) for pk in part],
            )


# -- the simulated devices -----------------------------------------------------------------


class Fleet:
    """Devices that install whatever they are assigned before the next tick."""

    def __init__(self, engine: Engine, rollout_id: str, rng: random.Random) -> None:
        self.engine = engine
        self.rollout_id = rollout_id
        self.rng = rng
        self.installed: set[int] = set()

    def install_new(self) -> int:
        with self.engine.connect() as connection:
            assigned = connection.scalars(
                select(RolloutDeviceRow.device_pk).where(
                    RolloutDeviceRow.rollout_id == self.rollout_id,
                    RolloutDeviceRow.status == "assigned",
                )
            )
            pks = sorted(set(assigned) - self.installed)
        if not pks:
            return 0
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            for part in chunks(pks):
                connection.execute(insert(EVENTS), [event_row(pk, 2, NEW, now) for pk in part])
                connection.execute(
                    update(DeviceRow)
                    .where(DeviceRow.id.in_(part))
                    .values(
                        reported=reported(NEW, now),
                        reported_at=now,
                        reported_version=NEW,
                        reported_version_key=version_key(NEW),
                        agent_state="COMMITTED",
                        last_seen_at=now,
                        last_event_seq=2,
                    )
                )
        seed_telemetry(self.engine, self.rng, NEW, pks, bucket_of(now))
        self.installed.update(pks)
        return len(pks)


# -- the run -------------------------------------------------------------------------------


@dataclass
class WaveResult:
    wave: int
    percent: float
    assigned: int = 0
    ticks: int = 0
    seconds: float = 0.0
    statements: int = 0
    rows: int = 0
    slowest_s: float = 0.0
    slowest_kind: str = ""
    decisions: list[str] = field(default_factory=list)


def spec_for(target: str) -> RolloutSpec:
    return RolloutSpec(
        model=MODEL,
        version=NEW,
        target=target,
        waves=[WaveSpec(percent=p, bake_s=0) for p in PERCENTS],
        gates=[
            GateSpec(metric=Metric.DOWNLOAD_FAILURES, max=0.1, min_samples=10),
            GateSpec(metric=Metric.ROLLBACKS, max=0.05, min_samples=10),
            GateSpec(metric=Metric.CPU, max_ratio=1.3, min_samples=5),
            GateSpec(metric=Metric.LATENCY_P95, max_ratio=1.3, min_samples=5),
        ],
    )


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    url = args.database_url
    if url:
        reset_postgres(url)
    settings = Settings(home=home, database_url_override=url)
    engine = make_engine(settings)
    read_engine = make_engine(settings, read_only=True)
    try:
        return measure(args, engine, read_engine)
    finally:
        engine.dispose()
        read_engine.dispose()
        if url:
            reset_postgres(url)


def measure(args: argparse.Namespace, engine: Engine, read_engine: Engine) -> dict[str, Any]:
    upgrade(engine)
    counter = StatementCounter()
    event.listen(engine, "before_cursor_execute", counter)
    event.listen(read_engine, "before_cursor_execute", counter)
    sessions = sessionmaker(engine, expire_on_commit=False)
    read_sessions = sessionmaker(read_engine, expire_on_commit=False)
    where = describe_url(engine)

    def uow() -> SqlUnitOfWork:
        return SqlUnitOfWork(sessions, where)

    def read_uow() -> SqlUnitOfWork:
        return SqlUnitOfWork(read_sessions, where)

    # As the server wires it: reads without the write lock (on SQLite the writer's
    # transactions begin with it). Analysis at every tick: the worst case (the server
    # analyses every rollout_analysis_interval_s, 30 s by default).
    service = RolloutService(uow, resolver, analysis_interval_s=0, read_uow_factory=read_uow)
    operator = Operator(key_id="local", name="bench", role=Role.ADMIN)
    rng = random.Random(7)

    started = time.perf_counter()
    seed_devices(engine, args.devices, datetime.now(UTC))
    seed_devices_s = time.perf_counter() - started

    counter.active = True
    started = time.perf_counter()
    view = service.create(operator, spec_for(args.target))
    create_s, create_statements = time.perf_counter() - started, counter.statements
    counter.active = False
    rollout_id = view["id"]

    # The baseline's telemetry, in the rollout's first bucket so it is in the window.
    started = time.perf_counter()
    with engine.connect() as connection:
        pks = list(connection.scalars(select(DeviceRow.id).order_by(DeviceRow.id)))
    seed_telemetry(engine, rng, OLD, pks, bucket_of(view["started_at"]))
    seed_s = seed_devices_s + time.perf_counter() - started

    fleet = Fleet(engine, rollout_id, rng)
    waves = [WaveResult(i, p) for i, p in enumerate(PERCENTS)]
    profile = cProfile.Profile() if args.profile else None
    wave, waits, simulate_s = 0, 0, 0.0
    while True:
        before = (counter.statements, counter.rows)
        counter.active = True
        if profile:
            profile.enable()
        started = time.perf_counter()
        decision = service.tick(rollout_id)
        elapsed = time.perf_counter() - started
        if profile:
            profile.disable()
        counter.active = False
        result = waves[wave]
        result.ticks += 1
        result.seconds += elapsed
        result.statements += counter.statements - before[0]
        result.rows += counter.rows - before[1]
        result.decisions.append(decision.kind.value)
        if elapsed > result.slowest_s:
            result.slowest_s, result.slowest_kind = elapsed, decision.kind.value
        if decision.kind is Kind.ASSIGN:
            result.assigned += decision.assign
        if decision.kind in FINAL:
            break
        if decision.kind is Kind.ADVANCE:
            wave += 1
        waits = waits + 1 if decision.kind is Kind.WAIT else 0
        if waits > 20:
            raise SystemExit(f"the rollout is stuck: {json.dumps(service.show(rollout_id))}")
        started = time.perf_counter()
        fleet.install_new()
        simulate_s += time.perf_counter() - started
    final = service.show(rollout_id)
    if final["state"] != "succeeded":
        raise SystemExit(f"the rollout ended {final['state']}: {final['reason']}")
    return {
        "devices": args.devices,
        "target": args.target,
        "seed_s": seed_s,
        "simulate_s": simulate_s,
        "create_s": create_s,
        "create_statements": create_statements,
        "waves": [asdict(w) for w in waves],
        "totals": {
            "assigned": sum(w.assigned for w in waves),
            "ticks": sum(w.ticks for w in waves),
            "seconds": sum(w.seconds for w in waves),
            "statements": sum(w.statements for w in waves),
            "rows": sum(w.rows for w in waves),
            "slowest_s": max(w.slowest_s for w in waves),
        },
        "final": {k: final[k] for k in ("state", "reason", "devices")},
        "profile": profile_text(profile) if profile else None,
    }


def profile_text(profile: cProfile.Profile, top: int = 30) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def server_version(url: str | None) -> str:
    if not url:
        return f"SQLite {sqlite3.sqlite_version}"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            text = connection.exec_driver_sql("SHOW server_version").scalar_one()
    finally:
        engine.dispose()
    return f"PostgreSQL {str(text).split()[0]}"


def print_table(result: dict[str, Any], backend: str) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}, {backend}")
    print(
        f"{result['devices']} devices, target {result['target']!r}; seeding "
        f"{result['seed_s']:.1f} s, simulated installs {result['simulate_s']:.1f} s (not counted); "
        f"create {result['create_s']:.2f} s, {result['create_statements']} statements"
    )
    print()
    print(
        "| wave | devices assigned | ticks (decisions) | controller s | statements "
        "(executemany rows) | slowest tick |"
    )
    print("|---|---|---|---|---|---|")
    for w in result["waves"]:
        print(
            f"| {w['wave'] + 1} ({w['percent']:g}%) | {w['assigned']} | {w['ticks']} "
            f"({', '.join(w['decisions'])}) | {w['seconds']:.3f} | {w['statements']} "
            f"({w['rows']}) | {w['slowest_s']:.3f} s ({w['slowest_kind']}) |"
        )
    t = result["totals"]
    print(
        f"| total | {t['assigned']} | {t['ticks']} | {t['seconds']:.3f} | {t['statements']} "
        f"({t['rows']}) | {t['slowest_s']:.3f} s |"
    )
    if result["profile"]:
        print()
        print(result["profile"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--target", default="region:*", help="targeting query of the rollout")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the ticks, print the top functions"
    )
    args = parser.parse_args()
    backend = server_version(args.database_url)
    with tempfile.TemporaryDirectory(dir=os.environ.get("EDGEFLEET_BENCH_DIR")) as tmp:
        result = run(args, Path(tmp))
    print_table(result, backend)
    if args.json:
        print(json.dumps({"backend": backend, **result, "profile": None}))


if __name__ == "__main__":
    main()

"""Running a scenario: models measured, a server, a virtual fleet, the releases, the
result.

``run_scenario`` builds (or reuses) the example bundles the scenario names, measures
each artifact's behaviour in ONNX Runtime on the digits held-out data drawn with the
scenario's class mix, starts an embedded server unless one is given, registers the
bundles, enrolls the fleet, installs the baseline everywhere, then plays each release:
creates its rollout, watches it (gate verdicts, decisions, device statuses) until it
ends and the devices settle, and checks the scenario's expectations. Every time in the
result and in the progress lines is seconds since the run started (``started``)::

    result = run_scenario(load_scenario("cpu-spike"), work_dir=Path("sim-work"))
    result.passed, result.exposed_share, result.time_to_detect_s
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from edgefleet.agent.statemachine import State
from edgefleet.errors import EdgefleetError
from edgefleet.looplag import watch_loop_lag
from edgefleet.progress import NO_PROGRESS, Progress
from edgefleet.registry.profile import ReferenceProfile
from edgefleet.signing.errors import TargetNotFoundError
from edgefleet.signing.layout import profile_path
from edgefleet.sim.behaviour import BehaviourProfile, measure_together
from edgefleet.sim.delivery import SharedDelivery
from edgefleet.sim.device import (
    CHUNK_BYTES,
    Connections,
    DeviceSpec,
    VirtualDevice,
    World,
    api_pool_size,
)
from edgefleet.sim.drift import (
    DriftInputError,
    DriftInputs,
    DriftWorld,
    HeldOut,
    OnnxPredictor,
    traffic_shares,
)
from edgefleet.sim.expectations import (
    DriftFacts,
    ReleaseFacts,
    RunFacts,
    alarm_statistics,
    alarmed_at,
    run_checks,
)
from edgefleet.sim.network import PROFILES as NETWORK_PROFILES
from edgefleet.sim.network import NetworkProfile
from edgefleet.sim.result import (
    DriftChange,
    DriftResult,
    ReleaseResult,
    RunResult,
    TimelinePoint,
    decision_wave,
)
from edgefleet.sim.scenario import Release, Scenario, fleet_query
from edgefleet.sim.server import EmbeddedServer, OperatorClient, SimServerError
from edgefleet.sim.watch import RolloutWatch

log = logging.getLogger("edgefleet.sim")

#: The baseline install's trial: quick, it is the version every device starts from.
BASELINE_TRIAL = {
    "min_inferences": 50,
    "min_seconds": 1.0,
    "max_latency_ratio": 100.0,
    "max_cpu_ratio": 100.0,
}
SAMPLE_EVERY_S = 1.0
#: Devices ``_sample`` walks in one turn of the event loop.
SAMPLE_SLICE = 1000
#: The width of the result's check-in latency windows (s).
CHECKIN_WINDOW_S = 10.0
WATCH_EVERY_S = 0.5
#: How often the run reads the drift alarms while it watches for them.
DRIFT_WATCH_EVERY_S = 1.0


class SimulationError(EdgefleetError):
    """The simulation could not run to the end (not: the scenario's checks failed)."""

    code = "simulation_error"


Say = Callable[[str], None]
KeepRunning = Callable[[RunResult, str, str], Awaitable[None]]


def _quiet(_: str) -> None:
    return None


@dataclass
class RunTarget:
    """Where to run: an embedded server (default) or a running one."""

    server: str | None = None
    token: str | None = None
    database_url: str | None = None


def run_scenario(
    scenario: Scenario,
    *,
    work_dir: Path,
    bundle_cache: Path | None = None,
    target: RunTarget | None = None,
    progress: Progress = NO_PROGRESS,
    say: Say = _quiet,
    keep_running: KeepRunning | None = None,
    started: float | None = None,
) -> RunResult:
    """Play ``scenario`` and return what happened.

    Example bundles are built into ``bundle_cache`` (default: under ``work_dir``) unless
    they are there already. ``keep_running(result, url, token)``, when given, is
    awaited after the releases with the server and the fleet still up; the run ends
    when it returns. ``started`` (a ``time.monotonic()`` value, default: now) is t = 0
    of every time in the result, so a caller's own progress lines can share the clock.

    Raises:
        SimulationError, SimServerError, ScenarioError, MissingDependencyError.
    """
    origin = time.monotonic() if started is None else started
    target = target or RunTarget()
    cache = bundle_cache or work_dir / "bundles"
    versions = ", ".join(f"{scenario.model} {v}" for v in scenario.versions)
    say(f"preparing the example models {versions} (built once, then kept in {cache})")
    bundles = _bundles(scenario, cache, progress)
    say(f"measuring {len(bundles)} model versions in ONNX Runtime (what the devices will run)")
    measured = progress.task("measuring the models", total=1)
    models = _measure(scenario, bundles)
    measured(1)
    if target.server and scenario.drift_monitors:
        raise SimulationError(
            f"scenario {scenario.name} applies drift monitors, which replace the server's "
            f"own monitor of {scenario.model}: run it against the embedded server (no --server)"
        )
    drift = _drift_world(scenario, bundles, say) if scenario.drifting else None
    if target.server:
        if not target.token:
            raise SimulationError("--server needs an operator API key (--token)")
        run = _Run(
            scenario, work_dir, target.server, target.token, bundles, models, say, origin, drift
        )
        return _run_loop(run.play(progress, keep_running))
    server = EmbeddedServer(work_dir / "server", scenario.server, database_url=target.database_url)
    say("starting an embedded server (SQLite, local files)")
    serving = progress.task("starting the server", total=1)
    with server:
        serving(1)
        say(f"server on {server.url}")
        run = _Run(
            scenario, work_dir, server.url, server.token, bundles, models, say, origin, drift
        )
        return _run_loop(run.play(progress, keep_running))


def _run_loop(main: Coroutine[Any, Any, RunResult]) -> RunResult:
    """Run the fleet on uvloop where it is installed (it is with the sim extra): the
    fleet's one event loop is what limits the simulator at ten thousand devices, and
    uvloop's costs less CPU per request than asyncio's own (benchmarks/fleet.py reports
    the simulator's CPU share)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
        return loop.run(main)


def _bundles(scenario: Scenario, cache: Path, progress: Progress) -> dict[str, Path]:
    """The example bundles of the scenario's versions and of their ancestors (the
    registry accepts a version only after its parent), oldest first."""
    from packaging.version import Version

    from edgefleet.examples.digits import ensure_examples

    versions = list(scenario.versions)
    while True:
        bundles = ensure_examples(cache, versions, seed=0, progress=progress)
        parents = {
            yaml.safe_load((bundle / "edgefleet.yaml").read_text()).get("parent")
            for bundle in bundles.values()
        } - {None, *versions}
        if not parents:
            return dict(sorted(bundles.items(), key=lambda item: Version(item[0])))
        versions.extend(sorted(parents))


def traffic_inputs(scenario: Scenario, count: int = 1000) -> np.ndarray:
    """Held-out digits drawn with the scenario's class mix (the devices' traffic)."""
    from edgefleet.examples.digits import load_split

    _, x_test, _, y_test = load_split(0)
    try:
        shares = traffic_shares(y_test, scenario.traffic.class_shares)
    except DriftInputError as exc:
        raise SimulationError(exc.message) from exc
    rng = np.random.default_rng(scenario.seed)
    picked = []
    for c, share in enumerate(shares):
        pool = np.flatnonzero(y_test == c)
        picked.append(rng.choice(pool, size=round(share * count), replace=True))
    index = rng.permutation(np.concatenate(picked))
    return np.asarray(x_test[index])


def _model_paths(bundles: dict[str, Path]) -> dict[tuple[str, str], Path]:
    """Every variant's model file, by (version, variant)."""
    paths: dict[tuple[str, str], Path] = {}
    for version, bundle in bundles.items():
        manifest = yaml.safe_load((bundle / "edgefleet.yaml").read_text())
        for variant in manifest["variants"]:
            paths[(version, variant["name"])] = bundle / variant["file"]
    return paths


def _measure(
    scenario: Scenario, bundles: dict[str, Path]
) -> dict[tuple[str, str], BehaviourProfile]:
    """Every variant of every version, measured together: the gates compare them."""
    inputs = {"X": traffic_inputs(scenario)}
    behaviours = {r.version: r.behaviour for r in scenario.releases}
    paths = _model_paths(bundles)
    profiles = measure_together(paths, inputs)
    for (version, name), profile in profiles.items():
        behaviour = behaviours.get(version)
        if behaviour is not None and behaviour.error_rate is not None:
            profiles[(version, name)] = profile.scaled(error_rate=behaviour.error_rate)
    return profiles


def _drift_world(scenario: Scenario, bundles: dict[str, Path], say: Say) -> DriftWorld:
    """The pools of every drift's ladder, made before the run: the held-out digits
    transformed at each level and every variant the devices may serve run on them."""
    paths = {
        key: path for key, path in _model_paths(bundles).items() if key[0] in scenario.versions
    }
    try:
        held = HeldOut.digits(scenario.traffic.class_shares)
        inputs = DriftInputs(scenario.drift, held, OnnxPredictor(paths), seed=scenario.seed)
    except DriftInputError as exc:
        raise SimulationError(exc.message) from exc
    started = time.process_time()
    made = inputs.prepare(sorted(paths))
    took = time.process_time() - started
    if scenario.drift:
        say(
            f"drift: {made} pools of held-out inputs, each run through its model, in "
            f"{took:.1f} s of CPU"
        )
    return DriftWorld(
        inputs, {}, scenario.fleet.drift_period_s, prepare_s=round(took, 3), pools=made
    )


def make_fleet(scenario: Scenario, run_id: str) -> list[DeviceSpec]:
    """The scenario's devices: kinds, regions, sites and networks drawn by weight,
    deterministically for the scenario's seed; ids and the ``sim_run`` attribute name
    the run."""
    rng = random.Random(scenario.seed)
    fleet = scenario.fleet
    networks = {
        name: _network(NETWORK_PROFILES[name], fleet.network_overrides.get(name))
        for name in fleet.networks
    }
    low, high = fleet.checkin_interval_s
    boot_within = scenario.devices / fleet.enroll_per_s
    devices = []
    for i in range(scenario.devices):
        kind = rng.choices(fleet.kinds, weights=[k.weight for k in fleet.kinds])[0]
        region = rng.choices(list(fleet.regions), weights=list(fleet.regions.values()))[0]
        network = rng.choices(list(networks.values()), weights=list(fleet.networks.values()))[0]
        devices.append(
            DeviceSpec(
                device_id=f"sim-{run_id}-{i:05d}",
                kind=kind,
                region=region,
                site=f"{region}-site-{rng.randrange(fleet.sites_per_region)}",
                network=network,
                checkin_interval_s=rng.uniform(low, high),
                seed=scenario.seed * 1_000_003 + i,
                run=run_id,
                boot_within_s=boot_within,
            )
        )
    return devices


def _network(profile: NetworkProfile, override: Any) -> NetworkProfile:
    if override is None:
        return profile
    return replace(profile, **override.model_dump(exclude_none=True))


class _Run:
    def __init__(
        self,
        scenario: Scenario,
        work_dir: Path,
        url: str,
        token: str,
        bundles: dict[str, Path],
        models: dict[tuple[str, str], BehaviourProfile],
        say: Say,
        origin: float,
        drift: DriftWorld | None = None,
    ) -> None:
        self.scenario = scenario
        self.work_dir = work_dir
        self.url = url
        self.token = token
        self.bundles = bundles
        self.models = models
        self.say = say
        self.timeline: list[TimelinePoint] = []
        self.watches: list[RolloutWatch] = []
        self.current: RolloutWatch | None = None
        self.origin = origin
        # The server's decision log is stamped by its clock: t = 0 on that clock.
        self.wall_start = datetime.now(UTC) - timedelta(seconds=time.monotonic() - origin)
        self.run_id = "r" + secrets.token_hex(3)  # a letter first: never read as a number
        self.fleet = fleet_query(self.run_id)
        # Made when the run plays, inside its event loop.
        self._world: World | None = None
        self.devices: list[VirtualDevice] = []
        self.drift = drift
        self.drift_result = DriftResult() if drift is not None else None

    @property
    def world(self) -> World:
        """What the devices of the playing run share."""
        if self._world is None:
            raise RuntimeError("the run has not started playing")
        return self._world

    async def play(
        self,
        progress: Progress,
        keep_running: KeepRunning | None,
    ) -> RunResult:
        scenario = self.scenario
        connections = Connections(self.url, api_limit=api_pool_size(scenario.devices))
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=30.0)) as http:
            operator = OperatorClient(self.url, self.token, http)
            for version, bundle in self.bundles.items():
                self.say(f"registering and signing {scenario.model} {version}")
                await operator.upload(bundle)
            # Before any device starts: a monitor the server refuses ends the run at once.
            await self._apply_monitors(operator)
            delivery = SharedDelivery(self.work_dir / "delivery", self.token)
            world = World(
                base_url=self.url,
                connections=connections,
                delivery=delivery,
                enrollment_token=await operator.enrollment_token(scenario.devices),
                models=self.models,
                behaviours={r.version: r.behaviour for r in scenario.releases},
                telemetry_interval_s=scenario.fleet.telemetry_interval_s,
                requests_per_s=scenario.fleet.requests_per_s,
                max_backoff_s=scenario.fleet.max_backoff_s,
                started=self.origin,
                drift=self.drift,
            )
            self._world = world
            self.devices = [
                VirtualDevice(spec, world) for spec in make_fleet(scenario, self.run_id)
            ]
            tasks = [asyncio.create_task(d.run()) for d in self.devices]
            sampler = asyncio.create_task(self._sample())
            lag = asyncio.create_task(watch_loop_lag(self._lagged))
            deadline = time.monotonic() + scenario.time_limit_s
            try:
                await self._enroll(progress, deadline)
                if self.drift is not None:
                    await self._fetch_profiles(delivery, http)
                # The fleet's long-lived objects are made: keep the collector's full
                # passes, which would walk all of them, from pausing the fleet's loop.
                gc.freeze()
                await self._baseline(operator, progress, deadline)
                if self.drift is not None:
                    self._start_drift()
                for release in scenario.releases:
                    await self._release(operator, release, progress, deadline)
                if scenario.drift_monitors:
                    await self._watch_drift(operator, progress, deadline)
                result = self._result(world)
                if keep_running is not None:
                    await keep_running(result, self.url, self.token)
            finally:
                world.stopping.set()
                for task in tasks:
                    task.cancel()
                sampler.cancel()
                lag.cancel()
                await asyncio.gather(*tasks, sampler, lag, return_exceptions=True)
                gc.unfreeze()
                await connections.aclose()
                delivery.close()
        return result

    # -- phases ---------------------------------------------------------------------

    async def _until(
        self,
        what: str,
        done: Callable[[], int],
        total: int,
        progress: Progress,
        deadline: float,
        limit_s: float | None = None,
    ) -> bool:
        """Wait until ``done()`` reaches ``total``, advancing a progress bar; whether it
        got there before the deadline."""
        advance = progress.task(what, total=total)
        shown = 0
        end = deadline if limit_s is None else min(deadline, time.monotonic() + limit_s)
        while time.monotonic() < end:
            now = done()
            if now > shown:
                advance(now - shown)
                shown = now
            if now >= total:
                return True
            if self.world.counters.errors:
                raise SimulationError(
                    f"virtual devices failed: {'; '.join(self.world.counters.errors[:3])}"
                )
            await asyncio.sleep(0.2)
        return False

    async def _enroll(self, progress: Progress, deadline: float) -> None:
        total = len(self.devices)
        self.say(
            f"enrolling {total} virtual devices (ids sim-{self.run_id}-00000 on, each with "
            f"the attribute sim_run={self.run_id})"
        )
        if not await self._until(
            "enrolling", lambda: sum(d.enrolled for d in self.devices), total, progress, deadline
        ):
            raise SimulationError("the fleet did not finish enrolling within the time limit")

    async def _baseline(
        self, operator: OperatorClient, progress: Progress, deadline: float
    ) -> None:
        scenario = self.scenario
        version = scenario.baseline
        self.say(f"installing {scenario.model} {version} on every device")
        await operator.set_desired(self.fleet, scenario.model, version, BASELINE_TRIAL)

        def on_it() -> int:
            return sum(
                d.serving == version and d.state.state is State.COMMITTED for d in self.devices
            )

        if not await self._until(
            f"installing {version}", on_it, len(self.devices), progress, deadline
        ):
            raise SimulationError(
                f"only {on_it()} of {len(self.devices)} devices committed the baseline {version}"
            )

    async def _release(
        self, operator: OperatorClient, release: Release, progress: Progress, deadline: float
    ) -> None:
        scenario = self.scenario
        body = release.rollout.body(scenario.model, release.version, self.fleet)
        created = await operator.create_rollout(body)
        watch = RolloutWatch(release, created["id"], self.world.now())
        self.watches.append(watch)
        self.current = watch
        self.say(
            f"rollout {created['id']}: {scenario.model} {release.version} to {body['target']}"
            + (self._target_note(body["target"]) if len(self.watches) == 1 else "")
        )
        if scenario.offline is not None:
            self._take_offline(watch.started_t)
        advance = progress.task(f"rollout {release.version}", total=len(self.devices))
        shown = 0
        while time.monotonic() < deadline:
            view = await operator.rollout(watch.rollout_id)
            await self._observe(operator, watch, view)
            finished = sum(
                n for s, n in view["devices"].items() if s not in ("assigned", "downloading")
            ) - view["devices"].get("trial", 0)
            if finished > shown:
                advance(finished - shown)
                shown = finished
            if watch.over:
                break
            await asyncio.sleep(WATCH_EVERY_S)
        else:
            raise SimulationError(f"rollout {watch.rollout_id} did not end within the time limit")
        watch.ended_t = self.world.now()
        self.say(f"rollout {watch.rollout_id} {view['state']} ({view['reason'] or 'done'})")
        await self._settle(watch, deadline)
        await self._observe(operator, watch, await operator.rollout(watch.rollout_id))
        self.current = None

    # -- drift ------------------------------------------------------------------------

    async def _apply_monitors(self, operator: OperatorClient) -> None:
        """The scenario's drift monitors, applied through the API (which validates them:
        a refusal names the monitor and the field)."""
        result = self.drift_result
        for index, monitor in enumerate(self.scenario.drift_monitors):
            assert result is not None
            window = monitor.get("window", "its default")
            self.say(f"applying a drift monitor of {monitor['model']} (window {window})")
            try:
                applied = await operator.call(
                    "PUT", f"/api/v1/drift/monitors/{monitor['model']}", json=monitor
                )
            except SimServerError as exc:
                raise SimulationError(
                    f"drift_monitors.{index} of scenario {self.scenario.name}: {exc.message}"
                ) from exc
            result.monitors.append(applied)

    async def _fetch_profiles(self, delivery: SharedDelivery, http: httpx.AsyncClient) -> None:
        """Before any device serves: the versions' reference profiles as a device gets
        them (a signed TUF target, its bytes checked against the signed length and hash),
        for the devices' drift summaries."""
        drift, scenario = self.drift, self.scenario
        assert drift is not None
        for version in scenario.versions:
            drift.profiles[version] = await fetch_profile(
                delivery, http, self.token, scenario.model, version
            )

    def _start_drift(self) -> None:
        """Every device serves the baseline: the drift clock starts (``start_s``)."""
        drift, result = self.drift, self.drift_result
        assert drift is not None and result is not None
        drift.clock_t = result.clock_t = round(self.world.now(), 3)
        fleet = [(d.spec.attributes, d.spec.device_id) for d in self.devices]
        members = drift.inputs.members(fleet)
        for spec, count in zip(self.scenario.drift, members, strict=True):
            start = drift.clock_t + spec.start_s
            result.changes.append(
                DriftChange(
                    transform=spec.transform,
                    intensity=spec.intensity,
                    cohort=spec.cohort,
                    devices=count,
                    started_t=round(start, 3),
                    full_t=round(start + spec.ramp_s, 3),
                )
            )
            self.say(
                f"drift: {spec.transform} to {spec.intensity:g} on {count} devices "
                f"({spec.cohort or 'every device'}) from t={start:.0f}"
                + (f" over {spec.ramp_s:.0f} s" if spec.ramp_s else ", at once")
            )

    async def _watch_drift(
        self, operator: OperatorClient, progress: Progress, deadline: float
    ) -> None:
        """Read the drift alarms until the scenario's ``drift_watch_s`` is over on the
        drift clock, or every alarm it expects has opened."""
        drift, result, scenario = self.drift, self.drift_result, self.scenario
        assert drift is not None and result is not None and drift.clock_t is not None
        end_t = drift.clock_t + scenario.drift_watch_s
        expect = scenario.drift_expect
        wanted = list(expect.alarm_on or ()) if expect is not None else []
        self.say(f"watching for drift alarms until t={end_t:.0f}")
        advance = progress.task("watching for drift", total=round(scenario.drift_watch_s))
        shown = 0
        while time.monotonic() < deadline:
            await self._read_alarms(operator)
            now = self.world.now()
            elapsed = min(round(now - drift.clock_t), round(scenario.drift_watch_s))
            if elapsed > shown:
                advance(elapsed - shown)
                shown = elapsed
            facts = self._drift_facts()
            if (
                wanted
                and facts is not None
                and all(
                    alarmed_at(facts, entry.segment, entry.features) is not None for entry in wanted
                )
            ):
                self.say("every expected drift alarm has opened")
                break
            if now >= end_t:
                break
            await asyncio.sleep(DRIFT_WATCH_EVERY_S)
        result.status = await operator.call(
            "GET", "/api/v1/drift/status", params={"model": scenario.model}
        )

    async def _read_alarms(self, operator: OperatorClient) -> None:
        """The run's model's drift alarms, each with its times on the run's clock."""
        result = self.drift_result
        assert result is not None
        known = {str(a.get("id")): a for a in result.alarms}
        alarms = await operator.call(
            "GET", "/api/v1/drift/alarms", params={"model": self.scenario.model}
        )
        for alarm in alarms:
            alarm["opened_t"] = self._at(alarm["opened_at"])
            if alarm.get("resolved_at"):
                alarm["resolved_t"] = self._at(alarm["resolved_at"])
            if str(alarm.get("id")) not in known:
                self.say(
                    f"  drift alarm: {alarm.get('segment')} {alarm.get('feature')} "
                    f"({', '.join(name for name, _ in alarm_statistics(alarm))})"
                )
            known[str(alarm.get("id"))] = alarm
        result.alarms = sorted(known.values(), key=lambda a: float(a["opened_t"]))

    def _drift_facts(self) -> DriftFacts | None:
        expect, result = self.scenario.drift_expect, self.drift_result
        if expect is None or result is None:
            return None
        starts = [change.started_t for change in result.changes]
        return DriftFacts(expect, result.alarms, min(starts) if starts else None)

    def _target_note(self, target: str) -> str:
        """Where the run's targeting query first shows: what it selects."""
        own = f"this run's {len(self.devices)} devices, the ones with sim_run={self.run_id}"
        if target == self.fleet:
            return f" ({own})"
        return f" ({self.fleet}: {own}; the rest is the scenario's own target)"

    def _take_offline(self, since: float) -> None:
        fault = self.scenario.offline
        assert fault is not None
        rng = random.Random(self.scenario.seed + 17)
        chosen = rng.sample(self.devices, max(1, round(fault.share * len(self.devices))))
        start = since + fault.start_s
        for device in chosen:
            device.offline = (start, start + fault.duration_s)
        self.say(
            f"{len(chosen)} devices go offline {fault.start_s:.0f} s into the rollout "
            f"for {fault.duration_s:.0f} s"
        )

    async def _settle(self, watch: RolloutWatch, deadline: float) -> None:
        """Wait until every device has done what the rollout's end asks of it."""
        key = f"{self.scenario.model}@{watch.release.version}"
        end = min(deadline, time.monotonic() + watch.release.settle_s)

        def done(device: VirtualDevice) -> bool:
            return device.settled and watch.settled(device.serving, key in device.state.refused)

        while time.monotonic() < end:
            self._track_gone(watch)
            if all(done(d) for d in self.devices):
                return
            await asyncio.sleep(0.25)
        log.warning("devices still settling after rollout %s ended", watch.rollout_id)

    def _track_gone(self, watch: RolloutWatch) -> None:
        watch.saw_serving((d.serving for d in self.devices), round(self.world.now(), 3))

    async def _observe(
        self, operator: OperatorClient, watch: RolloutWatch, view: dict[str, Any]
    ) -> None:
        watch.saw(view, round(self.world.now(), 3))
        entries = await operator.log(
            watch.rollout_id, after=watch.log[-1]["id"] if watch.log else 0
        )
        for entry in entries:
            entry["t"] = self._at(entry["at"])
        watch.logged(entries)
        for entry in entries:
            if entry["kind"] not in ("assign", "create"):
                self.say(
                    f"  {watch.release.version} wave {decision_wave(entry)}: {entry['kind']}"
                    + (f" ({entry['reason']})" if entry["reason"] else "")
                )

    def _at(self, stamp: str) -> float:
        """A server timestamp as seconds since the run started."""
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return round((moment - self.wall_start).total_seconds(), 3)

    def _lagged(self, seconds: float) -> None:
        counters = self.world.counters
        counters.loop_lag_ms.append(seconds * 1000)
        counters.loop_lag_t.append(self.world.now())

    async def _sample(self) -> None:
        names = {state: state.value for state in State}
        while True:
            states: dict[str, int] = {}
            versions: dict[str, int] = {}
            for i, device in enumerate(self.devices):
                if i and not i % SAMPLE_SLICE:
                    # Walked in slices: 10,000 devices in one go held the fleet's loop
                    # for some 50 ms every second, which the devices' check-ins waited.
                    await asyncio.sleep(0)
                agent = device.state
                state = names[agent.state] if device.connected() else "OFFLINE"
                states[state] = states.get(state, 0) + 1
                content = agent.active_content
                version = content.version if content else "none"
                versions[version] = versions.get(version, 0) + 1
            watch = self.current
            t = round(self.world.now(), 3)
            if watch is not None:
                self._track_gone(watch)
            self.timeline.append(
                TimelinePoint(
                    t=t,
                    states=states,
                    versions=versions,
                    rollout=dict(watch.view.get("devices", {})) if watch else {},
                    release=watch.release.version if watch else None,
                )
            )
            await asyncio.sleep(SAMPLE_EVERY_S)

    # -- the result -------------------------------------------------------------------

    def _result(self, world: World) -> RunResult:
        devices = self.devices
        total = len(devices)
        counters = world.counters
        releases = [self._release_result(w) for w in self.watches]
        bad = {w.release.version for w in self.watches if w.release.bad}
        exposed = sum(bool(d.ever_served & bad) for d in devices)
        final: dict[str, int] = {}
        for device in devices:
            name = device.serving or "none"
            final[name] = final.get(name, 0) + 1
        checks = run_checks(
            [
                ReleaseFacts(watch.release.expect, result, watch.max_unreachable)
                for watch, result in zip(self.watches, releases, strict=True)
            ],
            RunFacts(
                devices=total,
                serving=final,
                interruptions=counters.interruptions,
                bytes_repeated=counters.bytes_repeated,
                chunk_bytes=CHUNK_BYTES,
                errors=counters.errors,
            ),
            self._drift_facts(),
        )
        drift = self._finish_drift()
        detected = [r for r in releases if r.time_to_detect_s is not None]
        return RunResult(
            scenario=self.scenario.name,
            description=self.scenario.description,
            devices=total,
            server=self.url,
            duration_s=round(world.now(), 3),
            releases=releases,
            checks=checks,
            exposed_share=round(exposed / total, 4) if total else 0.0,
            time_to_detect_s=detected[0].time_to_detect_s if detected else None,
            time_to_rollback_s=detected[0].time_to_rollback_s if detected else None,
            bytes_transferred=counters.bytes_received,
            bytes_repeated=counters.bytes_repeated,
            interruptions=counters.interruptions,
            devices_committed=releases[-1].committed if releases else 0,
            final_versions=final,
            requests=dict(counters.requests),
            timeline=self.timeline,
            checkins=len(counters.checkin_ms),
            checkin_p50_ms=_percentile(counters.checkin_ms, 50),
            checkin_p99_ms=_percentile(counters.checkin_ms, 99),
            loop_lag_p50_ms=_percentile(counters.loop_lag_ms, 50),
            loop_lag_p99_ms=_percentile(counters.loop_lag_ms, 99),
            checkin_windows=_windows(
                counters.checkin_ms, counters.checkin_t, counters.checkin_queued_ms
            ),
            run_id=self.run_id,
            drift=drift,
        )

    def _finish_drift(self) -> DriftResult | None:
        """The drift part of the result: times to alarm and the simulator's cost."""
        drift, result, facts = self.drift, self.drift_result, self._drift_facts()
        if drift is None or result is None:
            return None
        if facts is not None and facts.started_t is not None:
            for entry in facts.expect.alarm_on or ():
                at = alarmed_at(facts, entry.segment, entry.features)
                result.time_to_alarm_s[entry.segment] = (
                    None if at is None else round(at - facts.started_t, 3)
                )
        result.prepare_s, result.pools = drift.prepare_s, drift.pools
        result.interval_cost_us = drift.interval_cost_us
        result.period_cost_us = drift.period_cost_us
        result.periods_sent = drift.periods
        return result

    def _release_result(self, watch: RolloutWatch) -> ReleaseResult:
        version = watch.release.version
        view = watch.view
        exposed = sum(version in d.ever_served for d in self.devices)
        rollbacks = {
            revision: count
            for (v, revision), count in self.world.counters.rollbacks.items()
            if v == version
        }
        counters = self.world.counters
        end = watch.ended_t if watch.ended_t is not None else self.world.now()
        checkins = _between(counters.checkin_ms, counters.checkin_t, watch.started_t, end)
        lags = _between(counters.loop_lag_ms, counters.loop_lag_t, watch.started_t, end)
        return ReleaseResult(
            version=version,
            rollout_id=watch.rollout_id,
            bad=watch.release.bad,
            started_t=round(watch.started_t, 3),
            ended_t=round(watch.ended_t, 3) if watch.ended_t is not None else None,
            state=str(view.get("state", "unknown")),
            reason=str(view.get("reason", "")),
            waves_reached=int(view.get("wave", 0)) + 1,
            devices=dict(view.get("devices", {})),
            time_to_detect_s=watch.time_to_detect_s,
            time_to_rollback_s=watch.time_to_rollback_s,
            exposed_share=round(exposed / len(self.devices), 4) if self.devices else 0.0,
            failed_gates=watch.failed_gates,
            rollbacks_by_revision=rollbacks,
            restarts=self.world.counters.restarts.get(version, 0),
            gate_looks=watch.looks,
            log=watch.log,
            checkins=len(checkins),
            checkin_p50_ms=_percentile(checkins, 50),
            checkin_p99_ms=_percentile(checkins, 99),
            loop_lag_p99_ms=_percentile(lags, 99),
            target=str(view.get("target", "")),
            waves=len(view.get("waves") or []),
            committed=sum(
                d.serving == version and d.state.state is State.COMMITTED for d in self.devices
            ),
        )


async def fetch_profile(
    delivery: SharedDelivery, http: httpx.AsyncClient, credential: str, model: str, version: str
) -> ReferenceProfile:
    """A version's reference profile as a device gets it: the signed TUF target
    ``models/<model>/<version>/profile.json``, its bytes checked against the signed
    length and SHA-256.

    Raises:
        SimulationError: the version has no profile, or its bytes do not match.
        DeliveryError: the metadata cannot be refreshed or verified.
    """
    try:
        target = await delivery.lookup(profile_path(model, version))
    except TargetNotFoundError as exc:
        raise SimulationError(
            f"{model} {version} has no reference profile, so its devices cannot summarise "
            "their inputs for drift (register it with a reference sample)"
        ) from exc
    response = await http.get(target.url, headers={"Authorization": f"Bearer {credential}"})
    body = response.content
    if response.status_code != 200 or len(body) != target.length:
        raise SimulationError(
            f"the profile of {model} {version} could not be fetched: HTTP "
            f"{response.status_code}, {len(body)} of {target.length} bytes"
        )
    if hashlib.sha256(body).hexdigest() != target.sha256:
        raise SimulationError(f"the profile of {model} {version} does not match its signed hash")
    return ReferenceProfile.model_validate_json(body)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _windows(
    values: list[float], times: list[float], queued: list[float]
) -> list[dict[str, float | None]]:
    """``values`` (taken at ``times``, in order) per ``CHECKIN_WINDOW_S`` window, with
    the p99 of the part of them ``queued`` (waiting for a connection of the pool)."""
    if not times:
        return []
    windows = []
    for index in range(int(times[-1] // CHECKIN_WINDOW_S) + 1):
        start = index * CHECKIN_WINDOW_S
        first = bisect.bisect_left(times, start)
        last = bisect.bisect_left(times, start + CHECKIN_WINDOW_S)
        part = values[first:last]
        windows.append(
            {
                "t": start,
                "checkins": len(part),
                "p50_ms": _percentile(part, 50),
                "p99_ms": _percentile(part, 99),
                "queued_p99_ms": _percentile(queued[first:last], 99),
            }
        )
    return windows


def _between(values: list[float], times: list[float], start: float, end: float) -> list[float]:
    """The ``values`` whose ``times`` (in the order they were taken) fall in
    ``[start, end]``."""
    first = bisect.bisect_left(times, start)
    last = bisect.bisect_right(times, end)
    return values[first:last]

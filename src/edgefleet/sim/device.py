"""A virtual device: the real agent core, driven over real HTTP by asyncio.

Each ``VirtualDevice`` enrolls like a real one, checks in for its desired state with its
ETag, feeds the answer into ``agent.statemachine.step`` and carries out the commands the
core returns, as ``agent.shell.Agent`` does; when it checks in, backs off, waits to
retry a download and what it sends after a check-in are ``agent.checkin``'s, as the
agent's. Only the I/O differs, three things simulated instead of done: the network
(``sim.network.Link``: latency, loss, bandwidth, outages, so downloads really are
throttled, cut and resumed with HTTP Range), the disk (a slot is a byte count, nothing
is written) and the model (``sim.behaviour.VirtualModel``: the telemetry the real ONNX
model's measured behaviour gives on this device). Trials are judged by the agent's own
``trial.TrialRun`` on that simulated traffic and on latency probe pairs drawn from the
models' measured profiles. Thousands run in one process against one ``World``::

    world = World(base_url, http, delivery, token, models, scenario)
    device = VirtualDevice(spec, world)
    task = asyncio.create_task(device.run())
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
import numpy as np

from edgefleet.agent.checkin import (
    DEFAULT_JITTER,
    CheckinPolicy,
    LastAnswer,
    plan_flush,
    samples_within,
)
from edgefleet.agent.preconditions import Conditions, unmet
from edgefleet.agent.statemachine import (
    SETTLED,
    Activate,
    Activated,
    AgentState,
    Command,
    DesiredModel,
    Discard,
    Download,
    DownloadDeferred,
    Downloaded,
    DownloadFailed,
    Event,
    RetryLater,
    RunShadow,
    RunTrial,
    ShadowFailed,
    SmokeFailed,
    SmokePassed,
    SmokeTest,
    State,
    SwitchBack,
    Transition,
    TrialFailed,
    TrialPassed,
    VerificationFailed,
    Verified,
    Verify,
    recover,
    reported_state,
    step,
)
from edgefleet.agent.trial import TrialRun
from edgefleet.fleet.domain import Preconditions, TrialPolicy
from edgefleet.runtime.metrics import ModelStats
from edgefleet.signing.client import check_target
from edgefleet.signing.errors import DeliveryError
from edgefleet.signing.policy import DeviceFacts
from edgefleet.sim.behaviour import BehaviourProfile, DeviceNoise, VirtualModel, probe_pairs
from edgefleet.sim.delivery import SharedDelivery
from edgefleet.sim.drift import DriftWorld
from edgefleet.sim.httpclient import Answer, ConnectionPool, HttpError
from edgefleet.sim.network import Link, NetworkProfile
from edgefleet.sim.scenario import RUN_ATTRIBUTE, Behaviour, DeviceKind

log = logging.getLogger("edgefleet.sim")

#: How often a trial looks at its numbers (the real agent: every 0.1 s).
TRIAL_TICK_S = 0.5
#: Free disk a virtual device reports to the download preconditions.
FREE_DISK_MB = 16_000.0
#: The most a download reads from the network at once (what a cut may waste).
CHUNK_BYTES = 1 << 16
#: Requests a device replays to its serving model before a switch, for the trial's
#: class-mix baseline (as the agent does with golden inputs when it has served none).
BASELINE_REQUESTS = 400
#: Latency probe pairs a trial takes at each look.
PROBE_PAIRS = 8


class Unreachable(Exception):  # noqa: N818 - a network condition, not a bug
    """The request did not reach the server (outage, loss) or the server failed."""


@dataclass
class Counters:
    """What the whole fleet did, for the run's result."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes_received: int = 0
    bytes_repeated: int = 0
    interruptions: int = 0
    #: (version, hardware revision) -> devices that rolled it back on their own
    rollbacks: dict[tuple[str, str], int] = field(default_factory=dict)
    #: version -> unclean restarts of devices while they served it (scenario behaviour)
    restarts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: round-trip times of check-ins that the server answered (ms), and when each
    #: ended (``World.now``)
    checkin_ms: list[float] = field(default_factory=list)
    checkin_t: list[float] = field(default_factory=list)
    #: of each check-in, the part of ``checkin_ms`` it waited for a pool connection
    checkin_queued_ms: list[float] = field(default_factory=list)
    #: how late the simulator's event loop woke a 100 ms timer (ms): its own delays,
    #: which every device-observed round trip includes; and when
    loop_lag_ms: list[float] = field(default_factory=list)
    loop_lag_t: list[float] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1


#: See ``World.enrolling``.
ENROLLMENTS_IN_FLIGHT = 16


def api_pool_size(devices: int) -> int:
    """Connections of the device API pool for a fleet of ``devices``: one for every
    device of a small fleet, up to 4,096 (the simulator's sockets)."""
    return max(64, min(devices, 4096))


class Connections:
    """The fleet's HTTP connections, in bounded pools: the device API's on the
    simulator's own client (sim/httpclient.py), downloads on aiohttp, which streams them.

    Downloads have a pool of their own: a throttled download holds its connection for
    as long as the device's bandwidth makes it last. The device API pool is bounded
    too, which real devices (one connection each) are not; a device's check-in that
    waits for a connection behind other devices' reports counts in its latency, so the
    pool is as large as the fleet up to ``api_pool_size``. (With 256 connections at
    10,000 devices nearly every request waited for one, p99 51 s.)
    """

    def __init__(self, base_url: str, api_limit: int = 256, download_limit: int = 256) -> None:
        self.base_url = base_url
        self.limits = {"api": api_limit, "downloads": download_limit}
        self._api: ConnectionPool | None = None
        self._downloads: aiohttp.ClientSession | None = None

    @property
    def api(self) -> ConnectionPool:
        """For the device API: enroll, check-ins, reports, events, telemetry."""
        # Made on first use, inside the running event loop.
        if self._api is None:
            self._api = ConnectionPool(self.base_url, limit=self.limits["api"])
        return self._api

    @property
    def downloads(self) -> aiohttp.ClientSession:
        """For artifact downloads."""
        if self._downloads is None:
            self._downloads = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limits["downloads"], limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60),
                auto_decompress=False,
            )
        return self._downloads

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None
        if self._downloads is not None:
            await self._downloads.close()
            self._downloads = None


@dataclass
class World:
    """What every virtual device of a run shares."""

    base_url: str
    connections: Connections
    delivery: SharedDelivery
    enrollment_token: str
    #: (version, variant) -> measured behaviour of that artifact
    models: dict[tuple[str, str], BehaviourProfile]
    behaviours: dict[str, Behaviour]
    telemetry_interval_s: float
    requests_per_s: float
    max_backoff_s: float
    counters: Counters = field(default_factory=Counters)
    #: Enrollments in flight at once, fleet-wide (as a provisioning line paces them):
    #: the server does them one transaction each, and ten thousand devices booting
    #: together queued some for longer than the client waits for an answer. Such a
    #: device enrolled but never saw its credential (shown once), and its retry found
    #: the enrollment token used up.
    enrolling: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(ENROLLMENTS_IN_FLIGHT)
    )
    started: float = field(default_factory=time.monotonic)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: drifting inputs and drift summaries (scenarios with drift or drift monitors only)
    drift: DriftWorld | None = None

    #: (version, variant, kind name) -> the measured behaviour with the release's
    #: factors for that kind applied (``profile``)
    varied: dict[tuple[str, str, str], BehaviourProfile] = field(default_factory=dict)

    def now(self) -> float:
        """Seconds since the run started (the networks' and faults' clock)."""
        return time.monotonic() - self.started

    def profile(self, version: str, variant: str, kind: DeviceKind) -> BehaviourProfile | None:
        """How ``version``'s ``variant`` behaves on a device of ``kind``: as measured,
        with the release's behaviour factors for the kind on top (made once per kind)."""
        key = (version, variant, kind.name)
        found = self.varied.get(key)
        if found is None:
            measured = self.models.get((version, variant))
            if measured is None:
                return None
            behaviour = self.behaviours.get(version)
            if behaviour is not None:
                measured = measured.varied(
                    latency=behaviour.factor("latency", kind),
                    cpu=behaviour.factor("cpu", kind),
                    memory=behaviour.factor("memory", kind),
                    confidence=behaviour.factor("confidence", kind),
                    recall={int(k): v for k, v in (behaviour.class_recall or {}).items()},
                )
            found = self.varied[key] = measured
        return found


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    kind: DeviceKind
    region: str
    site: str
    network: NetworkProfile
    checkin_interval_s: float
    seed: int
    run: str
    #: The device boots (and enrolls) at a random time within this many seconds of the
    #: start, or within its check-in interval when that is longer.
    boot_within_s: float = 0.0
    #: As the agent config's: the share of the interval each wait moves at random (±).
    jitter: float = DEFAULT_JITTER

    @property
    def attributes(self) -> dict[str, str | bool]:
        return {
            "hw": self.kind.hardware,
            "rev": self.kind.revision,
            "kind": self.kind.name,
            "profile": self.kind.profile,
            "region": self.region,
            "site": self.site,
            "network": self.network.name,
            "firmware": self.kind.firmware,
            "simulated": True,
            RUN_ATTRIBUTE: self.run,
        }


@dataclass
class _Partial:
    sha256: str
    offset: int = 0


class VirtualDevice:
    """One simulated device."""

    def __init__(self, spec: DeviceSpec, world: World) -> None:
        self.spec = spec
        self.world = world
        self.link = Link(spec.network, seed=spec.seed)
        self.rng = np.random.default_rng(spec.seed)
        self.jitter = random.Random(spec.seed)
        self.noise = DeviceNoise.draw(self.rng, speed=spec.kind.speed)
        self.facts = DeviceFacts(hardware=spec.kind.hardware, firmware=spec.kind.firmware)
        self.state = AgentState.initial()
        self.credential: str | None = None
        self.enrolled = False
        #: The ETag and desired model of the server's last answer.
        self.last_answer = LastAnswer()
        self.checkin_policy = CheckinPolicy(
            interval_s=spec.checkin_interval_s,
            max_backoff_s=world.max_backoff_s,
            telemetry_interval_s=world.telemetry_interval_s,
            jitter=spec.jitter,
        )
        self.offline: tuple[float, float] | None = None
        self.events: list[dict[str, Any]] = []
        self.last_report: dict[str, Any] | None = None
        self.telemetry: list[dict[str, Any]] = []
        self.ever_served: set[str] = set()
        self._partials: dict[str, _Partial] = {}
        self._paths: dict[str, str] = {}
        self._models: dict[tuple[str, str], VirtualModel] = {}
        self._pending: dict[tuple[str, str], ModelStats] = {}
        self._health: dict[str, float] = {}
        #: unclean restarts to report, per (model, version) that served, and those the
        #: core has not recovered from yet
        self._restarts: dict[tuple[str, str], int] = {}
        self._crashes = 0
        self._traffic_at = world.now()
        self._telemetry_at = world.now()
        #: the trial in progress: the (version, variant) on trial, its live stats, the run
        self._trial: tuple[tuple[str, str], ModelStats, TrialRun] | None = None
        self._baseline: ModelStats | None = None
        self._previous: VirtualModel | None = None
        drift = world.drift
        #: which of the scenario's drifts apply to this device, and its summary periods
        self._drift_member = (
            drift.inputs.membership(spec.attributes, spec.device_id) if drift else ()
        )
        self._summaries = drift.summaries(spec.seed) if drift else None

    # -- what the runner reads ------------------------------------------------------

    @property
    def serving(self) -> str | None:
        """The version the device serves now."""
        active = self.state.active_content
        return active.version if active else None

    def connected(self) -> bool:
        now = self.world.now()
        if self.offline is not None and self.offline[0] <= now < self.offline[1]:
            return False
        return self.link.connected(now)

    @property
    def settled(self) -> bool:
        return self.state.state in SETTLED

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Enroll, then check in until the world stops. Never raises: a failure of the
        simulator itself is recorded in the counters and ends this device."""
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("virtual device %s failed", self.spec.device_id)
            self.world.counters.errors.append(f"{self.spec.device_id}: {exc!r}"[:300])

    async def _loop(self) -> None:
        """As ``Agent.run_forever``."""
        world = self.world
        policy = self.checkin_policy
        failures = 0
        # Devices do not all boot in the same instant.
        boot = max(self.spec.checkin_interval_s, self.spec.boot_within_s)
        await self._sleep(self.jitter.uniform(0, boot))
        while not world.stopping.is_set():
            if policy.telemetry_due(world.now(), self._telemetry_at):
                self._queue_telemetry()
            try:
                if not self.enrolled:
                    await self._enroll()
                await self.check_in_once()
                failures = 0
            except Unreachable:
                failures += 1
            await self._sleep(policy.delay_s(failures, self.jitter.random()))

    async def _sleep(self, seconds: float) -> None:
        # A plain sleep (one timer): the runner cancels the device's task at the end.
        await asyncio.sleep(seconds)

    async def check_in_once(self) -> None:
        """Check in once, as ``Agent.check_in_once``: the desired state, the core's
        answer carried out, then the queued reports. First the restarts the scenario
        made since the last check-in."""
        if self._crashes:
            await self._restart()
        answer = self.last_answer
        headers = {"If-None-Match": answer.etag} if answer.etag else {}
        response = await self._request("GET", "desired", headers=headers)
        if response.status_code == HTTPStatus.NOT_MODIFIED:
            await self.handle(answer.unchanged)
        else:
            etag = response.headers.get("etag")
            await self.handle(answer.answered(etag, response.json().get("desired")))
        await self.flush()

    async def _enroll(self) -> None:
        body = {
            "device_id": self.spec.device_id,
            "enrollment_token": self.world.enrollment_token,
            "attributes": self.spec.attributes,
            "poll_interval_s": max(1, round(self.spec.checkin_interval_s)),
        }
        async with self.world.enrolling:
            response = await self._request("POST", "enroll", json_body=body, authenticated=False)
        data = response.json()
        self.credential = data["credential"]
        self.world.delivery.configure(
            json.dumps(data["tuf_root"]).encode(),
            data["urls"]["tuf_metadata"],
            data["urls"]["tuf_targets"],
        )
        self.enrolled = True

    # -- HTTP through the simulated network ------------------------------------------

    async def _request(
        self,
        method: str,
        route: str,
        *,
        authenticated: bool = True,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Answer:
        counters = self.world.counters
        if not self.connected():
            counters.count("offline")
            raise Unreachable("no network")
        await asyncio.sleep(self.link.request_delay())
        if self.link.lost():
            counters.count("lost")
            raise Unreachable("connection reset")
        path = self._paths.get(route)
        if path is None:
            path = self._paths[route] = (
                "/api/v1/enroll"
                if route == "enroll"
                else f"/api/v1/devices/{self.spec.device_id}/{route}"
            )
        all_headers = dict(headers or {})
        if authenticated:
            all_headers["Authorization"] = f"Bearer {self.credential}"
        body = None if json_body is None else json.dumps(json_body).encode()
        started = time.perf_counter()
        try:
            answer = await self.world.connections.api.request(method, path, all_headers, body)
        except HttpError as exc:
            counters.count("server_unreachable")
            raise Unreachable(str(exc)) from exc
        if answer.status_code >= 500 or answer.status_code == 429:
            counters.count("server_error")
            raise Unreachable(f"{method} {route}: {answer.status_code}")
        if answer.status_code >= 400:
            # A refusal is a bug of the simulator or the server, not the network.
            counters.count("refused")
            raise RuntimeError(
                f"{method} {route} answered {answer.status_code}: {answer.body[:300]!r}"
            )
        counters.count("ok")
        if route == "desired":
            counters.checkin_ms.append((time.perf_counter() - started) * 1000)
            counters.checkin_t.append(self.world.now())
            counters.checkin_queued_ms.append(answer.queued_s * 1000)
        return answer

    async def flush(self) -> None:
        """Send what ``checkin.plan_flush`` says of the queued events (in order), the
        reported state and the queued telemetry, as ``Agent.flush``."""
        report = reported_state(self.state)
        plan = plan_flush(len(self.events), report, self.last_report, len(self.telemetry))
        for size in plan.event_batches:
            await self._request("POST", "events", json_body={"events": self.events[:size]})
            del self.events[:size]
        if plan.report:
            await self._request("PUT", "reported", json_body=report)
            self.last_report = report
        if plan.samples:
            count = plan.samples
            if self.world.drift is not None and count > 1:
                # Samples that close summary periods are large: as the agent does, send
                # what fits the body's byte budget (a backlog after an outage goes over
                # several check-ins). Other runs' samples are small; they skip the sizing.
                batch = self.telemetry[:count]
                count = samples_within([len(json.dumps(sample)) for sample in batch])
            await self._request("POST", "telemetry", json_body={"samples": self.telemetry[:count]})
            del self.telemetry[:count]

    # -- driving the core -----------------------------------------------------------

    async def handle(self, event: Event) -> None:
        state, commands, transitions = step(self.state, event)
        self._apply(state, transitions)
        await self._execute(commands)

    def _apply(self, state: AgentState, transitions: list[Transition]) -> None:
        if state.active_content != self.state.active_content:
            # Traffic so far belongs to the model serving so far. (Only then: a
            # settled device steps its core on every check-in, and drawing an interval's
            # traffic was a fifth of the simulator's CPU at 5,000 devices.)
            self._account()
        self.state = state
        if self.serving is not None:
            self.ever_served.add(self.serving)
        at = datetime.now(UTC).isoformat()
        self.events.extend(t.to_event(at) for t in transitions)
        for t in transitions:
            if t.to_state is State.ROLLED_BACK and t.version is not None:
                key = (t.version, self.spec.kind.revision)
                rollbacks = self.world.counters.rollbacks
                rollbacks[key] = rollbacks.get(key, 0) + 1

    async def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            if self.world.stopping.is_set():
                return  # the run is over: leave the update where it is
            event = await self._run(command)
            if event is not None:
                await self.handle(event)

    async def _run(self, command: Command) -> Event | None:
        if isinstance(command, Download):
            return await self._download(command.target, command.slot)
        if isinstance(command, Verify):
            return await self._verify(command.target, command.slot)
        if isinstance(command, SmokeTest):
            return self._smoke_test(command.target)
        if isinstance(command, RunShadow):
            # Shadow-first needs the candidate's answers beside the serving model's on
            # the same inputs, which measured profiles do not give.
            return ShadowFailed("not_simulated", {"message": "the simulator has no shadow mode"})
        if isinstance(command, Activate):
            active = self.state.active_content
            self._previous = self._model(active.version, active.variant) if active else None
            self._baseline = self._replay_baseline()
            return Activated()
        if isinstance(command, RunTrial):
            return await self._run_trial(command.target)
        if isinstance(command, SwitchBack):
            return None  # the state now names the slot served; traffic follows it
        if isinstance(command, Discard):
            self._partials.pop(command.slot, None)
            return None
        if isinstance(command, RetryLater):
            await self._sleep(self.checkin_policy.download_retry_s(command.attempt))
            return None
        raise AssertionError(f"unknown command {command!r}")

    # -- commands -------------------------------------------------------------------

    async def _download(self, target: DesiredModel, slot: str) -> Event:
        reason = unmet(
            Preconditions.model_validate(target.preconditions),
            target.size / 2**20,
            Conditions(
                free_disk_mb=FREE_DISK_MB,
                battery_percent=None,
                metered=self.spec.network.name.startswith("cellular"),
                now_utc=datetime.now(UTC),
            ),
        )
        if reason is not None:
            return DownloadDeferred(reason)
        if not self.connected():
            self.world.counters.count("offline")
            return DownloadFailed("network", True, {"message": "no network"})
        try:
            verified = await self.world.delivery.lookup(target.target_path)
            check_target(verified, self.facts)
        except DeliveryError as exc:
            if exc.transient:  # as the agent decides: another attempt may get past it
                return DownloadFailed(exc.reason, True, {"message": exc.message[:200]})
            return VerificationFailed(exc.reason, {"message": exc.message[:200]})
        if verified.sha256 != target.sha256 or verified.length != target.size:
            return VerificationFailed(
                "desired_not_signed",
                {"desired_sha256": target.sha256, "signed_sha256": verified.sha256},
            )
        partial = self._partials.get(slot)
        if partial is None or partial.sha256 != target.sha256:
            partial = self._partials[slot] = _Partial(target.sha256)
        before = partial.offset
        cut = await self._fetch(verified.url, partial, target.size)
        if cut is not None:
            return DownloadFailed(
                "network", True, {"message": cut}, progressed=partial.offset > before
            )
        if partial.offset != target.size:
            return VerificationFailed("too_large", {"received": partial.offset})
        try:
            await self.world.delivery.verify_bytes(verified)
        except DeliveryError as exc:
            if exc.transient:
                return DownloadFailed(exc.reason, True, {"message": exc.message[:200]})
            self._partials.pop(slot, None)
            return VerificationFailed(exc.reason, {"message": exc.message[:200]})
        return Downloaded()

    async def _fetch(self, url: str, partial: _Partial, size: int) -> str | None:
        """Stream the rest of the artifact at this device's bandwidth; the reason it
        was cut, or ``None`` when it is complete."""
        counters = self.world.counters
        if partial.offset >= size:
            return None
        await asyncio.sleep(self.link.request_delay())
        if self.link.lost():
            counters.count("lost")
            return "connection reset"
        headers = {"Authorization": f"Bearer {self.credential}"}
        if partial.offset:
            headers["Range"] = f"bytes={partial.offset}-"
        bandwidth = self.spec.network.bandwidth_bps
        loop = asyncio.get_running_loop()
        try:
            async with self.world.connections.downloads.get(url, headers=headers) as response:
                if response.status == HTTPStatus.OK and partial.offset:
                    # The server ignored the range: everything comes again.
                    counters.bytes_repeated += partial.offset
                    partial.offset = 0
                elif response.status not in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
                    counters.count("server_error")
                    return f"HTTP {response.status}"
                counters.count("ok")
                started, received = loop.time(), 0
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    received += len(chunk)
                    partial.offset += len(chunk)
                    counters.bytes_received += len(chunk)
                    ahead = received / bandwidth - (loop.time() - started)
                    if ahead > 0.02:
                        await asyncio.sleep(ahead)
                    if not self.connected() or self.world.stopping.is_set():
                        counters.interruptions += 1
                        return f"connection lost at {partial.offset} of {size} bytes"
        except (aiohttp.ClientError, TimeoutError) as exc:
            counters.interruptions += 1
            return f"download cut at {partial.offset} of {size} bytes: {exc}"
        return None

    async def _verify(self, target: DesiredModel, slot: str) -> Event:
        partial = self._partials.get(slot)
        if partial is None or partial.sha256 != target.sha256 or partial.offset != target.size:
            return VerificationFailed("missing_file", {})
        return Verified()

    def _smoke_test(self, target: DesiredModel) -> Event:
        behaviour = self.world.behaviours.get(target.version)
        if behaviour is not None and self.spec.kind.revision in behaviour.load_fails_on:
            return SmokeFailed(
                "load_failed",
                {"message": f"the model does not load on {self.spec.kind.revision} (scenario)"},
            )
        if (target.version, target.variant) not in self.world.models:
            return SmokeFailed("load_failed", {"message": "no measured behaviour"})
        return SmokePassed()

    async def _run_trial(self, target: DesiredModel) -> Event | None:
        policy = TrialPolicy.model_validate(target.trial) if target.trial else TrialPolicy()
        key = (target.version, target.variant)
        candidate, previous = self._model(*key), self._previous
        run = TrialRun(
            policy,
            started_s=self.world.now(),
            baseline=self._baseline,
            compare_latency=candidate is not None and previous is not None,
        )
        self._trial = (key, ModelStats(), run)
        try:
            while True:
                self._account()
                if self._crashes and not await self._restart():
                    return None  # the core rolled back at the restart limit
                if candidate is not None and previous is not None:
                    cpu = candidate.profile.cpu_factor / previous.profile.cpu_factor
                    for ours, theirs in probe_pairs(candidate, previous, PROBE_PAIRS, self.rng):
                        # A profile's single-sample request is CPU-bound: its CPU time
                        # is its latency (times the scenario's cpu_factor).
                        run.add_probe(ours, theirs, ours * cpu, theirs)
                verdict = run.verdict(self._trial[1], self.world.now())
                if verdict.passed is True:
                    return TrialPassed(verdict.numbers)
                if verdict.passed is False:
                    return TrialFailed(verdict.check or "unknown", verdict.numbers)
                await self._sleep(TRIAL_TICK_S)
                if self.world.stopping.is_set():
                    return TrialFailed("stopped", {})
        finally:
            self._trial = None
            self._previous = None

    async def _restart(self) -> bool:
        """The device restarted uncleanly (the scenario's ``restarts_per_hour``), once per
        crash drawn: through the core's ``recover``, as the agent starts. A trial in
        progress resumes under the policy's restart limit and at the limit the core rolls
        back. Whether a trial is still in progress afterwards."""
        while self._crashes:
            self._crashes -= 1
            target = self.state.target
            policy = (
                TrialPolicy.model_validate(target.trial)
                if target is not None and target.trial
                else TrialPolicy()
            )
            in_trial = self.state.state is State.TRIAL
            state, commands, transitions = recover(
                self.state, restart_limit=policy.max_trial_restarts
            )
            self._apply(state, transitions)
            if in_trial:
                # The trial loop this runs in goes on with the evidence it has (the agent
                # keeps it across the restart), or stops once the core rolled back.
                commands = [c for c in commands if not isinstance(c, RunTrial)]
            await self._execute(commands)
        return self.state.state is State.TRIAL

    # -- simulated traffic ------------------------------------------------------------

    def _model(self, version: str, variant: str) -> VirtualModel | None:
        key = (version, variant)
        model = self._models.get(key)
        if model is None:
            profile = self.world.profile(version, variant, self.spec.kind)
            if profile is not None:
                model = VirtualModel(profile, self.noise, seed=self.spec.seed)
                self._models[key] = model
        return model

    def _account(self) -> None:
        """Count the requests the application sent since the last call, on the model
        that served them."""
        now = self.world.now()
        seconds, self._traffic_at = now - self._traffic_at, now
        active = self.state.active_content
        if active is None or seconds <= 0:
            return
        model = self._model(active.version, active.variant)
        if model is None:
            return
        requests = int(self.rng.poisson(self.world.requests_per_s * seconds))
        metrics, health = model.interval(requests=requests, seconds=seconds, rng=self.rng)
        if self.world.drift is not None:
            self._drifted(metrics, active.model, active.version, active.variant, summarise=True)
        stats = _stats(metrics)
        key = (active.model, active.version)
        behaviour = self.world.behaviours.get(active.version)
        if behaviour is not None and behaviour.restarts_per_hour:
            crashes = int(self.rng.poisson(behaviour.restarts_per_hour * seconds / 3600.0))
            if crashes:
                self._restarts[key] = self._restarts.get(key, 0) + crashes
                self._crashes += crashes
                restarts = self.world.counters.restarts
                restarts[active.version] = restarts.get(active.version, 0) + crashes
        self._pending.setdefault(key, ModelStats()).add(stats)
        self._health = health
        if self._trial is not None and self._trial[0] == (active.version, active.variant):
            self._trial[1].add(stats)
            self._trial[2].add_health(health)

    def _replay_baseline(self) -> ModelStats | None:
        active = self.state.active_content
        model = self._model(active.version, active.variant) if active else None
        if model is None:
            return None
        metrics, _ = model.interval(requests=BASELINE_REQUESTS, seconds=1.0, rng=self.rng)
        if self.world.drift is not None and active is not None:
            self._drifted(metrics, active.model, active.version, active.variant, summarise=False)
        return _stats(metrics)

    def _drifted(
        self, metrics: dict[str, Any], model: str, version: str, variant: str, *, summarise: bool
    ) -> None:
        """The interval's predicted classes and confidences from the rows this device's
        drift levels draw (what the real model answered on them), and, with
        ``summarise``, those rows into its drift summary period."""
        drift = self.world.drift
        assert drift is not None
        # CPU time, not wall time: the server shares the machine's cores.
        started = time.thread_time()
        inputs = drift.inputs
        levels = inputs.levels(self._drift_member, drift.t(self.world.now()))
        pool = inputs.pool((version, variant), levels)
        rows = pool.draw(metrics["inferences"], self.rng)
        metrics["class_counts"] = pool.class_counts(rows)
        metrics["confidence_counts"] = pool.confidence_counts(rows)
        if summarise and self._summaries is not None:
            self._summaries.observe(model, version, pool, rows)
        drift.cost_s += time.thread_time() - started
        drift.intervals += 1

    def _closed_periods(self, serving: tuple[str, str] | None) -> dict[tuple[str, str], Any]:
        """The drift summary periods that closed, by (model, version); a version the
        device no longer serves closes at once (as the runtime reports a retired model)."""
        summaries, drift = self._summaries, self.world.drift
        if summaries is None or drift is None:
            return {}
        closed = {}
        for key in summaries.serving():
            started = time.thread_time()
            fields = summaries.closed(*key, flush=key != serving)
            if fields:
                closed[key] = fields
                drift.periods += 1
                drift.period_cost_s += time.thread_time() - started
        return closed

    def _queue_telemetry(self) -> None:
        self._account()
        self._telemetry_at = self.world.now()
        serving = self.state.active_content
        first = (serving.model, serving.version) if serving is not None else None
        periods = self._closed_periods(first)
        # The serving model first: the server files the health sample under it.
        keys = list(dict.fromkeys([*self._pending, *self._restarts, *periods]))
        models = [
            _entry(key, self._pending.get(key), self._restarts.get(key, 0)) | periods.get(key, {})
            for key in sorted(keys, key=lambda key: key != first)
        ][:8]
        self._pending.clear()
        self._restarts.clear()
        if not models and not self._health:
            return
        self.telemetry.append(
            {"at": datetime.now(UTC).isoformat(), "health": dict(self._health), "models": models}
        )
        # The agent's outbox is bounded too: the oldest samples go first.
        del self.telemetry[:-1000]


def _stats(metrics: dict[str, Any]) -> ModelStats:
    return ModelStats(
        inferences=metrics["inferences"],
        requests=metrics["inferences"],
        errors=dict(metrics["errors"]),
        latency_counts=list(metrics["latency_counts"]),
        confidence_counts=list(metrics["confidence_counts"]),
        class_counts=list(metrics["class_counts"]),
    )


def _entry(key: tuple[str, str], stats: ModelStats | None, restarts: int) -> dict[str, Any]:
    """One model's telemetry entry: its counts, and its restarts when there were any."""
    entry: dict[str, Any] = {"model": key[0], "version": key[1]}
    if stats is not None:
        entry |= _counts(stats)
    if restarts:
        entry["restarts"] = restarts
    return entry


def _counts(stats: ModelStats) -> dict[str, Any]:
    return {
        "inferences": stats.inferences,
        "errors": dict(stats.errors),
        "latency_counts": stats.latency_counts,
        "confidence_counts": stats.confidence_counts,
        "class_counts": stats.class_counts,
    }

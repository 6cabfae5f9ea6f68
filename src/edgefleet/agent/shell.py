"""The agent's I/O shell: drives the state machine with the network, the disk, the
runtime and the clock.

Every step follows one order: compute the transition (pure), persist the new state,
queue the transition events for the server, then carry out the commands; each
command's outcome is the next event. A crash at any point restarts into ``recover``.
A check-in is a step too: its answer is the event (``CheckedIn``), and when to check
in, how to back off and what to send after are ``agent.checkin``'s, which the
simulator's virtual devices (``sim.device``) follow as well.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from edgefleet.agent.checkin import (
    CheckinPolicy,
    LastAnswer,
    converged,
    fewer_samples,
    plan_flush,
    samples_within,
)
from edgefleet.agent.config import AgentConfig
from edgefleet.agent.crash import crashpoint
from edgefleet.agent.link import ServerError, ServerLink, load_enrollment, save_enrollment
from edgefleet.agent.outbox import Outbox
from edgefleet.agent.preconditions import Conditions, unmet
from edgefleet.agent.slots import CorruptStateError, SlotStore
from edgefleet.agent.statemachine import (
    SETTLED,
    Activate,
    Activated,
    ActivationFailed,
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
    ShadowPassed,
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
    to_json,
)
from edgefleet.agent.trial import TrialRun, Verdict, judge_shadow
from edgefleet.fleet.domain import Preconditions, ShadowPolicy, TrialPolicy
from edgefleet.fsutil import write_atomic
from edgefleet.registry.domain import Tolerance
from edgefleet.registry.golden import compare_outputs, read_golden, write_npz
from edgefleet.runtime.backend import OnnxBackend
from edgefleet.runtime.health import HealthProbe
from edgefleet.runtime.metrics import ModelIdentity, ModelStats
from edgefleet.runtime.runtime import LoadedModel, ModelRuntime
from edgefleet.signing.client import DeliveryClient
from edgefleet.signing.errors import DeliveryError
from edgefleet.signing.policy import DeviceFacts

log = logging.getLogger("edgefleet.agent")

#: Recorded application inputs, replayed to a model on trial when traffic is idle.
RECORDED_INPUTS = "recorded-inputs.npz"
#: How often a trial or a shadow period looks at its numbers.
TRIAL_TICK_S = 0.1
#: How often a trial's evidence is saved with the state, to outlive a power cut: at most
#: this much of a trial's serving time is lost to a restart.
TRIAL_PROGRESS_EVERY_S = 5.0
#: Written by a clean stop (``Agent.stop``): the next start is no restart to count.
CLEAN_STOP = "clean-stop"
#: Latency probe pairs per trial tick at most, and the time they may take (the probes
#: are measurements, not service: they must not crowd out the application).
PROBE_PAIRS_PER_TICK = 8
PROBE_BUDGET_S = 0.01


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Agent:
    """One device's agent."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        runtime: ModelRuntime | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.root = config.state_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = SlotStore(self.root)
        self.outbox = Outbox(self.root / "outbox", config.max_queued_telemetry)
        self.runtime = runtime or ModelRuntime(
            backend=OnnxBackend(providers=config.providers),
            record_inputs=config.record_inputs,
            drift_period_s=config.drift_period_s,
            sketch_rows=config.sketch_rows,
        )
        self.link = ServerLink(config.server, config.device_id, timeout=config.http_timeout_s)
        self.sleep = sleep
        self.clock = clock
        self.health = HealthProbe(disk_path=self.root)
        self.state = AgentState.initial()
        #: The ETag and desired model of the server's last answer.
        self.last_answer = LastAnswer()
        #: The trial policy of the last desired state: the default of an update whose
        #: model came without one.
        self.trial_policy = TrialPolicy()
        #: The reported state the server last took (``None``: none since the start).
        self.last_report: dict[str, Any] | None = None
        self._loaded: dict[str, LoadedModel] = {}
        self._tolerance: dict[str, Tolerance] = {}
        self._delivery: DeliveryClient | None = None
        self.bytes_downloaded = 0
        #: outcome (COMMITTED, ROLLED_BACK, FAILED, IDLE) -> (updates, seconds spent)
        self.update_outcomes: dict[str, tuple[int, float]] = {}
        self._update_started: float | None = None
        #: Called at every look of a trial (``agent run --once`` shows its progress).
        self.on_trial: Callable[[TrialPolicy, Verdict], None] | None = None
        self._previous: LoadedModel | None = None
        self._class_baseline: ModelStats | None = None

    # -- start-up -----------------------------------------------------------------

    @property
    def facts(self) -> DeviceFacts:
        import platform

        return DeviceFacts(
            hardware=self.config.hardware or platform.machine(), firmware=self.config.firmware
        )

    def start(self) -> None:
        """Enroll if needed, restore the state from disk, serve the active slot, and
        finish or abandon whatever update a crash interrupted."""
        self._enroll()
        try:
            state = self.store.load()
        except CorruptStateError as exc:
            log.error("%s; starting from the active-slot pointer", exc)
            state = AgentState.initial()
        self.state = state
        clean_stop = self._take_clean_stop()
        dropped = self.outbox.drop_events_after(state.seq)
        if dropped:
            log.info("dropped %d queued events of a transition the crash undid", dropped)
        active = state.slots.get(state.active) if state.active else None
        if not clean_stop and active is not None:
            # Queued at once, so the count survives a crash loop: the fleet sees restarts
            # per version (gate metric restart_rate) even under each device's own limit.
            self.outbox.add_telemetry(
                {
                    "at": _now(),
                    "models": [{"model": active.model, "version": active.version, "restarts": 1}],
                }
            )
        self._load_recorded_inputs()
        if state.active is not None:
            try:
                self._serve_slot(state.active)
            except Exception as exc:
                log.error("the active slot %s does not load: %s", state.active, exc)
        state, commands, transitions = recover(
            state,
            clean_stop=clean_stop,
            restart_limit=self._policy(state.target).max_trial_restarts,
        )
        self._apply(state, transitions)
        self._execute(commands)

    def stop(self) -> None:
        """Record a clean stop (a service stop, SIGTERM): the next start does not count
        it as a restart against a trial in progress, which then resumes."""
        self.save_recorded_inputs()
        write_atomic(self.root / CLEAN_STOP, b"")

    def _take_clean_stop(self) -> bool:
        """Whether the last run ended with ``stop()``; the mark is used up."""
        marker = self.root / CLEAN_STOP
        if not marker.exists():
            return False
        marker.unlink()
        return True

    def _policy(self, target: DesiredModel | None) -> TrialPolicy:
        """The trial policy of ``target``: its own, or the agent's default."""
        if target is None or not target.trial:
            return self.trial_policy
        try:
            return TrialPolicy.model_validate(target.trial)
        except ValueError as exc:
            log.warning("the desired trial policy is invalid (%s); using the default", exc)
            return self.trial_policy

    def _enroll(self) -> None:
        credential_file = self.root / "credential.json"
        enrollment = load_enrollment(credential_file)
        if enrollment is None:
            if not self.config.enrollment_token:
                raise ServerError(
                    "not enrolled yet and no enrollment_token configured", retryable=False
                )
            attributes = {
                **self.config.attributes,
                "hw": self.facts.hardware,
                "firmware": self.facts.firmware,
            }
            enrollment, root = self.link.enroll(
                self.config.enrollment_token,
                attributes,
                max(1, round(self.config.checkin_interval_s)),
            )
            (self.root / "tuf").mkdir(parents=True, exist_ok=True)
            write_atomic(self.root / "tuf" / "root.json", root)
            save_enrollment(credential_file, enrollment)
        self.link.credential = enrollment.credential
        http = httpx.Client(
            timeout=httpx.Timeout(self.config.http_timeout_s, connect=10.0),
            headers={"Authorization": f"Bearer {enrollment.credential}"},
        )
        self._delivery = DeliveryClient(
            self.root / "tuf",
            enrollment.urls["tuf_metadata"],
            enrollment.urls["tuf_targets"],
            http=http,
        )

    # -- the loop -----------------------------------------------------------------

    @property
    def checkin_policy(self) -> CheckinPolicy:
        """When to check in, back off and queue telemetry, from the config."""
        config = self.config
        return CheckinPolicy(
            interval_s=config.checkin_interval_s,
            max_backoff_s=config.max_backoff_s,
            telemetry_interval_s=config.telemetry_interval_s,
            jitter=config.jitter,
        )

    def check_in_once(self) -> bool:
        """Check in once: fetch the desired state, let the core act on the answer, then
        send the queued reports.

        Returns whether the desired state changed.

        Raises:
            ServerError: the server is unreachable or refused a request.
        """
        answer = self.last_answer
        etag, desired, changed = self.link.desired(answer.etag)
        if changed:
            self.trial_policy = TrialPolicy.model_validate((desired or {}).get("trial") or {})
            self.handle(answer.answered(etag, desired))
        else:
            self.handle(answer.unchanged)
        self.flush()
        return changed

    def converge(self, max_checkins: int = 50) -> AgentState:
        """Check in until no update is in progress and the desired model is served (or
        refused). For tests, and ``edgefleet agent run --once``.

        Raises:
            ServerError: as ``check_in_once``.
        """
        for _ in range(max_checkins):
            self.check_in_once()
            if converged(self.state, self.last_answer.model):
                return self.state
            self.sleep(min(1.0, self.config.checkin_interval_s))
        return self.state

    def run_forever(self) -> None:
        """Check in at the configured interval with jitter, backing off while the
        server is unreachable; queue telemetry when due."""
        policy = self.checkin_policy
        failures = 0
        queued_at = self.clock()
        while True:
            if policy.telemetry_due(self.clock(), queued_at):
                self.queue_telemetry()
                queued_at = self.clock()
            try:
                self.check_in_once()
                failures = 0
            except ServerError as exc:
                failures += 1
                log.warning("check-in failed (%s); retrying with backoff", exc.message)
            self.sleep(policy.delay_s(failures, random.random()))

    # -- driving the core ---------------------------------------------------------

    def handle(self, event: Event) -> None:
        state, commands, transitions = step(self.state, event)
        self._apply(state, transitions)
        self._execute(commands)

    def _apply(self, state: AgentState, transitions: list[Transition]) -> None:
        # Events first: a crash between the two writes leaves queued events numbered
        # past the saved state, which the next start drops and recovery makes again;
        # the other order lost the event of a saved transition for good.
        self.outbox.add_events([t.to_event(_now()) for t in transitions])
        # Compared as saved: a desired model's new policies do not make it unequal.
        if transitions or (state is not self.state and to_json(state) != to_json(self.state)):
            crashpoint(f"events_queued:{state.state.value}")
            self.store.save(state)
        self.state = state
        for t in transitions:
            if t.to_state is State.DOWNLOADING:
                self._update_started = self.clock()
            elif t.to_state in SETTLED and self._update_started is not None:
                count, total = self.update_outcomes.get(t.to_state.value, (0, 0.0))
                elapsed = self.clock() - self._update_started
                self.update_outcomes[t.to_state.value] = (count + 1, total + elapsed)
                self._update_started = None
        for t in transitions:
            log.info(
                json.dumps(
                    {
                        "event": "transition",
                        "seq": t.seq,
                        "from": t.from_state.value,
                        "to": t.to_state.value,
                        "reason": t.reason,
                        "version": t.version,
                    }
                )
            )

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            event = self._run(command)
            if event is not None:
                self.handle(event)

    def _run(self, command: Command) -> Event | None:
        if isinstance(command, Download):
            return self._download(command.target, command.slot)
        if isinstance(command, Verify):
            return self._verify(command.target, command.slot)
        if isinstance(command, SmokeTest):
            return self._smoke_test(command.target, command.slot)
        if isinstance(command, RunShadow):
            return self._shadow_first(command.target, command.slot)
        if isinstance(command, Activate):
            return self._activate(command.slot)
        if isinstance(command, RunTrial):
            return self._trial(command.target)
        if isinstance(command, SwitchBack):
            self.store.write_pointer(command.slot)
            if command.slot is None:
                self.runtime.deactivate()
            else:
                self._serve_slot(command.slot)
            return None
        if isinstance(command, Discard):
            self._loaded.pop(command.slot, None)
            if command.slot != self.state.active:
                self.store.clear(command.slot, active=self.state.active)
            return None
        if isinstance(command, RetryLater):
            self.sleep(self.checkin_policy.download_retry_s(command.attempt))
            return None
        raise AssertionError(f"unknown command {command!r}")

    # -- commands -----------------------------------------------------------------

    def _download(self, target: DesiredModel, slot: str) -> Event:
        try:
            return self._fetch(target, slot)
        except Exception as exc:
            # The delivery client's failures are typed; anything else is a bug, and it
            # must end this update (reported, the serving model kept), not the agent.
            log.exception("the download of %s failed unexpectedly", target.key)
            return DownloadFailed(
                "internal_error", False, {"message": f"{type(exc).__name__}: {exc}"[:200]}
            )

    def _fetch(self, target: DesiredModel, slot: str) -> Event:
        assert self._delivery is not None
        reason = unmet(
            Preconditions.model_validate(target.preconditions),
            target.size / 2**20,
            Conditions(
                free_disk_mb=shutil.disk_usage(self.root).free / 2**20,
                battery_percent=_battery_percent(),
                metered=self.config.metered,
                now_utc=datetime.now(UTC),
            ),
        )
        if reason is not None:
            return DownloadDeferred(reason)
        before = self._partial_size(slot, target.sha256)
        fetched = 0

        def advance(size: int) -> None:
            nonlocal fetched
            fetched += size
            crashpoint("download_chunk")

        try:
            verified = self._delivery.resolve(target.target_path, self.facts)
            if verified.sha256 != target.sha256 or verified.length != target.size:
                return VerificationFailed(
                    "desired_not_signed",
                    {"desired_sha256": target.sha256, "signed_sha256": verified.sha256},
                )
            try:
                self._delivery.download(verified, self.store.model_file(slot), progress=advance)
            finally:
                self.bytes_downloaded += fetched
            crashpoint("downloaded")  # the file in its slot, the state still DOWNLOADING
            artifact = verified.artifact
            if artifact is not None:
                self._tolerance[slot] = Tolerance(atol=artifact.atol, rtol=artifact.rtol)
                golden = self._delivery.resolve(artifact.golden, self.facts)
                self._delivery.download(golden, self.store.golden_file(slot))
        except DeliveryError as exc:
            if exc.transient:
                # The network or the disk: another attempt may get past it.
                progressed = self._partial_size(slot, target.sha256) > before
                return DownloadFailed(
                    exc.reason, True, {"message": exc.message[:200]}, progressed=progressed
                )
            return VerificationFailed(exc.reason, {"message": exc.message[:200]})
        return Downloaded()

    def _partial_size(self, slot: str, sha256: str) -> int:
        from edgefleet.signing.client import partial_path

        part = partial_path(self.store.model_file(slot), sha256)
        return part.stat().st_size if part.exists() else 0

    def _verify(self, target: DesiredModel, slot: str) -> Event:
        path = self.store.model_file(slot)
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            return VerificationFailed("missing_file", {})
        except OSError as exc:
            return VerificationFailed("storage", {"message": str(exc)[:200]})
        if digest.hexdigest() != target.sha256:
            return VerificationFailed("hash_mismatch", {"sha256": digest.hexdigest()})
        return Verified()

    def _identity(self, target: DesiredModel) -> ModelIdentity:
        return ModelIdentity(target.model, target.version, target.variant)

    def _smoke_test(self, target: DesiredModel, slot: str) -> Event:
        from edgefleet.runtime.errors import InferenceRuntimeError

        try:
            golden = read_golden(self.store.golden_file(slot))
            loaded = self.runtime.prepare(
                self.store.model_file(slot), self._identity(target), warmup=dict(golden.inputs)
            )
            outputs = loaded.session.run(dict(golden.inputs))
        except InferenceRuntimeError as exc:
            return SmokeFailed("load_failed", {"message": exc.message[:200]})
        except Exception as exc:
            return SmokeFailed("smoke_test_error", {"message": str(exc)[:200]})
        tolerance = self._tolerance.get(slot, Tolerance())
        mismatches = compare_outputs(golden.outputs, outputs, tolerance)
        if mismatches:
            return SmokeFailed("golden_mismatch", {"problems": [str(m) for m in mismatches][:5]})
        self._loaded[slot] = loaded
        return SmokePassed()

    def _shadow_first(self, target: DesiredModel, slot: str) -> Event:
        """Run the candidate beside the serving model on a share of requests until
        its agreement and latency are judged; replay inputs when traffic is idle."""
        policy = ShadowPolicy.model_validate(target.shadow)
        current = self.runtime.active_model
        previous_slot = self.state.active
        if current is None or previous_slot is None:
            return ShadowPassed({"skipped": "no model serving"})
        try:
            candidate = self._loaded.get(slot) or self.runtime.prepare(
                self.store.model_file(slot), self._identity(target)
            )
        except Exception as exc:
            return ShadowFailed("load_failed", {"message": str(exc)[:200]})
        self._loaded[slot] = candidate
        replay = self._replay_set(current, previous_slot)
        rows = itertools.cycle(replay)
        self.runtime.shadow_model(candidate, fraction=policy.fraction)
        started = self.clock()
        last_runs = -1
        try:
            while True:
                crashpoint("shadow_tick")
                stats = self.runtime.shadow_stats()
                assert stats is not None
                verdict = judge_shadow(policy, stats, self.clock() - started)
                if verdict.passed is True:
                    # Live, the model starts counting from zero: the trial judges what
                    # it does serving, not what it did in shadow.
                    self._loaded[slot] = replace(candidate, metrics=candidate.metrics.fresh())
                    return ShadowPassed(verdict.numbers)
                if verdict.passed is False:
                    return ShadowFailed(verdict.check or "unknown", verdict.numbers)
                if stats.runs + stats.failed == last_runs and replay:
                    # No application traffic: replay so the shadow period ends. Each
                    # replay is offered to the shadow like a live request.
                    self._replay_burst(rows, self.config.trial_replay_per_s / 10 / policy.fraction)
                    self.runtime.drain_shadow(timeout=1.0)
                last_runs = stats.runs + stats.failed
                self.sleep(TRIAL_TICK_S)
        finally:
            self.runtime.clear_shadow()

    def _activate(self, slot: str) -> Event:
        loaded = self._loaded.get(slot)
        try:
            if loaded is None:
                assert self.state.target is not None
                loaded = self.runtime.prepare(
                    self.store.model_file(slot), self._identity(self.state.target)
                )
                self._loaded[slot] = loaded
            self._previous, self._class_baseline = self._serving_model_and_stats()
            self.store.write_pointer(slot)
            self.runtime.activate(loaded)
            crashpoint("activated_in_runtime")
        except Exception as exc:
            self.store.write_pointer(self.state.active)
            return ActivationFailed("activation_failed", {"message": str(exc)[:200]})
        return Activated()

    def _serving_model_and_stats(self) -> tuple[LoadedModel | None, ModelStats | None]:
        """The model about to be replaced, kept loaded for the trial's latency probes,
        and its stats for the trial's class-mix check (on golden replays when it has
        served nothing yet)."""
        current = self.runtime.active_model
        previous_slot = self.state.active
        if current is None or previous_slot is None:
            return None, None
        if not sum(current.metrics.snapshot().class_counts):
            for row in self._replay_set(current, previous_slot):
                self._replay(row)
        return current, current.metrics.snapshot()

    def _replay_burst(self, rows: Iterator[Mapping[str, Any]], count: float) -> None:
        """Replay the next ``count`` inputs (at least one) of a cycling replay set."""
        for row in itertools.islice(rows, max(1, int(count))):
            self._replay(row)

    def _replay(self, row: Mapping[str, Any]) -> None:
        # A failing replay is counted in the model's error metrics, like a live one.
        with contextlib.suppress(Exception):
            self.runtime.predict(row, record=False)

    def _replay_set(self, model: LoadedModel, slot: str) -> list[dict[str, Any]]:
        """Inputs to replay to ``model`` when the application sends none: the golden
        samples of its slot, then recorded application inputs that fit the model."""
        golden_file = self.store.golden_file(slot)
        rows = _rows(read_golden(golden_file).inputs) if golden_file.exists() else []
        for sample in self.runtime.recorded_inputs():
            try:
                model.validate(sample)
            except Exception:
                continue  # recorded for another model's inputs
            rows.append(sample)
        return rows

    def _trial(self, target: DesiredModel) -> Event:
        policy = self._policy(target)
        slot = self.state.active
        model = self.runtime.active_model
        assert slot is not None and model is not None
        replay = self._replay_set(model, slot)
        rows = itertools.cycle(replay) if replay else None
        previous, why_not = self._previous_for_probes(model)
        pairs = _probe_feeds(model, previous, replay) if previous is not None else []
        if previous is not None and not pairs:
            previous, why_not = None, "no input both models accept"
        compared = policy.max_latency_ratio is not None or policy.max_cpu_ratio is not None
        if why_not is not None and compared:
            log.warning("the trial does not compare latency and CPU: %s", why_not)
        begin = functools.partial(
            TrialRun,
            policy,
            started_s=self.clock(),
            baseline=self._class_baseline,
            compare_latency=previous is not None,
        )
        try:
            run = begin(progress=self.state.trial_progress)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("the trial's saved evidence is unreadable (%s); starting it over", exc)
            run = begin()
        probe_feeds = itertools.cycle(pairs)
        try:
            return self._trial_loop(
                policy, model, run, previous, probe_feeds, rows, why_not if compared else None
            )
        finally:
            self._previous = None  # the probes are over: its slot keeps it on disk

    def _trial_loop(
        self,
        policy: TrialPolicy,
        model: LoadedModel,
        run: TrialRun,
        previous: LoadedModel | None,
        probe_feeds: Iterator[tuple[dict[str, Any], dict[str, Any]]],
        rows: Iterator[dict[str, Any]] | None,
        why_not: str | None,
    ) -> Event:
        last_requests = -1
        saved = self.clock()
        try:
            while True:
                crashpoint("trial_tick")
                run.add_health(self.health.sample().to_dict())
                if previous is not None:
                    _probe(model, previous, probe_feeds, run)
                # The live model's own counts: not its shadow period, not an earlier load.
                stats = model.metrics.snapshot()
                now = self.clock()
                verdict = run.verdict(stats, now)
                if now - saved >= TRIAL_PROGRESS_EVERY_S:
                    # Kept across a power cut, at a bounded rate of state writes.
                    self._save_trial_progress(run, stats, now)
                    saved = now
                if why_not is not None:
                    verdict.numbers["latency"] = f"not_compared: {why_not}"
                if self.on_trial is not None:
                    self.on_trial(policy, verdict)
                if verdict.passed is True:
                    return TrialPassed(verdict.numbers)
                if verdict.passed is False:
                    return TrialFailed(verdict.check or "unknown", verdict.numbers)
                if stats.requests == last_requests and rows is not None:
                    # No application traffic: replay golden and recorded inputs so the
                    # trial ends.
                    self._replay_burst(rows, self.config.trial_replay_per_s / 10)
                last_requests = stats.requests
                self.sleep(TRIAL_TICK_S)
        except KeyboardInterrupt:
            # A clean stop (SIGTERM, Ctrl-C): keep all the evidence so far, not only what
            # the last periodic save had.
            self._save_trial_progress(run, model.metrics.snapshot(), self.clock())
            raise

    def _save_trial_progress(self, run: TrialRun, stats: ModelStats, now: float) -> None:
        """Save the trial's evidence with the state, to outlive a restart."""
        self.state = replace(self.state, trial_progress=run.progress(stats, now))
        self.store.save(self.state)

    def _previous_for_probes(self, candidate: LoadedModel) -> tuple[LoadedModel | None, str | None]:
        """The model the candidate replaced, for the trial's latency probes, or why
        there is none. It is normally still loaded (the switch keeps it); after a
        restart it is loaded again from its slot when the device's free memory holds
        it twice over, and otherwise the trial goes on without a latency comparison."""
        previous = self._previous
        if previous is not None and previous is not candidate:
            return previous, None
        slot = self.state.inactive
        content = self.state.slots.get(slot)
        if content is None:
            return None, "no previous model"
        path = self.store.model_file(slot)
        try:
            import psutil

            free = psutil.virtual_memory().available
            if free < 2 * path.stat().st_size:
                return None, f"free memory ({free >> 20} MB) cannot hold the previous model"
            loaded = self.runtime.prepare(
                path, ModelIdentity(content.model, content.version, content.variant)
            )
        except Exception as exc:
            return None, f"the previous model does not load: {str(exc)[:200]}"
        self._previous = loaded
        return loaded, None

    def _serve_slot(self, slot: str) -> None:
        loaded = self._loaded.get(slot)
        content = self.state.slots.get(slot)
        if loaded is None:
            if content is None:
                raise FileNotFoundError(f"slot {slot} is empty")
            loaded = self.runtime.prepare(
                self.store.model_file(slot),
                ModelIdentity(content.model, content.version, content.variant),
            )
            self._loaded[slot] = loaded
        self.runtime.activate(loaded)

    # -- reports --------------------------------------------------------------------

    def reported(self) -> dict[str, Any]:
        return reported_state(self.state)

    def flush(self) -> None:
        """Send what ``checkin.plan_flush`` says of the queued events (in order), the
        reported state and the queued telemetry.

        Raises:
            ServerError: a request failed; what it carried stays queued.
        """
        events = self.outbox.events()
        report = self.reported()
        samples = self.outbox.telemetry()
        plan = plan_flush(len(events), report, self.last_report, len(samples))
        for size in plan.event_batches:
            chunk, events = events[:size], events[size:]
            self.link.events(chunk)
            self.outbox.remove_events(chunk[-1]["seq"])
        if plan.report:
            self.link.report(report)
            self.last_report = report
        if plan.samples:
            sizes = [len(json.dumps(sample, separators=(",", ":"))) for sample in samples]
            count = min(plan.samples, samples_within(sizes))
            while True:
                try:
                    self.link.telemetry(samples[:count])
                    break
                except ServerError as exc:
                    if not exc.too_large:
                        raise
                    if not fewer_samples(count):
                        log.warning("the server refused a telemetry sample as too large; dropped")
                        break
                    count = fewer_samples(count)
            self.outbox.clear_telemetry(count)

    def _load_recorded_inputs(self) -> None:
        path = self.root / RECORDED_INPUTS
        if not path.exists():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                columns = {key: data[key] for key in data.files}
            self.runtime.remember_inputs(_rows(columns) if columns else [])
        except Exception as exc:  # a torn or foreign file is only a lost recording
            log.warning("ignoring unreadable recorded inputs %s: %s", path, exc)

    def save_recorded_inputs(self) -> None:
        """Keep the recorded inputs across restarts (one file, replaced atomically)."""
        samples = self.runtime.recorded_inputs()
        if not samples:
            return
        try:
            columns = {
                name: np.concatenate([sample[name] for sample in samples]) for name in samples[0]
            }
        except (KeyError, ValueError):
            return  # samples of models with different inputs: keep them in memory only
        buffer = io.BytesIO()
        write_npz(buffer, columns)
        write_atomic(self.root / RECORDED_INPUTS, buffer.getvalue(), mode=0o600)

    def queue_telemetry(self) -> None:
        models = [
            {k: v for k, v in entry.items() if k != "requests"}
            for entry in self.runtime.telemetry(reset=True)
        ]
        self.outbox.add_telemetry(
            {"at": _now(), "health": self.health.sample().to_dict(), "models": models}
        )
        self.save_recorded_inputs()


def _probe_feeds(
    candidate: LoadedModel, previous: LoadedModel, rows: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The replay rows both models accept, as each model's validated feeds."""
    pairs = []
    for row in rows:
        try:
            pairs.append((candidate.validate(row), previous.validate(row)))
        except Exception:
            continue  # an input of one model only
    return pairs


def _probe(
    candidate: LoadedModel,
    previous: LoadedModel,
    feeds: Iterator[tuple[dict[str, Any], dict[str, Any]]],
    run: TrialRun,
) -> None:
    """Time both models on the same inputs, one right after the other, the order
    alternating pair by pair: wall time, and the process's CPU time (which also counts
    the runtime's worker threads, and the application's, alike for both over the
    pairs); at most ``PROBE_PAIRS_PER_TICK`` pairs or
    ``PROBE_BUDGET_S``. A probe that fails is no latency: the model's error counts come
    from what it serves.

    After the trial's sleep between looks, whichever model runs first finds cold caches
    (measured: the first pair of every look was over the limit, the others 1% of the
    time); one untimed pair first warms both, so the timed pairs are alike."""
    clock = time.perf_counter_ns
    deadline = clock() + int(PROBE_BUDGET_S * 1e9)
    try:
        candidate_feeds, previous_feeds = next(feeds)
        candidate.session.run(candidate_feeds)
        previous.session.run(previous_feeds)
    except Exception:
        return
    for _ in range(PROBE_PAIRS_PER_TICK):
        candidate_feeds, previous_feeds = next(feeds)
        wall: dict[int, int] = {}
        cpu: dict[int, int] = {}
        order = (
            ((candidate, candidate_feeds), (previous, previous_feeds))
            if run.pairs % 2 == 0
            else ((previous, previous_feeds), (candidate, candidate_feeds))
        )
        try:
            for model, model_feeds in order:
                start, start_cpu = clock(), time.process_time_ns()
                model.session.run(model_feeds)
                cpu[id(model)] = time.process_time_ns() - start_cpu
                wall[id(model)] = clock() - start
        except Exception:
            return
        ours, theirs = id(candidate), id(previous)
        run.add_probe(wall[ours] / 1e9, wall[theirs] / 1e9, cpu[ours] / 1e9, cpu[theirs] / 1e9)
        if clock() > deadline:
            return


def _battery_percent() -> float | None:
    import psutil

    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return None
    if battery is None or battery.power_plugged:
        return None
    return float(battery.percent)


def _rows(inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    count = next(iter(inputs.values())).shape[0]
    return [
        {name: np.asarray(batch)[i : i + 1] for name, batch in inputs.items()} for i in range(count)
    ]

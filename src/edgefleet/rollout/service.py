"""Rollout operations and the controller's I/O shell.

``RolloutService.tick(id)`` reads one running rollout from the database, brings its
devices' statuses up to date from their twins and events, works out the current wave's
members, evaluates the gates when an analysis is due, asks ``controller.decide`` what
to do, carries it out (assign devices by setting their desired state, move the wave
on, pause, abort and revert) and appends the decision with its inputs to the log, all
in one transaction. The server runs ``tick_all`` in a loop on the elected leader.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from edgefleet.access.service import AccessUnitOfWork, Operator, jsonable
from edgefleet.access.tokens import Role
from edgefleet.errors import EdgefleetError
from edgefleet.fleet.domain import DesiredModel, DesiredState, TrialPolicy
from edgefleet.fleet.query import parse_query
from edgefleet.fleet.telemetry import bucket_of
from edgefleet.rollout.controller import (
    FINAL_STATES,
    FINISHED,
    IN_PROGRESS,
    Decision,
    DeviceStatus,
    Kind,
    Phase,
    RolloutState,
    Snapshot,
    decide,
    device_status,
)
from edgefleet.rollout.errors import RolloutNotFoundError, RolloutSpecError, RolloutStateError
from edgefleet.rollout.gates import Delivery, DeviceSummary, Evidence, GateResult, evaluate
from edgefleet.rollout.policy import Approval, RolloutSpec
from edgefleet.rollout.waves import members, rank

#: How long a resolved artifact (or the error resolving it) is reused.
RESOLVE_TTL_S = 10.0
#: ``max_assign_per_minute`` also holds, pro rata, over any window this long: a rate of
#: 6,000 a minute assigns at most 1,000 in 10 s, not a wave of 6,000 in one step.
RATE_SMOOTHING_S = 10
ModelResolver = Callable[[str, str, str | None], DesiredModel]
#: Called with (event, payload) after a state change or a gate failure is committed.
Notifier = Callable[[str, dict[str, Any]], None]

#: A revert returns to a model the device ran before: no trial to sit through again.
REVERT_TRIAL = TrialPolicy(
    min_inferences=0,
    min_seconds=0,
    max_error_rate=1.0,
    max_latency_ratio=None,
    max_cpu_ratio=None,
)


class RolloutUnitOfWork(AccessUnitOfWork, Protocol):
    @property
    def rollouts(self) -> Any: ...
    @property
    def devices(self) -> Any: ...
    def __enter__(self) -> Self: ...


def _now() -> datetime:
    return datetime.now(UTC)


class RolloutService:
    """Rollouts over a unit of work.

    Args:
        uow_factory: opens a transaction over the store.
        resolve_model: (model, version, hardware) -> the signed artifact for that device.
        analysis_interval_s: least time between two gate analyses of one rollout (each
            analysis is one "look" of the sequential tests).
        clock: the time (tests may move it).
        read_uow_factory: transactions that only read and take no write lock (on
            SQLite, the writer's transactions begin with the write lock); default:
            ``uow_factory``.
    """

    def __init__(
        self,
        uow_factory: Callable[[], RolloutUnitOfWork],
        resolve_model: ModelResolver,
        *,
        analysis_interval_s: float = 30.0,
        membership_refresh_s: float = 0.0,
        clock: Callable[[], datetime] = _now,
        read_uow_factory: Callable[[], RolloutUnitOfWork] | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.read_uow_factory = read_uow_factory or uow_factory
        self._ranks: dict[str, dict[str, tuple[int, str]]] = {}
        #: How long a rollout's target, as read, serves its ticks (see ``_target``).
        self.membership_refresh_s = membership_refresh_s
        self._targets: dict[str, tuple[int, datetime, list[Any]]] = {}
        #: The rollout's order of the target as last read (sorted once per read).
        self._orders: dict[str, tuple[list[Any], list[str]]] = {}
        self.resolve_model = resolve_model
        self.analysis_interval_s = analysis_interval_s
        self.clock = clock
        self._resolved: dict[tuple[str, str, str | None], tuple[float, Any]] = {}

    def _resolve(self, model: str, version: str, hardware: str | None) -> DesiredModel:
        """``resolve_model`` through a short-lived cache. Resolving reads the registry
        and the signed metadata, which must not happen inside the controller's write
        transaction (SQLite allows one writer), so each tick resolves first."""
        key = (model, version, hardware)
        now = time.monotonic()
        cached = self._resolved.get(key)
        if cached is None or cached[0] < now:
            try:
                value: Any = self.resolve_model(model, version, hardware)
            except EdgefleetError as exc:
                if exc.transient:
                    raise  # not remembered: the next step asks again
                value = exc
            cached = (now + RESOLVE_TTL_S, value)
            self._resolved[key] = cached
        if isinstance(cached[1], EdgefleetError):
            raise cached[1]
        result: DesiredModel = cached[1]
        return result

    def _prefetch(self, rollout_id: str) -> None:
        """Resolve, outside any write transaction, what an abort's revert needs."""
        with self.read_uow_factory() as uow:
            row = self._get(uow, rollout_id)
            spec = RolloutSpec.model_validate(row.spec)
            model = row.model
            touched = uow.rollouts.touched_kinds(rollout_id)
        wanted = {(spec.previous_version or p, h) for p, h in touched if spec.previous_version or p}
        for wanted_version, hardware in wanted:
            with contextlib.suppress(EdgefleetError):
                self._resolve(model, wanted_version, hardware)

    # -- operator side -------------------------------------------------------------------

    def create(
        self, actor: Operator, spec: RolloutSpec | dict[str, Any], *, start: bool = True
    ) -> dict[str, Any]:
        """Create a rollout (and start it unless ``start`` is false: a draft).

        Raises:
            RolloutSpecError, QuerySyntaxError, QueryFieldError, VersionNotFoundError,
            RepositoryStateError (the version is not signed).
        """
        actor.require(Role.OPERATOR)
        spec = validate_spec(spec)
        parse_query(spec.target)
        for wave in spec.waves:
            if wave.cohort:
                parse_query(wave.cohort)
        now = self.clock()
        rollout_id = f"ro-{secrets.token_hex(6)}"
        with self.uow_factory() as uow:
            hardware_kinds = {
                d.hardware
                for d in uow.rollouts.target_devices(parse_query(spec.target), now, rollout_id)
            }
        # Refuse at once what cannot be delivered to anyone (unknown or unsigned version).
        problems: list[str] = []
        for hardware in sorted(hardware_kinds, key=str) or [None]:
            try:
                self.resolve_model(spec.model, spec.version, hardware)
                break
            except EdgefleetError as exc:
                if exc.transient:
                    raise  # a busy database says nothing about the release (503)
                problems.append(f"{hardware}: {exc.message}")
        else:
            if hardware_kinds:
                raise RolloutSpecError(
                    f"{spec.model} {spec.version} cannot be delivered to any device of the target",
                    details={"problems": problems},
                )
            self.resolve_model(spec.model, spec.version, None)
        state = RolloutState.RUNNING if start else RolloutState.DRAFT
        first = (
            Phase.AWAITING_APPROVAL if spec.waves[0].approval is Approval.MANUAL else Phase.ROLLING
        )
        with self.uow_factory() as uow:
            uow.rollouts.add(
                id=rollout_id,
                name=spec.name or f"{spec.model} {spec.version}",
                model=spec.model,
                version=spec.version,
                spec=spec.model_dump(mode="json"),
                state=state.value,
                wave=0,
                phase=first.value,
                phase_started_at=now,
                looks=0,
                reason="",
                created_at=now,
                created_by=actor.actor,
                started_at=now if start else None,
                updated_at=now,
            )
            self._log(
                uow,
                rollout_id,
                now,
                actor.actor,
                "create",
                0,
                state.value,
                {"spec": spec.model_dump(mode="json")},
            )
            _audit(uow, now, actor, "rollout.create", rollout_id, {"state": state.value})
            uow.commit()
        return self.show(rollout_id)

    def show(self, rollout_id: str) -> dict[str, Any]:
        with self.read_uow_factory() as uow:
            row = self._get(uow, rollout_id)
            counts = uow.rollouts.counts(rollout_id)
            return _view(row, counts)

    def list_rollouts(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.read_uow_factory() as uow:
            return [_view(row, uow.rollouts.counts(row.id)) for row in uow.rollouts.recent(limit)]

    def devices(self, rollout_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self.read_uow_factory() as uow:
            self._get(uow, rollout_id)
            return list(uow.rollouts.device_list(rollout_id, limit))

    def log(self, rollout_id: str, after: int = 0) -> list[dict[str, Any]]:
        with self.read_uow_factory() as uow:
            self._get(uow, rollout_id)
            return [
                {
                    "id": d.id,
                    "at": _aware(d.at),
                    "actor": d.actor,
                    "kind": d.kind,
                    "wave": d.wave,
                    "reason": d.reason,
                    "details": d.details,
                }
                for d in uow.rollouts.decisions(rollout_id, after)
            ]

    def start(self, actor: Operator, rollout_id: str) -> dict[str, Any]:
        return self._change(
            actor, rollout_id, "start", {RolloutState.DRAFT}, RolloutState.RUNNING, ""
        )

    def pause(self, actor: Operator, rollout_id: str, reason: str = "") -> dict[str, Any]:
        return self._change(
            actor,
            rollout_id,
            "pause",
            {RolloutState.RUNNING},
            RolloutState.PAUSED,
            reason or "operator",
        )

    def resume(self, actor: Operator, rollout_id: str) -> dict[str, Any]:
        """Continue a paused rollout: the current wave bakes and is analysed afresh."""
        return self._change(
            actor, rollout_id, "resume", {RolloutState.PAUSED}, RolloutState.RUNNING, ""
        )

    def approve(self, actor: Operator, rollout_id: str) -> dict[str, Any]:
        """Start a manual wave that awaits approval, or let a rollout paused on
        inconclusive gates go on to its next wave."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        with self.uow_factory() as uow:
            row = self._get(uow, rollout_id, for_update=True)
            spec = RolloutSpec.model_validate(row.spec)
            finished = False
            if row.state == RolloutState.RUNNING and row.phase == Phase.AWAITING_APPROVAL:
                row.phase = Phase.ROLLING.value
            elif row.state == RolloutState.PAUSED and row.reason == "inconclusive":
                if row.wave == len(spec.waves) - 1:
                    finished = True
                else:
                    # Approving the inconclusive wave also approves the next one.
                    row.wave += 1
                    row.state = RolloutState.RUNNING.value
                    row.phase = Phase.ROLLING.value
                row.looks, row.reason, row.last_analysis_at = 0, "", None
            else:
                raise RolloutStateError(
                    f"rollout {rollout_id} is not waiting for an approval",
                    details={"state": row.state, "phase": row.phase, "reason": row.reason},
                )
            row.phase_started_at = now
            row.updated_at = now
            self._log(uow, rollout_id, now, actor.actor, "approve", row.wave, "operator", {})
            _audit(uow, now, actor, "rollout.approve", rollout_id, {"wave": row.wave})
            uow.rollouts.enqueue("rollout.approved", _event_payload(row, "approved"), now)
            if finished:
                reason = "approved_inconclusive"
                self._finish(uow, row, RolloutState.SUCCEEDED, reason, now, actor.actor, {})
            uow.commit()
        return self.show(rollout_id)

    def abort(
        self, actor: Operator, rollout_id: str, *, revert: bool = True, reason: str = ""
    ) -> dict[str, Any]:
        """Stop a rollout; with ``revert`` every device it touched is sent back to its
        previous version (devices switch slots locally; offline ones on their next poll)."""
        actor.require(Role.OPERATOR)
        if revert:
            self._prefetch(rollout_id)
        now = self.clock()
        with self.uow_factory() as uow:
            row = self._get(uow, rollout_id, for_update=True)
            if RolloutState(row.state) in FINAL_STATES:
                raise RolloutStateError(
                    f"rollout {rollout_id} is already {row.state}", details={"state": row.state}
                )
            reverted = self._revert(uow, row, now) if revert else 0
            self._finish(
                uow,
                row,
                RolloutState.ABORTED,
                reason or "operator",
                now,
                actor.actor,
                {"revert": revert, "reverted": reverted},
            )
            _audit(
                uow,
                now,
                actor,
                "rollout.abort",
                rollout_id,
                {"revert": revert, "reverted": reverted},
            )
            uow.commit()
        return self.show(rollout_id)

    # -- webhooks --------------------------------------------------------------------------

    def add_webhook(self, actor: Operator, url: str) -> dict[str, Any]:
        """Register a URL for rollout notifications; the answer holds its signing secret
        (shown only now)."""
        actor.require(Role.ADMIN)
        if not url.startswith(("http://", "https://")):
            raise RolloutSpecError(f"a webhook URL starts with http:// or https://, got {url!r}")
        now = self.clock()
        secret = secrets.token_urlsafe(32)
        with self.uow_factory() as uow:
            row = uow.rollouts.add_webhook(
                url=url, secret=secret, created_at=now, created_by=actor.actor
            )
            _audit(uow, now, actor, "webhook.add", url, {"id": row.id})
            uow.commit()
            return {"id": row.id, "url": url, "secret": secret}

    def webhooks(self, actor: Operator) -> list[dict[str, Any]]:
        actor.require(Role.ADMIN)
        with self.uow_factory() as uow:
            hooks = [
                {"id": h.id, "url": h.url, "created_at": _aware(h.created_at)}
                for h in uow.rollouts.webhooks()
            ]
            deliveries = [
                {
                    "id": d.id,
                    "webhook": d.webhook_id,
                    "event": d.event,
                    "attempts": d.attempts,
                    "delivered_at": _aware(d.delivered_at) if d.delivered_at else None,
                    "next_attempt_at": _aware(d.next_attempt_at) if d.next_attempt_at else None,
                    "last_error": d.last_error,
                }
                for d in uow.rollouts.deliveries()
            ]
        return [
            {**h, "deliveries": [d for d in deliveries if d["webhook"] == h["id"]]} for h in hooks
        ]

    # -- the controller ------------------------------------------------------------------

    def tick_all(self) -> int:
        """One controller step of every running rollout; returns the decisions taken."""
        with self.read_uow_factory() as uow:
            ids = uow.rollouts.running_ids()
        return sum(1 for rollout_id in ids if self.tick(rollout_id).kind is not Kind.WAIT)

    def tick(self, rollout_id: str) -> Decision:
        """Advance one rollout by one decision (see the module docstring).

        The work is done in reads that take no lock (device statuses, the wave's
        members, the gates' evidence); only the writes take the write lock, briefly: the
        status changes, then the decision, which is dropped if an operator changed the
        rollout in between (the next tick decides again).
        """
        now = self.clock()
        with self.read_uow_factory() as uow:
            row = self._get(uow, rollout_id)
            if row.state != RolloutState.RUNNING:
                self._targets.pop(rollout_id, None)
                self._orders.pop(rollout_id, None)
                return Decision(Kind.WAIT)
            spec = RolloutSpec.model_validate(row.spec)
            changes = self._status_changes(uow, row, spec, now)
        if changes:
            with self.uow_factory() as uow:
                uow.rollouts.set_statuses(rollout_id, changes, now)
                uow.commit()
        with self.read_uow_factory() as uow:
            row = self._get(uow, rollout_id)
            seen = _version(row)
            target = parse_query(spec.target)
            wave = spec.waves[row.wave]
            selects = _selection(spec, row.wave)
            devices = self._target(uow, row.id, row.wave, selects, now)
            order = self._order(row.id, devices)
            wave_members = members(order, wave.percent) if wave.percent is not None else order
            by_id = {d.device_id: d for d in devices}
            assigned = uow.rollouts.assigned(row.id)
            eligible = [
                by_id[i]
                for i in wave_members
                if by_id[i].pk not in assigned and _in_window(spec, by_id[i].timezone, now)
            ]
            counts = uow.rollouts.counts(row.id)
            status_counts = {DeviceStatus(s): n for s, n in _by_status(counts).items()}
            may_assign = self._allowance(uow, row.id, spec, now, status_counts) if eligible else 0
            gates = self._analyse(uow, row, spec, target, counts, now, status_counts, len(devices))
            snap = Snapshot(
                spec=spec,
                state=RolloutState(row.state),
                wave=row.wave,
                phase=Phase(row.phase),
                phase_started_at=_aware(row.phase_started_at),
                now=now,
                members=len(wave_members),
                unassigned=len(eligible),
                may_assign=may_assign,
                counts=status_counts,
                gates=gates,
            )
            decision = decide(snap)
        if decision.kind is Kind.WAIT and gates is None:
            return decision
        # Resolve artifacts now, outside the write transaction (see ``_resolve``).
        if decision.kind is Kind.ASSIGN:
            for hardware in {d.hardware for d in eligible[: decision.assign]}:
                with contextlib.suppress(EdgefleetError):
                    self._resolve(spec.model, spec.version, hardware)
        elif decision.kind is Kind.ABORT:
            self._prefetch(rollout_id)
        with self.uow_factory() as uow:
            row = self._get(uow, rollout_id, for_update=True)
            if _version(row) != seen:
                return Decision(Kind.WAIT)  # an operator acted meanwhile: decide afresh
            if gates is not None:
                row.looks += 1
                row.last_analysis_at = now
                row.gates = [g.to_dict() for g in gates]
            self._carry_out(uow, row, spec, decision, eligible, now)
            uow.commit()
        return decision

    def _target(
        self, uow: RolloutUnitOfWork, rollout_id: str, wave: int, selects: Any, now: datetime
    ) -> list[Any]:
        """The devices the rollout's current wave draws from.

        Reading a fleet-wide target is the largest read of a tick, so on a server the
        list serves the ticks of ``membership_refresh_s`` (and is read again when the
        wave changes): a device that joins the target waits that long for its place.
        Devices are checked against the target again when they are assigned.
        """
        cached = self._targets.get(rollout_id)
        if (
            cached is not None
            and cached[0] == wave
            and 0 <= (now - cached[1]).total_seconds() < self.membership_refresh_s
        ):
            return cached[2]
        devices: list[Any] = uow.rollouts.target_devices(selects, now, rollout_id)
        self._targets[rollout_id] = (wave, now, devices)
        return devices

    def _order(self, rollout_id: str, devices: list[Any]) -> list[str]:
        """The rollout's order of ``devices`` (a list ``_target`` returned), sorted
        once for each time the target is read, not at every step."""
        cached = self._orders.get(rollout_id)
        if cached is not None and cached[0] is devices:
            return cached[1]
        order = self._ranked(rollout_id, [d.device_id for d in devices])
        self._orders[rollout_id] = (devices, order)
        return order

    def _ranked(self, rollout_id: str, device_ids: list[str]) -> list[str]:
        """The rollout's order of ``device_ids``, hashing each device once per rollout."""
        ranks = self._ranks.setdefault(rollout_id, {})
        for device_id in device_ids:
            if device_id not in ranks:
                ranks[device_id] = (rank(rollout_id, device_id), device_id)
        # The sort keys are made once per device, not per sort (a third of the sort's
        # time at 10,000 devices went to building them).
        return sorted(device_ids, key=ranks.__getitem__)

    # -- the shell's steps -------------------------------------------------------------------

    def _status_changes(
        self, uow: RolloutUnitOfWork, row: Any, spec: RolloutSpec, now: datetime
    ) -> dict[int, tuple[str, str]]:
        changes: dict[int, tuple[str, str]] = {}
        for p in uow.rollouts.progress(row.id, row.model, row.version):
            status, detail = device_status(
                DeviceStatus(p.status),
                version=row.version,
                assigned_at=p.assigned_at,
                now=now,
                timeout_s=spec.waves[min(p.wave, len(spec.waves) - 1)].device_timeout_s,
                agent_state=p.agent_state,
                reported_version=p.reported_version,
                reported_at=p.reported_at,
                outcome=p.outcome,
            )
            if status.value != p.status:
                changes[p.pk] = (status.value, detail)
        return changes

    def _allowance(
        self,
        uow: RolloutUnitOfWork,
        rollout_id: str,
        spec: RolloutSpec,
        now: datetime,
        counts: dict[DeviceStatus, int],
    ) -> int:
        schedule = spec.schedule
        if schedule.start_at is not None and now < _aware(schedule.start_at):
            return 0
        if any(_aware(b.start) <= now < _aware(b.end) for b in schedule.blackouts):
            return 0
        allowed = 1 << 30
        per_minute = spec.rate.max_assign_per_minute
        if per_minute is not None:
            recent = uow.rollouts.assigned_since(rollout_id, now - timedelta(seconds=60))
            allowed = min(allowed, max(0, per_minute - recent))
            burst = -(-per_minute * RATE_SMOOTHING_S // 60)  # rounded up: at least 1
            lately = uow.rollouts.assigned_since(
                rollout_id, now - timedelta(seconds=RATE_SMOOTHING_S)
            )
            allowed = min(allowed, max(0, burst - lately))
        if spec.rate.max_concurrent_downloads is not None:
            in_flight = counts.get(DeviceStatus.ASSIGNED, 0) + counts.get(
                DeviceStatus.DOWNLOADING, 0
            )
            allowed = min(allowed, max(0, spec.rate.max_concurrent_downloads - in_flight))
        return allowed

    def _analyse(
        self,
        uow: RolloutUnitOfWork,
        row: Any,
        spec: RolloutSpec,
        target: Any,
        counts: dict[tuple[int, str, str], int],
        now: datetime,
        status_counts: dict[DeviceStatus, int],
        targeted: int,
    ) -> list[GateResult] | None:
        running = sum(status_counts.get(s, 0) for s in (DeviceStatus.TRIAL, *FINISHED))
        phase = Phase(row.phase)
        if phase is Phase.AWAITING_APPROVAL or (phase is Phase.ROLLING and not running):
            return None
        last = _aware(row.last_analysis_at) if row.last_analysis_at else None
        entered = _aware(row.phase_started_at)
        due = (
            last is None
            or (now - last).total_seconds() >= self.analysis_interval_s
            or (phase is Phase.ANALYSING and last < entered)
        )
        if not due:
            return None
        since = bucket_of(_aware(row.started_at or row.created_at))
        delivery = _delivery(counts)
        candidate = [
            DeviceSummary.from_bucket(d, h, data)
            for d, h, data in uow.rollouts.candidate_telemetry(
                row.id, row.model, row.version, since, _every(sum(status_counts.values()))
            )
        ]
        baseline = [
            DeviceSummary.from_bucket(d, h, data)
            for d, h, data in uow.rollouts.baseline_telemetry(
                target, now, row.model, row.version, spec.previous_version, since, _every(targeted)
            )
        ]
        evidence = Evidence(delivery, candidate, baseline)
        return [evaluate(gate, evidence, spec.alpha, row.looks + 1) for gate in spec.gates]

    def _carry_out(
        self,
        uow: RolloutUnitOfWork,
        row: Any,
        spec: RolloutSpec,
        decision: Decision,
        eligible: Sequence[Any],
        now: datetime,
    ) -> None:
        kind = decision.kind
        if kind is Kind.WAIT:
            return
        details = dict(decision.details)
        if kind is Kind.ASSIGN:
            chosen = list(eligible[: decision.assign])
            if self.membership_refresh_s > 0:
                # The target may have been read a while ago: assign only devices it
                # still selects and no other rollout has taken since (as they are now).
                still = uow.rollouts.target_devices(
                    _selection(spec, row.wave), now, row.id, among=[d.pk for d in chosen]
                )
                current = {d.pk: d for d in still}
                chosen = [current[d.pk] for d in chosen if d.pk in current]
                if not chosen:
                    self._targets.pop(row.id, None)
                    return
            details |= self._assign(uow, row, spec, chosen, now)
        elif kind is Kind.BAKE:
            row.phase, row.phase_started_at = Phase.BAKING.value, now
        elif kind is Kind.ANALYSE:
            row.phase, row.phase_started_at = Phase.ANALYSING.value, now
        elif kind in (Kind.ADVANCE, Kind.AWAIT_APPROVAL):
            row.wave += 1
            row.phase = (Phase.ROLLING if kind is Kind.ADVANCE else Phase.AWAITING_APPROVAL).value
            row.phase_started_at = now
            row.looks = 0
            row.last_analysis_at = None
            if kind is Kind.AWAIT_APPROVAL:
                uow.rollouts.enqueue(
                    "rollout.awaiting_approval", _event_payload(row, decision.reason), now
                )
        elif kind is Kind.SUCCEED:
            self._finish(
                uow, row, RolloutState.SUCCEEDED, decision.reason, now, "controller", details
            )
            return
        elif kind is Kind.PAUSE:
            row.state, row.reason = RolloutState.PAUSED.value, decision.reason
            if decision.reason.startswith("gate_failed"):
                uow.rollouts.enqueue(
                    "rollout.gate_failed", _event_payload(row, decision.reason, details), now
                )
            uow.rollouts.enqueue(
                "rollout.paused", _event_payload(row, decision.reason, details), now
            )
        elif kind is Kind.ABORT:
            uow.rollouts.enqueue(
                "rollout.gate_failed", _event_payload(row, decision.reason, details), now
            )
            details["reverted"] = self._revert(uow, row, now)
            self._finish(
                uow, row, RolloutState.ABORTED, decision.reason, now, "controller", details
            )
            return
        row.updated_at = now
        self._log(uow, row.id, now, "controller", kind.value, row.wave, decision.reason, details)

    def _assign(
        self,
        uow: RolloutUnitOfWork,
        row: Any,
        spec: RolloutSpec,
        chosen: Sequence[Any],
        now: datetime,
    ) -> dict[str, Any]:
        by_hardware: dict[str | None, list[Any]] = {}
        for device in chosen:
            by_hardware.setdefault(device.hardware, []).append(device)
        undeliverable: dict[str, str] = {}
        for hardware, group in by_hardware.items():
            try:
                model = self._resolve(row.model, row.version, hardware)
            except EdgefleetError as exc:
                if exc.transient:
                    # A busy database is no verdict on the release: this step assigns
                    # nothing (its transaction rolls back) and the next one tries again.
                    raise
                undeliverable[str(hardware)] = exc.message
                uow.rollouts.assign(row.id, row.model, row.wave, group, now)
                uow.rollouts.set_statuses(row.id, {d.pk: ("failed", exc.code) for d in group}, now)
                continue
            state = DesiredState(
                model=model,
                trial=spec.trial,
                shadow=spec.shadow,
                preconditions=spec.preconditions,
                rollout=row.id,
            )
            uow.devices.set_desired_many([d.pk for d in group], state, now)
            uow.rollouts.assign(row.id, row.model, row.wave, group, now)
        return {
            "assigned": len(chosen),
            "devices": [d.device_id for d in chosen[:20]],
            **({"undeliverable": undeliverable} if undeliverable else {}),
        }

    def _revert(self, uow: RolloutUnitOfWork, row: Any, now: datetime) -> int:
        """Send every device the rollout touched back to its previous version."""
        spec = RolloutSpec.model_validate(row.spec)
        groups: dict[tuple[str | None, str | None], list[int]] = {}
        for pk, previous, hardware in uow.rollouts.touched(row.id):
            version = spec.previous_version or previous
            groups.setdefault((version, hardware), []).append(pk)
        reverted = 0
        for (version, hardware), pks in groups.items():
            if version is None or version == row.version:
                continue  # nothing to go back to: the device keeps what it runs
            try:
                model = self._resolve(row.model, version, hardware)
            except EdgefleetError as exc:
                if exc.transient:
                    raise  # the abort is not taken now: the next step tries it again
                continue
            state = DesiredState(model=model, trial=REVERT_TRIAL, rollout=row.id)
            uow.devices.set_desired_many(pks, state, now)
            uow.rollouts.set_statuses(row.id, dict.fromkeys(pks, ("reverted", version)), now)
            reverted += len(pks)
        return reverted

    def _finish(
        self,
        uow: RolloutUnitOfWork,
        row: Any,
        state: RolloutState,
        reason: str,
        now: datetime,
        actor: str,
        details: dict[str, Any],
    ) -> None:
        row.state, row.reason, row.finished_at, row.updated_at = state.value, reason[:256], now, now
        kind = {RolloutState.SUCCEEDED: "succeed", RolloutState.ABORTED: "abort"}.get(
            state, state.value
        )
        self._log(uow, row.id, now, actor, kind, row.wave, reason, details)
        uow.rollouts.enqueue(f"rollout.{state.value}", _event_payload(row, reason, details), now)

    def _change(
        self,
        actor: Operator,
        rollout_id: str,
        action: str,
        allowed: set[RolloutState],
        to: RolloutState,
        reason: str,
    ) -> dict[str, Any]:
        actor.require(Role.OPERATOR)
        now = self.clock()
        with self.uow_factory() as uow:
            row = self._get(uow, rollout_id, for_update=True)
            if RolloutState(row.state) not in allowed:
                raise RolloutStateError(
                    f"cannot {action} rollout {rollout_id}: it is {row.state}",
                    details={"state": row.state},
                )
            row.state, row.reason, row.updated_at = to.value, reason[:256], now
            if action == "start":
                row.started_at = now
            if action == "resume":
                # The wave is observed afresh: bake again, new looks.
                if row.phase in (Phase.BAKING, Phase.ANALYSING):
                    row.phase = Phase.BAKING.value
                row.phase_started_at, row.looks, row.last_analysis_at = now, 0, None
            self._log(uow, rollout_id, now, actor.actor, action, row.wave, reason or "operator", {})
            _audit(uow, now, actor, f"rollout.{action}", rollout_id, {"state": to.value})
            uow.rollouts.enqueue(f"rollout.{to.value}", _event_payload(row, reason or action), now)
            uow.commit()
        return self.show(rollout_id)

    @staticmethod
    def _get(uow: RolloutUnitOfWork, rollout_id: str, *, for_update: bool = False) -> Any:
        row = uow.rollouts.get(rollout_id, for_update=for_update)
        if row is None:
            raise RolloutNotFoundError(
                f"no rollout {rollout_id!r}", details={"rollout": rollout_id}
            )
        return row

    @staticmethod
    def _log(
        uow: RolloutUnitOfWork,
        rollout_id: str,
        now: datetime,
        actor: str,
        kind: str,
        wave: int,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        uow.rollouts.log(
            rollout_id=rollout_id,
            at=now,
            actor=actor,
            kind=kind,
            wave=wave,
            reason=reason[:256],
            details=jsonable(details),
        )


def _audit(
    uow: RolloutUnitOfWork,
    now: datetime,
    actor: Operator,
    action: str,
    target: str,
    after: dict[str, Any],
) -> None:
    uow.access.audit(
        at=now, before=None, actor=actor.actor, action=action, target=target, after=after
    )


#: Behaviour gates read the telemetry of at most about this many devices per arm: a fixed
#: sample by device key beyond it. The intervals narrow with the square root of the
#: devices, so 2,000 against 5,000 widens them by at most ~1.6x, and then only when
#: both arms are that large (the late waves); the first waves' candidate arm is far
#: smaller, and it is what sets their width. Reading every bucket of a large fleet at
#: every analysis was the largest cost of the server at 10,000 devices
#: (benchmarks/fleet.py).
MAX_ANALYSED_DEVICES = 2000


def _selection(spec: RolloutSpec, wave: int) -> Any:
    """The query of the devices wave ``wave`` draws from: the target, or for cohort
    waves the target within the cohorts of the waves so far."""
    if spec.waves[wave].percent is not None:
        return parse_query(spec.target)
    cohorts = " OR ".join(f"({w.cohort})" for w in spec.waves[: wave + 1])
    return parse_query(f"({spec.target}) AND ({cohorts})")


def _every(devices: int) -> int:
    return max(1, -(-devices // MAX_ANALYSED_DEVICES))


def _version(row: Any) -> tuple[Any, ...]:
    """What an operator's action changes: a decision taken on an older view is dropped."""
    return (row.state, row.wave, row.phase, row.phase_started_at, row.looks)


def validate_spec(spec: RolloutSpec | dict[str, Any]) -> RolloutSpec:
    """A rollout definition from a mapping (YAML/JSON), every problem named.

    Raises:
        RolloutSpecError: the definition is invalid.
    """
    if isinstance(spec, RolloutSpec):
        return spec
    try:
        return RolloutSpec.model_validate(spec)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'rollout'}: {e['msg']}" for e in exc.errors()
        ]
        raise RolloutSpecError(
            "the rollout definition is invalid: " + "; ".join(problems),
            details={"problems": problems},
        ) from exc


def _in_window(spec: RolloutSpec, timezone: str | None, now: datetime) -> bool:
    windows = spec.schedule.windows
    if not windows:
        return True
    for window in windows:
        zone: Any = UTC
        if window.timezone == "device" and timezone:
            try:
                zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                zone = UTC
        if window.contains(now.astimezone(zone).time()):
            return True
    return False


def _delivery(counts: dict[tuple[int, str, str], int]) -> Delivery:
    finished = failed = rolled_back = trial_failed = 0
    for (_, status, detail), n in counts.items():
        if status in ("committed", "rolled_back", "failed", "reverted"):
            finished += n
        if status == "failed":
            failed += n
        if status == "rolled_back":
            rolled_back += n
            if detail.startswith(("trial_failed", "shadow_failed")):
                trial_failed += n
    return Delivery(finished, failed, rolled_back, trial_failed)


def _by_status(counts: dict[tuple[int, str, str], int], wave: int | None = None) -> dict[str, int]:
    """Devices per status (of one wave, or of all) from (wave, status, detail) counts."""
    totals: dict[str, int] = {}
    for (w, status, _), n in counts.items():
        if wave is None or w == wave:
            totals[status] = totals.get(status, 0) + n
    return totals


def _view(row: Any, counts: dict[tuple[int, str, str], int]) -> dict[str, Any]:
    spec = row.spec
    waves: list[dict[str, Any]] = []
    for index, wave in enumerate(spec["waves"]):
        waves.append(
            {
                "index": index,
                "percent": wave.get("percent"),
                "cohort": wave.get("cohort"),
                "approval": wave["approval"],
                "devices": _by_status(counts, index),
            }
        )
    totals = _by_status(counts)
    return {
        "id": row.id,
        "name": row.name,
        "model": row.model,
        "version": row.version,
        "target": spec["target"],
        "state": row.state,
        "wave": row.wave,
        "phase": row.phase,
        "phase_started_at": _aware(row.phase_started_at),
        "reason": row.reason,
        "created_at": _aware(row.created_at),
        "created_by": row.created_by,
        "started_at": _aware(row.started_at) if row.started_at else None,
        "finished_at": _aware(row.finished_at) if row.finished_at else None,
        "looks": row.looks,
        "gates": row.gates or [],
        "waves": waves,
        "devices": totals,
        "in_progress": sum(totals.get(s.value, 0) for s in IN_PROGRESS),
    }


def _event_payload(row: Any, reason: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = jsonable(
        {
            "rollout": row.id,
            "name": row.name,
            "model": row.model,
            "version": row.version,
            "state": row.state,
            "wave": row.wave,
            "reason": reason,
            **({"details": details} if details else {}),
        }
    )
    return payload


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

"""Rollout operations and the controller's I/O shell.

``RolloutService.tick(id)`` reads one running rollout, brings its devices' statuses up
to date from their twins and events (``status``), reads the devices its current wave
draws from (``membership``, ``waves``) and how many of them may be assigned now
(``schedule``), evaluates the gates when an analysis is due (``gates``) and asks
``controller.decide`` what to do. It then carries the decision out (assigns devices by
setting their desired state, reverts them on an abort, ``revert``) and stores what
``controller.apply`` says it does to the rollout, with its decision log entry and
webhook notices, in one short transaction. Operators' actions go the same way through
``lifecycle.start``, ``pause``, ``resume``, ``approve`` and ``abort``. The server runs
``tick_all`` in a loop on the elected leader.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from edgefleet.access.service import Operator, jsonable
from edgefleet.access.tokens import Role
from edgefleet.errors import EdgefleetError
from edgefleet.fleet.domain import DesiredState
from edgefleet.fleet.query import parse_query
from edgefleet.fleet.telemetry import bucket_of
from edgefleet.rollout import lifecycle
from edgefleet.rollout.controller import Decision, Snapshot, analysed, analysis_due, apply, decide
from edgefleet.rollout.errors import RolloutNotFoundError, RolloutSpecError
from edgefleet.rollout.gates import (
    PAIRED_MEASURES,
    Delivery,
    DeviceSummary,
    Evidence,
    GateResult,
    PairedTrial,
    evaluate,
    sample_every,
    values_by_hardware,
)
from edgefleet.rollout.lifecycle import MAX_REASON, Change, Entry, Kind, RolloutState
from edgefleet.rollout.membership import Membership
from edgefleet.rollout.policy import RolloutSpec, wave_percent
from edgefleet.rollout.ports import Rollout, RolloutUnitOfWork, TargetDevice
from edgefleet.rollout.power import size_canary, sized_first_wave
from edgefleet.rollout.resolver import CachedResolver, ModelResolver
from edgefleet.rollout.revert import REVERT_TRIAL, previous_version, revert_groups, revert_version
from edgefleet.rollout.schedule import allowance, in_window
from edgefleet.rollout.status import DeviceStatus, Tally, status_changes
from edgefleet.rollout.views import (
    device_view,
    event_payload,
    log_view,
    rollout_view,
    webhooks_view,
)
from edgefleet.rollout.waves import members, selection

#: Who the decision log names for what the controller decided.
CONTROLLER = "controller"


def _now() -> datetime:
    return datetime.now(UTC)


class RolloutService:
    """Rollouts over a unit of work.

    Args:
        uow_factory: opens a transaction over the store.
        resolve_model: (model, version, hardware) -> the signed artifact for that device.
        analysis_interval_s: least time between two gate analyses of one rollout (each
            analysis is one "look" of the sequential tests).
        membership_refresh_s: how long a rollout's target, as read, serves its ticks
            (``membership``).
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
        self.resolve_model = resolve_model
        self.resolver = CachedResolver(resolve_model)
        self.membership = Membership(membership_refresh_s)
        self.analysis_interval_s = analysis_interval_s
        self.clock = clock

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
            target = uow.rollouts.target_devices(parse_query(spec.target), now, rollout_id)
        self._check_deliverable(spec, {d.hardware for d in target})
        sizing: dict[str, Any] = {}
        if spec.detect:
            spec, sizing = self._sized(spec, target, now)
        rollout = Rollout(
            id=rollout_id,
            name=spec.name or f"{spec.model} {spec.version}",
            model=spec.model,
            version=spec.version,
            spec=spec,
            created_at=now,
            created_by=actor.actor,
            progress=lifecycle.initial(spec, now, start=start),
        )
        state = rollout.progress.state.value
        with self.uow_factory() as uow:
            uow.rollouts.add(rollout, now)
            entry = Entry(Kind.CREATE, 0, state, {"spec": spec.model_dump(mode="json")} | sizing)
            _log(uow, rollout_id, Change(rollout.progress, (entry,)), actor.actor, now)
            _audit(uow, now, actor, "rollout.create", rollout_id, {"state": state})
            uow.commit()
        return self.show(rollout_id) | sizing

    def _sized(
        self, spec: RolloutSpec, target: Sequence[TargetDevice], now: datetime
    ) -> tuple[RolloutSpec, dict[str, Any]]:
        """``spec`` with its first wave grown to hold the devices ``detect`` needs (never
        to the second wave's share), and what the estimate found (``power.size_canary``),
        from the ``target``'s devices on the previous version over the last hour."""
        with self.read_uow_factory() as uow:
            node = parse_query(spec.target)
            total = len(target)
            values: dict[str, set[str]] = {name: set() for name in spec.segment_by}
            if spec.segment_by:
                known = uow.rollouts.device_attributes([d.device_id for d in target])
                for attributes in known.values():
                    for name in spec.segment_by:
                        if name in attributes:
                            values[name].add(str(attributes[name]))
            rows = uow.rollouts.baseline_telemetry(
                node,
                now,
                spec.model,
                spec.version,
                spec.previous_version,
                bucket_of(now - timedelta(hours=1)),
                sample_every(total),
            )
        devices = [DeviceSummary.from_bucket(*row) for row in rows]
        # The gates' alpha is split over the attribute values too (``segment_alpha``).
        attribute_segments = sum(len(v) for v in values.values() if len(v) > 1)
        sizings = []
        for metric, ratio in (spec.detect or {}).items():
            gate = spec.detect_gate(metric)
            if gate is None:
                continue  # the spec's validation refuses this
            sizings.append(
                size_canary(
                    gate,
                    ratio,
                    values_by_hardware(devices, metric),
                    spec.alpha,
                    target=total,
                    attribute_segments=attribute_segments,
                )
            )
        return sized_first_wave(spec, sizings, total)

    def _check_deliverable(self, spec: RolloutSpec, hardware_kinds: set[str | None]) -> None:
        """Refuse at once what cannot be delivered to anyone (unknown or unsigned version)."""
        problems: list[str] = []
        for hardware in sorted(hardware_kinds, key=str) or [None]:
            try:
                self.resolve_model(spec.model, spec.version, hardware)
                return
            except EdgefleetError as exc:
                if exc.transient:
                    raise  # a busy database says nothing about the release (503)
                problems.append(f"{hardware}: {exc.message}")
        if hardware_kinds:
            raise RolloutSpecError(
                f"{spec.model} {spec.version} cannot be delivered to any device of the target",
                details={"problems": problems},
            )
        self.resolve_model(spec.model, spec.version, None)

    def show(self, rollout_id: str) -> dict[str, Any]:
        with self.read_uow_factory() as uow:
            rollout = self._get(uow, rollout_id)
            return rollout_view(rollout, uow.rollouts.tally(rollout_id))

    def list_rollouts(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.read_uow_factory() as uow:
            return [
                rollout_view(rollout, uow.rollouts.tally(rollout.id))
                for rollout in uow.rollouts.recent(limit)
            ]

    def devices(self, rollout_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self.read_uow_factory() as uow:
            self._get(uow, rollout_id)
            return [device_view(d) for d in uow.rollouts.devices(rollout_id, limit)]

    def log(self, rollout_id: str, after: int = 0) -> list[dict[str, Any]]:
        with self.read_uow_factory() as uow:
            self._get(uow, rollout_id)
            return [log_view(entry) for entry in uow.rollouts.decisions(rollout_id, after)]

    def start(self, actor: Operator, rollout_id: str) -> dict[str, Any]:
        """Start a draft."""
        return self._operate(
            actor, rollout_id, "start", lambda r, now: lifecycle.start(r.id, r.progress, now)
        )

    def pause(self, actor: Operator, rollout_id: str, reason: str = "") -> dict[str, Any]:
        """Pause a running rollout: no more devices are assigned until it is resumed."""
        return self._operate(
            actor, rollout_id, "pause", lambda r, now: lifecycle.pause(r.id, r.progress, reason)
        )

    def resume(self, actor: Operator, rollout_id: str) -> dict[str, Any]:
        """Continue a paused rollout: the current wave bakes and is analysed afresh."""
        return self._operate(
            actor, rollout_id, "resume", lambda r, now: lifecycle.resume(r.id, r.progress, now)
        )

    def approve(self, actor: Operator, rollout_id: str) -> dict[str, Any]:
        """Start a manual wave that awaits approval, or let a rollout paused on
        inconclusive gates go on to its next wave."""
        return self._operate(
            actor,
            rollout_id,
            "approve",
            lambda r, now: lifecycle.approve(r.id, r.progress, len(r.spec.waves), now),
        )

    def abort(
        self, actor: Operator, rollout_id: str, *, revert: bool = True, reason: str = ""
    ) -> dict[str, Any]:
        """Stop a rollout; with ``revert`` every device it touched is sent back to its
        previous version (devices switch slots locally; offline ones on their next check-in)."""
        actor.require(Role.OPERATOR)
        if revert:
            self._prefetch(rollout_id)
        now = self.clock()
        with self.uow_factory() as uow:
            rollout = self._get(uow, rollout_id, for_update=True)
            lifecycle.require_active(rollout.id, rollout.progress)
            reverted = self._revert(uow, rollout, now) if revert else 0
            done = {"revert": revert, "reverted": reverted}
            change = lifecycle.abort(rollout.id, rollout.progress, now, reason, done)
            self._record(uow, rollout, change, actor.actor, now)
            _audit(uow, now, actor, "rollout.abort", rollout_id, done)
            uow.commit()
        return self.show(rollout_id)

    def _operate(
        self,
        actor: Operator,
        rollout_id: str,
        action: str,
        change_of: Callable[[Rollout, datetime], Change],
    ) -> dict[str, Any]:
        """An operator's change of a rollout, logged, audited and told to the webhooks."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        with self.uow_factory() as uow:
            rollout = self._get(uow, rollout_id, for_update=True)
            change = change_of(rollout, now)
            self._record(uow, rollout, change, actor.actor, now)
            progress = change.progress
            # An approval is of a wave; the other actions change the state.
            after = (
                {"wave": progress.wave} if action == "approve" else {"state": progress.state.value}
            )
            _audit(uow, now, actor, f"rollout.{action}", rollout_id, after)
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
            webhook_id = uow.rollouts.add_webhook(
                url=url, secret=secret, created_at=now, created_by=actor.actor
            )
            _audit(uow, now, actor, "webhook.add", url, {"id": webhook_id})
            uow.commit()
            return {"id": webhook_id, "url": url, "secret": secret}

    def webhooks(self, actor: Operator) -> list[dict[str, Any]]:
        actor.require(Role.ADMIN)
        with self.uow_factory() as uow:
            return webhooks_view(uow.rollouts.webhooks(), uow.rollouts.deliveries())

    # -- the controller ------------------------------------------------------------------

    def tick_all(self) -> int:
        """One tick of every running rollout; returns the decisions taken."""
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
            rollout = self._get(uow, rollout_id)
            if rollout.progress.state is not RolloutState.RUNNING:
                self.membership.forget(rollout_id)
                return Decision(Kind.WAIT)
            assignments = uow.rollouts.open_assignments(rollout_id, rollout.model, rollout.version)
        changes = status_changes(assignments, rollout.version, rollout.spec.waves, now)
        if changes:
            with self.uow_factory() as uow:
                uow.rollouts.set_statuses(rollout_id, changes, now)
                uow.commit()
        with self.read_uow_factory() as uow:
            rollout = self._get(uow, rollout_id)
            spec, seen = rollout.spec, rollout.progress
            target = self.membership.read(
                rollout_id,
                seen.wave,
                now,
                lambda: uow.rollouts.target_devices(selection(spec, seen.wave), now, rollout_id),
            )
            wave_members = members(target.order, wave_percent(spec, seen.wave, seen.extended))
            assigned = uow.rollouts.assigned(rollout_id)
            eligible = [
                device
                for device in map(target.by_id.__getitem__, wave_members)
                if device.pk not in assigned and in_window(spec.schedule, device.timezone, now)
            ]
            tally = uow.rollouts.tally(rollout_id)
            counts = tally.by_status()
            may_assign = 0
            if eligible:
                may_assign = allowance(
                    spec,
                    now,
                    counts,
                    lambda s: uow.rollouts.assigned_since(rollout_id, now - timedelta(seconds=s)),
                )
            gates = None
            if analysis_due(seen, now, self.analysis_interval_s, counts):
                gates = self._analyse(uow, rollout, tally, now, len(target.devices))
            decision = decide(
                Snapshot(
                    spec=spec,
                    state=seen.state,
                    wave=seen.wave,
                    phase=seen.phase,
                    phase_started_at=seen.phase_started_at,
                    now=now,
                    members=len(wave_members),
                    unassigned=len(eligible),
                    may_assign=may_assign,
                    counts=counts,
                    gates=gates,
                    extended=seen.extended,
                )
            )
        if decision.kind is Kind.WAIT and gates is None:
            return decision
        # Resolve artifacts now, outside the write transaction (``resolver``).
        chosen = eligible[: decision.assign]
        if decision.kind is Kind.ASSIGN:
            for hardware in {d.hardware for d in chosen}:
                self.resolver.warm(spec.model, spec.version, hardware)
        elif decision.kind is Kind.ABORT:
            self._prefetch(rollout_id)
        with self.uow_factory() as uow:
            rollout = self._get(uow, rollout_id, for_update=True)
            if rollout.progress.moved_since(seen):
                return Decision(Kind.WAIT)  # an operator acted meanwhile: decide afresh
            progress = rollout.progress
            if gates is not None:
                progress = analysed(progress, gates, now)
            taken, done = decision, {}
            if decision.kind is Kind.ASSIGN:
                chosen = self._still_eligible(uow, rollout, chosen, now)
                if chosen:
                    done = self._assign(uow, rollout, chosen, now)
                else:
                    taken = Decision(Kind.WAIT)  # all of them left meanwhile
            elif decision.kind is Kind.ABORT:
                done = {"reverted": self._revert(uow, rollout, now)}
            self._record(uow, rollout, apply(progress, taken, now, done), CONTROLLER, now)
            uow.commit()
        return decision

    # -- the parts of a tick -------------------------------------------------------------------

    def _analyse(
        self, uow: RolloutUnitOfWork, rollout: Rollout, tally: Tally, now: datetime, selected: int
    ) -> list[GateResult]:
        """Every gate's verdict on the evidence so far: the rollout's devices against the
        target's devices still on the previous version, since the rollout started."""
        spec, progress = rollout.spec, rollout.progress
        since = bucket_of(progress.started_at or rollout.created_at)
        candidate = [
            DeviceSummary.from_bucket(*row)
            for row in uow.rollouts.candidate_telemetry(
                rollout.id, rollout.model, rollout.version, since, sample_every(tally.total())
            )
        ]
        baseline = [
            DeviceSummary.from_bucket(*row)
            for row in uow.rollouts.baseline_telemetry(
                parse_query(spec.target),
                now,
                rollout.model,
                rollout.version,
                spec.previous_version,
                since,
                sample_every(selected),
            )
        ]
        trials = []
        if any(g.metric in PAIRED_MEASURES and g.max_ratio is not None for g in spec.gates):
            trials = [
                PairedTrial.from_details(*row)
                for row in uow.rollouts.trial_reports(
                    rollout.id, rollout.model, rollout.version, sample_every(tally.total())
                )
            ]
        if spec.segment_by:
            candidate, baseline, trials = _with_attributes(
                uow, spec.segment_by, candidate, baseline, trials
            )
        evidence = Evidence(Delivery.of(tally), candidate, baseline, trials, spec.segment_by)
        return [evaluate(gate, evidence, spec.alpha, progress.looks + 1) for gate in spec.gates]

    def _still_eligible(
        self,
        uow: RolloutUnitOfWork,
        rollout: Rollout,
        chosen: Sequence[TargetDevice],
        now: datetime,
    ) -> list[TargetDevice]:
        """Of ``chosen``, the devices the wave still draws from and no other rollout has
        taken since, as they are now (the target may have been read a while ago)."""
        if self.membership.refresh_s <= 0:
            return list(chosen)
        still = uow.rollouts.target_devices(
            selection(rollout.spec, rollout.progress.wave),
            now,
            rollout.id,
            among=[d.pk for d in chosen],
        )
        current = {d.pk: d for d in still}
        kept = [current[d.pk] for d in chosen if d.pk in current]
        if not kept:
            self.membership.drop(rollout.id)
        return kept

    def _assign(
        self,
        uow: RolloutUnitOfWork,
        rollout: Rollout,
        chosen: Sequence[TargetDevice],
        now: datetime,
    ) -> dict[str, Any]:
        """Assign devices to the current wave: each gets the candidate's artifact for its
        hardware as its desired state (a device with no deliverable artifact fails)."""
        spec, wave = rollout.spec, rollout.progress.wave
        by_hardware: dict[str | None, list[TargetDevice]] = {}
        for device in chosen:
            by_hardware.setdefault(device.hardware, []).append(device)
        undeliverable: dict[str, str] = {}
        for hardware, group in by_hardware.items():
            previous = {d.pk: previous_version(d, rollout.model) for d in group}
            try:
                model = self.resolver(rollout.model, rollout.version, hardware)
            except EdgefleetError as exc:
                if exc.transient:
                    # A busy database is no verdict on the release: this tick assigns
                    # nothing (its transaction rolls back) and the next one tries again.
                    raise
                undeliverable[str(hardware)] = exc.message
                uow.rollouts.assign(rollout.id, wave, previous, now)
                failed = dict.fromkeys(previous, (DeviceStatus.FAILED, exc.code))
                uow.rollouts.set_statuses(rollout.id, failed, now)
                continue
            state = DesiredState(
                model=model,
                trial=spec.trial,
                shadow=spec.shadow,
                preconditions=spec.preconditions,
                rollout=rollout.id,
            )
            uow.devices.set_desired_many(list(previous), state, now)
            uow.rollouts.assign(rollout.id, wave, previous, now)
        return {
            "assigned": len(chosen),
            "devices": [d.device_id for d in chosen[:20]],
            **({"undeliverable": undeliverable} if undeliverable else {}),
        }

    def _prefetch(self, rollout_id: str) -> None:
        """Resolve, outside any write transaction, what an abort's revert needs."""
        with self.read_uow_factory() as uow:
            rollout = self._get(uow, rollout_id)
            kinds = uow.rollouts.touched_kinds(rollout_id)
        wanted = {
            (version, hardware)
            for recorded, hardware in kinds
            if (version := revert_version(rollout.spec.previous_version, recorded, rollout.version))
        }
        for version, hardware in wanted:
            self.resolver.warm(rollout.model, version, hardware)

    def _revert(self, uow: RolloutUnitOfWork, rollout: Rollout, now: datetime) -> int:
        """Send every device the rollout touched back to its previous version; returns
        how many were sent back."""
        touched = uow.rollouts.touched(rollout.id)
        groups = revert_groups(touched, rollout.spec.previous_version, rollout.version)
        reverted = 0
        for (version, hardware), pks in groups.items():
            try:
                model = self.resolver(rollout.model, version, hardware)
            except EdgefleetError as exc:
                if exc.transient:
                    raise  # the abort is not taken now: the next tick tries it again
                continue
            state = DesiredState(model=model, trial=REVERT_TRIAL, rollout=rollout.id)
            uow.devices.set_desired_many(pks, state, now)
            statuses = dict.fromkeys(pks, (DeviceStatus.REVERTED, version))
            uow.rollouts.set_statuses(rollout.id, statuses, now)
            reverted += len(pks)
        return reverted

    @staticmethod
    def _record(
        uow: RolloutUnitOfWork, rollout: Rollout, change: Change, actor: str, now: datetime
    ) -> None:
        """Store a change of a rollout: its progress, its log entries, its notices."""
        uow.rollouts.save(rollout.id, change.progress, now)
        _log(uow, rollout.id, change, actor, now)
        for notice in change.notices:
            uow.rollouts.enqueue(notice.event, event_payload(rollout, notice), now)

    @staticmethod
    def _get(uow: RolloutUnitOfWork, rollout_id: str, *, for_update: bool = False) -> Rollout:
        rollout = uow.rollouts.get(rollout_id, for_update=for_update)
        if rollout is None:
            raise RolloutNotFoundError(
                f"no rollout {rollout_id!r}", details={"rollout": rollout_id}
            )
        return rollout


def _log(
    uow: RolloutUnitOfWork, rollout_id: str, change: Change, actor: str, now: datetime
) -> None:
    for entry in change.entries:
        uow.rollouts.log(
            rollout_id,
            at=now,
            actor=actor,
            kind=entry.kind.value,
            wave=entry.wave,
            reason=entry.reason[:MAX_REASON],
            details=jsonable(dict(entry.details)),
        )


def _audit(
    uow: RolloutUnitOfWork,
    now: datetime,
    actor: Operator,
    action: str,
    subject: str,
    after: dict[str, Any],
) -> None:
    uow.access.audit(
        at=now, before=None, actor=actor.actor, action=action, target=subject, after=after
    )


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


def _with_attributes(
    uow: RolloutUnitOfWork,
    names: Sequence[str],
    candidate: list[DeviceSummary],
    baseline: list[DeviceSummary],
    trials: list[PairedTrial],
) -> tuple[list[DeviceSummary], list[DeviceSummary], list[PairedTrial]]:
    """The gates' evidence with each device's ``names`` attributes (as text)."""
    ids = {d.device_id for d in (*candidate, *baseline)} | {t.device_id for t in trials}
    known = uow.rollouts.device_attributes(sorted(ids))

    def picked(device_id: str) -> dict[str, str]:
        attributes = known.get(device_id, {})
        return {name: str(attributes[name]) for name in names if name in attributes}

    return (
        [replace(d, attributes=picked(d.device_id)) for d in candidate],
        [replace(d, attributes=picked(d.device_id)) for d in baseline],
        [replace(t, attributes=picked(t.device_id)) for t in trials],
    )

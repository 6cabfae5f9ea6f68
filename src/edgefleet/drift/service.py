"""Drift operations and the looks' I/O shell.

``DriftService`` owns what drift reads and writes, through ``drift/ports.py``; the
decisions are the pure modules': ``monitor`` (what a monitor is), ``segments`` (the
slices of the fleet), ``scoring`` (merged telemetry to scores and calibrated
evidence), ``looks`` (which window is due, what a look found) and ``alarms`` (the
lifecycle, the retraining rule)::

    service = DriftService(uow_factory)
    service.apply_monitor(yaml.safe_load(text), by=operator) # a new monitor version
    service.report("digits", start=..., end=...)             # on demand, never stored
    service.run_due_looks()                                  # the server's loop, leader only
    service.alarms(state=AlarmState.OPEN)
    service.acknowledge("da-1f2e3d4c5b6a", by=operator)

A report is computed on demand from merged telemetry (bins, quantile summaries and
per-device dispersion sums per segment), never from raw data. Looks run the same
computation over each monitor's tumbling windows once the window has ended and a
grace for late telemetry has passed; a look is stored with the alarms it changed and
the webhook notifications it queued (``drift.alarm.opened``, ``drift.alarm.resolved``,
``drift.retraining_recommended`` with the report) in one transaction, so a server
that crashes mid-look looks at the window again, whole, when it is back.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.drift import alarms as lifecycle
from edgefleet.drift.alarms import Alarm, AlarmState, Look, advance, features_due
from edgefleet.drift.errors import DriftError, MonitorError
from edgefleet.drift.looks import (
    findings,
    is_due,
    next_window,
    pack_scores,
    unpack_scores,
    unscored_keys,
)
from edgefleet.drift.monitor import (
    FLEET_SEGMENT,
    MAX_WINDOW,
    Monitor,
    Reference,
    load_monitor,
    parse_duration,
)
from edgefleet.drift.ports import DriftBucket, DriftUnitOfWork, NewLook, StoredMonitor
from edgefleet.drift.scoring import (
    Layout,
    Rules,
    Scored,
    WindowAccumulator,
    WindowData,
    decide_all,
    profile_feature_names,
    profile_features,
    profile_reference,
    score,
    window_reference,
)
from edgefleet.drift.segments import SegmentPlan, plan_segments
from edgefleet.drift.views import alarm_view, iso, monitor_view, status_view
from edgefleet.errors import EdgefleetError
from edgefleet.registry.domain import ModelVersion, Stage
from edgefleet.registry.errors import ModelNotFoundError, VersionNotFoundError
from edgefleet.registry.profile import ReferenceProfile
from edgefleet.registry.semver import parse_version

log = logging.getLogger("edgefleet.drift")

#: How long after a window ends its look waits for late telemetry, by default: a device
#: sends a summary period's sample shortly after the period ends, and the server writes
#: telemetry once a second. A server takes it from ``Settings.drift_look_grace_s``.
GRACE = timedelta(minutes=10)
#: Looks one ``run_due_looks`` does at most (a server back after a long outage catches
#: up over several runs, one window per monitor in turn).
MAX_LOOKS_PER_RUN = 24
#: How far back a report's history of looks reaches, and how many looks it reads.
HISTORY = timedelta(days=7)
HISTORY_LOOKS = 200
#: Who the audit log and alarms name for what the looks decide.
LOOKS = "drift-looks"


class AlarmNotFoundError(DriftError):
    """No alarm has that id."""

    code = "drift_alarm_not_found"


class ReportRequestError(DriftError):
    """A report's parameters do not fit together (a window that ends before it starts,
    a reference window without its bounds); ``details`` names the field."""

    code = "drift_report_invalid"


class NoReferenceError(DriftError):
    """The version has no reference profile (its bundle had no reference sample), so
    there are no bins to score its telemetry on."""

    code = "drift_no_reference"


def _now() -> datetime:
    return datetime.now(UTC)


def _new_alarm_id() -> str:
    return f"da-{secrets.token_hex(6)}"


class DriftService:
    """Drift monitors, reports, looks and alarms over a unit of work.

    Args:
        uow_factory: opens a transaction over the store.
        read_uow_factory: transactions that only read and take no write lock (default:
            ``uow_factory``); reports and the looks' scoring read through them.
        clock: the time (tests move it).
        grace: how long after a window ends its look waits for late telemetry.
        max_looks_per_run: looks one ``run_due_looks`` does at most.
        on_look: told the seconds each look took (the server's histogram).
        flush_telemetry: writes telemetry held in memory before a report reads it (the
            server batches it for a second).
    """

    def __init__(
        self,
        uow_factory: Callable[[], DriftUnitOfWork],
        *,
        read_uow_factory: Callable[[], DriftUnitOfWork] | None = None,
        clock: Callable[[], datetime] = _now,
        grace: timedelta = GRACE,
        max_looks_per_run: int = MAX_LOOKS_PER_RUN,
        on_look: Callable[[float], None] | None = None,
        flush_telemetry: Callable[[], object] | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.read_uow_factory = read_uow_factory or uow_factory
        self.clock = clock
        self.grace = grace
        self.max_looks_per_run = max_looks_per_run
        self.on_look = on_look
        self.flush_telemetry = flush_telemetry

    # -- monitors ------------------------------------------------------------------------

    def apply_monitor(
        self, spec: Monitor | Mapping[str, Any], by: Operator, model: str | None = None
    ) -> dict[str, Any]:
        """Apply a monitor: stored as the model's next monitor version unless it is the
        one in force already (same digest). ``model``, when given (the route's path),
        fills a monitor that names none and must match one that does.

        Raises:
            ForbiddenError: the actor is not an operator.
            MonitorError: the monitor is invalid (every problem named by its field),
                names features the model's profiles do not have, or a query segment
                that does not parse.
            ModelNotFoundError, VersionNotFoundError: no such model or version.
        """
        by.require(Role.OPERATOR)
        if isinstance(spec, Mapping) and model is not None and "model" not in spec:
            spec = {**spec, "model": model}
        monitor = load_monitor(spec)
        with self.read_uow_factory() as uow:
            _require_model(uow, model or monitor.model)
            if model is not None and monitor.model != model:
                raise _monitor_problem(
                    "model", f"the monitor is of {monitor.model!r} but was applied to {model!r}"
                )
            self._check_monitor(uow, monitor)
        digest = monitor.digest()
        now = self.clock()
        with self.uow_factory() as uow:
            current = uow.drift.monitor(monitor.model)
            if current is not None and current.digest == digest:
                return {**monitor_view(current), "changed": False}
            stored = uow.drift.add_monitor(monitor.model, monitor, digest, now, by.actor)
            uow.access.audit(
                at=now,
                actor=by.actor,
                action="drift.monitor.apply",
                target=monitor.model,
                before=None if current is None else {"number": current.number},
                after={"number": stored.number, "digest": digest},
            )
            uow.commit()
        return {**monitor_view(stored), "changed": True}

    def _check_monitor(self, uow: DriftUnitOfWork, monitor: Monitor) -> None:
        """What a monitor refers to exists: the model, its version, its features in a
        profile, its query segments' syntax."""
        model = monitor.model
        _require_model(uow, model)
        if monitor.version is not None:
            found = uow.versions.get(model, monitor.version)
            if found is None:
                raise VersionNotFoundError(
                    f"{model} has no version {monitor.version}",
                    details={"model": model, "version": monitor.version},
                )
            versions = [found]
        else:
            versions = uow.versions.find(model=model)
        if monitor.features != "all":
            known: set[str] = set()
            for version in versions:
                if version.reference_profile is not None:
                    known |= profile_feature_names(version.reference_profile)
            missing = [name for name in monitor.features if name not in known]
            if missing:
                shown = ", ".join(repr(name) for name in missing[:10])
                raise _monitor_problem(
                    "features",
                    f"not in the reference profile of any version of {model}: {shown}"
                    + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""),
                )
        for index, segment in enumerate(monitor.segments):
            if segment.query is not None:
                problem = uow.drift.query_problem(segment.query)
                if problem is not None:
                    raise _monitor_problem(f"segments.{index}.query", problem)

    def monitors(self) -> list[dict[str, Any]]:
        """The monitor in force of every model that has one."""
        with self.read_uow_factory() as uow:
            return [monitor_view(stored) for stored in uow.drift.monitors()]

    def monitor(self, model: str) -> dict[str, Any]:
        """The model's monitor in force, with the list of its earlier versions.

        Raises:
            DriftError (``drift_monitor_not_found``): the model has no monitor.
        """
        with self.read_uow_factory() as uow:
            versions = uow.drift.monitor_versions(model)
        if not versions:
            raise MonitorNotFoundError(
                f"{model!r} has no drift monitor: apply one with `edgefleet drift monitor "
                "apply FILE` or PUT /api/v1/drift/monitors/{model}",
                details={"model": model},
            )
        return {
            **monitor_view(versions[0]),
            "versions": [
                {
                    "number": v.number,
                    "digest": v.digest,
                    "created_at": iso(v.created_at),
                    "created_by": v.created_by,
                }
                for v in versions
            ],
        }

    # -- reports -------------------------------------------------------------------------

    def report(
        self,
        model: str,
        version: str | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        last: timedelta | str | None = None,
        segment_by: Sequence[str] | None = None,
        reference: Reference | Literal["profile", "window"] | None = None,
        reference_start: datetime | None = None,
        reference_end: datetime | None = None,
    ) -> dict[str, Any]:
        """The drift report of one model version over a window, computed now from the
        merged telemetry (the JSON of docs/drift.md).

        The window is ``start`` to ``end`` (default: now), or the ``last`` duration
        (``"1h"``) to ``end``, or the monitor's window to now. The reference is a
        ``Reference``, or ``"profile"``, or ``"window"`` from ``reference_start`` to
        ``reference_end``. The version defaults to the monitor's,
        else the one in production; the segments (besides ``all``) to the monitor's, or
        the attributes of ``segment_by``; the reference to the monitor's, else the
        version's profile. Statistics, thresholds and the false-alarm rate are the
        monitor's (its defaults when the model has none).

        Raises:
            ModelNotFoundError, VersionNotFoundError: no such model or version (or no
                version in production when none is named).
            ReportRequestError: the window or the reference window is not a window, or
                ``segment_by`` names no attribute.
            InvalidVersionError: ``version`` is not a version.
            NoReferenceError: the version has no reference profile.
        """
        now = self.clock()
        with self.read_uow_factory() as uow:
            stored = uow.drift.monitor(model)
            monitor = stored.monitor if stored is not None else Monitor(model=model)
            chosen = self._report_version(uow, model, version or monitor.version)
        length = _length(last)
        start, end = _report_window(start, end, length, monitor.window, now)
        if self.flush_telemetry is not None:
            self.flush_telemetry()
        if segment_by is not None:
            monitor = _with_segments(monitor, segment_by)
        chosen_reference = _reference(reference, reference_start, reference_end)
        if chosen_reference is not None:
            monitor = monitor.model_copy(update={"reference": chosen_reference})
        scored = self._score(monitor, chosen, start, end, now)
        decide_all([scored], monitor.look_alpha())
        with self.read_uow_factory() as uow:
            looks = uow.drift.looks(model, chosen.version, end - HISTORY, end, HISTORY_LOOKS)
            alarms = [
                a
                for a in uow.drift.alarms(model=model)
                if a.version == chosen.version
                and (a.is_active or (a.resolved_at is not None and a.resolved_at >= start))
            ]
            unknown = uow.drift.unknown_version_buckets(
                model, [v.version for v in uow.versions.find(model=model)], start, end + self.grace
            )
        result = _report(model, chosen.version, start, end, monitor, scored, full=True)
        if unknown:
            result["skipped"]["unknown_version"] = unknown
        drifted = {(s["segment"], s["feature"]) for s in scored.scores if s["drifted"]}
        result["history"] = [
            {
                "window_end": iso(look.window_end),
                "segment": entry["segment"],
                "feature": entry["feature"],
                "statistic": entry["statistic"],
                "value": entry["value"],
                "threshold": entry["threshold"],
            }
            for look in looks
            for entry in unpack_scores(look.result.get("scores"))
            if (entry["segment"], entry["feature"]) in drifted
        ]
        result["alarms"] = [alarm_view(a) for a in alarms]
        return result

    def _report_version(
        self, uow: DriftUnitOfWork, model: str, version: str | None
    ) -> ModelVersion:
        _require_model(uow, model)
        if version is not None:
            version = str(parse_version(version))
            found = uow.versions.get(model, version)
            if found is None:
                raise VersionNotFoundError(
                    f"{model} has no version {version}",
                    details={"model": model, "version": version},
                )
            return found
        production = sorted(
            uow.versions.find(model=model, stage=Stage.PRODUCTION), key=lambda v: v.created_at
        )
        if not production:
            raise VersionNotFoundError(
                f"{model} has no version in production: name the version to report on",
                details={"model": model},
            )
        return production[-1]

    def _score(
        self, monitor: Monitor, version: ModelVersion, start: datetime, end: datetime, now: datetime
    ) -> Scored:
        """One version's window scored against the monitor's reference, per segment."""
        profile = _profile(version)
        layout = Layout.of(profile_features(profile, monitor))
        known = profile_feature_names(profile)
        attributes = [s.attribute for s in monitor.segments if s.attribute is not None]
        queries = {s.label: str(s.query) for s in monitor.segments if s.query is not None}
        with self.read_uow_factory() as uow:
            # Against a profile without summaries of its own (older ones hold bins only)
            # the window's summaries would go unused.
            summaries = monitor.reference.window is not None or layout.has_summaries
            current, plan = self._window(
                uow,
                layout,
                known,
                version,
                start,
                end,
                attributes,
                queries,
                now,
                None,
                summaries=summaries,
            )
            if monitor.reference.window is None:
                reference = profile_reference(layout)
            else:
                ref_start = monitor.reference.window.start.astimezone(UTC)
                ref_end = monitor.reference.window.end.astimezone(UTC)
                past, _ = self._window(
                    uow,
                    layout,
                    known,
                    version,
                    ref_start,
                    ref_end,
                    attributes,
                    queries,
                    now,
                    plan,
                    summaries=True,
                )
                reference = window_reference(layout, past, Rules.of(monitor), ref_start, ref_end)
        return score(layout, plan.segments, current, reference, Rules.of(monitor))

    def _window(
        self,
        uow: DriftUnitOfWork,
        layout: Layout,
        known: set[str],
        version: ModelVersion,
        start: datetime,
        end: datetime,
        attributes: Sequence[str],
        queries: Mapping[str, str],
        now: datetime,
        plan: SegmentPlan | None,
        *,
        summaries: bool,
    ) -> tuple[WindowData, SegmentPlan]:
        """A window's telemetry of one version merged per segment. With ``plan``, the
        window's devices go into that plan's segments (a reference window is scored
        segment by segment against the current one)."""
        model, versions = version.model, [version.version]
        # Summary periods end at the window's end and reach the server shortly after.
        until = end + self.grace
        devices = uow.drift.window_devices(model, versions, start, until)
        pks = [d.pk for d in devices]
        members = {
            name: (query, uow.drift.query_members(query, pks, now))
            for name, query in queries.items()
        }
        if plan is None:
            plan = plan_segments(devices, attributes, members)
            assigned = plan.members
        else:
            assigned = plan.assign(devices, members)
        accumulator = WindowAccumulator(
            layout, len(plan.segments), start, end, known_features=known, summaries=summaries
        )
        for device_pk, buckets in _per_device(
            uow.drift.drift_buckets(model, versions, start, until)
        ):
            segments = assigned.get(device_pk)
            if segments is not None:
                accumulator.add_device(segments, buckets)
        return accumulator.finish(), plan

    # -- looks ---------------------------------------------------------------------------

    def run_due_looks(self, now: datetime | None = None) -> int:
        """Look at every window that is due, oldest first, one window per monitor in
        turn, at most ``max_looks_per_run``; returns how many looks were stored.

        A look that cannot score a version (no reference profile, say) stores that
        reason in its result and moves on. A look that fails otherwise is logged and
        its monitor waits for the next run (the window is looked at again, whole),
        while the other monitors go on; a database that is unavailable stops the run.
        """
        now = now or self.clock()
        with self.read_uow_factory() as uow:
            monitors = uow.drift.monitors()
        done = 0
        pending = list(monitors)
        while pending and done < self.max_looks_per_run:
            still = []
            for stored in pending:
                if done >= self.max_looks_per_run:
                    break
                with self.read_uow_factory() as uow:
                    last_end = uow.drift.last_window_end(stored.model)
                start, end = next_window(stored.created_at, last_end, stored.monitor.window)
                if not is_due(end, self.grace, now):
                    continue
                try:
                    looked = self.look(stored, start, end)
                except EdgefleetError as exc:
                    if exc.transient:
                        raise
                    log.exception("drift look of %s, %s to %s failed", stored.model, start, end)
                    continue
                except Exception:
                    log.exception("drift look of %s, %s to %s failed", stored.model, start, end)
                    continue
                if looked:
                    done += 1
                    still.append(stored)
            pending = still
        return done

    def look(self, stored: StoredMonitor, start: datetime, end: datetime) -> bool:
        """Score one window of a monitor and store the look with what it changed;
        ``False`` when the window was looked at meanwhile (another server)."""
        began = time.perf_counter()
        monitor = stored.monitor
        model = monitor.model
        now = self.clock()
        with self.read_uow_factory() as uow:
            if monitor.version is not None:
                found = uow.versions.get(model, monitor.version)
                versions = [found] if found is not None else []
            else:
                versions = sorted(
                    uow.versions.find(model=model, stage=Stage.PRODUCTION),
                    key=lambda v: v.version,
                )
        scored: dict[str, Scored] = {}
        reasons: dict[str, str] = {}
        for candidate in versions:
            try:
                scored[candidate.version] = self._score(monitor, candidate, start, end, now)
            except DriftError as exc:
                reasons[candidate.version] = exc.message
        decide_all(list(scored.values()), monitor.look_alpha())
        found_now = [f for v, s in scored.items() for f in findings(model, v, s)]
        results = {
            version: _report(model, version, start, end, monitor, s, full=False)
            for version, s in scored.items()
        }
        with self.uow_factory() as uow:
            last_end = uow.drift.last_window_end(model)
            if last_end is not None and last_end >= end:
                return False  # another server looked at this window meanwhile
            active = uow.drift.active_alarms(model)
            look = Look(
                at=end,
                resolve_after=monitor.resolve_after,
                skipped=unscored_keys(active, scored),
            )
            changes = advance(active, found_now, look, _new_alarm_id)
            events: list[tuple[str, str, dict[str, Any]]] = []  # (version, event, payload)
            for alarm in changes.opened:
                events.append((alarm.version, "drift.alarm.opened", _alarm_event(alarm, stored)))
            for alarm in changes.resolved:
                events.append((alarm.version, "drift.alarm.resolved", _alarm_event(alarm, stored)))
            rule = monitor.retraining
            if rule is not None:
                # The history as this look leaves it (its changes are stored below).
                history = {a.id: a for a in uow.drift.alarm_history(model, start - rule.for_)}
                history.update((a.id, a) for a in changes.changed)
                before = features_due(history.values(), rule, start)
                due = features_due(history.values(), rule, end)
                for (_, version), features in sorted(due.items()):
                    if (model, version) in before or version not in results:
                        continue
                    events.append(
                        (
                            version,
                            "drift.retraining_recommended",
                            {
                                "model": model,
                                "version": version,
                                "monitor": stored.number,
                                "features": list(features),
                                "rule": rule.model_dump(mode="json", by_alias=True),
                                "report": dict(results[version]),
                            },
                        )
                    )
            looked = dict(results)
            if not versions:
                looked[""] = _unscored(model, None, start, end, _no_version(monitor))
            for version, reason in reasons.items():
                looked[version] = _unscored(model, version, start, end, reason)
            for version, event, payload in events:
                if version in looked:
                    looked[version].setdefault("events", []).append(_event_summary(event, payload))
            for version, result in looked.items():
                kept = {**result, "scores": pack_scores(result["scores"])}
                look_row = NewLook(stored.id, model, version, start, end, now, kept)
                if uow.drift.add_look(look_row) is None:
                    return False  # another server looked at this window meanwhile
            uow.drift.save_alarms(changes.changed, now)
            for _, event, payload in events:
                uow.webhooks.enqueue(event, payload, now)
            uow.commit()
        if self.on_look is not None:
            self.on_look(time.perf_counter() - began)
        return True

    # -- alarms --------------------------------------------------------------------------

    def alarms(
        self, *, state: AlarmState | None = None, model: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Alarms, newest first (of one state, of one model)."""
        with self.read_uow_factory() as uow:
            return [alarm_view(a) for a in uow.drift.alarms(state=state, model=model, limit=limit)]

    def alarm(self, alarm_id: str) -> dict[str, Any]:
        """One alarm.

        Raises:
            AlarmNotFoundError.
        """
        with self.read_uow_factory() as uow:
            return alarm_view(_get_alarm(uow, alarm_id))

    def acknowledge(self, alarm_id: str, by: Operator) -> dict[str, Any]:
        """Acknowledge an open alarm (someone is on it).

        Raises:
            ForbiddenError: the actor is not an operator.
            AlarmNotFoundError: no such alarm.
            AlarmStateError: the alarm is not open.
        """
        return self._operate(by, alarm_id, "acknowledge", lifecycle.acknowledge)

    def resolve(self, alarm_id: str, by: Operator) -> dict[str, Any]:
        """Resolve an open or acknowledged alarm; its key drifting again opens a new one.

        Raises:
            ForbiddenError: the actor is not an operator.
            AlarmNotFoundError: no such alarm.
            AlarmStateError: the alarm is resolved already.
        """
        return self._operate(by, alarm_id, "resolve", lifecycle.resolve)

    def _operate(
        self,
        actor: Operator,
        alarm_id: str,
        action: str,
        change: Callable[[Alarm, str, datetime], Alarm],
    ) -> dict[str, Any]:
        actor.require(Role.OPERATOR)
        now = self.clock()
        with self.uow_factory() as uow:
            alarm = _get_alarm(uow, alarm_id, for_update=True)
            changed = change(alarm, actor.actor, max(now, alarm.opened_at))
            uow.drift.save_alarms([changed], now)
            if changed.state is AlarmState.RESOLVED:
                payload = {"alarm": alarm_view(changed), "by": actor.actor}
                uow.webhooks.enqueue("drift.alarm.resolved", payload, now)
            uow.access.audit(
                at=now,
                actor=actor.actor,
                action=f"drift.alarm.{action}",
                target=alarm_id,
                before={"state": alarm.state.value},
                after={"state": changed.state.value},
            )
            uow.commit()
        return alarm_view(changed)

    # -- status and metrics ------------------------------------------------------------

    def status(self, model: str | None = None) -> list[dict[str, Any]]:
        """Per monitor (of every model, or one): its latest look of each version (window,
        drifted features, segment statuses) and its active alarms."""
        with self.read_uow_factory() as uow:
            monitors = {m.model: m for m in uow.drift.monitors() if model in (None, m.model)}
            looks = uow.drift.latest_looks(model)
            active = [
                a
                for state in (AlarmState.OPEN, AlarmState.ACKNOWLEDGED)
                for a in uow.drift.alarms(state=state, model=model)
            ]
        return status_view(looks, monitors, active)

    def gauges(self) -> dict[str, Any]:
        """What the Prometheus series show, read now: alarms by (model, state); per
        model version, from its latest look, the drifted features by segment attribute
        and the largest score of each statistic."""
        with self.read_uow_factory() as uow:
            counts = uow.drift.alarm_counts()
            looks = uow.drift.latest_looks()
        drifted: dict[tuple[str, str, str], set[str]] = {}
        maxima: dict[tuple[str, str, str], float] = {}
        for look in looks:
            if not look.version:
                continue
            kinds = {
                str(s.get("segment")): s.get("attribute") or FLEET_SEGMENT
                for s in look.result.get("segments", [])
            }
            for kind in set(kinds.values()):
                drifted.setdefault((look.model, look.version, kind), set())
            for entry in unpack_scores(look.result.get("scores")):
                key = (look.model, look.version, str(entry.get("statistic")))
                value = entry.get("value")
                if isinstance(value, int | float):
                    maxima[key] = max(maxima.get(key, float(value)), float(value))
                if entry.get("drifted"):
                    kind = kinds.get(str(entry.get("segment")), FLEET_SEGMENT)
                    drifted.setdefault((look.model, look.version, kind), set()).add(
                        str(entry.get("feature"))
                    )
        return {
            "alarms": counts,
            "features_drifted": {key: len(names) for key, names in drifted.items()},
            "score_max": maxima,
        }


class MonitorNotFoundError(DriftError):
    """The model has no drift monitor."""

    code = "drift_monitor_not_found"


def _require_model(uow: DriftUnitOfWork, model: str) -> None:
    if not uow.versions.model_exists(model):
        raise ModelNotFoundError(
            f"no model named {model!r} is registered", details={"model": model}
        )


def _monitor_problem(field: str, message: str) -> MonitorError:
    return MonitorError(
        f"the monitor is invalid: {field}: {message}",
        details={"problems": [{"field": field, "message": message}]},
    )


def _profile(version: ModelVersion) -> ReferenceProfile:
    profile = version.reference_profile
    if profile is None:
        raise NoReferenceError(
            f"{version.model} {version.version} has no reference profile (its bundle had no "
            "reference sample), so there are no bins to score drift on: register a version "
            "with one",
            details={"model": version.model, "version": version.version},
        )
    return profile


def _with_segments(monitor: Monitor, segment_by: Sequence[str]) -> Monitor:
    """The monitor segmenting by these attributes instead of its own segments.

    Raises:
        ReportRequestError: a name is not an attribute name (or listed twice).
    """
    try:
        return Monitor.model_validate(
            {**monitor.model_dump(mode="json", by_alias=True), "segments": list(segment_by)}
        )
    except ValidationError as exc:
        problems = [
            {"field": "segment_by", "message": str(e["msg"]).removeprefix("Value error, ")}
            for e in exc.errors()
        ]
        raise ReportRequestError(
            "segment_by: " + "; ".join(p["message"] for p in problems),
            details={"problems": problems},
        ) from exc


def _report_window(
    start: datetime | None,
    end: datetime | None,
    last: timedelta | None,
    default: timedelta,
    now: datetime,
) -> tuple[datetime, datetime]:
    """The report's window, in UTC.

    Raises:
        ReportRequestError: ``start`` and ``last`` both given, the window empty or
            reversed, or longer than a monitor's longest window.
    """
    if start is not None and last is not None:
        raise ReportRequestError(
            "give start or last, not both", details={"fields": ["start", "last"]}
        )
    end = (end or now).astimezone(UTC)
    if start is None:
        length = last if last is not None else default
        if length <= timedelta(0):
            raise ReportRequestError("last must be longer than zero", details={"field": "last"})
        start = end - length
    start = start.astimezone(UTC)
    if end <= start:
        raise ReportRequestError(
            f"the window ends ({iso(end)}) before it starts ({iso(start)})",
            details={"fields": ["start", "end"]},
        )
    if end - start > MAX_WINDOW:
        raise ReportRequestError(
            f"a report covers at most {MAX_WINDOW.days} days",
            details={"fields": ["start", "end", "last"]},
        )
    return start, end


def _length(last: timedelta | str | None) -> timedelta | None:
    """A report's ``last`` as a duration.

    Raises:
        ReportRequestError: it is not a duration (``30m``, ``1h``, ``7d``).
    """
    if last is None or isinstance(last, timedelta):
        return last
    try:
        return parse_duration(last)
    except ValueError as exc:
        raise ReportRequestError(f"last: {exc}", details={"field": "last"}) from exc


def _reference(
    reference: Reference | str | None, start: datetime | None, end: datetime | None
) -> Reference | None:
    """A report's reference from its parameters.

    Raises:
        ReportRequestError: a window without both bounds, bounds without a window, a
            window that ends before it starts, or another kind of reference.
    """
    if isinstance(reference, Reference):
        return reference
    if reference != "window":
        if start is not None or end is not None:
            raise ReportRequestError(
                "reference_start and reference_end need reference=window",
                details={"fields": ["reference", "reference_start", "reference_end"]},
            )
        if reference not in (None, "profile"):
            raise ReportRequestError(
                f"reference is profile or window, not {reference!r}",
                details={"field": "reference"},
            )
        return None if reference is None else Reference()
    if start is None or end is None:
        raise ReportRequestError(
            "reference=window needs reference_start and reference_end",
            details={"fields": ["reference_start", "reference_end"]},
        )
    try:
        return Reference.model_validate({"window": {"start": start, "end": end}})
    except ValidationError as exc:
        raise ReportRequestError(
            "the reference window must end after it starts",
            details={"fields": ["reference_start", "reference_end"]},
        ) from exc


def _per_device(buckets: Iterator[DriftBucket]) -> Iterator[tuple[int, list[DriftBucket]]]:
    """Buckets grouped by device (the store hands each device's together)."""
    device: int | None = None
    group: list[DriftBucket] = []
    for bucket in buckets:
        if bucket.device_pk != device:
            if device is not None:
                yield device, group
            device, group = bucket.device_pk, []
        group.append(bucket)
    if device is not None:
        yield device, group


def _report(
    model: str,
    version: str,
    start: datetime,
    end: datetime,
    monitor: Monitor,
    scored: Scored,
    *,
    full: bool,
) -> dict[str, Any]:
    """The report JSON of a scored window. ``full`` (an on-demand report) keeps the
    distributions of every feature in ``all`` and of each drifted feature in its
    segments; a stored look keeps the drifted ones only."""
    drifted = {(s["segment"], s["feature"]) for s in scored.scores if s["drifted"]}
    distributions: dict[str, dict[str, Any]] = {}
    for segment, features in scored.distributions.items():
        kept = {
            feature: view
            for feature, view in features.items()
            if (segment, feature) in drifted or (full and segment == FLEET_SEGMENT)
        }
        if kept:
            distributions[segment] = kept
    return {
        "model": model,
        "version": version,
        "window": {"start": iso(start), "end": iso(end)},
        "reference": scored.reference,
        "monitor": {
            "statistics": monitor.thresholds(),
            "alpha": monitor.look_alpha(),
            "segments": [s.label for s in monitor.segments],
        },
        "segments": scored.segments,
        "scores": scored.scores,
        "distributions": distributions,
        "skipped": dict(sorted(scored.skipped.items())),
        "drifted_features": scored.drifted_features(),
    }


def _no_version(monitor: Monitor) -> str:
    """Why a look had no version to score."""
    if monitor.version is not None:
        return f"{monitor.model} {monitor.version} is not registered"
    return f"{monitor.model} has no version in production"


def _unscored(
    model: str, version: str | None, start: datetime, end: datetime, reason: str
) -> dict[str, Any]:
    """The look of a window with no version to score, or of a version that could not
    be scored, and why."""
    return {
        "model": model,
        "version": version,
        "window": {"start": iso(start), "end": iso(end)},
        "segments": [],
        "scores": [],
        "skipped": {},
        "drifted_features": [],
        "reason": reason,
    }


def _alarm_event(alarm: Alarm, stored: StoredMonitor) -> dict[str, Any]:
    return {"alarm": alarm_view(alarm), "monitor": stored.number}


def _event_summary(event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the look's result lists it (the webhook carries the whole payload)."""
    alarm = payload.get("alarm")
    if isinstance(alarm, Mapping):
        return {
            "event": event,
            "alarm": alarm.get("id"),
            "segment": alarm.get("segment"),
            "feature": alarm.get("feature"),
        }
    return {"event": event, "features": list(payload.get("features", []))}


def _get_alarm(uow: DriftUnitOfWork, alarm_id: str, *, for_update: bool = False) -> Alarm:
    alarm = uow.drift.alarm(alarm_id, for_update=for_update)
    if alarm is None:
        raise AlarmNotFoundError(f"no drift alarm {alarm_id!r}", details={"alarm": alarm_id})
    return alarm

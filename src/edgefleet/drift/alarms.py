"""Drift alarms: their lifecycle, and when persistent drift recommends retraining.

A look of a monitor ends in *findings*: the (model, version, segment, feature) keys that
drifted, each with every statistic that fired and the numbers it fired on. Alarms turn
findings into something people act on, one alarm per key at a time::

    open --acknowledge--> acknowledged --resolve (manual)--> resolved
      \\------------- resolve, or absent for resolve_after looks -------/

:func:`advance` applies one look: a finding with no active alarm opens one, a finding
with an active alarm refreshes it (the latest numbers, ``looks_absent`` back to 0), and
an active alarm whose finding is absent counts the look and resolves itself after
``resolve_after`` looks in a row. A resolved alarm stays resolved; its key firing again
opens a new alarm. Keys a look could not score (insufficient data) are left alone, so a
quiet night does not resolve an alarm. Everything is pure: the caller stores the
changes and sends the notifications::

    changes = advance(active, findings, Look(at=window_end, resolve_after=3), new_id)
    store.save(changes.changed)
    for alarm in changes.opened: notify("drift_alarm_opened", alarm)

:func:`retraining_due` reads the alarm history: at least ``min_features`` features of a
model version each in drift, continuously, for at least the rule's duration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, model_validator

from edgefleet.drift.errors import DriftError
from edgefleet.drift.monitor import RetrainingRule

#: (model, version, segment, feature): at most one active alarm per key.
AlarmKey = tuple[str, str, str, str]
# [start, end) of an alarm's drift; end None while it is active.
_Stretch = tuple[datetime, datetime | None]


class AlarmState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


#: States in which an alarm is still live (deduplicates findings, counts as drift).
ACTIVE_STATES = frozenset({AlarmState.OPEN, AlarmState.ACKNOWLEDGED})


class Resolution(StrEnum):
    """How an alarm was resolved."""

    AUTO = "auto"  # its finding was absent for resolve_after looks in a row
    MANUAL = "manual"  # an operator resolved it


class AlarmStateError(DriftError):
    """The operation does not apply to the alarm in its state (acknowledging a resolved
    alarm, a look older than the alarm's last one); ``details`` has the alarm's id and
    state."""

    code = "drift_alarm_state"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Fired(_Frozen):
    """One statistic that fired on a key: its value against its threshold, and the
    evidence (p-value against the look's Benjamini-Hochberg cut)."""

    statistic: str = Field(min_length=1)
    value: float
    threshold: float
    p_value: float = Field(ge=0, le=1)
    bh_cut: float = Field(ge=0, le=1)
    #: How the value was computed when not from the exact summaries ("bins": KS or
    #: Wasserstein from the bins because a platform has no quantile sketches).
    approximate: str | None = None


class Finding(_Frozen):
    """A key that drifted in one look, with the numbers it drifted on."""

    model: str = Field(min_length=1)
    version: str = Field(min_length=1)
    segment: str = Field(min_length=1)
    feature: str = Field(min_length=1)
    fired: tuple[Fired, ...] = Field(min_length=1)
    rows: StrictInt = Field(ge=0)
    devices: StrictInt = Field(ge=0)
    phi: float = Field(ge=1)

    @model_validator(mode="after")
    def _one_per_statistic(self) -> Self:
        names = [fired.statistic for fired in self.fired]
        if len(set(names)) != len(names):
            raise ValueError(f"a statistic fires once per finding, got {names}")
        return self

    @property
    def key(self) -> AlarmKey:
        return (self.model, self.version, self.segment, self.feature)


class Alarm(_Frozen):
    """One alarm: a key in drift from ``opened_at``, with the numbers of the look that
    opened it (``opening``) and of the latest look that found it (``latest``)."""

    id: str = Field(min_length=1)
    state: AlarmState
    opened_at: AwareDatetime
    opening: Finding
    latest: Finding
    last_seen_at: AwareDatetime  # the latest look that found the key
    last_look_at: AwareDatetime  # the latest look applied to the alarm
    looks_absent: StrictInt = Field(default=0, ge=0)  # looks in a row without the key
    acknowledged_at: AwareDatetime | None = None
    acknowledged_by: str | None = None
    resolved_at: AwareDatetime | None = None
    resolved_by: str | None = None  # None when it resolved itself
    resolution: Resolution | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.latest.key != self.opening.key:
            raise ValueError("an alarm's latest finding has the key of its opening finding")
        if (self.state is AlarmState.RESOLVED) != (self.resolved_at is not None):
            raise ValueError("resolved_at is set exactly when the alarm is resolved")
        if (self.resolved_at is None) != (self.resolution is None):
            raise ValueError("a resolved alarm says how it was resolved")
        if self.state is AlarmState.ACKNOWLEDGED and self.acknowledged_at is None:
            raise ValueError("an acknowledged alarm has acknowledged_at")
        if not self.opened_at <= self.last_seen_at <= self.last_look_at:
            raise ValueError("opened_at <= last_seen_at <= last_look_at")
        return self

    @property
    def key(self) -> AlarmKey:
        return self.opening.key

    @property
    def model(self) -> str:
        return self.opening.model

    @property
    def version(self) -> str:
        return self.opening.version

    @property
    def segment(self) -> str:
        return self.opening.segment

    @property
    def feature(self) -> str:
        return self.opening.feature

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class Look:
    """One look of a monitor, as the alarms see it."""

    at: datetime  # the end of the look's window (timezone-aware)
    resolve_after: int = 3
    #: Keys the look could not score (insufficient data, version not seen): their active
    #: alarms neither refresh nor count the look as absent.
    skipped: frozenset[AlarmKey] = frozenset()

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("a look's time must be timezone-aware")
        if self.resolve_after < 1:
            raise ValueError(f"resolve_after must be at least 1, got {self.resolve_after}")


@dataclass(frozen=True)
class AlarmChanges:
    """What one look changed; alarms it did not touch are in none of these."""

    opened: tuple[Alarm, ...]
    updated: tuple[Alarm, ...]  # still active: refreshed, or one more look absent
    resolved: tuple[Alarm, ...]  # resolved by this look (absent for resolve_after looks)

    @property
    def changed(self) -> tuple[Alarm, ...]:
        """Every alarm to store."""
        return (*self.opened, *self.updated, *self.resolved)


def advance(
    alarms: Iterable[Alarm],
    findings: Iterable[Finding],
    look: Look,
    new_id: Callable[[], str],
) -> AlarmChanges:
    """Apply one look's findings to the alarms (resolved alarms in ``alarms`` are
    history and ignored).

    Args:
        alarms: the current alarms of the monitor (at least every active one).
        findings: the look's findings, one per key.
        look: when the look's window ended, and how many absent looks resolve.
        new_id: gives the id of each alarm this look opens.

    Raises:
        ValueError: two findings share a key (merge a key's statistics into one finding).
        AlarmStateError: two active alarms share a key, or the look is not later than
            an active alarm's last look (looks apply once each, in order).
    """
    active: dict[AlarmKey, Alarm] = {}
    for alarm in alarms:
        if not alarm.is_active:
            continue
        if alarm.key in active:
            raise AlarmStateError(
                f"alarms {active[alarm.key].id} and {alarm.id} are both active for "
                f"{_describe(alarm.key)}: at most one may be",
                details={"ids": [active[alarm.key].id, alarm.id]},
            )
        if look.at <= alarm.last_look_at:
            raise AlarmStateError(
                f"the look at {look.at.isoformat()} is not after alarm {alarm.id}'s last look "
                f"at {alarm.last_look_at.isoformat()}: looks apply once each, in order",
                details={"id": alarm.id, "state": alarm.state.value},
            )
        active[alarm.key] = alarm
    found: dict[AlarmKey, Finding] = {}
    for finding in findings:
        if finding.key in found:
            raise ValueError(f"two findings for {_describe(finding.key)}: give one per key")
        found[finding.key] = finding

    opened: list[Alarm] = []
    updated: list[Alarm] = []
    resolved: list[Alarm] = []
    for key, alarm in active.items():
        fresh = found.get(key)
        if fresh is not None:
            updated.append(
                _with(
                    alarm, latest=fresh, last_seen_at=look.at, last_look_at=look.at, looks_absent=0
                )
            )
        elif key not in look.skipped:
            absent = alarm.looks_absent + 1
            if absent >= look.resolve_after:
                resolved.append(
                    _with(
                        alarm,
                        state=AlarmState.RESOLVED,
                        looks_absent=absent,
                        last_look_at=look.at,
                        resolved_at=look.at,
                        resolution=Resolution.AUTO,
                    )
                )
            else:
                updated.append(_with(alarm, looks_absent=absent, last_look_at=look.at))
    for key, finding in found.items():
        if key not in active:
            opened.append(
                Alarm(
                    id=new_id(),
                    state=AlarmState.OPEN,
                    opened_at=look.at,
                    opening=finding,
                    latest=finding,
                    last_seen_at=look.at,
                    last_look_at=look.at,
                )
            )
    return AlarmChanges(opened=tuple(opened), updated=tuple(updated), resolved=tuple(resolved))


def acknowledge(alarm: Alarm, by: str, at: datetime) -> Alarm:
    """The alarm acknowledged by ``by``: someone is on it. It stays active (it still
    refreshes and resolves like an open one).

    Raises:
        AlarmStateError: the alarm is not open (already acknowledged, or resolved).
        ValueError: ``by`` is empty or ``at`` is before the alarm opened.
    """
    if alarm.state is not AlarmState.OPEN:
        raise AlarmStateError(
            f"alarm {alarm.id} is {alarm.state.value}{_since(alarm)}: only an open alarm "
            "can be acknowledged",
            details={"id": alarm.id, "state": alarm.state.value},
        )
    _check_actor(alarm, by, at)
    return _with(alarm, state=AlarmState.ACKNOWLEDGED, acknowledged_at=at, acknowledged_by=by)


def resolve(alarm: Alarm, by: str, at: datetime) -> Alarm:
    """The alarm resolved by ``by`` (the drift is understood or dealt with). If its key
    still drifts, the next look opens a new alarm.

    Raises:
        AlarmStateError: the alarm is already resolved.
        ValueError: ``by`` is empty or ``at`` is before the alarm opened.
    """
    if alarm.state is AlarmState.RESOLVED:
        raise AlarmStateError(
            f"alarm {alarm.id} is already resolved{_since(alarm)}",
            details={"id": alarm.id, "state": alarm.state.value},
        )
    _check_actor(alarm, by, at)
    return _with(
        alarm,
        state=AlarmState.RESOLVED,
        resolved_at=at,
        resolved_by=by,
        resolution=Resolution.MANUAL,
    )


def drifting_features(
    history: Iterable[Alarm], now: datetime
) -> dict[tuple[str, str], dict[str, datetime]]:
    """Per (model, version), each feature in drift at ``now`` and since when it has been
    without a break.

    A feature is in drift while any alarm on it (any segment) is active: from the alarm's
    ``opened_at`` until its ``resolved_at`` (exclusive), or on, if still active. Alarms of
    one feature that overlap or touch make one unbroken stretch. Alarms opened after
    ``now`` are ignored.
    """
    stretches: dict[tuple[str, str, str], list[_Stretch]] = defaultdict(list)
    for alarm in history:
        if alarm.opened_at > now:
            continue
        resolved = alarm.resolved_at
        end = resolved if resolved is not None and resolved <= now else None
        stretches[(alarm.model, alarm.version, alarm.feature)].append((alarm.opened_at, end))
    drifting: dict[tuple[str, str], dict[str, datetime]] = defaultdict(dict)
    for (model, version, feature), intervals in stretches.items():
        since = _unbroken_since(intervals, now)
        if since is not None:
            drifting[(model, version)][feature] = since
    return dict(drifting)


def retraining_due(history: Iterable[Alarm], rule: RetrainingRule, now: datetime) -> bool:
    """Whether ``rule`` holds at ``now``: some model version has at least
    ``rule.min_features`` features each in drift without a break for at least
    ``rule.for_`` (see :func:`drifting_features`).

    ``history`` must hold every alarm active in the last ``rule.for_`` (resolved ones
    included). To send ``retraining_recommended`` once per episode, send it when the
    rule holds at a look and did not at the previous one.
    """
    return bool(features_due(history, rule, now))


def features_due(
    history: Iterable[Alarm], rule: RetrainingRule, now: datetime
) -> dict[tuple[str, str], tuple[str, ...]]:
    """Per (model, version) for which ``rule`` holds at ``now``, the features that make
    it hold (each in drift for at least ``rule.for_``), sorted."""
    due: dict[tuple[str, str], tuple[str, ...]] = {}
    for model_version, features in drifting_features(history, now).items():
        lasting = sorted(f for f, since in features.items() if now - since >= rule.for_)
        if len(lasting) >= rule.min_features:
            due[model_version] = tuple(lasting)
    return due


def _unbroken_since(intervals: list[_Stretch], now: datetime) -> datetime | None:
    """The start of the unbroken union of ``[start, end)`` intervals (``None``: still
    going) that covers ``now``, or None if none does."""
    since: datetime | None = None
    reach: datetime | None = None  # where the current stretch ends; None: it goes on
    for start, end in sorted(intervals, key=lambda interval: interval[0]):
        if since is not None and (reach is None or start <= reach):
            # Overlaps or touches the current stretch: one unbroken stretch.
            reach = None if reach is None or end is None else max(reach, end)
        else:
            since, reach = start, end
    # Every start is at or before now, so only the last stretch can cover it.
    if since is None or (reach is not None and reach <= now):
        return None
    return since


def _with(alarm: Alarm, **changes: Any) -> Alarm:
    """A changed copy of ``alarm``, validated again (``model_copy`` would not)."""
    return Alarm.model_validate({**alarm.model_dump(), **changes})


def _check_actor(alarm: Alarm, by: str, at: datetime) -> None:
    if not by.strip():
        raise ValueError("say who acts on the alarm (by is empty)")
    if at < alarm.opened_at:
        raise ValueError(
            f"{at.isoformat()} is before alarm {alarm.id} opened ({alarm.opened_at.isoformat()})"
        )


def _since(alarm: Alarm) -> str:
    if alarm.state is AlarmState.RESOLVED and alarm.resolved_at is not None:
        who = f" by {alarm.resolved_by}" if alarm.resolved_by else " (no longer found)"
        return f" since {alarm.resolved_at.isoformat()}{who}"
    if alarm.state is AlarmState.ACKNOWLEDGED and alarm.acknowledged_at is not None:
        return f" since {alarm.acknowledged_at.isoformat()} by {alarm.acknowledged_by}"
    return ""


def _describe(key: AlarmKey) -> str:
    model, version, segment, feature = key
    return f"{model} {version}, segment {segment}, feature {feature}"

"""A scenario's expectations held against what its run saw (pure: no I/O).

Each release of a scenario says what must hold once it is over (``Expect``: the
rollout's final state, a gate that failed, devices committed, the share of the fleet
exposed, how fast the failure was detected, ...). The runner gathers what happened,
each release's ``ReleaseResult`` and a few numbers of the whole run, and this module
turns every field the scenario gave into one ``Check``: its name, what was expected,
what happened and whether that passed. The reports show every check; the run passes
when all of them did::

    run = RunFacts(
        devices=200, serving={"1.1.0": 200}, interruptions=0, bytes_repeated=0, chunk_bytes=65536
    )
    checks = run_checks([ReleaseFacts(release.expect, result)], run)
    [f"{c.name}: expected {c.expected}, got {c.actual}" for c in checks if not c.passed]
    # ["1.2.0: rollout state: expected aborted, got succeeded"]

A scenario's drift expectations (``drift_expect``) are held against the drift alarms the
run read from the API (``DriftFacts``, ``drift_checks``): an alarm on a segment within a
delay of the drift's start, no alarm at all, or none on other segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgefleet.sim.result import Check, ReleaseResult
from edgefleet.sim.scenario import DriftExpect, Expect

#: Simulator errors a failed check shows (the rest are in the log).
SHOWN_ERRORS = 5


@dataclass(frozen=True)
class RunFacts:
    """What the whole run saw, at its end."""

    #: the fleet's size
    devices: int
    #: devices by the version they serve at the end ("none": no model), every device once
    serving: Mapping[str, int]
    #: downloads cut by the network and resumed, over the whole run
    interruptions: int
    #: bytes the devices received beyond one copy of each artifact, over the whole run
    bytes_repeated: int
    #: the size the devices download in: a resumed download may fetch again at most the
    #: chunk it was cut in
    chunk_bytes: int
    #: what went wrong inside the simulator itself (not in what it simulates)
    errors: Sequence[str] = ()


@dataclass(frozen=True)
class ReleaseFacts:
    """One release: what the scenario expects of it and what its rollout did."""

    expect: Expect
    result: ReleaseResult
    #: the most devices the rollout counted unreachable at any one look
    max_unreachable: int = 0


@dataclass(frozen=True)
class DriftFacts:
    """What the scenario expects of drift alarms and the alarms the run saw.

    ``alarms`` are alarm dicts as the drift API returns them (``segment``, ``feature``,
    ``state``, ...), each with ``opened_t``, when it opened on the run's clock.
    """

    expect: DriftExpect
    alarms: Sequence[Mapping[str, Any]]
    #: when the first drift of the scenario started (``None``: it has none)
    started_t: float | None = None


def run_checks(
    releases: Iterable[ReleaseFacts], run: RunFacts, drift: DriftFacts | None = None
) -> list[Check]:
    """Every release's checks, release by release, the drift checks, then that the
    simulator ran cleanly."""
    checks = [check for release in releases for check in release_checks(release, run)]
    if drift is not None:
        checks.extend(drift_checks(drift))
    errors = list(run.errors[:SHOWN_ERRORS])
    checks.append(Check("no simulator errors", not run.errors, [], errors))
    return checks


def release_checks(release: ReleaseFacts, run: RunFacts) -> list[Check]:
    """One check per field of the release's ``Expect`` that the scenario gave, in the
    order the fields are documented; each named after the release's version."""
    expect, result = release.expect, release.result
    label = f"{result.version}:"
    checks: list[Check] = []
    if expect.state is not None:
        checks.append(
            Check(
                f"{label} rollout state", result.state == expect.state, expect.state, result.state
            )
        )
    if expect.failed_gate is not None:
        hit = set(expect.failed_gate) & set(result.failed_gates)
        checks.append(
            Check(
                f"{label} a gate failed",
                bool(hit),
                f"any of {expect.failed_gate}",
                result.failed_gates,
            )
        )
    if expect.max_wave is not None:
        checks.append(_at_most(f"{label} stopped by wave", result.waves_reached, expect.max_wave))
    if expect.committed is not None:
        wanted = run.devices if expect.committed == "all" else expect.committed
        checks.append(_at_least(f"{label} devices committed", result.committed, wanted))
    if expect.max_exposed_share is not None:
        checks.append(
            _at_most(f"{label} share exposed", result.exposed_share, expect.max_exposed_share)
        )
    if expect.serving_at_end is not None:
        wrong = run.devices - run.serving.get(expect.serving_at_end, 0)
        checks.append(
            Check(
                f"{label} every device serves {expect.serving_at_end}",
                wrong == 0,
                0,
                f"{wrong} devices serve something else",
            )
        )
    if expect.rollbacks_only_on is not None:
        # Also a promise that rollbacks happened: none at all fails it.
        revisions = set(result.rollbacks_by_revision)
        checks.append(
            Check(
                f"{label} on-device rollbacks only on {', '.join(expect.rollbacks_only_on)}",
                bool(revisions) and revisions <= set(expect.rollbacks_only_on),
                expect.rollbacks_only_on,
                result.rollbacks_by_revision,
            )
        )
    if expect.max_rollbacks is not None:
        rolled_back = sum(result.rollbacks_by_revision.values())
        checks.append(_at_most(f"{label} on-device rollbacks", rolled_back, expect.max_rollbacks))
    if expect.min_restarts is not None:
        checks.append(
            _at_least(f"{label} devices restarted on it", result.restarts, expect.min_restarts)
        )
    if expect.max_repeated_chunks_per_interruption is not None:
        chunks = int(expect.max_repeated_chunks_per_interruption * run.interruptions)
        allowed = chunks * run.chunk_bytes
        checks.append(_at_most(f"{label} bytes fetched twice", run.bytes_repeated, allowed))
    if expect.min_interruptions is not None:
        checks.append(
            _at_least(
                f"{label} downloads interrupted and resumed",
                run.interruptions,
                expect.min_interruptions,
            )
        )
    if expect.min_unreachable is not None:
        checks.append(
            _at_least(
                f"{label} devices counted unreachable",
                release.max_unreachable,
                expect.min_unreachable,
            )
        )
    for name, limit, value in (
        ("time to detect", expect.max_time_to_detect_s, result.time_to_detect_s),
        ("time to roll back", expect.max_time_to_rollback_s, result.time_to_rollback_s),
    ):
        if limit is not None:
            # None: it never happened, which no limit allows.
            passed = value is not None and value <= limit
            checks.append(Check(f"{label} {name}", passed, f"<= {limit} s", value))
    return checks


def _at_most(name: str, actual: float, limit: float) -> Check:
    return Check(name, actual <= limit, f"<= {limit}", actual)


def _at_least(name: str, actual: float, floor: float) -> Check:
    return Check(name, actual >= floor, f">= {floor}", actual)


def drift_checks(facts: DriftFacts) -> list[Check]:
    """One check per ``alarm_on`` entry (and one more per entry for
    ``max_time_to_alarm_s``), then one for ``no_alarm``.

    An ``alarm_on`` entry holds once an alarm on its segment opened after the first drift
    started, on each of its features when it names some; its time to alarm is from that
    start until the last of them first alarmed.
    """
    expect = facts.expect
    checks: list[Check] = []
    for entry in expect.alarm_on or ():
        at = alarmed_at(facts, entry.segment, entry.features)
        seen = sorted(
            {
                str(a.get("feature"))
                for a in _after_start(facts)
                if a.get("segment") == entry.segment
            }
        )
        what = f"drift alarm on {entry.segment}" + (
            f" for {', '.join(entry.features)}" if entry.features else ""
        )
        wanted = "an alarm" if not entry.features else f"alarms on {entry.features}"
        checks.append(Check(what, at is not None, wanted, seen or "none"))
        if expect.max_time_to_alarm_s is not None:
            delay = None if at is None or facts.started_t is None else at - facts.started_t
            checks.append(
                Check(
                    f"time to drift alarm on {entry.segment}",
                    delay is not None and delay <= expect.max_time_to_alarm_s,
                    f"<= {expect.max_time_to_alarm_s} s",
                    None if delay is None else round(delay, 3),
                )
            )
    if expect.no_alarm is True:
        raised = [_name(a) for a in facts.alarms]
        checks.append(Check("no drift alarm", not raised, [], raised[:SHOWN_ERRORS]))
    elif expect.no_alarm:
        allowed = {entry.segment for entry in expect.alarm_on or ()}
        patterns = [_pattern(p) for p in expect.no_alarm]
        raised = [
            _name(a)
            for a in facts.alarms
            if str(a.get("segment")) not in allowed
            and any(p.fullmatch(str(a.get("segment"))) for p in patterns)
        ]
        exempt = f" (but {', '.join(sorted(allowed))})" if allowed else ""
        checks.append(
            Check(
                f"no drift alarm on {', '.join(expect.no_alarm)}{exempt}",
                not raised,
                [],
                raised[:SHOWN_ERRORS],
            )
        )
    return checks


def alarmed_at(
    facts: DriftFacts, segment: str, features: Sequence[str] | None = None
) -> float | None:
    """When (run clock) ``segment`` had alarmed after the first drift started: its first
    alarm, or with ``features`` the first alarm of the last of them; ``None``: not yet."""
    firsts: dict[str, float] = {}
    for alarm in _after_start(facts):
        if alarm.get("segment") != segment:
            continue
        feature, opened = str(alarm.get("feature")), float(alarm["opened_t"])
        firsts[feature] = min(opened, firsts.get(feature, opened))
    if features:
        if any(feature not in firsts for feature in features):
            return None
        return max(firsts[feature] for feature in features)
    return min(firsts.values(), default=None)


def alarm_statistics(alarm: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """The statistics an alarm (as the drift API shows it) fired on at the latest look
    that found its key, each with its value."""
    finding = alarm.get("latest") or alarm.get("opening") or {}
    fired = finding.get("fired", ()) if isinstance(finding, Mapping) else ()
    result: list[tuple[str, float | None]] = []
    for item in fired:
        if isinstance(item, Mapping):
            value = item.get("value")
            number = float(value) if isinstance(value, int | float) else None
            result.append((str(item.get("statistic", "?")), number))
    return result


def _after_start(facts: DriftFacts) -> list[Mapping[str, Any]]:
    start = facts.started_t
    return [a for a in facts.alarms if start is None or float(a["opened_t"]) >= start]


def _name(alarm: Mapping[str, Any]) -> str:
    return f"{alarm.get('segment')} {alarm.get('feature')}"


def _pattern(text: str) -> re.Pattern[str]:
    """A segment pattern, ``*`` matching any run of characters."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))

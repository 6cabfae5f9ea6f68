"""What a simulator run found: the timeline, each release's rollout, the checks of the
scenario's expectations and the headline numbers (pure data, JSON-ready).

Every time in it (``t``, ``started_t``, ``ended_t``, ``duration_s``) is in seconds on
one clock: t = 0 is when the run started (``run_scenario`` was called, or the moment
its caller passed as ``started``, e.g. when ``edgefleet demo`` began).

The runner fills a ``RunResult``; the reports (``sim.report``) and ``--json`` read it::

    result.to_dict()["passed"], result.exposed_share, result.releases[0].gate_looks
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Decisions the server logs with the wave they lead into, not the wave they judged.
_INTO_NEXT_WAVE = frozenset({"advance", "await_approval"})


def decision_wave(entry: Mapping[str, Any]) -> str:
    """A decision log entry's wave, 1-based, as a reader expects it: "2", or "1 → 2"
    for a decision that moves the rollout on (logged with the wave it leads into)."""
    wave = entry.get("wave")
    if not isinstance(wave, int):
        return "—"
    if entry.get("kind") in _INTO_NEXT_WAVE and wave > 0:
        return f"{wave} → {wave + 1}"
    return str(wave + 1)


@dataclass
class TimelinePoint:
    """The fleet at one moment (``t``: seconds since the run started)."""

    t: float
    #: virtual devices by agent state (IDLE, DOWNLOADING, ..., COMMITTED), plus OFFLINE
    #: for devices inside a disconnect period
    states: dict[str, int]
    #: virtual devices by the version they serve ("none": no model yet)
    versions: dict[str, int]
    #: the current release's rollout devices by status, as the server reports them
    rollout: dict[str, int] = field(default_factory=dict)
    #: the release (version) whose rollout is running, if any
    release: str | None = None


@dataclass
class GateLook:
    """One analysis of one gate: its verdict and numbers, recorded once per analysis."""

    t: float  # when the simulator saw the analysis (within a poll of when it ran)
    wave: int  # 0-based index of the wave whose analysis this was
    gate: str
    metric: str
    verdict: str  # pass, fail, inconclusive
    #: the gate's numbers as the server computed them (limit, estimate, low, high, ...)
    numbers: dict[str, Any]
    #: a dry-run gate's verdict is reported, never acted on
    dry_run: bool = False


@dataclass
class Check:
    """One expectation of the scenario and what happened."""

    name: str
    passed: bool
    expected: Any
    actual: Any


@dataclass
class ReleaseResult:
    """One release of the scenario: its rollout from start to end."""

    version: str
    rollout_id: str
    bad: bool  # the scenario says this version misbehaves
    started_t: float
    ended_t: float | None
    state: str  # the rollout's last state (succeeded, aborted, paused, running)
    reason: str
    waves_reached: int  # 1-based index of the last wave the rollout reached
    devices: dict[str, int]  # rollout devices by status at the end
    #: seconds from the rollout's start to the first gate failure (None: none failed)
    time_to_detect_s: float | None
    #: seconds from that failure until no device served this version any more
    time_to_rollback_s: float | None
    #: share of the fleet that ever served this version
    exposed_share: float
    failed_gates: list[str]
    #: devices that rolled this version back on their own, by hardware revision
    rollbacks_by_revision: dict[str, int]
    #: unclean restarts of devices while they served this version
    restarts: int = 0
    gate_looks: list[GateLook] = field(default_factory=list)
    #: the server's decision log of the rollout as its API returns it, each entry with
    #: ``t`` (seconds since the run started) added
    log: list[dict[str, Any]] = field(default_factory=list)
    #: check-ins answered while the rollout ran, their round trip as the
    #: devices saw it, and the simulator's own event-loop delay meanwhile
    checkins: int = 0
    checkin_p50_ms: float | None = None
    checkin_p99_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    #: the rollout's targeting query (``sim_run:<run id>`` selects the run's devices)
    target: str = ""
    #: waves in the rollout's policy (0: not known)
    waves: int = 0
    #: devices serving this version, committed, at the end of the run (not of the
    #: rollout: a later release may have replaced it since)
    committed: int = 0


@dataclass
class DriftChange:
    """One drift of the scenario as the run played it."""

    transform: str
    intensity: float
    #: the cohort's targeting query (``None``: every device)
    cohort: str | None
    #: devices of the run in the cohort
    devices: int
    #: when it started and when it reached its full intensity
    started_t: float
    full_t: float


@dataclass
class DriftResult:
    """What the run saw of drift: its changes, the monitors it applied and the alarms."""

    #: the monitors as the API answered when the run applied them
    monitors: list[dict[str, Any]] = field(default_factory=list)
    changes: list[DriftChange] = field(default_factory=list)
    #: when every device served the baseline: t = 0 of the scenario's ``start_s``
    clock_t: float | None = None
    #: every drift alarm of the run's model as the API showed it last, each with
    #: ``opened_t`` (and ``resolved_t`` once resolved) added, in the order they opened
    alarms: list[dict[str, Any]] = field(default_factory=list)
    #: per ``alarm_on`` segment: seconds from the first drift's start until it alarmed
    time_to_alarm_s: dict[str, float | None] = field(default_factory=dict)
    #: the last drift status the API gave: per monitor, its latest look of each version
    #: and its active alarms
    status: list[dict[str, Any]] = field(default_factory=list)
    #: the simulator's own cost: what the ladders took to make before the run, the mean
    #: CPU time of one device's interval of drifting traffic (drawing its rows, counting
    #: them, feeding its recorder) and of closing one summary period
    prepare_s: float = 0.0
    pools: int = 0
    interval_cost_us: float | None = None
    period_cost_us: float | None = None
    #: summary periods the devices closed and sent
    periods_sent: int = 0


@dataclass
class RunResult:
    scenario: str
    description: str
    devices: int
    server: str
    duration_s: float
    releases: list[ReleaseResult]
    checks: list[Check]
    #: share of the fleet that ever served a version the scenario marks bad
    exposed_share: float
    time_to_detect_s: float | None
    time_to_rollback_s: float | None
    #: model bytes the virtual devices received (all downloads, retries included)
    bytes_transferred: int
    #: bytes received beyond one copy of each artifact per device (re-downloads)
    bytes_repeated: int
    #: downloads cut by the network and resumed
    interruptions: int
    #: devices committed to the *last* release at the end (each release's own count:
    #: ``releases[i].committed``)
    devices_committed: int
    #: devices serving each version at the end
    final_versions: dict[str, int]
    #: requests the virtual devices sent, by outcome (ok, lost, offline, server_error)
    requests: dict[str, int]
    timeline: list[TimelinePoint] = field(default_factory=list)
    #: check-ins the server answered, and their round trip as devices saw it
    checkins: int = 0
    checkin_p50_ms: float | None = None
    checkin_p99_ms: float | None = None
    #: the simulator's own event-loop delay (a 100 ms timer's lateness), to tell the
    #: simulator's part of the devices' round trips from the server's
    loop_lag_p50_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    #: check-ins over time: one entry per ``CHECKIN_WINDOW_S`` seconds of the run with
    #: its start ``t``, the count, the p50/p99 round trip as the devices saw it and the
    #: p99 of the part of it spent waiting for a connection of the simulator's pool
    checkin_windows: list[dict[str, float | None]] = field(default_factory=list)
    #: the run's id: its devices carry the attribute ``sim_run=<run id>``
    run_id: str = ""
    #: what the run saw of drift (scenarios with drift or drift monitors only)
    drift: DriftResult | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data

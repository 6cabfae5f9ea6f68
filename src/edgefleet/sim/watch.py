"""What the run makes of one release's rollout as the server reports it (pure: no I/O).

The runner polls each release's rollout (the API's view of it) and its decision log
and tells a ``RolloutWatch`` what it saw. The watch keeps what the result needs and
makes the run's decisions about the rollout: each gate analysis kept once however often
it is polled, the most devices counted unreachable, when a gate failure was first
logged and when, after it, no device served the version any more, when the rollout is
over for the run, and when a device has done what the rollout's end asks of it::

    watch = RolloutWatch(release, "ro-1a2b3c", started_t=3.2)
    watch.saw(view, t=4.0)                    # every poll of the rollout
    watch.logged(entries)                     # new decision log entries, each with its t
    watch.saw_serving(versions, t=4.0)        # the versions the devices serve
    watch.over, watch.failed_gates, watch.time_to_detect_s
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.rollout.lifecycle import TERMINAL_STATES, RolloutState
from edgefleet.sim.result import GateLook
from edgefleet.sim.scenario import Release

#: The rollout states at which the run stops watching: ended, or paused for an operator.
OVER = TERMINAL_STATES | {RolloutState.PAUSED}
#: How the server's decision log and rollout reason name a gate failure.
GATE_FAILED = "gate_failed"


@dataclass
class RolloutWatch:
    """What the run saw of one release's rollout; every ``t`` is the run's clock."""

    release: Release
    rollout_id: str
    started_t: float
    ended_t: float | None = None
    #: the rollout as the API showed it last
    view: Mapping[str, Any] = field(default_factory=dict)
    #: each gate analysis once, under the wave it judged
    looks: list[GateLook] = field(default_factory=list)
    #: the decision log, each entry with its ``t``
    log: list[dict[str, Any]] = field(default_factory=list)
    #: when the first gate failure was logged
    detected_t: float | None = None
    #: when, after that, no device served the version any more
    gone_t: float | None = None
    #: the most devices the rollout counted unreachable at one poll
    max_unreachable: int = 0
    #: the key of the last analysis recorded in ``looks``
    analysis: tuple[int, int] | None = None

    def saw(self, view: Mapping[str, Any], t: float) -> None:
        """One poll of the rollout (the API's view of it) at ``t``."""
        self.view = view
        analysis, looks = analysis_looks(view, t)
        if analysis is not None and analysis != self.analysis:
            self.analysis = analysis
            self.looks.extend(looks)
        self.max_unreachable = max(self.max_unreachable, view["devices"].get("unreachable", 0))

    def logged(self, entries: Iterable[dict[str, Any]]) -> None:
        """Decision log entries new since the last call, each with its ``t``."""
        for entry in entries:
            self.log.append(entry)
            if self.detected_t is None and str(entry["reason"]).startswith(GATE_FAILED):
                self.detected_t = entry["t"]

    def saw_serving(self, versions: Iterable[str | None], t: float) -> None:
        """The versions the devices serve at ``t`` (``None``: no model), read only while
        a gate failure waits for its rollback: the first ``t`` at which none serves the
        release's version is when the rollback was done."""
        if self.detected_t is None or self.gone_t is not None:
            return
        if self.release.version not in versions:
            self.gone_t = t

    @property
    def over(self) -> bool:
        """Whether the rollout ended or paused: the run waits for it no longer."""
        return self.view.get("state") in OVER

    def settled(self, serving: str | None, refused: bool) -> bool:
        """Whether a device that serves ``serving``, and has ``refused`` the release's
        version or not, has done what the rollout's end asks of it: after a success,
        serve the version or have refused it; otherwise, not serve it."""
        if self.view.get("state") == RolloutState.SUCCEEDED:
            return serving == self.release.version or refused
        return serving != self.release.version

    @property
    def failed_gates(self) -> list[str]:
        """The gates that failed (dry runs left out), at an analysis or in the reason the
        rollout ended with."""
        failed = {look.gate for look in self.looks if look.verdict == "fail" and not look.dry_run}
        reason = str(self.view.get("reason", ""))
        if reason.startswith(f"{GATE_FAILED}:"):
            failed |= set(reason.removeprefix(f"{GATE_FAILED}:").split(","))
        return sorted(failed)

    @property
    def time_to_detect_s(self) -> float | None:
        """Seconds from the rollout's start to the first gate failure (None: none)."""
        if self.detected_t is None:
            return None
        return round(self.detected_t - self.started_t, 3)

    @property
    def time_to_rollback_s(self) -> float | None:
        """Seconds from the first gate failure until no device served the version."""
        if self.detected_t is None or self.gone_t is None:
            return None
        return round(self.gone_t - self.detected_t, 3)


def analysis_looks(
    view: Mapping[str, Any], t: float
) -> tuple[tuple[int, int] | None, list[GateLook]]:
    """The gates of a rollout ``view`` (the API's), as looks of the analysis they came
    from, and that analysis's key ``(wave, look)``; ``(None, [])`` without gates.

    The view holds the gates of the rollout's last analysis, polled more often than the
    analyses run, so the key tells a new analysis from one already seen. An analysis
    that advanced the rollout is shown with the next wave's index and ``looks`` reset to
    0: it belongs to the wave before.
    """
    gates = view.get("gates") or []
    if not gates:
        return None, []
    wave, look = int(view["wave"]), int(view.get("looks") or 0)
    analysis = (wave - 1, -1) if look == 0 and wave > 0 else (wave, look)
    return analysis, [
        GateLook(
            t=t,
            wave=analysis[0],
            gate=gate["gate"],
            metric=gate["metric"],
            verdict=gate["verdict"],
            numbers=gate.get("numbers", {}),
            dry_run=bool(gate.get("dry_run", False)),
        )
        for gate in gates
    ]

"""When a monitor looks, and what a look's scores mean for its alarms (pure).

Looks are tumbling windows of the monitor's ``window``, aligned on multiples of it in
epoch time (an hour's windows start on the hour, as devices' summary periods end on
it). A model's first window is the one its monitor was applied in; each later one
starts where the model's latest look ended, so a server that was down resumes at the
first window not looked at. A window is due once it has ended and a grace for late
telemetry has passed::

    start, end = next_window(monitor.created_at, last_end, monitor.window)
    if is_due(end, grace, now):
        ...  # score the window, then:
    found = findings("digits", "1.1.0", scored)
    look = Look(at=end, resolve_after=3, skipped=unscored_keys(active, scored_by_version))

A stored look keeps its scores packed (``pack_scores``, ``unpack_scores``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from edgefleet.drift.alarms import Alarm, AlarmKey, Finding, Fired
from edgefleet.drift.scoring import Scored


def window_floor(at: datetime, window: timedelta) -> datetime:
    """The start of the window of length ``window`` that ``at`` falls in (windows are
    aligned on multiples of their length since the epoch, in UTC)."""
    seconds = int(window.total_seconds())
    if seconds <= 0:
        raise ValueError(f"a window is longer than zero, got {window}")
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def next_window(
    created_at: datetime, last_end: datetime | None, window: timedelta
) -> tuple[datetime, datetime]:
    """The next window a monitor looks at: from the end of the model's latest look, or
    the window the monitor was applied in when it never looked (a monitor applied
    again keeps its model's place)."""
    first = window_floor(created_at, window)
    start = last_end if last_end is not None and last_end >= first else first
    return start, start + window


def is_due(end: datetime, grace: timedelta, now: datetime) -> bool:
    """Whether a window ending at ``end`` may be looked at: it ended ``grace`` ago."""
    return end + grace <= now


def findings(model: str, version: str, scored: Scored) -> list[Finding]:
    """The drifted (segment, feature) pairs of a scored window, each with every
    statistic that fired and the segment's size."""
    fired: dict[tuple[str, str], list[Fired]] = {}
    for entry in scored.scores:
        if not entry["drifted"]:
            continue
        fired.setdefault((entry["segment"], entry["feature"]), []).append(
            Fired(
                statistic=entry["statistic"],
                value=entry["value"],
                threshold=entry["threshold"],
                p_value=entry["p_value"],
                bh_cut=entry["bh_cut"],
                approximate=entry["approximate"],
            )
        )
    sizes = {view["segment"]: view for view in scored.segments}
    found = []
    for (segment, feature), statistics in fired.items():
        view = sizes.get(segment, {})
        found.append(
            Finding(
                model=model,
                version=version,
                segment=segment,
                feature=feature,
                fired=tuple(statistics),
                rows=int(view.get("rows") or 0),
                devices=int(view.get("devices") or 0),
                phi=max(1.0, scored.phi.get((segment, feature), 1.0)),
            )
        )
    return found


def unscored_keys(
    active: Iterable[Alarm], scored_by_version: Mapping[str, Scored]
) -> frozenset[AlarmKey]:
    """Keys of active alarms a look could not score (their version not scored, their
    segment short of data, their feature without rows): such alarms are left as they
    are, neither refreshed nor counted absent."""
    scored_pairs = {
        version: {(entry["segment"], entry["feature"]) for entry in scored.scores}
        for version, scored in scored_by_version.items()
    }
    skipped = set()
    for alarm in active:
        pairs = scored_pairs.get(alarm.version)
        if pairs is None or (alarm.segment, alarm.feature) not in pairs:
            skipped.add(alarm.key)
    return frozenset(skipped)


def pack_scores(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A look's scores as stored: the names once, and one short row per score
    ``[segment, feature, statistic, value, p_value, drifted, approximate]`` (indexes into
    the names; values to 6 significant digits, p-values to 4; ``approximate`` 1 for
    "bins"). A look of 64 features x 21 segments x 4 statistics is about 180 KB instead
    of 1.1 MB as dictionaries. :func:`unpack_scores` gives the report's form back."""
    segments: dict[str, int] = {}
    features: dict[str, int] = {}
    statistics: dict[str, int] = {}
    thresholds: dict[str, float] = {}
    cut: float | None = None
    rows = []
    for entry in scores:
        statistic = str(entry["statistic"])
        thresholds[statistic] = float(entry["threshold"])
        cut = entry.get("bh_cut", cut)
        rows.append(
            [
                segments.setdefault(str(entry["segment"]), len(segments)),
                features.setdefault(str(entry["feature"]), len(features)),
                statistics.setdefault(statistic, len(statistics)),
                _round(entry["value"], 6),
                None if entry.get("p_value") is None else _round(entry["p_value"], 4),
                1 if entry.get("drifted") else 0,
                1 if entry.get("approximate") else 0,
            ]
        )
    return {
        "segments": list(segments),
        "features": list(features),
        "statistics": list(statistics),
        "thresholds": thresholds,
        "bh_cut": cut,
        "rows": rows,
    }


def unpack_scores(stored: Any) -> list[dict[str, Any]]:
    """The scores of a stored look in the report's form (a list of them is returned as
    it is; anything else is no scores)."""
    if isinstance(stored, list):
        return [entry for entry in stored if isinstance(entry, dict)]
    if not isinstance(stored, Mapping):
        return []
    segments, features = stored.get("segments", []), stored.get("features", [])
    statistics, thresholds = stored.get("statistics", []), stored.get("thresholds", {})
    return [
        {
            "segment": segments[s],
            "feature": features[f],
            "statistic": statistics[st],
            "value": value,
            "threshold": thresholds.get(statistics[st]),
            "p_value": p_value,
            "bh_cut": stored.get("bh_cut"),
            "drifted": bool(drifted),
            "approximate": "bins" if approximate else None,
        }
        for s, f, st, value, p_value, drifted, approximate in stored.get("rows", [])
    ]


def _round(value: Any, digits: int) -> float:
    return float(f"{float(value):.{digits}g}")

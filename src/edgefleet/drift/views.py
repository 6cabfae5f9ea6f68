"""What the API, the CLI and webhook receivers see of drift: JSON-ready documents made
from the records the service reads (docs/api.md shows them)::

    monitor_view(stored)      # GET /api/v1/drift/monitors/{model}
    alarm_view(alarm)         # GET /api/v1/drift/alarms, a webhook's ``data``
    iso(moment)               # "2026-12-06T10:00:00Z"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edgefleet.drift.alarms import Alarm
from edgefleet.drift.ports import StoredLook, StoredMonitor


def iso(moment: datetime) -> str:
    """A moment as ISO 8601 in UTC with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def monitor_view(stored: StoredMonitor) -> dict[str, Any]:
    """A monitor version: its number, who applied it when, and the monitor as written
    with every default filled in."""
    return {
        "model": stored.model,
        "number": stored.number,
        "digest": stored.digest,
        "created_at": iso(stored.created_at),
        "created_by": stored.created_by,
        "monitor": stored.monitor.model_dump(mode="json", by_alias=True),
    }


def alarm_view(alarm: Alarm) -> dict[str, Any]:
    """An alarm: its key (model, version, segment, feature), state and times, and the
    numbers of the look that opened it (``opening``) and of the latest that found it
    (``latest``), each with every statistic that ``fired``."""
    document: dict[str, Any] = alarm.model_dump(mode="json")
    return {
        "id": alarm.id,
        "model": alarm.model,
        "version": alarm.version,
        "segment": alarm.segment,
        "feature": alarm.feature,
        **{key: value for key, value in document.items() if key != "id"},
    }


def status_view(
    looks: Sequence[StoredLook], monitors: Mapping[str, StoredMonitor], alarms: Sequence[Alarm]
) -> list[dict[str, Any]]:
    """Per monitor, its latest look of each version: the window, the drifted features,
    the segments' statuses, and the model's active alarms."""
    by_model: dict[str, list[StoredLook]] = {}
    for look in looks:
        by_model.setdefault(look.model, []).append(look)
    active: dict[str, list[Alarm]] = {}
    for alarm in alarms:
        active.setdefault(alarm.model, []).append(alarm)
    result = []
    for model, stored in sorted(monitors.items()):
        versions = []
        for look in sorted(by_model.get(model, []), key=lambda item: item.version):
            report = look.result
            versions.append(
                {
                    "version": look.version or None,
                    "window": {"start": iso(look.window_start), "end": iso(look.window_end)},
                    "computed_at": iso(look.computed_at),
                    "drifted_features": list(report.get("drifted_features", [])),
                    "segments": {
                        str(s.get("segment")): str(s.get("status"))
                        for s in report.get("segments", [])
                    },
                    "reason": report.get("reason"),
                }
            )
        model_alarms = active.get(model, [])
        result.append(
            {
                "model": model,
                "monitor": stored.number,
                "window": stored.monitor.model_dump(mode="json")["window"],
                "looks": versions,
                "open_alarms": sum(1 for a in model_alarms if a.state.value == "open"),
                "acknowledged_alarms": sum(
                    1 for a in model_alarms if a.state.value == "acknowledged"
                ),
                "alarms": [alarm_view(a) for a in model_alarms],
            }
        )
    return result

"""What the API, the CLI and webhook receivers see of rollouts: JSON-ready documents
made from the records the store returns (docs/api.md shows them)::

    rollout_view(rollout, tally)  # GET /api/v1/rollouts/{id}
    event_payload(rollout, notice)  # a webhook body's ``data``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgefleet.access.service import jsonable
from edgefleet.rollout.lifecycle import Notice
from edgefleet.rollout.policy import wave_percent
from edgefleet.rollout.ports import LogEntry, Rollout, RolloutDevice, Webhook, WebhookDelivery
from edgefleet.rollout.status import IN_PROGRESS, Tally, count


def rollout_view(rollout: Rollout, tally: Tally) -> dict[str, Any]:
    """A rollout: its definition's outline, where it is, its devices per status (in all
    and per wave) and its latest gate verdicts."""
    spec, progress = rollout.spec, rollout.progress
    waves = [
        {
            "index": index,
            "percent": wave.percent,
            # Grown for more evidence (``on_inconclusive: extend``): the current wave only.
            "percent_now": wave_percent(
                spec, index, progress.extended if index == progress.wave else 0
            ),
            "cohort": wave.cohort,
            "approval": wave.approval.value,
            "devices": _by_status(tally, index),
        }
        for index, wave in enumerate(spec.waves)
    ]
    totals = tally.by_status()
    return {
        "id": rollout.id,
        "name": rollout.name,
        "model": rollout.model,
        "version": rollout.version,
        "target": spec.target,
        "state": progress.state.value,
        "wave": progress.wave,
        "phase": progress.phase.value,
        "phase_started_at": progress.phase_started_at,
        "reason": progress.reason,
        "created_at": rollout.created_at,
        "created_by": rollout.created_by,
        "started_at": progress.started_at,
        "finished_at": progress.finished_at,
        "looks": progress.looks,
        "extended": progress.extended,
        "gates": list(progress.gates),
        "waves": waves,
        "devices": {status.value: n for status, n in totals.items()},
        "in_progress": count(totals, IN_PROGRESS),
    }


def _by_status(tally: Tally, wave: int) -> dict[str, int]:
    return {status.value: n for status, n in tally.by_status(wave).items()}


def log_view(entry: LogEntry) -> dict[str, Any]:
    """A decision log entry."""
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "kind": entry.kind,
        "wave": entry.wave,
        "reason": entry.reason,
        "details": entry.details,
    }


def device_view(device: RolloutDevice) -> dict[str, Any]:
    """A device of the rollout: its wave and status."""
    return {
        "device_id": device.device_id,
        "wave": device.wave,
        "status": device.status.value,
        "detail": device.detail,
        "previous_version": device.previous_version,
        "assigned_at": device.assigned_at,
    }


def webhooks_view(
    hooks: Sequence[Webhook], deliveries: Sequence[WebhookDelivery]
) -> list[dict[str, Any]]:
    """The webhooks, each with its recent deliveries."""
    return [
        {
            "id": hook.id,
            "url": hook.url,
            "created_at": hook.created_at,
            "deliveries": [_delivery_view(d) for d in deliveries if d.webhook_id == hook.id],
        }
        for hook in hooks
    ]


def _delivery_view(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhook": delivery.webhook_id,
        "event": delivery.event,
        "attempts": delivery.attempts,
        "delivered_at": delivery.delivered_at,
        "next_attempt_at": delivery.next_attempt_at,
        "last_error": delivery.last_error,
    }


def event_payload(rollout: Rollout, notice: Notice) -> dict[str, Any]:
    """A webhook notification's data: the rollout, and the state and reason it reports."""
    payload: dict[str, Any] = jsonable(
        {
            "rollout": rollout.id,
            "name": rollout.name,
            "model": rollout.model,
            "version": rollout.version,
            "state": notice.state.value,
            "wave": notice.wave,
            "reason": notice.reason,
            **({"details": dict(notice.details)} if notice.details else {}),
        }
    )
    return payload

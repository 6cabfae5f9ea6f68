"""Webhook notifications of rollout state changes and gate failures.

Each notification is a JSON body signed with the webhook's secret::

    X-Edgefleet-Event: rollout.aborted
    X-Edgefleet-Timestamp: 1795312345
    X-Edgefleet-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

A receiver recomputes the HMAC over the timestamp and the raw body, compares in
constant time and rejects old timestamps (replays). Deliveries are queued in the
database in the same transaction as the change they report, and retried with
exponential backoff (10 s doubling, at most an hour apart) up to ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from edgefleet.rollout.ports import RolloutUnitOfWork

MAX_ATTEMPTS = 10


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: int, body: bytes, header: str) -> bool:
    """For receivers (and tests): does ``header`` sign ``body`` at ``timestamp``?"""
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def backoff(attempts: int) -> timedelta:
    """Wait before the next attempt after ``attempts`` failed ones."""
    return timedelta(seconds=min(3600.0, 10.0 * 2 ** max(0, attempts - 1)))


def body_of(event: str, payload: dict[str, Any], delivery_id: int) -> bytes:
    document = {"event": event, "delivery": delivery_id, "data": payload}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def deliver_due(
    uow_factory: Callable[[], RolloutUnitOfWork],
    client: httpx.Client,
    now: Callable[[], datetime],
    limit: int = 50,
) -> int:
    """Send the deliveries that are due; returns how many succeeded."""
    with uow_factory() as uow:
        due = uow.rollouts.due_deliveries(now(), limit)
    delivered = 0
    for item in due:
        body = body_of(item.event, item.payload, item.id)
        timestamp = int(now().timestamp())
        error = ""
        try:
            response = client.post(
                item.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Edgefleet-Event": item.event,
                    "X-Edgefleet-Timestamp": str(timestamp),
                    "X-Edgefleet-Signature": signature(item.secret, timestamp, body),
                },
            )
            if response.status_code >= 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        with uow_factory() as uow:
            delivery = uow.rollouts.delivery(item.id)
            if delivery is None:
                continue
            attempts = delivery.attempts + 1
            if error:
                retry = now() + backoff(attempts) if attempts < MAX_ATTEMPTS else None
                uow.rollouts.save_delivery(
                    item.id,
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=retry,
                    delivered_at=delivery.delivered_at,
                )
            else:
                uow.rollouts.save_delivery(
                    item.id,
                    attempts=attempts,
                    last_error="",
                    next_attempt_at=None,
                    delivered_at=now(),
                )
                delivered += 1
            uow.commit()
    return delivered

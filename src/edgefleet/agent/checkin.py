"""Check-ins, without I/O: the server's answer read, the next check-in timed, and what
is sent after it.

A device checks in on a timer: it asks for its desired state with the ETag of the last
answer, and the server answers "nothing changed" (304) or with the desired state. What
an answer asks of the device is the state machine's to decide (``statemachine.CheckedIn``);
this module holds the rest of the check-in policy, so that the agent (``agent.shell``)
and the simulator's virtual devices (``sim.device``) do the same and differ only in
their I/O:

- ``LastAnswer`` remembers the ETag and the desired model, and makes each answer the
  ``CheckedIn`` event that the shell feeds to ``step``;
- ``CheckinPolicy`` times the next check-in (the interval with jitter, backed off
  exponentially while check-ins fail), the wait before a download is tried again, and
  the queueing of telemetry;
- ``plan_flush`` says what to send after a check-in: the queued events in batches,
  oldest first, then the reported state if it changed, then a batch of telemetry;
- ``converged`` says whether the device is done with what it was asked.

A shell's loop, in outline (the I/O is the shell's own)::

    answer = LastAnswer()
    policy = CheckinPolicy(interval_s=60, max_backoff_s=300, telemetry_interval_s=60)
    etag, document, changed = get_desired(answer.etag)
    event = answer.answered(etag, document) if changed else answer.unchanged
    state, commands, transitions = step(state, event)  # then carry out the commands
    plan = plan_flush(len(events), reported_state(state), last_report, len(samples))
    sleep(policy.delay_s(failures, random.random()))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgefleet.agent.statemachine import SETTLED, AgentState, CheckedIn, DesiredModel, State

#: The share of the check-in interval each wait is moved by at random (±), so that a
#: fleet started together does not keep checking in together.
DEFAULT_JITTER = 0.1
#: Events one request carries at most (the device API's limit).
EVENTS_PER_REQUEST = 500
#: Telemetry samples one check-in sends at most (the device API's limit); the rest go
#: at the next ones.
SAMPLES_PER_REQUEST = 1000
#: Telemetry bytes (JSON, before compression) per request: half the server's default cap
#: on a body (``max_json_bytes``, 1 MiB), so hourly drift summaries of a model with
#: many features queued over a long outage still go in bodies the server takes.
SAMPLE_BYTES_PER_REQUEST = 512 * 1024
#: Failed check-ins in a row beyond which the wait grows no more (it is capped anyway).
MAX_DOUBLINGS = 10


class LastAnswer:
    """The desired state as the device last heard it: the ETag to check in with, the
    model it names, and the ``CheckedIn`` event each answer makes.

    Nothing is allocated for "nothing changed": ``unchanged`` is made once per new
    answer.
    """

    __slots__ = ("etag", "model", "unchanged")

    def __init__(self) -> None:
        self.etag: str | None = None
        self.model: DesiredModel | None = None
        #: The event of a "nothing changed" answer (304).
        self.unchanged = CheckedIn(None, changed=False)

    def answered(self, etag: str | None, document: Mapping[str, Any] | None) -> CheckedIn:
        """The event of a new answer: ``document`` is the desired state as the device
        API sends it (``None``: nothing desired), ``etag`` its tag. Remembers both.

        Raises:
            KeyError, TypeError: the document is not shaped as the device API sends it.
        """
        document = document or {}
        model = DesiredModel.from_desired(document)
        config = document.get("config") or {}
        cleared = frozenset(
            key for key in config.get("clear_refused") or () if isinstance(key, str)
        )
        self.etag, self.model = etag, model
        self.unchanged = CheckedIn(model, changed=False)
        return CheckedIn(model, changed=True, cleared=cleared)


@dataclass(frozen=True, slots=True)
class CheckinPolicy:
    """When a device checks in, waits for a download, and queues telemetry.

    ``interval_s`` between check-ins, moved by up to ``jitter`` of itself either way;
    after failed check-ins the interval doubles per failure up to ``max_backoff_s``.
    """

    interval_s: float
    max_backoff_s: float
    telemetry_interval_s: float
    jitter: float = DEFAULT_JITTER

    def delay_s(self, failures: int, draw: float) -> float:
        """Seconds to the next check-in after ``failures`` failed ones in a row (0: the
        last one was answered). ``draw``: a uniform random number in [0, 1)."""
        base = self.interval_s
        if failures:
            base = min(self.max_backoff_s, base * 2 ** min(failures, MAX_DOUBLINGS))
        return base * ((1.0 - self.jitter) + 2.0 * self.jitter * draw)

    def download_retry_s(self, attempt: int) -> float:
        """Seconds to wait before a download is tried again after the ``attempt``-th
        failed attempt in a row (``statemachine.RetryLater``)."""
        return min(self.max_backoff_s, 2.0**attempt)

    def telemetry_due(self, now: float, queued_at: float) -> bool:
        """Whether a telemetry sample is due at ``now``, the last queued at
        ``queued_at`` (on the same clock, in seconds)."""
        return now - queued_at >= self.telemetry_interval_s


@dataclass(frozen=True, slots=True)
class Flush:
    """What to send after a check-in, in this order: ``event_batches`` (the sizes of
    the event requests, taking the oldest queued events first), the reported state if
    ``report``, then the ``samples`` oldest telemetry samples (0: none)."""

    event_batches: tuple[int, ...]
    report: bool
    samples: int


NOTHING_TO_SEND = Flush((), False, 0)


def plan_flush(
    events: int, report: Mapping[str, Any], last_report: Mapping[str, Any] | None, samples: int
) -> Flush:
    """What to send of ``events`` queued events, the reported state ``report`` (sent
    only when it differs from ``last_report``, the last one the server took; ``None``:
    none since the start) and ``samples`` queued telemetry samples."""
    changed = report != last_report
    if not events and not changed and not samples:
        return NOTHING_TO_SEND
    full, rest = divmod(events, EVENTS_PER_REQUEST)
    batches = (EVENTS_PER_REQUEST,) * full + ((rest,) if rest else ())
    return Flush(batches, changed, min(samples, SAMPLES_PER_REQUEST))


def samples_within(sizes: Sequence[int], budget: int = SAMPLE_BYTES_PER_REQUEST) -> int:
    """How many of the queued samples, oldest first, to send in one telemetry body:
    as many as fit in ``budget`` bytes (their JSON sizes are ``sizes``), at most
    ``SAMPLES_PER_REQUEST``, and at least one, so a sample larger than the budget
    alone still goes (and is dropped if the server refuses it as too large)."""
    total = count = 0
    for size in sizes[:SAMPLES_PER_REQUEST]:
        if count and total + size > budget:
            break
        total += size
        count += 1
    return count


def fewer_samples(count: int) -> int:
    """After the server refused a body of ``count`` samples as too large: how many to
    send instead (half); 0 when a single sample was refused, which can never be taken
    and is dropped rather than left to hold back every sample queued after it."""
    return count // 2


def converged(state: AgentState, desired: DesiredModel | None) -> bool:
    """Whether a device in ``state`` is done with the ``desired`` model: no update in
    progress, and the last one ended (committed, rolled back, failed), or the desired
    model is served or refused (or none is desired)."""
    if state.state not in SETTLED:
        return False
    if state.state is not State.IDLE or desired is None:
        return True
    active = state.active_content
    served = active is not None and (active.model, active.version) == (
        desired.model,
        desired.version,
    )
    return served or desired.key in state.refused

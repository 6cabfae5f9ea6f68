"""An enrolled device's requests (edgefleet.fleet.checkin), over ports in memory."""

import asyncio
from collections.abc import Callable

import pytest

from edgefleet.access import tokens
from edgefleet.access.errors import ForbiddenError, UnauthenticatedError
from edgefleet.fleet.checkin import not_modified
from edgefleet.fleet.domain import EventBatch, EventsAccepted, ReportedState, TelemetryBatch
from tests.fleet.memory import Batches, Fleet


def test_a_device_is_known_by_its_own_credential():
    fleet = Fleet()
    for header in (f"Bearer {fleet.credential}", f"bearer   {fleet.credential} "):
        assert fleet.checkins.authenticate(header, "cam-1") == fleet.row
    assert fleet.checkins.authenticate(f"Bearer {fleet.credential}", None) == fleet.row
    assert fleet.rows.fresh_lookups == 0
    fleet.checkins.authenticate(f"Bearer {fleet.credential}", "cam-1", fresh=True)
    assert fleet.rows.fresh_lookups == 1


def _replaced(fleet: Fleet) -> str:
    """The device's credential id with another secret (a re-enrolled device's old one)."""
    kind, token_id, _ = fleet.credential.split("_", 2)
    return f"{kind}_{token_id}_{tokens.issue(tokens.DEVICE).token.split('_', 2)[2]}"


NOT_A_DEVICE: dict[str, Callable[[Fleet], str | None]] = {
    "none": lambda _: None,
    "empty": lambda _: "",
    "scheme only": lambda _: "Bearer",
    "basic": lambda _: "Basic dXNlcjpwYXNz",
    "garbage": lambda _: "Bearer garbage",
    "operator key": lambda _: f"Bearer {tokens.issue(tokens.API_KEY).token}",
    "enrollment token": lambda _: f"Bearer {tokens.issue(tokens.ENROLLMENT).token}",
    "unknown": lambda _: f"Bearer {tokens.issue(tokens.DEVICE).token}",
    "replaced": lambda fleet: f"Bearer {_replaced(fleet)}",
}


@pytest.mark.parametrize("kind", NOT_A_DEVICE)
def test_no_unknown_or_replaced_device_credential_is_unauthenticated(kind: str):
    fleet = Fleet()
    with pytest.raises(UnauthenticatedError):
        fleet.checkins.authenticate(NOT_A_DEVICE[kind](fleet), "cam-1")


def test_another_devices_credential_is_forbidden():
    fleet = Fleet()
    with pytest.raises(ForbiddenError) as raised:
        fleet.checkins.authenticate(f"Bearer {fleet.other_credential}", "cam-1")
    assert raised.value.details == {"device_id": "cam-1"}


@pytest.mark.parametrize(
    ("if_none_match", "expected"),
    [
        ('"etag"', True),
        ("etag", True),
        ('W/"etag"', True),
        (' "etag" ', True),
        ('"other"', False),
        ('"etag", "other"', False),
        ("*", False),
        (None, False),
    ],
)
def test_if_none_match_names_the_etag_quoted_bare_or_weak(if_none_match, expected):
    assert not_modified(if_none_match, "etag") is expected


def test_a_check_in_that_matches_reads_nothing_and_is_seen():
    fleet = Fleet()
    found = fleet.checkins.check_in(fleet.row, '"etag"')
    assert (found.etag, found.not_modified) == ("etag", True)
    assert (fleet.seen.pks, fleet.rows.desired_reads) == ([7], [])


def test_a_changed_state_is_read_with_its_etag_and_its_json_made_once():
    fleet = Fleet()
    state = {"model": None, "config": {"threshold": 0.5}, "rollout": "r-1"}
    fleet.rows.desired_state[7] = (state, "etag-2")  # newer than the row held
    first = fleet.checkins.check_in(fleet.row, '"etag-1"')
    again = fleet.checkins.check_in(fleet.row, None)
    assert (first.etag, first.not_modified) == ("etag-2", False)
    assert first.desired_json is not None and b'"threshold":0.5' in first.desired_json
    assert again.desired_json is first.desired_json
    assert fleet.seen.pks == [7, 7]
    # A row that names the new ETag needs no read.
    fleet.checkins.check_in(fleet.row._replace(desired_etag="etag-2"), None)
    assert fleet.rows.desired_reads == [7, 7]


def test_no_desired_state_is_json_null():
    fleet = Fleet()
    assert fleet.checkins.check_in(fleet.row, None).desired_json == b"null"


def test_a_report_is_a_batched_write_unless_it_changes_attributes():
    fleet = Fleet()
    plain = ReportedState(agent_state="IDLE")
    asyncio.run(fleet.checkins.report(fleet.row, plain))
    ((row, report, _),) = fleet.reports.items
    assert (row, report) == (fleet.row, plain)
    for changes in ({"attributes": {"site": "plant-3"}}, {"firmware": "2.1.0"}):
        asyncio.run(fleet.checkins.report(fleet.row, plain.model_copy(update=changes)))
    assert [device_id for device_id, _ in fleet.attribute_reports] == ["cam-1", "cam-1"]
    assert len(fleet.reports.items) == 1


def test_events_and_telemetry_are_the_devices_by_its_key():
    stored = EventsAccepted(accepted=1, duplicates=0, last_seq=3)
    fleet = Fleet(events=Batches(answer=stored))
    batch = EventBatch.model_validate(
        {"events": [{"seq": 3, "reason": "boot", "at": "2026-01-01T00:00:00Z"}]}
    )
    assert asyncio.run(fleet.checkins.add_events(fleet.row, batch)) == stored
    assert fleet.events.items == [(7, batch)]
    samples = TelemetryBatch.model_validate({"samples": [{"at": "2026-01-01T00:00:00Z"}] * 2})
    accepted = fleet.checkins.add_telemetry(fleet.row, samples)
    assert (accepted.samples, accepted.buckets, fleet.inbox.batches) == (2, 1, [(7, 2)])

"""Pure rollout core: wave membership, the controller's decisions, device statuses."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.rollout.controller import Kind, Phase, RolloutState, Snapshot, apply, decide
from edgefleet.rollout.gates import GateResult, Verdict
from edgefleet.rollout.lifecycle import RolloutProgress, next_wave
from edgefleet.rollout.policy import RolloutSpec, wave_percent
from edgefleet.rollout.status import DeviceStatus, device_status
from edgefleet.rollout.waves import members, rank, ranked, stratified, wave_size

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
IDS = [f"cam-{i:05d}" for i in range(10_000)]


def test_wave_membership_is_nested_deterministic_and_salted():
    order = ranked("ro-1", IDS)
    assert order == ranked("ro-1", reversed(IDS))  # input order does not matter
    waves = [set(members(order, p)) for p in (1, 5, 25, 50, 100)]
    assert [len(w) for w in waves] == [100, 500, 2500, 5000, 10_000]
    assert all(a <= b for a, b in itertools.pairwise(waves))  # cumulative
    other = set(members(ranked("ro-2", IDS), 1))
    assert len(other & waves[0]) < 10  # another rollout picks other canaries
    # A device joining the target takes the place its hash gives; nobody else moves.
    newcomer = "new-1"
    grown = ranked("ro-1", [*IDS, newcomer])
    place = sum(1 for d in IDS if rank("ro-1", d) < rank("ro-1", newcomer))
    assert grown.index(newcomer) == place
    assert [d for d in grown if d != newcomer] == order


def test_every_wave_holds_each_hardware_kind_in_proportion():
    kinds = {
        d: ("camera" if i % 10 < 4 else "gateway" if i % 10 < 9 else "jetson")
        for i, d in enumerate(IDS[:200])
    }
    order = stratified("ro-1", ranked("ro-1", kinds), kinds)
    assert sorted(order) == sorted(kinds)
    for percent in (2.5, 5, 10, 25, 50):
        wave = members(order, percent)
        for kind, share in (("camera", 0.4), ("gateway", 0.5), ("jetson", 0.1)):
            held = sum(kinds[d] == kind for d in wave)
            assert abs(held - share * len(wave)) <= 1, (percent, kind, held)
    # Within a kind the hash order holds, and another rollout picks other devices.
    cameras = [d for d in order if kinds[d] == "camera"]
    assert cameras == [d for d in ranked("ro-1", kinds) if kinds[d] == "camera"]
    other = stratified("ro-2", ranked("ro-2", kinds), kinds)
    assert set(members(order, 5)) != set(members(other, 5))
    # One kind (or none known): the hash order itself.
    assert stratified("ro-1", ranked("ro-1", IDS[:50]), {}) == ranked("ro-1", IDS[:50])


@pytest.mark.parametrize(
    ("percent", "total", "size"),
    [(1, 0, 0), (1, 1, 1), (1, 200, 2), (1, 150, 2), (5, 200, 10), (100, 7, 7), (33.3, 3, 1)],
)
def test_wave_size(percent, total, size):
    assert wave_size(percent, total) == size


def spec(**changes) -> RolloutSpec:
    waves = [{"percent": 10, "bake_s": 60, "min_devices": 2}, {"percent": 100, "bake_s": 60}]
    return RolloutSpec.model_validate(
        {"model": "m", "version": "2.0.0", "target": "*", "waves": waves, **changes}
    )


def snap(**changes) -> Snapshot:
    base = {
        "spec": spec(),
        "state": RolloutState.RUNNING,
        "wave": 0,
        "phase": Phase.ROLLING,
        "phase_started_at": NOW - timedelta(seconds=10),
        "now": NOW,
        "members": 3,
        "unassigned": 0,
        "may_assign": 100,
        "counts": {},
        "gates": None,
    }
    return Snapshot(**(base | changes))


def gate(verdict: Verdict, dry_run: bool = False) -> GateResult:
    return GateResult("rollbacks", "rollbacks", verdict, dry_run, {"count": 1})


def test_assigns_within_the_allowance_then_waits_for_devices():
    decision = decide(snap(unassigned=3, may_assign=2))
    assert decision.kind is Kind.ASSIGN and decision.assign == 2
    assert decide(snap(unassigned=3, may_assign=0)).kind is Kind.WAIT  # rate limit
    waiting = {DeviceStatus.COMMITTED: 1, DeviceStatus.DOWNLOADING: 2}
    assert decide(snap(counts=waiting)).kind is Kind.WAIT
    done = {DeviceStatus.COMMITTED: 2, DeviceStatus.UNREACHABLE: 1}
    assert decide(snap(counts=done)).kind is Kind.BAKE  # unreachable devices never block
    too_few = {DeviceStatus.COMMITTED: 1, DeviceStatus.ROLLED_BACK: 0}
    assert decide(snap(counts=too_few)).kind is Kind.BAKE  # min 2, but only 1 assigned


def test_bake_then_analyse_then_advance_or_finish():
    baking = snap(phase=Phase.BAKING, counts={DeviceStatus.COMMITTED: 3})
    assert decide(baking).kind is Kind.WAIT
    assert decide(snap(phase=Phase.BAKING, phase_started_at=NOW - timedelta(seconds=60))).kind is (
        Kind.ANALYSE
    )
    analysing = snap(phase=Phase.ANALYSING)
    assert decide(analysing).kind is Kind.WAIT  # no analysis yet
    assert decide(snap(phase=Phase.ANALYSING, gates=[gate(Verdict.PASS)])).kind is Kind.ADVANCE
    last = snap(phase=Phase.ANALYSING, wave=1, gates=[gate(Verdict.PASS)])
    assert decide(last).kind is Kind.SUCCEED
    manual = spec(waves=[{"percent": 10}, {"percent": 100, "approval": "manual"}])
    awaiting = decide(snap(spec=manual, phase=Phase.ANALYSING, gates=[gate(Verdict.PASS)]))
    assert awaiting.kind is Kind.AWAIT_APPROVAL
    assert decide(snap(phase=Phase.AWAITING_APPROVAL, unassigned=5)).kind is Kind.WAIT


def test_a_failing_gate_acts_at_once_and_a_dry_run_never_does():
    failing = snap(phase=Phase.BAKING, gates=[gate(Verdict.FAIL)])
    decision = decide(failing)
    assert decision.kind is Kind.ABORT and decision.reason == "gate_failed:rollbacks"
    assert decision.details["gates"][0]["verdict"] == "fail"
    paused = decide(snap(spec=spec(on_failure="pause"), gates=[gate(Verdict.FAIL)]))
    assert paused.kind is Kind.PAUSE
    dry = snap(phase=Phase.ANALYSING, gates=[gate(Verdict.FAIL, dry_run=True), gate(Verdict.PASS)])
    assert decide(dry).kind is Kind.ADVANCE


def test_inconclusive_gates_pause_after_the_analysis_timeout():
    gates = [gate(Verdict.INCONCLUSIVE)]
    assert decide(snap(phase=Phase.ANALYSING, gates=gates)).kind is Kind.WAIT
    late = snap(phase=Phase.ANALYSING, gates=gates, phase_started_at=NOW - timedelta(hours=2))
    decision = decide(late)
    assert decision.kind is Kind.PAUSE and decision.reason == "inconclusive"
    for state in (RolloutState.PAUSED, RolloutState.DRAFT, RolloutState.SUCCEEDED):
        assert decide(snap(state=state, unassigned=3)).kind is Kind.WAIT


def test_inconclusive_gates_extend_the_wave_step_by_step_up_to_its_cap_then_pause():
    extending = spec(on_inconclusive="extend", extend={"step_percent": 5, "max_percent": 22})
    late = {
        "spec": extending,
        "phase": Phase.ANALYSING,
        "gates": [gate(Verdict.INCONCLUSIVE)],
        "phase_started_at": NOW - timedelta(hours=2),
    }
    grown = [wave_percent(extending, 0, n) for n in range(4)]
    assert grown == [10, 15, 20, 22]  # the wave's own 10%, then by 5 up to the cap
    first = decide(snap(**late))
    assert first.kind is Kind.EXTEND and first.reason == "inconclusive"
    assert first.details["from_percent"] == 10 and first.details["percent"] == 15
    progress = RolloutProgress(RolloutState.RUNNING, 0, Phase.ANALYSING, NOW, looks=4)
    after = apply(progress, first, NOW).progress
    # Back to rolling for the new members; the looks go on counting.
    assert (after.phase, after.extended, after.looks) == (Phase.ROLLING, 1, 4)
    assert decide(snap(**late, extended=2)).details["percent"] == 22
    capped = decide(snap(**late, extended=3))
    assert capped.kind is Kind.PAUSE and "cap of 22" in capped.details["extension"]
    # The next wave starts unextended.
    assert next_wave(after, NOW, awaiting=False).extended == 0


def test_inconclusive_gates_can_abort_and_extend_needs_percentage_waves():
    late = snap(
        spec=spec(on_inconclusive="abort"),
        phase=Phase.ANALYSING,
        gates=[gate(Verdict.INCONCLUSIVE)],
        phase_started_at=NOW - timedelta(hours=2),
    )
    decision = decide(late)
    assert decision.kind is Kind.ABORT and decision.reason == "inconclusive"
    progress = RolloutProgress(RolloutState.RUNNING, 0, Phase.ANALYSING, NOW)
    change = apply(progress, decision, NOW)
    # Aborted, but no gate failed: no gate_failed notice.
    assert [n.event for n in change.notices] == ["rollout.aborted"]
    with pytest.raises(ValueError, match="extend grows percentage waves"):
        RolloutSpec.model_validate(
            {
                "model": "m",
                "version": "2.0.0",
                "target": "*",
                "waves": [{"cohort": "site:a"}],
                "on_inconclusive": "extend",
            }
        )


def test_device_status_from_twin_and_events():
    assigned = NOW - timedelta(minutes=5)
    common = {"version": "2.0.0", "assigned_at": assigned, "now": NOW, "timeout_s": 3600}

    def status(current=DeviceStatus.ASSIGNED, **kwargs):
        return device_status(
            current,
            **common,
            **(
                {
                    "agent_state": None,
                    "reported_version": None,
                    "reported_at": None,
                    "outcome": None,
                }
                | kwargs
            ),
        )

    assert status() == (DeviceStatus.ASSIGNED, "")
    assert status(outcome=("COMMITTED", "trial_passed")) == (DeviceStatus.COMMITTED, "")
    assert status(outcome=("ROLLED_BACK", "trial_failed:latency_p95")) == (
        DeviceStatus.ROLLED_BACK,
        "trial_failed:latency_p95",
    )
    assert status(outcome=("FAILED", "revoked")) == (DeviceStatus.FAILED, "revoked")
    heard = {"reported_at": NOW}
    assert status(agent_state="DOWNLOADING", **heard)[0] is DeviceStatus.DOWNLOADING
    assert status(agent_state="SHADOW", **heard)[0] is DeviceStatus.TRIAL
    assert status(agent_state="COMMITTED", reported_version="2.0.0", **heard)[0] is (
        DeviceStatus.COMMITTED
    )
    # A report from before the assignment says nothing about the candidate.
    stale = {"reported_at": assigned - timedelta(seconds=1)}
    assert status(agent_state="COMMITTED", reported_version="2.0.0", **stale)[0] is (
        DeviceStatus.ASSIGNED
    )
    late = device_status(
        DeviceStatus.DOWNLOADING,
        version="2.0.0",
        assigned_at=NOW - timedelta(hours=2),
        now=NOW,
        timeout_s=3600,
        agent_state=None,
        reported_version=None,
        reported_at=None,
        outcome=None,
    )
    assert late == (DeviceStatus.UNREACHABLE, "timeout")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"waves": [{"percent": 50}, {"percent": 20}]}, "must increase"),
        ({"waves": [{"percent": 5, "cohort": "site:a"}]}, "either percent or cohort"),
        ({"waves": [{"percent": 5}, {"cohort": "site:a"}]}, "not a mix"),
        ({"gates": [{"metric": "cpu_percent"}]}, "exactly one limit"),
        ({"gates": [{"metric": "error_rate", "max": 2}]}, "between 0 and 1"),
        ({"gates": [{"metric": "class_distribution", "max": 0.1}]}, "use one of max_change"),
        ({"schedule": {"windows": [{"start": "25:00", "end": "02:00"}]}}, "time of day"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_bad_definitions_name_the_problem(changes, message):
    with pytest.raises(ValueError, match=message):
        spec(**changes)

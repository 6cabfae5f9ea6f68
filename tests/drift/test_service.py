"""The drift service on a real store (both backends), its clock moved by the test:
monitors versioned, reports from merged telemetry per segment, looks on tumbling windows
(due after a grace, resumed after a restart, crash-safe), alarms with their lifecycle and
notifications, and every robustness case of issue #19 part 7 (bins that do not fit,
summaries that do not decode, unknown versions, empty windows, a segment of one device,
a version without a profile): skipped and counted, or insufficient data, never scored."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from edgefleet.access.errors import ForbiddenError
from edgefleet.drift.alarms import AlarmState, AlarmStateError
from edgefleet.drift.errors import MonitorError
from edgefleet.drift.service import (
    AlarmNotFoundError,
    MonitorNotFoundError,
    NoReferenceError,
    ReportRequestError,
)
from edgefleet.fleet.telemetry import bucket_of
from edgefleet.registry.errors import ModelNotFoundError, VersionNotFoundError
from edgefleet.store.tables import DriftLookRow, WebhookDeliveryRow, WebhookRow
from edgefleet.store.telemetry import TelemetryWriter
from tests.drift.fleet import OPERATOR, START, VIEWER, Fleet, digits_fleet

HOUR = timedelta(hours=1)
#: The drift planted on the south site: two features moved by three units.
SHIFT = {"X[20]": 3.0, "X[21]": 3.0}


@pytest.fixture
def fleet(settings, example_bundles):
    with digits_fleet(settings, example_bundles["1.0.0"]) as fleet:
        yield fleet


def two_sites(fleet: Fleet) -> tuple[list[str], list[str]]:
    # Twelve devices a site: the evidence rests on how much devices differ, and six
    # devices of 40 rows an hour cannot show a shift at a look's alpha (5.95e-5).
    return fleet.enroll(12, site="north", hw="rev1"), fleet.enroll(12, site="south", hw="rev2")


def by_segment(report: dict) -> dict[str, dict]:
    return {s["segment"]: s for s in report["segments"]}


def drifted_pairs(report: dict) -> set[tuple[str, str]]:
    return {(s["segment"], s["feature"]) for s in report["scores"] if s["drifted"]}


def stored_monitor(fleet: Fleet):
    with fleet.uow() as uow:
        stored = uow.drift.monitor("digits")
    assert stored is not None
    return stored


def webhook(fleet: Fleet) -> None:
    with fleet.uow() as uow:
        uow.rollouts.add_webhook(
            url="https://hooks.example/drift", secret="s", created_at=START, created_by="t"
        )
        uow.commit()


def deliveries(fleet: Fleet) -> list[tuple[str, dict]]:
    with fleet.uow() as uow:
        rows = uow.session.execute(
            select(WebhookDeliveryRow.event, WebhookDeliveryRow.payload).order_by(
                WebhookDeliveryRow.id
            )
        )
        return [(event, payload) for event, payload in rows]


# -- monitors --------------------------------------------------------------------------


def test_monitors_are_versioned_and_an_unchanged_one_is_not_stored_again(fleet: Fleet):
    service = fleet.service()
    first = service.apply_monitor({"window": "1h", "segments": ["site"]}, OPERATOR, "digits")
    assert (first["number"], first["changed"]) == (1, True)
    assert first["monitor"]["statistics"]["psi"] == {"threshold": 0.2}  # defaults filled in
    again = service.apply_monitor(
        {"model": "digits", "segments": ["site"], "window": "60m"}, OPERATOR
    )
    assert (again["number"], again["changed"]) == (1, False)  # the same monitor
    second = service.apply_monitor(
        {"model": "digits", "statistics": {"ks": {"threshold": 0.2}}}, OPERATOR
    )
    assert (second["number"], second["changed"]) == (2, True)
    shown = service.monitor("digits")
    assert shown["number"] == 2 and [v["number"] for v in shown["versions"]] == [2, 1]
    assert shown["monitor"]["statistics"] == {"ks": {"threshold": 0.2}}
    assert [m["number"] for m in service.monitors()] == [2]
    with fleet.uow() as uow:
        actions = [entry.action for entry in uow.access.audit_log(10, 0)]
    assert actions.count("drift.monitor.apply") == 2


def test_an_invalid_monitor_is_refused_naming_the_field(fleet: Fleet):
    service = fleet.service()
    cases = {
        "statistics.psi.threshold": {"statistics": {"psi": {"threshold": -1}}},
        "features": {"features": ["X[3]", "X[999]"]},
        "segments.0.query": {"segments": [{"query": "site:(", "name": "broken"}]},
        "window": {"window": "5s"},
        "colour": {"colour": "red"},
    }
    for field, change in cases.items():
        with pytest.raises(MonitorError) as raised:
            service.apply_monitor({"model": "digits", **change}, OPERATOR)
        fields = [p["field"] for p in raised.value.details["problems"]]
        assert field in fields, (field, raised.value.message)
        assert field in raised.value.message
    with pytest.raises(MonitorError, match="model"):
        service.apply_monitor({"model": "other"}, OPERATOR, "digits")
    with pytest.raises(ModelNotFoundError):
        service.apply_monitor({"model": "nosuch"}, OPERATOR)
    with pytest.raises(VersionNotFoundError):
        service.apply_monitor({"model": "digits", "version": "9.9.9"}, OPERATOR)
    with pytest.raises(ForbiddenError):
        service.apply_monitor({"model": "digits"}, VIEWER)
    with pytest.raises(MonitorNotFoundError):
        service.monitor("digits")  # nothing was stored


# -- reports ---------------------------------------------------------------------------


def test_a_report_finds_drift_in_the_segment_it_was_planted_in_only(fleet: Fleet):
    north, south = two_sites(fleet)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site"]}, OPERATOR)
    fleet.send_period(north, START + HOUR)
    fleet.send_period(south, START + HOUR, shift=SHIFT)
    fleet.send_outputs(north + south, START + timedelta(minutes=20))
    fleet.now = START + HOUR
    report = service.report("digits", start=START, end=START + HOUR)

    assert report["version"] == "1.0.0" and report["reference"] == {"kind": "profile"}
    assert report["window"] == {"start": "2026-12-07T00:00:00Z", "end": "2026-12-07T01:00:00Z"}
    segments = by_segment(report)
    assert list(segments) == ["all", "site=north", "site=south"]
    assert segments["site=south"] | {"phi": None} == {
        "segment": "site=south",
        "attribute": "site",
        "value": "south",
        "devices": 12,
        "rows": 480,
        "sketch_rows": 480,
        "phi": None,
        "status": "ok",
        "reason": None,
    }
    assert segments["site=south"]["phi"] >= 1.0
    drifted = drifted_pairs(report)
    assert {("site=south", "X[20]"), ("site=south", "X[21]")} <= drifted
    assert not {pair for pair in drifted if pair[0] == "site=north"}
    assert {feature for _, feature in drifted} == {"X[20]", "X[21]"}
    assert report["drifted_features"] == ["X[20]", "X[21]"]
    # Every statistic on every feature, outputs included; KS from the summaries.
    scored = {(s["segment"], s["feature"], s["statistic"]) for s in report["scores"]}
    for statistic in ("psi", "jensen_shannon", "ks", "wasserstein"):
        assert ("site=south", "X[20]", statistic) in scored
    assert ("all", "confidence", "ks") in scored and ("all", "classes", "psi") in scored
    assert ("all", "classes", "ks") not in scored  # classes have no order
    ks = next(
        s
        for s in report["scores"]
        if (s["segment"], s["feature"], s["statistic"]) == ("site=south", "X[20]", "ks")
    )
    # The profile has summaries of the reference sample: KS against it is theirs.
    assert ks["approximate"] is None and ks["drifted"] and ks["p_value"] <= ks["bh_cut"]
    assert ks["value"] >= ks["threshold"]
    # Distributions of every feature fleet-wide, and of each drifted one where it drifted.
    assert set(report["distributions"]["all"]) >= {"X[3]", "confidence", "classes"}
    assert set(report["distributions"]["site=south"]) == {"X[20]", "X[21]"}
    distribution = report["distributions"]["site=south"]["X[20]"]
    assert len(distribution["current"]) == len(distribution["edges"]) + 1
    assert sum(distribution["current"]) == 480
    assert report["skipped"].get("wasserstein_no_spread", 0) > 0  # constant pixels


def test_no_drift_raises_nothing_and_the_same_window_gives_the_same_numbers(fleet: Fleet):
    north, south = two_sites(fleet)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site", "hw"]}, OPERATOR)
    fleet.send_period(north + south, START + HOUR)
    fleet.now = START + 2 * HOUR
    report = service.report("digits", start=START, end=START + HOUR)
    assert report["drifted_features"] == [] and drifted_pairs(report) == set()
    assert [s["segment"] for s in report["segments"]] == [
        "all",
        "site=north",
        "site=south",
        "hw=rev1",
        "hw=rev2",
    ]
    again = service.report("digits", start=START, end=START + HOUR)
    assert again["scores"] == report["scores"]  # p-values seeded by the window


def test_segment_by_and_a_query_segment(fleet: Fleet):
    north, south = two_sites(fleet)
    service = fleet.service()
    service.apply_monitor(
        {"model": "digits", "segments": [{"query": "site:south AND hw:rev2", "name": "s2"}]},
        OPERATOR,
    )
    fleet.send_period(north, START + HOUR)
    fleet.send_period(south, START + HOUR, shift=SHIFT)
    fleet.now = START + HOUR
    report = service.report("digits", start=START, end=START + HOUR)
    assert by_segment(report)["s2"]["attribute"] == "query"
    assert by_segment(report)["s2"]["devices"] == 12
    assert ("s2", "X[20]") in drifted_pairs(report)
    by_hw = service.report("digits", last=HOUR, segment_by=["hw"])
    assert [s["segment"] for s in by_hw["segments"]] == ["all", "hw=rev1", "hw=rev2"]
    assert ("hw=rev2", "X[20]") in drifted_pairs(by_hw)
    with pytest.raises(ReportRequestError, match="segment_by"):
        service.report("digits", last=HOUR, segment_by=["not an attribute"])


def test_a_window_reference(fleet: Fleet):
    north, south = two_sites(fleet)
    service = fleet.service()
    fleet.send_period(north + south, START + HOUR)  # the reference hour
    fleet.send_period(north, START + 2 * HOUR)
    fleet.send_period(south, START + 2 * HOUR, shift=SHIFT)
    fleet.now = START + 2 * HOUR
    report = service.report(
        "digits",
        last=HOUR,
        segment_by=["site"],
        reference="window",
        reference_start=START,
        reference_end=START + HOUR,
    )
    assert report["reference"] == {
        "kind": "window",
        "start": "2026-12-07T00:00:00Z",
        "end": "2026-12-07T01:00:00Z",
    }
    drifted = drifted_pairs(report)
    assert ("site=south", "X[20]") in drifted
    assert not {pair for pair in drifted if pair[0] == "site=north"}
    # Both sides have summaries: KS is exact.
    assert all(s["approximate"] is None for s in report["scores"] if s["statistic"] in ("ks",))
    with pytest.raises(ReportRequestError, match="reference_start"):
        service.report("digits", last=HOUR, reference="window")
    with pytest.raises(ReportRequestError, match="end after"):
        service.report(
            "digits",
            last=HOUR,
            reference="window",
            reference_start=START + HOUR,
            reference_end=START,
        )


def test_without_summaries_ks_and_wasserstein_come_from_the_bins_flagged(fleet: Fleet):
    north, south = two_sites(fleet)
    fleet.send_period(north + south, START + HOUR, sketches=False)
    fleet.now = START + HOUR
    report = fleet.service().report("digits", start=START, end=START + HOUR)
    summary_scores = [s for s in report["scores"] if s["statistic"] in ("ks", "wasserstein")]
    assert summary_scores and all(s["approximate"] == "bins" for s in summary_scores)
    assert report["drifted_features"] == []


def test_report_errors(fleet: Fleet):
    service = fleet.service()
    fleet.now = START + HOUR
    with pytest.raises(ModelNotFoundError):
        service.report("nosuch")
    with pytest.raises(VersionNotFoundError):
        service.report("digits", "2.0.0")
    with pytest.raises(ReportRequestError, match="before it starts"):
        service.report("digits", start=START + HOUR, end=START)
    with pytest.raises(ReportRequestError, match="not both"):
        service.report("digits", start=START, last=HOUR)
    with pytest.raises(ReportRequestError, match="31 days"):
        service.report("digits", last=timedelta(days=40))
    with pytest.raises(ReportRequestError, match="last"):
        service.report("digits", last="soon")


# -- robustness (issue #19 part 7) -----------------------------------------------------


def test_what_does_not_fit_is_skipped_and_counted_never_scored(fleet: Fleet):
    north, south = two_sites(fleet)
    good = north + south[:3]
    fleet.send_period(north + south, START + HOUR)  # the reference window
    fleet.send_period(good, START + 2 * HOUR)
    # Bins of another length than the profile's, counts that are not counts, a feature
    # the profile does not have, summaries that do not decode (as a bucket written by
    # something else than the API could hold), and a version the registry does not know.
    fleet.send_period(
        south[3:4],
        START + 2 * HOUR,
        extra={"feature_counts": {"X[20]": [1, 2, 3], "X[21]": [1, -5], "X[99]": [5, 5]}},
    )
    fleet.send_period(
        south[4:5],
        START + 2 * HOUR,
        extra={"sketches": {"X[20]": "not a sketch", "X[3]": "AAAA"}},
    )
    fleet.send_period(south[5:6], START + 2 * HOUR, version="7.7.7")
    fleet.now = START + 2 * HOUR
    service = fleet.service()
    report = service.report(
        "digits",
        last=HOUR,
        reference="window",
        reference_start=START,
        reference_end=START + HOUR,
    )
    assert report["skipped"]["bins_mismatch"] == 2
    assert report["skipped"]["unknown_feature"] == 1
    assert report["skipped"]["sketch_invalid"] == 2
    assert report["skipped"]["unknown_version"] == 1
    assert by_segment(report)["all"]["devices"] == 17  # 7.7.7's device is not scored
    assert report["drifted_features"] == []
    # Against the profile, which has summaries, the window's are read (and checked) too.
    against_profile = service.report("digits", last=HOUR)
    assert against_profile["skipped"]["sketch_invalid"] == 2
    assert against_profile["skipped"]["bins_mismatch"] == 2


def test_an_empty_window_and_a_segment_of_one_device_are_insufficient_data(fleet: Fleet):
    north, _ = two_sites(fleet)
    lone = fleet.enroll(1, site="east")
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site"]}, OPERATOR)
    fleet.now = START + HOUR
    empty = service.report("digits", start=START, end=START + HOUR)
    assert [s["status"] for s in empty["segments"]] == ["insufficient_data"]
    assert "0 devices" in empty["segments"][0]["reason"]
    assert empty["scores"] == []

    fleet.send_period(north + lone, START + HOUR, shift={"X[20]": 3.0})
    report = service.report("digits", start=START, end=START + HOUR)
    segments = by_segment(report)
    assert segments["site=east"]["status"] == "insufficient_data"
    assert "1 devices" in segments["site=east"]["reason"]
    assert not [s for s in report["scores"] if s["segment"] == "site=east"]
    assert segments["site=north"]["status"] == "ok"
    # Fewer rows than min_rows: insufficient too, said so.
    service.apply_monitor({"model": "digits", "segments": ["site"], "min_rows": 1000}, OPERATOR)
    thin = service.report("digits", start=START, end=START + HOUR)
    assert {s["status"] for s in thin["segments"]} == {"insufficient_data"}
    assert "min_rows 1000" in thin["segments"][0]["reason"]


def test_a_version_without_a_profile_or_in_production_is_a_clear_error(
    settings, example_bundles, tmp_path
):
    import shutil

    import yaml

    bundle = tmp_path / "no-profile"
    shutil.copytree(example_bundles["1.0.0"], bundle)
    manifest = yaml.safe_load((bundle / "edgefleet.yaml").read_text())
    manifest.pop("reference", None)
    (bundle / "edgefleet.yaml").write_text(yaml.safe_dump(manifest))
    from edgefleet.registry.artifacts import LocalArtifactStore
    from edgefleet.store.bootstrap import registry_service
    from edgefleet.store.database import make_engine
    from edgefleet.store.migrate import ensure_schema

    engine = make_engine(settings)
    try:
        ensure_schema(engine, auto_migrate=True)
        registry_service(engine, LocalArtifactStore(settings.artifacts_dir)).register(bundle)
    finally:
        engine.dispose()
    with digits_fleet(settings, example_bundles["1.1.0"], production=False) as fleet:
        service = fleet.service()
        fleet.now = START + HOUR
        with pytest.raises(NoReferenceError, match="no reference profile"):
            service.report("digits", "1.0.0", last=HOUR)
        with pytest.raises(VersionNotFoundError, match="no version in production"):
            service.report("digits", last=HOUR)


# -- looks -----------------------------------------------------------------------------


def test_looks_wait_for_the_grace_resume_after_a_restart_and_catch_up(fleet: Fleet):
    north, south = two_sites(fleet)
    service = fleet.service(max_looks_per_run=2)
    service.apply_monitor({"model": "digits"}, OPERATOR)
    for hour in range(1, 5):
        fleet.send_period(north + south, START + hour * HOUR)
    fleet.now = START + HOUR + timedelta(minutes=9)
    assert service.run_due_looks() == 0  # the first window ended, its grace not yet
    fleet.now = START + HOUR + timedelta(minutes=10)
    assert service.run_due_looks() == 1
    fleet.now = START + 4 * HOUR + timedelta(minutes=30)
    assert service.run_due_looks() == 2  # bounded per run
    restarted = fleet.service()  # a new process: where the stored looks end
    assert restarted.run_due_looks() == 1
    assert restarted.run_due_looks() == 0
    with fleet.uow() as uow:
        looks = uow.drift.looks("digits", "1.0.0", START - HOUR, START + 5 * HOUR)
    assert [look.window_end - START for look in looks] == [h * HOUR for h in range(1, 5)]
    assert all(look.result["segments"][0]["status"] == "ok" for look in looks)


def test_a_look_is_stored_whole_or_not_at_all(fleet: Fleet, monkeypatch):
    north, south = two_sites(fleet)
    webhook(fleet)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site"]}, OPERATOR)
    fleet.send_period(north, START + HOUR)
    fleet.send_period(south, START + HOUR, shift=SHIFT)
    fleet.now = START + HOUR + timedelta(minutes=15)

    from edgefleet.store.rollouts import SqlRolloutRepository

    def crash(*args, **kwargs):
        raise RuntimeError("the server died while queueing notifications")

    monkeypatch.setattr(SqlRolloutRepository, "enqueue", crash)
    assert service.run_due_looks() == 0  # logged; the other monitors would go on
    with pytest.raises(RuntimeError):
        service.look(stored_monitor(fleet), START, START + HOUR)
    with fleet.uow() as uow:
        assert uow.session.scalars(select(DriftLookRow)).all() == []
        assert uow.drift.alarms() == []
    monkeypatch.undo()
    assert fleet.service().run_due_looks() == 1  # the same window, whole
    assert {a["segment"] for a in service.alarms()} == {"site=south"}
    assert [event for event, _ in deliveries(fleet)].count("drift.alarm.opened") == len(
        service.alarms()
    )
    # Another server that looks at the same window stores nothing twice.
    assert fleet.service().look(stored_monitor(fleet), START, START + HOUR) is False


def test_alarms_open_refresh_acknowledge_and_resolve(fleet: Fleet):
    north, south = two_sites(fleet)
    webhook(fleet)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site"], "resolve_after": 2}, OPERATOR)
    fleet.send_period(north, START + HOUR)
    fleet.send_period(south, START + HOUR, shift=SHIFT)
    fleet.now = START + HOUR + timedelta(minutes=15)
    assert service.run_due_looks() == 1
    opened = {(a["segment"], a["feature"]): a for a in service.alarms(state=AlarmState.OPEN)}
    assert set(opened) >= {("site=south", "X[20]"), ("site=south", "X[21]")}
    alarm = opened[("site=south", "X[20]")]
    fired = {f["statistic"]: f for f in alarm["opening"]["fired"]}
    assert fired["psi"]["value"] >= fired["psi"]["threshold"]
    assert fired["psi"]["p_value"] <= fired["psi"]["bh_cut"]
    assert alarm["opening"]["devices"] == 12 and alarm["opening"]["phi"] >= 1

    # Still drifting: refreshed, not opened again.
    fleet.send_period(north, START + 2 * HOUR)
    fleet.send_period(south, START + 2 * HOUR, shift=SHIFT)
    fleet.now += HOUR
    assert service.run_due_looks() == 1
    for before in opened.values():
        refreshed = service.alarm(before["id"])
        assert (refreshed["state"], refreshed["last_seen_at"]) == ("open", "2026-12-07T02:00:00Z")
    keys = [(a["segment"], a["feature"]) for a in service.alarms()]
    assert len(keys) == len(set(keys))  # one alarm per key

    acknowledged = service.acknowledge(alarm["id"], OPERATOR)
    assert (acknowledged["state"], acknowledged["acknowledged_by"]) == ("acknowledged", "ops (k1)")
    with pytest.raises(AlarmStateError):
        service.acknowledge(alarm["id"], OPERATOR)
    with pytest.raises(ForbiddenError):
        service.resolve(alarm["id"], VIEWER)
    other = opened[("site=south", "X[21]")]
    resolved = service.resolve(other["id"], OPERATOR)
    assert (resolved["state"], resolved["resolution"]) == ("resolved", "manual")
    with pytest.raises(AlarmStateError):
        service.resolve(other["id"], OPERATOR)
    with pytest.raises(AlarmNotFoundError):
        service.acknowledge("da-000000000000", OPERATOR)

    # A window without data neither refreshes nor resolves; then the drift is gone:
    # the acknowledged alarm resolves itself after resolve_after looks without it.
    fleet.now += HOUR
    assert service.run_due_looks() == 1
    assert service.alarm(alarm["id"])["looks_absent"] == 0
    for hour in (4, 5):
        fleet.send_period(north + south, START + hour * HOUR)
        fleet.now += HOUR
        assert service.run_due_looks() == 1
    gone = service.alarm(alarm["id"])
    assert (gone["state"], gone["resolution"], gone["resolved_by"]) == ("resolved", "auto", None)
    events = [event for event, _ in deliveries(fleet)]
    everything = service.alarms()
    assert {a["state"] for a in everything} == {"resolved"}
    assert events.count("drift.alarm.opened") == len(everything)
    assert events.count("drift.alarm.resolved") == len(everything)  # one by hand, the rest by looks
    status = service.status("digits")
    assert status[0]["open_alarms"] == 0 and status[0]["looks"][0]["drifted_features"] == []


def test_retraining_is_recommended_once_when_the_rule_holds(fleet: Fleet):
    north, south = two_sites(fleet)
    webhook(fleet)
    service = fleet.service()
    service.apply_monitor(
        {"model": "digits", "retraining": {"min_features": 2, "for": "2h"}}, OPERATOR
    )
    for hour in range(1, 6):
        fleet.send_period(north + south, START + hour * HOUR, shift=SHIFT)
    fleet.now = START + 5 * HOUR + timedelta(minutes=15)
    assert service.run_due_looks() == 5
    recommended = [p for e, p in deliveries(fleet) if e == "drift.retraining_recommended"]
    assert len(recommended) == 1  # at the look where the rule began to hold, not after
    payload = recommended[0]
    assert payload["model"] == "digits" and payload["version"] == "1.0.0"
    assert set(payload["features"]) >= {"X[20]", "X[21]"}
    assert payload["report"]["window"]["end"] == "2026-12-07T03:00:00Z"  # 2 h after opening
    assert payload["report"]["drifted_features"]
    with fleet.uow() as uow:
        looks = uow.drift.looks("digits", "1.0.0", START, START + 6 * HOUR)
    events = [e["event"] for look in looks for e in look.result.get("events", [])]
    assert events.count("drift.retraining_recommended") == 1


def test_a_look_records_why_it_could_not_score(fleet: Fleet, settings, example_bundles):
    service = fleet.service()
    service.apply_monitor({"model": "digits"}, OPERATOR)
    from edgefleet.registry.artifacts import LocalArtifactStore
    from edgefleet.store.bootstrap import registry_service

    registry = registry_service(fleet.engine, LocalArtifactStore(settings.artifacts_dir))
    registry.register(example_bundles["1.1.0"])
    registry.promote("digits", "1.1.0", "production", actor="t")  # 1.0.0 archived
    registry.promote("digits", "1.1.0", "archived", actor="t")
    fleet.now = START + HOUR + timedelta(minutes=15)
    assert service.run_due_looks() == 1
    with fleet.uow() as uow:
        (look,) = uow.drift.latest_looks("digits")
    assert look.version == "" and look.result["reason"] == "digits has no version in production"


def test_gauges_have_bounded_labels(fleet: Fleet):
    north, south = two_sites(fleet)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site"]}, OPERATOR)
    fleet.send_period(north, START + HOUR)
    fleet.send_period(south, START + HOUR, shift=SHIFT)
    fleet.now = START + HOUR + timedelta(minutes=15)
    assert service.run_due_looks() == 1
    gauges = service.gauges()
    assert gauges["alarms"][("digits", "open")] == len(service.alarms())
    assert gauges["features_drifted"][("digits", "1.0.0", "site")] == 2
    assert set(gauges["score_max"]) == {
        ("digits", "1.0.0", s) for s in ("psi", "jensen_shannon", "ks", "wasserstein")
    }
    labels = {value for key in gauges["features_drifted"] for value in key}
    assert not labels & {"north", "south", "X[20]", *fleet.devices}


def test_telemetry_written_meanwhile_is_not_lost(fleet: Fleet):
    """Looks and reports only read telemetry: every bucket is still there after them."""
    north, south = two_sites(fleet)
    fleet.send_period(north + south, START + HOUR)
    writer = TelemetryWriter(fleet.engine)
    writer.add(fleet.devices[north[0]], {(bucket_of(START), "digits", "1.0.0"): ({}, 1)})
    writer.flush()
    service = fleet.service()
    service.apply_monitor({"model": "digits"}, OPERATOR)
    fleet.now = START + 2 * HOUR
    service.report("digits", last=HOUR)
    service.run_due_looks()
    with fleet.uow() as uow:
        from edgefleet.store.tables import TelemetryRow

        assert len(uow.session.scalars(select(TelemetryRow)).all()) == 25
        assert len(uow.session.scalars(select(WebhookRow)).all()) == 0


def test_drift_notifications_go_out_signed(fleet: Fleet):
    import httpx

    from edgefleet.rollout.webhooks import deliver_due, verify

    north, south = two_sites(fleet)
    webhook(fleet)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site"]}, OPERATOR)
    fleet.send_period(north, START + HOUR)
    fleet.send_period(south, START + HOUR, shift=SHIFT)
    fleet.now = START + HOUR + timedelta(minutes=15)
    assert service.run_due_looks() == 1
    received = []

    def receiver(request: httpx.Request) -> httpx.Response:
        timestamp = int(request.headers["X-Edgefleet-Timestamp"])
        assert verify("s", timestamp, request.content, request.headers["X-Edgefleet-Signature"])
        received.append((request.headers["X-Edgefleet-Event"], request.read()))
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(receiver)) as client:
        delivered = deliver_due(fleet.uow, client, lambda: fleet.now)
    assert delivered == len(received) == len(service.alarms())
    assert {event for event, _ in received} == {"drift.alarm.opened"}
    import json

    bodies = [json.loads(body)["data"]["alarm"] for _, body in received]
    assert {(a["segment"], a["state"]) for a in bodies} == {("site=south", "open")}


def test_an_attribute_gets_at_most_50_segments_the_rest_pooled():
    from edgefleet.drift.ports import WindowDevice
    from edgefleet.drift.segments import plan_segments

    # 60 sites: site-0 has 3 devices, site-1 2, the others 1 each.
    devices = [
        WindowDevice(pk, f"cam-{pk}", "rev1", None, None, {"site": f"site-{site}"})
        for pk, site in enumerate([0, 0, 0, 1, 1, *range(2, 60)])
    ]
    devices.append(WindowDevice(999, "cam-x", None, None, None, {}))  # no site
    plan = plan_segments(devices, ["site", "hw"])
    names = plan.names()
    assert names[:3] == ["all", "site=site-0", "site=site-1"]
    site_segments = [n for n in names if n.startswith("site=")]
    assert len(site_segments) == 51 and site_segments[-1] == "site=other"
    assert names[-1] == "hw=rev1"
    other = names.index("site=other")
    pooled = [pk for pk, segments in plan.members.items() if other in segments]
    # 60 values, 50 kept: the most devices first, then by name; 10 one-device values pooled.
    assert len(pooled) == 10
    assert plan.members[999] == (0,)  # in "all" only
    assert all(segments[0] == 0 for segments in plan.members.values())


def test_the_accumulator_sums_are_the_dispersion_of_each_segments_devices():
    import numpy as np

    from edgefleet.drift.calibrate import Dispersion
    from edgefleet.drift.ports import DriftBucket
    from edgefleet.drift.scoring import FeatureRef, Layout, WindowAccumulator

    layout = Layout.of(
        [
            FeatureRef("a", "input", (0.0,), (5, 5)),
            FeatureRef("b", "input", (0.0, 1.0), (3, 3, 3)),
            FeatureRef("c", "input", (2.0,), (1, 1)),
        ]
    )
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, size=(7, 3, 3))
    counts[:, [0, 2], 2] = 0  # two-bin features
    members = [(0,), (0, 1), (0, 1), (0, 2), (0, 2), (0, 1, 2), (0,)]
    accumulator = WindowAccumulator(layout, 3, START, START + HOUR, chunk=3)
    for device, segments in enumerate(members):
        data = {
            "feature_counts": {
                "a": counts[device, 0, :2].tolist(),
                "b": counts[device, 1].tolist(),
                "c": counts[device, 2, :2].tolist(),
            },
            "period_end": (START + HOUR).timestamp(),
        }
        accumulator.add_device(segments, [DriftBucket(device, START, "1.0.0", data)])
    window = accumulator.finish()
    for segment in range(3):
        inside = [d for d, s in enumerate(members) if segment in s]
        for bins, features in layout.groups.items():
            expected = Dispersion.of_devices(counts[inside][:, list(features), :bins])
            got = window.dispersion[bins]
            assert np.allclose(got.totals[segment], expected.totals)
            assert np.allclose(got.sums_sq[segment], expected.sums_sq)
            assert np.allclose(got.n[segment], expected.n)
            assert np.array_equal(got.devices[segment], expected.devices)


def test_a_stored_look_keeps_its_scores_packed(fleet: Fleet):
    from edgefleet.drift.looks import pack_scores, unpack_scores

    north, south = two_sites(fleet)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "segments": ["site"]}, OPERATOR)
    fleet.send_period(north, START + HOUR)
    fleet.send_period(south, START + HOUR, shift=SHIFT)
    fleet.now = START + HOUR + timedelta(minutes=15)
    report = service.report("digits", start=START, end=START + HOUR)
    assert service.run_due_looks() == 1
    with fleet.uow() as uow:
        (look,) = uow.drift.latest_looks("digits")
    stored = look.result["scores"]
    assert set(stored) == {"segments", "features", "statistics", "thresholds", "bh_cut", "rows"}
    unpacked = unpack_scores(stored)
    assert len(unpacked) == len(report["scores"])
    for mine, theirs in zip(unpacked, report["scores"], strict=True):
        assert {k: v for k, v in mine.items() if k not in ("value", "p_value")} == {
            k: v for k, v in theirs.items() if k not in ("value", "p_value")
        }
        assert mine["value"] == pytest.approx(theirs["value"], rel=1e-5)
        assert mine["p_value"] == pytest.approx(theirs["p_value"], rel=1e-3)
    assert unpack_scores(pack_scores([])) == [] and unpack_scores(None) == []
    # The history of a later report reads the packed scores.
    fleet.send_period(north, START + 2 * HOUR)
    fleet.send_period(south, START + 2 * HOUR, shift=SHIFT)
    later = service.report("digits", start=START + HOUR, end=START + 2 * HOUR)
    history = [
        h
        for h in later["history"]
        if (h["segment"], h["feature"], h["statistic"]) == ("site=south", "X[20]", "psi")
    ]
    assert [h["window_end"] for h in history] == ["2026-12-07T01:00:00Z"]
    assert history[0]["threshold"] == 0.2


def test_a_failing_look_holds_back_its_monitor_only(fleet: Fleet, settings, bundle_copy):
    from edgefleet.registry.artifacts import LocalArtifactStore
    from edgefleet.store.bootstrap import registry_service
    from tests.conftest import edit_manifest

    other = bundle_copy("1.0.0")
    edit_manifest(other, lambda manifest: manifest.update(name="counter"))
    registry_service(fleet.engine, LocalArtifactStore(settings.artifacts_dir)).register(other)
    service = fleet.service()
    service.apply_monitor({"model": "digits", "version": "1.0.0"}, OPERATOR)
    service.apply_monitor({"model": "counter", "version": "1.0.0"}, OPERATOR)
    fleet.now = START + HOUR + timedelta(minutes=15)
    scored = service._score

    def broken(monitor, version, *args):
        if monitor.model == "digits":
            raise ZeroDivisionError("a bug in scoring digits")
        return scored(monitor, version, *args)

    service._score = broken  # type: ignore[method-assign]
    assert service.run_due_looks() == 1
    with fleet.uow() as uow:
        assert uow.drift.last_window_end("counter") == START + HOUR
        assert uow.drift.last_window_end("digits") is None
    service._score = scored  # type: ignore[method-assign]
    assert service.run_due_looks() == 1  # digits' window, whole, at the next run

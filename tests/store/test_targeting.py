"""Targeting queries compiled to SQL select exactly the right devices, on each backend."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edgefleet.fleet.errors import QueryFieldError
from edgefleet.fleet.query import parse_query
from edgefleet.fleet.versions import version_key
from edgefleet.store.database import make_engine
from edgefleet.store.migrate import upgrade
from edgefleet.store.tables import DeviceRow
from edgefleet.store.targeting import compile_query

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ONLINE = NOW + timedelta(minutes=5)
OFFLINE = NOW - timedelta(minutes=5)
EVERY_DEVICE = {f"cam-0{n}" for n in range(1, 9)}


def device(device_id, attributes, **columns):
    firmware = columns.pop("firmware", None)
    version = columns.pop("version", None)
    return DeviceRow(
        device_id=device_id,
        attributes=attributes,
        firmware=firmware,
        firmware_key=version_key(firmware),
        reported_version=version,
        reported_version_key=version_key(version),
        reenroll_allowed=False,
        enrolled_at=NOW - timedelta(days=30),
        desired_etag="0",
        poll_interval_s=60,
        last_event_seq=0,
        **columns,
    )


def fleet_rows():
    return [
        device(
            "cam-01",
            {"region": "eu-west", "site": "plant-1", "battery": 80, "camera": True},
            group_name="berlin",
            hardware="rev2",
            firmware="1.8.0",
            reported_model="digits",
            version="1.0.0",
            offline_deadline=ONLINE,
            agent_state="idle",
        ),
        device(
            "cam-02",
            {"region": "eu-west", "site": "plant-2", "battery": 15, "camera": False},
            group_name="berlin",
            hardware="rev1",
            firmware="1.10.0",
            reported_model="digits",
            version="1.1.0",
            offline_deadline=OFFLINE,
            agent_state="trial",
        ),
        device(
            "cam-03",
            {"region": "us-east", "site": "lab-1", "battery": "12.5", "camera": 1},
            group_name="boston",
            hardware="rev2",
            firmware="1.9.3",
            reported_model="digits",
            version="1.0.0",
        ),
        device(
            "cam-04",
            {"region": "EU-WEST", "site": "Plant-9", "battery": "low"},
            hardware="rev2",
            firmware="1.7.9",
            reported_model="digits-large",
            version="1.0.0",
            offline_deadline=ONLINE,
        ),
        # Knows nothing: no attributes, no hardware, a firmware that is no version.
        device("cam-05", {}, firmware="banana-build"),
        device(
            "cam-06",
            {"region": None, "site": "plant_7", "discount": "50%", "battery": 19.5},
            hardware="rev1",
            firmware="2.0.0-rc.1",
            reported_model="faces",
            version="2.0.0",
            offline_deadline=ONLINE,
        ),
        device(
            "cam-07",
            {"site": "plantA7", "discount": "500"},
            hardware="rev1",
            firmware="1.8.0-rc.1",
        ),
        device(
            "cam-08",
            {"region": "eu-west", "site": "lab?[1]", "battery": 20},
            hardware="rev3",
            firmware="v1.8.1",
            reported_model="digits",
            version="1.0.0-rc.1",
            offline_deadline=NOW,  # the deadline is now: offline
        ),
    ]


@pytest.fixture
def engine(settings):
    engine = make_engine(settings)
    upgrade(engine)
    with Session(engine) as session, session.begin():
        session.add_all(fleet_rows())
    yield engine
    engine.dispose()


@pytest.fixture
def selected(engine):
    """``selected(query)``: the ids of the devices the database selects for ``query``."""

    def run(query):
        condition = compile_query(parse_query(query), now=NOW)
        with Session(engine) as session:
            return set(session.scalars(select(DeviceRow.device_id).where(condition)))

    return run


def assert_selects(selected, cases):
    assert {query: selected(query) for query in cases} == cases


def complement(*device_ids):
    return EVERY_DEVICE - set(device_ids)


def test_column_fields_match_exactly(selected):
    assert_selects(
        selected,
        {
            "id:cam-03": {"cam-03"},
            "device:cam-03": {"cam-03"},
            "group:berlin": {"cam-01", "cam-02"},
            "hw:rev2": {"cam-01", "cam-03", "cam-04"},
            "hardware:rev1": {"cam-02", "cam-06", "cam-07"},
            "state:trial": {"cam-02"},
            "id:cam-0": set(),
        },
    )


def test_attributes_match_as_text(selected):
    assert_selects(
        selected,
        {
            "region:eu-west": {"cam-01", "cam-02", "cam-08"},
            "region:eu-west AND hw:rev2": {"cam-01"},
            "region:us-east": {"cam-03"},
            "battery:15": {"cam-02"},  # a JSON number compares as its text on both backends
            'site:"lab?[1]"': {"cam-08"},
            # JSON true and false read as "true" and "false" on both backends, never 1 and 0
            "camera:true": {"cam-01"},
            "camera:false": {"cam-02"},
            "camera:1": {"cam-03"},
            "camera!=true": complement("cam-01"),
            "colour:blue": set(),
        },
    )


def test_matching_is_case_sensitive(selected):
    assert_selects(
        selected,
        {
            "region:EU-WEST": {"cam-04"},
            "site:Plant-*": {"cam-04"},
            "site:PLANT-*": set(),
            "hw:REV2": set(),
        },
    )


def test_a_missing_field_matches_not_equal_and_not(selected):
    without_region = {"cam-05", "cam-06", "cam-07"}  # cam-06 has region null
    assert_selects(
        selected,
        {
            "NOT region:eu-west": complement("cam-01", "cam-02", "cam-08"),
            "region!=eu-west": complement("cam-01", "cam-02", "cam-08"),
            "region:*": complement(*without_region),
            "NOT region:*": without_region,
            "region!=*": without_region,
            "hw!=rev2": complement("cam-01", "cam-03", "cam-04"),
            "NOT NOT region:eu-west": {"cam-01", "cam-02", "cam-08"},
        },
    )


def test_a_condition_and_its_negation_split_the_fleet(selected):
    for query in ["region:eu-west", "firmware>=1.8.0", "battery<20", "model:digits@1.*"]:
        matched, unmatched = selected(query), selected(f"NOT ({query})")
        assert matched.isdisjoint(unmatched), query
        assert matched | unmatched == EVERY_DEVICE, query


def test_wildcards_match_any_run_of_characters(selected):
    assert_selects(
        selected,
        {
            "site:plant-*": {"cam-01", "cam-02"},
            "site:*1": {"cam-01", "cam-03"},
            "site:p*t*": {"cam-01", "cam-02", "cam-06", "cam-07"},
            "site:*": complement("cam-05"),
            "region:eu-*": {"cam-01", "cam-02", "cam-08"},
        },
    )


def test_like_and_glob_characters_in_values_are_literal(selected):
    assert_selects(
        selected,
        {
            "site:plant_*": {"cam-06"},  # "_" is no single-character wildcard
            "discount:5*%": {"cam-06"},  # "%" is no wildcard either
            "discount:50%": {"cam-06"},
            "site:lab?*": {"cam-08"},  # nor "?" ...
            "site:*[1]": {"cam-08"},  # ... nor "[...]"
        },
    )


def test_firmware_orders_by_version_not_by_text(selected):
    assert_selects(
        selected,
        {
            # 1.10.0 is newer than 1.9.3; 1.8.0-rc.1 precedes 1.8.0; "banana-build" has no order
            "firmware>=1.8.0": {"cam-01", "cam-02", "cam-03", "cam-06", "cam-08"},
            "firmware>1.8.0": {"cam-02", "cam-03", "cam-06", "cam-08"},
            "firmware<1.8.0": {"cam-04", "cam-07"},
            "firmware<=1.8.0": {"cam-01", "cam-04", "cam-07"},
            "firmware>=2.0.0": set(),
            "NOT firmware>=1.8.0": {"cam-04", "cam-05", "cam-07"},
            "firmware:1.8.*": {"cam-01", "cam-07"},
            "firmware:1.8.0": {"cam-01"},
            "firmware!=1.8.0": complement("cam-01"),
            "firmware:banana-build": {"cam-05"},
        },
    )


def test_version_is_the_reported_model_version(selected):
    assert_selects(
        selected,
        {
            "version>=1.0.0": {"cam-01", "cam-02", "cam-03", "cam-04", "cam-06"},
            "version<1.0.0": {"cam-08"},
            "version:1.0.0": {"cam-01", "cam-03", "cam-04"},
        },
    )


def test_model_matches_a_name_or_a_name_and_version(selected):
    assert_selects(
        selected,
        {
            "model:digits@1.0.0": {"cam-01", "cam-03"},
            "model:digits": {"cam-01", "cam-02", "cam-03", "cam-08"},
            "model:digits*": {"cam-01", "cam-02", "cam-03", "cam-04", "cam-08"},
            "model:digits@1.*": {"cam-01", "cam-02", "cam-03", "cam-08"},
            "model:*@2.0.0": {"cam-06"},
            "model!=digits": {"cam-04", "cam-05", "cam-06", "cam-07"},
            "model!=digits@1.0.0": complement("cam-01", "cam-03"),
        },
    )


def test_online_compares_the_offline_deadline_with_now(selected):
    online = {"cam-01", "cam-04", "cam-06"}
    assert_selects(
        selected,
        {
            "online:true": online,
            "online:TRUE": online,
            "online:yes": online,
            "online:1": online,
            "online:false": complement(*online),  # never seen, past or exactly now
            "online:no": complement(*online),
            "online:0": complement(*online),
            "NOT online:true": complement(*online),
        },
    )


def test_attributes_order_numerically_when_they_are_numbers(selected):
    assert_selects(
        selected,
        {
            # 15 and 19.5 are JSON numbers, "12.5" a string; "low" is no number
            "battery<20": {"cam-02", "cam-03", "cam-06"},
            "battery>=20": {"cam-01", "cam-08"},
            "battery>100": set(),
            "battery<=12.5": {"cam-03"},
            "battery>-1": {"cam-01", "cam-02", "cam-03", "cam-06", "cam-08"},
            "NOT battery<20": complement("cam-02", "cam-03", "cam-06"),
            "discount>100": {"cam-07"},
        },
    )


def test_conditions_combine_with_and_or_not_and_parentheses(selected):
    assert_selects(
        selected,
        {
            "(region:eu-west OR region:us-east) AND NOT hw:rev2": {"cam-02", "cam-08"},
            "region:eu-west OR region:us-east AND NOT hw:rev2": {"cam-01", "cam-02", "cam-08"},
            "NOT (site:plant-* OR region:eu-west)": complement("cam-01", "cam-02", "cam-08"),
            "online:true AND firmware>=1.8.0 OR battery<15": {"cam-01", "cam-03", "cam-06"},
            "id:cam-01 OR id:cam-04 OR id:cam-07": {"cam-01", "cam-04", "cam-07"},
        },
    )


def test_a_long_list_of_devices_compiles_to_one_flat_condition(selected):
    ids = [f"cam-{n:02d}" for n in range(300)]
    assert selected(" OR ".join(f"id:{i}" for i in ids)) == EVERY_DEVICE


def test_repeated_queries_of_the_same_shape_bind_their_own_values(selected):
    # SQLAlchemy caches compiled statements by shape; each run must use its own pattern.
    assert selected("site:plant-*") == {"cam-01", "cam-02"}
    assert selected("site:lab*") == {"cam-03", "cam-08"}
    assert selected("firmware>=1.9.0") == {"cam-02", "cam-03", "cam-06"}
    assert selected("firmware>=1.10.0") == {"cam-02", "cam-06"}


def test_a_naive_now_is_taken_as_utc(engine):
    condition = compile_query(parse_query("online:true"), now=NOW.replace(tzinfo=None))
    with Session(engine) as session:
        found = set(session.scalars(select(DeviceRow.device_id).where(condition)))
    assert found == {"cam-01", "cam-04", "cam-06"}


def test_versions_order_by_bytes_whatever_the_column_collation(engine, selected):
    if engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL columns take the database's collation")
    with engine.begin() as connection:
        collations = connection.execute(
            text("SELECT collname FROM pg_collation WHERE collname = 'en-US-x-icu'")
        ).all()
        if not collations:
            pytest.skip("this PostgreSQL has no ICU collation to test with")
        # Under en-US the release marker "~" sorts before the pre-release marker "0".
        connection.execute(
            text(
                "ALTER TABLE devices ALTER COLUMN firmware_key "
                'TYPE varchar(96) COLLATE "en-US-x-icu"'
            )
        )
    assert selected("firmware>=1.8.0") == {"cam-01", "cam-02", "cam-03", "cam-06", "cam-08"}
    assert selected("firmware<1.8.0") == {"cam-04", "cam-07"}


def test_the_sql_is_built_for_each_dialect():
    condition = compile_query(parse_query("site:a* AND firmware>=1.0.0"), now=NOW)
    postgres_sql = str(condition.compile(dialect=postgresql.dialect()))
    sqlite_sql = str(condition.compile(dialect=sqlite.dialect()))
    assert "LIKE" in postgres_sql
    assert 'COLLATE "C"' in postgres_sql
    assert "GLOB" in sqlite_sql
    assert "COLLATE" not in sqlite_sql


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("model>1", "does not support '>'"),
        ("model:@1.0.0", "is not NAME or NAME@VERSION"),
        ("model:digits@", "is not NAME or NAME@VERSION"),
        ("online>true", "does not support '>'"),
        ("online!=true", "does not support '!='"),
        ("online:maybe", "online must be true or false"),
        ("region>abc", "only numbers (or the firmware and version fields) can be ordered"),
        ("battery<nan", "is not a number"),
        ("battery<inf", "is not a number"),
        ("firmware>=banana", "'banana' is not a version"),
        ("version<latest", "'latest' is not a version"),
        ("hw>rev2", "does not support '>'"),
        ("id<=cam-01", "does not support '<='"),
    ],
)
def test_unsupported_comparisons_are_field_errors(query, fragment):
    with pytest.raises(QueryFieldError) as info:
        compile_query(parse_query(query), now=NOW)
    assert fragment in info.value.message
    assert info.value.details["position"] == 0


def test_a_field_error_points_at_its_comparison():
    with pytest.raises(QueryFieldError) as info:
        compile_query(parse_query("region:eu AND NOT firmware>=banana"), now=NOW)
    assert info.value.details == {"position": 18, "field": "firmware", "op": ">="}
    assert info.value.message.startswith("query error at position 18: ")

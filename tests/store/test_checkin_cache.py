"""Check-in rows answered from memory (store/checkin.py ``CheckinCache``): dropped when
the SQLite change log names their device, whoever wrote the change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, func, select, update

from edgefleet.config import Settings
from edgefleet.fleet.errors import DeviceNotFoundError
from edgefleet.store.checkin import CheckinCache, CheckinReader, prune_changes
from edgefleet.store.database import make_engine
from edgefleet.store.migrate import ensure_schema
from edgefleet.store.tables import Base, CheckinChangeRow, DeviceRow
from tests.store.test_telemetry_writer import _device

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def sqlite(tmp_path):
    """A migrated SQLite store: the server's read engine and, as another process
    would, a writer engine of its own."""
    settings = Settings(home=tmp_path, database_url_override=None)
    writer = make_engine(settings)
    ensure_schema(writer, auto_migrate=True)
    reader = make_engine(settings, read_only=True)
    yield reader, writer
    reader.dispose()
    writer.dispose()


def _enroll(engine, *names: str) -> dict[str, int]:
    """Devices with the credential ids ``id-<name>``."""
    return {name: _device(engine, name) for name in names}


def _set(engine, pk: int, **values) -> None:
    with engine.begin() as connection:
        connection.execute(update(DeviceRow).where(DeviceRow.id == pk).values(**values))


def _logged(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(CheckinChangeRow)).scalar_one()


def test_rows_come_from_memory_until_the_change_log_names_their_device(sqlite):
    reader, writer = sqlite
    pks = _enroll(writer, "cam-a", "cam-b")
    cache = CheckinCache(CheckinReader(reader), refresh_s=3600)
    first = cache.lookup("id-cam-a")
    assert first is not None and first.pk == pks["cam-a"]
    assert cache.lookup("id-cam-a") == first
    assert cache.lookup("id-cam-b") is not None
    assert (cache.hits, cache.misses) == (1, 2)

    # What a check-in answer is not made of logs nothing and drops nothing.
    _set(writer, pks["cam-a"], last_seen_at=AT, agent_state="IDLE", reported={"x": 1})
    assert _logged(writer) == 0

    # Another process changes cam-a's desired state: not seen before the log is read
    # (here: an hour, or a write of this process) ...
    _set(writer, pks["cam-a"], desired_etag="new-etag")
    assert _logged(writer) == 1
    assert cache.lookup("id-cam-a") == first
    # ... and seen once it is; cam-b's row stays in memory.
    cache.mark_stale()
    assert cache.lookup("id-cam-a").desired_etag == "new-etag"
    misses = cache.misses
    assert cache.lookup("id-cam-b") is not None
    assert cache.misses == misses

    # A new credential: the old one is unknown at once, the new one found.
    _set(writer, pks["cam-b"], credential_id="id-cam-b2", credential_hash="h2")
    cache.mark_stale()
    assert cache.lookup("id-cam-b") is None
    assert cache.lookup("id-cam-b2").credential_hash == "h2"

    # A deleted device.
    with writer.begin() as connection:
        connection.execute(delete(DeviceRow).where(DeviceRow.id == pks["cam-a"]))
    cache.mark_stale()
    assert cache.lookup("id-cam-a") is None


def test_a_refresh_interval_bounds_how_late_another_writer_is_seen(sqlite):
    reader, writer = sqlite
    pk = _enroll(writer, "cam-a")["cam-a"]
    cache = CheckinCache(CheckinReader(reader), refresh_s=0)  # read the log every time
    assert cache.lookup("id-cam-a").poll_interval_s == 10
    _set(writer, pk, poll_interval_s=30)
    assert cache.lookup("id-cam-a").poll_interval_s == 30


def test_a_log_pruned_past_the_cache_empties_it(sqlite):
    reader, writer = sqlite
    pks = _enroll(writer, "cam-a", "cam-b")
    cache = CheckinCache(CheckinReader(reader), refresh_s=3600)
    assert cache.lookup("id-cam-a") is not None
    assert cache.lookup("id-cam-b") is not None
    for n in range(5):
        _set(writer, pks["cam-b"], desired_etag=f"etag-{n}")
    assert prune_changes(writer, keep=2) == 3
    assert _logged(writer) == 2
    cache.mark_stale()
    # It cannot know what the pruned entries named: it starts over, and reads again.
    assert cache.lookup("id-cam-b").desired_etag == "etag-4"
    assert cache.restarts == 1
    assert len(cache) == 1
    assert cache.lookup("id-cam-a") is not None
    # Afterwards it follows the log again as usual.
    _set(writer, pks["cam-a"], desired_etag="later")
    cache.mark_stale()
    assert cache.lookup("id-cam-a").desired_etag == "later"
    assert cache.restarts == 1


def test_a_schema_without_the_triggers_keeps_no_log(tmp_path):
    settings = Settings(home=tmp_path, database_url_override=None)
    engine = make_engine(settings)
    Base.metadata.create_all(engine)  # tables only, as a hand-made schema would be
    try:
        assert CheckinReader(engine).change_log_kept() is False
    finally:
        engine.dispose()


def test_only_sqlite_keeps_the_change_log(engine):
    # Sequence order is not commit order there, so the server reads every check-in.
    assert CheckinReader(engine).change_log_kept() is (engine.dialect.name == "sqlite")


def test_a_desired_state_and_its_etag_are_read_together(engine, settings):
    """The device fast path's read of a changed desired state, on the calling thread's
    own connection (the event loop's, never a pooled one)."""
    pk = _device(engine, "cam-1")
    state = {"model": None, "config": {"threshold": 0.5}, "rollout": "r-1"}
    _set(engine, pk, desired=state, desired_etag="etag-1")
    reader_engine = make_engine(settings, read_only=True)
    reader = CheckinReader(reader_engine)
    try:
        assert reader.desired(pk) == (state, "etag-1")
        _set(engine, pk, desired=None, desired_etag="etag-0")
        assert reader.desired(pk) == (None, "etag-0")
        with pytest.raises(DeviceNotFoundError):
            reader.desired(pk + 1000)
    finally:
        reader.close()
        reader_engine.dispose()

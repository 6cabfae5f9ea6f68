import threading
import time

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from edgefleet.config import Settings, load_settings
from edgefleet.errors import ConfigError
from edgefleet.store.database import describe_url, make_engine


def test_default_database_is_sqlite_in_home(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEFLEET_DATABASE_URL", raising=False)
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "h"))
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'h' / 'edgefleet.db'}"
    assert settings.artifacts_dir == tmp_path / "h" / "artifacts"


def test_database_url_from_environment(monkeypatch):
    monkeypatch.setenv("EDGEFLEET_DATABASE_URL", "postgresql+psycopg://u@db:5432/x")
    assert load_settings().database_url == "postgresql+psycopg://u@db:5432/x"


def test_bad_setting_values_are_config_errors(monkeypatch):
    monkeypatch.setenv("EDGEFLEET_DB_BUSY_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="EDGEFLEET_DB_BUSY_TIMEOUT_S"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://root@localhost/db", "unsupported database 'mysql'"),
        ("postgresql+nosuchdriver://u@h/db", "unsupported database driver"),
    ],
)
def test_unusable_database_urls(tmp_path, url, message):
    with pytest.raises(ConfigError, match=message):
        make_engine(Settings(home=tmp_path, database_url_override=url))


def test_passwords_are_hidden_in_messages():
    assert "secret" not in describe_url("postgresql+psycopg://u:secret@h/db")


def _writer_settings(tmp_path, busy_s: float) -> Settings:
    return Settings(
        home=tmp_path,
        database_url_override=f"sqlite:///{tmp_path / 'gate.db'}",
        db_busy_timeout_s=busy_s,
    )


def _table(engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)")


def test_a_process_writers_queue_on_the_gate_not_on_sqlites_busy_timeout(tmp_path):
    engine = make_engine(_writer_settings(tmp_path, 0.2))
    _table(engine)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            holding.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    try:
        # A second writer of this process waits in the gate and says so when its time
        # runs out; a reader on the deferred engine is not held up at all.
        with (
            pytest.raises(OperationalError, match="behind this process's writers"),
            engine.begin() as connection,
        ):
            connection.exec_driver_sql("INSERT INTO t VALUES (2)")
        reader = make_engine(_writer_settings(tmp_path, 0.2), read_only=True)
        with reader.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
        reader.dispose()
    finally:
        done.set()
        holder.join()
    # The holder's commit let the gate go; so does a rollback, a failed statement, and
    # a connection that began again while checked out.
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (2)")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (2)")
    with engine.connect() as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (3)")
        connection.commit()
        connection.exec_driver_sql("INSERT INTO t VALUES (4)")
        connection.rollback()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 3
    engine.dispose()


def test_many_writer_threads_all_get_through_in_turn(tmp_path):
    # Each transaction holds the lock 20 ms; 12 threads x 10 of them is 2.4 s of writing
    # in all, more than the 1.5 s timeout. With SQLite's busy timeout alone a writer
    # naps and retries while others barge in, and some run out of time ("database is
    # locked"); queued first come, first served, each waits about 11 transactions.
    engine = make_engine(_writer_settings(tmp_path, 1.5))
    _table(engine)
    failures: list[Exception] = []

    def write(k: int) -> None:
        for i in range(10):
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql(f"INSERT INTO t VALUES ({k * 100 + i})")
                    time.sleep(0.02)
            except Exception as exc:  # collected for the assertion
                failures.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 120
    engine.dispose()

import pytest

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

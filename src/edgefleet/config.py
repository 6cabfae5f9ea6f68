"""Settings read from the environment (``EDGEFLEET_*``).

``EDGEFLEET_HOME`` (default ``./.edgefleet``) holds the embedded SQLite database and the
artifact store; ``EDGEFLEET_DATABASE_URL`` points the store at another database
(``postgresql+psycopg://user@host:5432/db``)::

    settings = Settings()            # from the environment
    settings.database_url            # sqlite:////abs/path/.edgefleet/edgefleet.db
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgefleet.errors import ConfigError


class Settings(BaseSettings):
    """edgefleet settings; every field reads ``EDGEFLEET_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="EDGEFLEET_", extra="ignore", populate_by_name=True
    )

    home: Path = Field(default=Path(".edgefleet"), description="state directory")
    database_url_override: str | None = Field(
        default=None,
        validation_alias="EDGEFLEET_DATABASE_URL",
        description="SQLAlchemy URL; default is a SQLite file in the home directory",
    )
    db_busy_timeout_s: float = Field(
        default=5.0, ge=0, description="how long SQLite waits for a lock before giving up"
    )
    db_connect_timeout_s: int = Field(
        default=5, ge=1, description="how long to wait for a database server to answer"
    )
    tuf_timestamp_expiry_s: int = Field(
        default=86400, ge=60, description="lifetime of signed timestamp metadata"
    )
    tuf_bins_threshold: int = Field(
        default=1024, ge=2, description="targets in targets.json before hashed bins are used"
    )
    server: str | None = Field(
        default=None, description="CLI remote mode: base URL of an edgefleet server"
    )
    token: str | None = Field(default=None, description="CLI remote mode: operator API key")
    server_url: str | None = Field(
        default=None,
        description="public base URL of the server for devices (default: from each request)",
    )
    max_json_bytes: int = Field(default=1 << 20, ge=1024, description="cap on JSON request bodies")
    max_upload_bytes: int = Field(default=2 << 30, ge=1 << 20, description="cap on bundle uploads")
    offline_after_intervals: float = Field(
        default=3.0,
        gt=1,
        description="check-in intervals without a check-in before a device is offline",
    )
    http_keep_alive_s: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="how long the server keeps an idle HTTP connection open: longer than "
        "the devices' check-in interval, so a check-in reuses its connection (no new TCP or TLS "
        "handshake each time)",
    )
    checkin_cache_refresh_s: float = Field(
        default=0.25,
        ge=0,
        le=60,
        description="SQLite: how far behind the database a 304 check-in answered from the "
        "server's memory may be (it reads the change log this often); 0 reads the "
        "database on every check-in",
    )
    telemetry_retention_hours: int = Field(
        default=48, ge=1, description="how long per-device telemetry buckets are kept"
    )
    rollout_tick_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="how often the rollout controller ticks (one decision per running rollout)",
    )
    rollout_analysis_interval_s: float = Field(
        default=30.0,
        ge=0,
        le=86400,
        description="least time between two gate analyses of a rollout (each is one look)",
    )
    rollout_membership_refresh_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="how long the controller reuses a rollout's target as read "
        "(devices that join it wait up to this long; 0 reads it at every tick)",
    )
    drift_look_grace_s: float = Field(
        default=600.0,
        ge=0,
        le=86400,
        description="how long after a drift window ends its look waits for late summaries "
        "(a device sends a period's summary with its next telemetry after the period ends)",
    )
    drift_looks_interval_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="how often the leader looks for drift windows that are due",
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    tuf_refresh_interval_s: int = Field(
        default=3600, ge=10, description="how often the server re-signs expiring snapshot/timestamp"
    )
    auto_migrate: bool = Field(
        default=True, description="bring the database schema up to date when it is opened"
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{self.home / 'edgefleet.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with ``overrides`` on top.

    Raises:
        ConfigError: an ``EDGEFLEET_*`` variable has a value of the wrong kind.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"EDGEFLEET_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc

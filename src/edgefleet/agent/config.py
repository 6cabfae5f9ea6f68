"""The agent's configuration file (YAML or JSON), documented in docs/agent.md.

::

    server: https://fleet.example.com
    device_id: camera-0042
    enrollment_token: efe_...          # used once; the credential is kept in state_dir
    state_dir: /var/lib/edgefleet
    attributes: {region: eu-west, site: plant-3}
    checkin_interval_s: 60             # poll_interval_s, its old name, is read too
    drift_period_s: 3600               # drift summaries: one per model an hour
    sketch_rows: 24                    # input rows behind them
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from edgefleet.agent.checkin import DEFAULT_JITTER
from edgefleet.errors import ConfigError
from edgefleet.fleet.domain import DEVICE_ID_PATTERN


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str = Field(min_length=1, description="base URL of the edgefleet server")
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    enrollment_token: str | None = Field(
        default=None, description="needed for the first start only"
    )
    state_dir: Path
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    hardware: str | None = Field(default=None, description="default: the device profile's machine")
    firmware: str = "0.0.0"
    checkin_interval_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("checkin_interval_s", "poll_interval_s"),
        description="seconds between check-ins (poll_interval_s, its old name, is read too)",
    )
    jitter: float = Field(
        default=DEFAULT_JITTER, ge=0, le=1, description="± share of the check-in interval"
    )
    max_backoff_s: float = Field(default=300.0, gt=0)
    telemetry_interval_s: float = Field(default=60.0, gt=0)
    max_queued_telemetry: int = Field(default=1000, ge=1)
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    serve_host: str = "127.0.0.1"
    serve_port: int | None = Field(
        default=8765, ge=0, le=65535, description="null: no local endpoint"
    )
    trial_replay_per_s: float = Field(
        default=20.0, gt=0, description="replays per second during an idle trial"
    )
    record_inputs: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="application inputs kept (on disk too) for idle-trial replay; 0: none",
    )
    drift_period_s: float = Field(
        default=3600.0,
        ge=60,
        le=7 * 86400,
        description=(
            "seconds a drift summary period lasts (periods end at multiples of it in epoch "
            "time); its feature histograms and quantile summaries go in the telemetry "
            "sample that closes it"
        ),
    )
    sketch_rows: int = Field(
        default=24,
        ge=0,
        le=4096,
        description=(
            "input rows per period and model behind the feature quantile summaries "
            "(a uniform sample; 24 keeps a 100-feature model within 16 KB an hour); 0: none"
        ),
    )
    http_timeout_s: float = Field(default=30.0, gt=0)
    metered: bool = Field(default=False, description="the device's network is metered (cellular)")


def load_config(path: Path, **overrides: Any) -> AgentConfig:
    """Read and validate a config file.

    Raises:
        ConfigError: unreadable, not YAML/JSON, or invalid (each problem named).
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read agent config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"agent config {path} must be a mapping of settings")
    try:
        return AgentConfig.model_validate({**data, **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"agent config {path} is invalid: {problems}") from exc

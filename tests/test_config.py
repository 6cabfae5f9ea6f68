"""Settings read from the environment: the drift looks' grace and interval."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgefleet.config import Settings


def test_drift_looks_default_to_a_ten_minute_grace_every_thirty_seconds(monkeypatch):
    monkeypatch.delenv("EDGEFLEET_DRIFT_LOOK_GRACE_S", raising=False)
    monkeypatch.delenv("EDGEFLEET_DRIFT_LOOKS_INTERVAL_S", raising=False)
    settings = Settings()
    assert (settings.drift_look_grace_s, settings.drift_looks_interval_s) == (600.0, 30.0)


def test_drift_looks_are_set_from_the_environment(monkeypatch):
    monkeypatch.setenv("EDGEFLEET_DRIFT_LOOK_GRACE_S", "4")
    monkeypatch.setenv("EDGEFLEET_DRIFT_LOOKS_INTERVAL_S", "0.5")
    settings = Settings()
    assert (settings.drift_look_grace_s, settings.drift_looks_interval_s) == (4.0, 0.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [("EDGEFLEET_DRIFT_LOOK_GRACE_S", "-1"), ("EDGEFLEET_DRIFT_LOOKS_INTERVAL_S", "0")],
)
def test_drift_looks_refuse_impossible_values(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("EDGEFLEET_").lower()):
        Settings()

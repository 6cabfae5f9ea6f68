"""``edgefleet devices show`` prints the trial's restarts from the reported state."""

from contextlib import contextmanager

from typer.testing import CliRunner

from edgefleet.cli import devices
from edgefleet.cli.main import app


def _device(trial_restarts):
    reported = {"state": "TRIAL", "trial_restarts": trial_restarts}
    return {
        "device": {"device_id": "cam-1", "agent_state": "TRIAL", "reported": reported},
        "events": [],
    }


def _show(monkeypatch, answer) -> str:
    class Client:
        def show(self, device_id):
            return answer

    @contextmanager
    def fleet():
        yield Client()

    monkeypatch.setattr(devices, "fleet", fleet)
    result = CliRunner().invoke(app, ["devices", "show", "cam-1"])
    assert result.exit_code == 0, result.output
    return result.output


def test_show_prints_the_trials_restarts_only_while_a_trial_counts_them(monkeypatch):
    assert "trial_restarts: 2" in _show(monkeypatch, _device(2))
    assert "trial_restarts" not in _show(monkeypatch, _device(None))

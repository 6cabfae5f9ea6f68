"""``agent run --once`` shows a trial's progress: a bar through its minimum time with
the inferences and the paired latency, and the verdict at the end."""

import io
from types import SimpleNamespace

from rich.console import Console

from edgefleet.agent.trial import Verdict
from edgefleet.cli import agent as agent_cli
from edgefleet.fleet.domain import TrialPolicy


def test_the_trial_progress_shows_inferences_latency_and_the_verdict(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(agent_cli, "console", Console(file=out, width=160, force_terminal=False))
    agent = SimpleNamespace(on_trial=None)
    policy = TrialPolicy()
    with agent_cli._trial_progress(agent):
        assert agent.on_trial is not None
        agent.on_trial(policy, Verdict(None, None, {"elapsed_s": 12.0, "inferences": 40}))
        agent.on_trial(
            policy,
            Verdict(
                True,
                None,
                {
                    "elapsed_s": 60.1,
                    "inferences": 240,
                    "probe_pairs": 4700,
                    "latency_ratio_median": 1.01,
                },
            ),
        )
    text = out.getvalue()
    assert "trial" in text
    assert "240/200 inferences" in text
    assert "latency x1.01 of the previous model over 4700 probes: passed" in text

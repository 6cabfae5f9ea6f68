"""The runner's record of a rollout's gate analyses (pure: no server, no fleet)."""

from __future__ import annotations

from typing import Any

from edgefleet.sim.runner import analysis_looks


def _view(wave: int, looks: int, estimate: float | None) -> dict[str, Any]:
    gates = (
        []
        if estimate is None
        else [
            {
                "gate": "rollbacks",
                "metric": "rollbacks",
                "verdict": "pass",
                "dry_run": False,
                "numbers": {"estimate": estimate, "limit": {"max": 0.05}},
            }
        ]
    )
    return {"wave": wave, "looks": looks, "gates": gates}


def _record(views: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """What the runner keeps of a series of polls: (wave, estimate) per analysis."""
    seen: tuple[int, int] | None = None
    kept = []
    for t, view in enumerate(views):
        analysis, looks = analysis_looks(view, float(t))
        if analysis is not None and analysis != seen:
            seen = analysis
            kept += [(look.wave, look.numbers["estimate"]) for look in looks]
    return kept


def test_each_analysis_is_recorded_once_however_often_it_is_polled() -> None:
    polls = [_view(0, 0, None), _view(0, 1, 0.1), _view(0, 1, 0.1), _view(0, 2, 0.2)]
    assert _record(polls) == [(0, 0.1), (0, 0.2)]


def test_the_analysis_that_advanced_the_rollout_belongs_to_the_wave_it_judged() -> None:
    # The server moves to the next wave in the same step as the analysis that passed,
    # resets its look count and keeps that analysis's gates until the next one.
    polls = [
        _view(0, 3, 0.3),
        _view(1, 0, 0.4),  # wave 1's last analysis, shown under wave 2
        _view(1, 0, 0.4),
        _view(1, 1, 0.5),
        _view(2, 0, 0.6),
        _view(2, 1, 0.7),
    ]
    assert _record(polls) == [(0, 0.3), (0, 0.4), (1, 0.5), (1, 0.6), (2, 0.7)]


def test_a_view_without_gates_records_nothing() -> None:
    assert analysis_looks(_view(0, 0, None), 1.0) == (None, [])

"""Benchmark: how often the rollout gates catch a regression, and at what cost in devices.

Simulated rollouts through the real pure core, no server: the controller's ``decide``
and ``apply`` (``rollout/controller.py``) tick every ``--tick`` seconds, the gates'
``evaluate`` (``rollout/gates.py``) runs whenever ``analysis_due`` says (every 30 s, the
server's default), on ``DeviceSummary`` telemetry of simulated devices: latency
histograms on the runtime's own bins (``LATENCY_EDGES_MS``), accumulated since the
rollout started, as the server reads them.

The fleet: ``--devices`` (default 200) on four hardware kinds of different speed (median
latency 8, 12, 20 and 30 ms). Each device has its own speed (log-normal, 8% between
devices of one kind) and its requests' latencies are log-normal around it (sigma 0.35),
``--rate`` requests a second (default 1). The rollout: waves 5, 25, 50 and 100% (the
built-in scenarios'; the default 1% wave of 200 devices is 2, too few for any gate to
pass), bake 600 s, analysis timeout 3600 s, one gate as docs/rollouts.md recommends
(``latency_p95``, ``max_ratio: 1.2``, ``min_samples: 5``), alpha 0.05. Devices install
the candidate the moment they are assigned. The devices' order is random with respect to
kind, then interleaved by kind as the server orders waves (``rollout/waves.py``
``stratified``) where the code measured has it.

With ``--pairs N`` each device's trial also times both models on N of its requests one
right after the other (the agent's paired probes): each pair's candidate time is the
previous model's times the regression (on affected devices) times log-normal noise of
``--pair-sigma`` (default 0.1), and the device reports them as the agent does
(``latency_over_at``, both p95s), read by the server's ``PairedTrial.from_details``.
With ``--on-inconclusive extend`` a wave still inconclusive at its analysis timeout
grows by 5% of the fleet up to 25% (``extend``), instead of pausing.

A cell is a regression size (the candidate's latencies times ``size`` on the affected
devices) and the share of the fleet it affects: 100% (every kind), 25% or 10% (one kind
that makes up that share; the other three share the rest evenly). Size 1.0 is a good
release. For each cell, ``--rollouts`` rollouts (default 200, each its own seed) end
as: **aborted** (a gate failed: detected), **paused** (inconclusive until the analysis
timeout: the canaries are left on the candidate), or **succeeded** (passed every wave).
Reported per cell: the share of each, the median devices exposed (assigned the
candidate when the rollout stopped), and for good releases the false-abort rate
(must stay at most alpha).

Usage::

    python benchmarks/gates.py [--rollouts 200] [--sizes 1.0 1.1 1.2 1.3 1.5 2.0]
        [--shares 1.0 0.25 0.1] [--label after] [--json out.json]

Writes ``benchmarks/results/gates-<label>.json`` unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from edgefleet.agent.trial import OVER_AT_RATIOS
from edgefleet.rollout.controller import Kind, Snapshot, analysed, analysis_due, apply, decide
from edgefleet.rollout.gates import Delivery, DeviceSummary, Evidence, PairedTrial, evaluate
from edgefleet.rollout.lifecycle import Phase, RolloutProgress, RolloutState
from edgefleet.rollout.policy import Metric, RolloutSpec, wave_percent
from edgefleet.rollout.status import DeviceStatus
from edgefleet.rollout.waves import wave_size

try:  # the wave order interleaved by hardware kind (not in the code measured "before")
    from edgefleet.rollout.waves import stratified
except ImportError:  # pragma: no cover - older code
    stratified = None  # type: ignore[assignment]
from edgefleet.runtime.metrics import LATENCY_EDGES_MS

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("kind-a", "kind-b", "kind-c", "kind-d")
MEDIAN_MS = (8.0, 12.0, 20.0, 30.0)
DEVICE_SPREAD = 0.08  # sigma of a device's log-speed within its kind
REQUEST_SIGMA = 0.35  # sigma of one request's log-latency on a device
ANALYSIS_INTERVAL_S = 30.0
START = datetime(2026, 12, 1, tzinfo=UTC)
#: The built-in scenarios' waves: the default 1% first wave of 200 devices is 2 devices,
#: fewer than the gate's min_samples (5), so it could never pass.
WAVES = (5.0, 25.0, 50.0, 100.0)
EXTEND = {"step_percent": 5.0, "max_percent": 25.0}


@dataclass(frozen=True)
class Options:
    """What a rollout of the benchmark has beside its cell."""

    pairs: int = 0  # probe pairs of each device's trial (0: none reported)
    pair_sigma: float = 0.1
    on_inconclusive: str = "pause"


def spec(on_inconclusive: str = "pause") -> RolloutSpec:
    body: dict[str, Any] = {
        "model": "bench",
        "version": "2.0.0",
        "target": "model:bench",
        "waves": [{"percent": p} for p in WAVES],
        "gates": [{"metric": "latency_p95", "max_ratio": 1.2, "min_samples": 5}],
    }
    if on_inconclusive != "pause":  # (not a setting of the code measured "before")
        body |= {"on_inconclusive": on_inconclusive, "extend": EXTEND}
    return RolloutSpec.model_validate(body)


@dataclass(frozen=True)
class Cell:
    size: float
    share: float


@dataclass(frozen=True)
class Outcome:
    state: str  # aborted, paused, succeeded
    wave: int  # 1-based wave it stopped in
    exposed: int  # devices assigned the candidate
    seconds: float  # simulated time until it stopped
    segment: str | None = None  # the segment named by the failing gate, if any


class Fleet:
    """The simulated devices of one rollout: their kinds, speeds, latency bins, and the
    histograms they have sent since the rollout started."""

    def __init__(self, devices: int, cell: Cell, rng: np.random.Generator) -> None:
        self.n = devices
        self.rng = rng
        if cell.share >= 1.0:
            quotas = [devices // 4] * 4
        else:
            affected = round(devices * cell.share)
            rest = devices - affected
            quotas = [affected, rest // 3, rest // 3, rest - 2 * (rest // 3)]
        quotas[-1] += devices - sum(quotas)
        self.kind = np.repeat(np.arange(4), quotas)
        rng.shuffle(self.kind)  # the rollout's order is random with respect to kind
        if stratified is not None:
            # The server's wave order: interleaved by hardware kind (where the code has it).
            ids = [f"d{i}" for i in range(devices)]
            kinds = {d: KINDS[k] for d, k in zip(ids, self.kind, strict=True)}
            order = stratified(f"bench-{rng.integers(2**32)}", ids, kinds)
            self.kind = self.kind[[int(d[1:]) for d in order]]
        self.affected = (
            np.ones(devices, bool) if cell.share >= 1.0 else self.kind == 0
        )  # kind-a is the affected one
        speed = np.log(np.asarray(MEDIAN_MS)[self.kind]) + rng.normal(0, DEVICE_SPREAD, devices)
        self.old_bins = _bin_probabilities(speed)
        self.new_bins = _bin_probabilities(
            speed + np.where(self.affected, math.log(cell.size), 0.0)
        )
        bins = len(LATENCY_EDGES_MS) + 1
        self.baseline_counts = np.zeros((devices, bins), np.int64)
        self.candidate_counts = np.zeros((devices, bins), np.int64)
        self.on_candidate = np.zeros(devices, bool)
        self.size = np.where(self.affected, cell.size, 1.0)
        self.speed = speed
        self.trials: list[Any] = []

    def install(self, first: int, count: int, options: Options) -> None:
        """Devices ``first`` to ``first + count`` install the candidate; with paired
        probes, each reports its trial's as the agent does."""
        self.on_candidate[first : first + count] = True
        if not options.pairs:
            return
        for i in range(first, first + count):
            base = np.exp(self.speed[i] + self.rng.normal(0.0, REQUEST_SIGMA, options.pairs))
            ours = base * self.size[i] * np.exp(self.rng.normal(0.0, options.pair_sigma, base.size))
            over = {str(r): int(np.sum(ours > r * base)) for r in OVER_AT_RATIOS}
            details = {
                "latency_pairs": options.pairs,
                "latency_over_at": over,
                "latency_p95_ms": float(np.quantile(ours, 0.95)),
                "baseline_latency_p95_ms": float(np.quantile(base, 0.95)),
            }
            self.trials.append(PairedTrial.from_details(f"d{i}", KINDS[self.kind[i]], details))

    def serve(self, seconds: float, rate: float) -> None:
        """Every device serves ``rate`` requests a second for ``seconds``, on the version
        it runs."""
        requests = self.rng.poisson(rate * seconds, self.n)
        new = self.on_candidate
        if new.any():
            self.candidate_counts[new] += self.rng.multinomial(requests[new], self.new_bins[new])
        if (~new).any():
            self.baseline_counts[~new] += self.rng.multinomial(requests[~new], self.old_bins[~new])

    def evidence(self, finished: int) -> Evidence:
        def summaries(counts: np.ndarray, which: np.ndarray) -> list[DeviceSummary]:
            chosen = np.flatnonzero(which & (counts.sum(axis=1) > 0))
            rows = counts[chosen].tolist()
            totals = counts[chosen].sum(axis=1).tolist()
            return [
                DeviceSummary(
                    f"d{i}", KINDS[self.kind[i]], inferences=total, latency_counts=tuple(row)
                )
                for i, row, total in zip(chosen.tolist(), rows, totals, strict=True)
            ]

        return Evidence(
            Delivery(finished=finished),
            summaries(self.candidate_counts, self.on_candidate),
            # As the server reads it: the target's telemetry on the previous version since
            # the rollout started, of the devices that have moved on too.
            summaries(self.baseline_counts, np.ones(self.n, bool)),
            *([self.trials] if self.trials else []),
        )


def _bin_probabilities(log_median: np.ndarray) -> np.ndarray:
    """Each device's probabilities of the latency bins (``bisect_right`` of the edges)."""
    edges = np.log(np.asarray(LATENCY_EDGES_MS))
    cdf = stats.norm.cdf((edges[None, :] - log_median[:, None]) / REQUEST_SIGMA)
    p = np.diff(np.concatenate([np.zeros((len(log_median), 1)), cdf, np.ones((len(cdf), 1))], 1))
    p = np.clip(p, 0.0, None)
    return np.asarray(p / p.sum(axis=1, keepdims=True))


def run_rollout(
    cell: Cell, devices: int, rate: float, tick_s: float, seed: int, options: Options = Options()
) -> Outcome:
    """One rollout of the cell's release, ticked until it stops."""
    rng = np.random.default_rng(seed)
    fleet = Fleet(devices, cell, rng)
    rollout = spec(options.on_inconclusive)
    now = START
    progress = RolloutProgress(
        state=RolloutState.RUNNING,
        wave=0,
        phase=Phase.ROLLING,
        phase_started_at=now,
        started_at=now,
    )
    assigned = 0
    limit = now + timedelta(days=2)
    while progress.state is RolloutState.RUNNING and now < limit:
        counts = {DeviceStatus.COMMITTED: assigned} if assigned else {}
        gates = None
        if analysis_due(progress, now, ANALYSIS_INTERVAL_S, counts):
            evidence = fleet.evidence(assigned)
            gates = [
                evaluate(g, evidence, rollout.alpha, progress.looks + 1) for g in rollout.gates
            ]
            progress = analysed(progress, gates, now)
        percent = wave_percent(rollout, progress.wave, progress.extended) or 100.0
        members = wave_size(percent, devices)
        snapshot = Snapshot(
            spec=rollout,
            state=progress.state,
            wave=progress.wave,
            phase=progress.phase,
            phase_started_at=progress.phase_started_at,
            now=now,
            members=members,
            unassigned=max(0, members - assigned),
            may_assign=devices,
            counts=counts,
            gates=gates,
            extended=progress.extended,
        )
        decision = decide(snapshot)
        if decision.kind is Kind.ASSIGN:
            fleet.install(assigned, decision.assign, options)
            assigned += decision.assign
        progress = apply(progress, decision, now).progress
        if decision.kind is Kind.WAIT:
            fleet.serve(tick_s, rate)
            now += timedelta(seconds=tick_s)
    segment = None
    for gate in progress.gates:
        if gate["verdict"] == "fail":
            segment = gate["numbers"].get("segment")
    return Outcome(
        state=progress.state.value,
        wave=progress.wave + 1,
        exposed=assigned,
        seconds=(now - START).total_seconds(),
        segment=segment,
    )


def run_cell(args: tuple[Cell, int, int, float, float, int, Options]) -> dict[str, Any]:
    cell, rollouts, devices, rate, tick_s, seed, options = args
    started = time.perf_counter()
    outcomes = [
        run_rollout(cell, devices, rate, tick_s, seed * 1_000_003 + r, options)
        for r in range(rollouts)
    ]
    by_state = {s: sum(o.state == s for o in outcomes) for s in ("aborted", "paused", "succeeded")}
    aborted = [o for o in outcomes if o.state == "aborted"]
    return {
        "size": cell.size,
        "share": cell.share,
        "rollouts": rollouts,
        "aborted": by_state["aborted"] / rollouts,
        "paused": by_state["paused"] / rollouts,
        "succeeded": by_state["succeeded"] / rollouts,
        "median_exposed": statistics.median(o.exposed for o in outcomes),
        "median_exposed_when_aborted": (
            statistics.median(o.exposed for o in aborted) if aborted else None
        ),
        "aborted_by_wave_2": sum(o.state == "aborted" and o.wave <= 2 for o in outcomes) / rollouts,
        "waves_aborted_in": dict(
            sorted(
                {
                    str(w): sum(o.wave == w for o in aborted) for w in {o.wave for o in aborted}
                }.items()
            )
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }


def facts() -> dict[str, Any]:
    def commit() -> str:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
            )
            dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True)
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": {
            "arch": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.3, 1.5, 2.0])
    parser.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    parser.add_argument("--rate", type=float, default=1.0, help="requests a second a device")
    parser.add_argument("--tick", type=float, default=30.0, help="controller tick, seconds")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pairs", type=int, default=0, help="probe pairs of each trial")
    parser.add_argument("--pair-sigma", type=float, default=0.1, help="log-noise of a pair")
    parser.add_argument("--on-inconclusive", choices=("pause", "extend"), default="pause")
    parser.add_argument("--label", default="after", help="names the results file")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.rollouts < 1 or args.devices < 10:
        parser.error("need --rollouts >= 1 and --devices >= 10")
    if any(s <= 0 for s in args.sizes) or any(not 0 < s <= 1 for s in args.shares):
        parser.error("sizes are > 0 and shares in (0, 1]")
    if args.pairs < 0 or args.pair_sigma < 0:
        parser.error("--pairs and --pair-sigma are >= 0")
    options = Options(args.pairs, args.pair_sigma, args.on_inconclusive)
    result = facts()
    cells = [
        (
            Cell(size, share),
            args.rollouts,
            args.devices,
            args.rate,
            args.tick,
            args.seed + i,
            options,
        )
        for i, (size, share) in enumerate(
            (size, share)
            for size in args.sizes
            for share in (args.shares if size != 1.0 else [1.0])
        )
    ]
    started = time.perf_counter()
    print(
        f"{len(cells)} cells x {args.rollouts} rollouts of {args.devices} devices, "
        f"{args.workers} workers",
        flush=True,
    )
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for row in pool.map(run_cell, cells):
            rows.append(row)
            exposed = row["median_exposed"]
            print(
                f"size {row['size']:.2f} share {row['share']:.0%}: aborted {row['aborted']:.1%} "
                f"(by wave 2 {row['aborted_by_wave_2']:.1%}), paused {row['paused']:.1%}, "
                f"succeeded {row['succeeded']:.1%}; median devices exposed {exposed} "
                f"({row['seconds']} s)",
                flush=True,
            )
    result |= {
        "benchmark": "gates",
        "label": args.label,
        "devices": args.devices,
        "rollouts_per_cell": args.rollouts,
        "rate_per_device_s": args.rate,
        "tick_s": args.tick,
        "gate": {"metric": Metric.LATENCY_P95.value, "max_ratio": 1.2, "min_samples": 5},
        "pairs_per_trial": args.pairs,
        "pair_sigma": args.pair_sigma if args.pairs else None,
        "on_inconclusive": args.on_inconclusive,
        "extend": EXTEND if args.on_inconclusive == "extend" else None,
        "alpha": spec().alpha,
        "kinds": dict(zip(KINDS, MEDIAN_MS, strict=True)),
        "cells": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = args.json or RESULTS / f"gates-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()

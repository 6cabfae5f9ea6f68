"""Benchmark: the largest simulated fleet one server process sustains during a rollout.

For each fleet size, starts ``edgefleet server`` in its own process (embedded SQLite,
or PostgreSQL with ``--database-url``), runs that many virtual devices (the real agent
core over HTTP, in this process) polling every ``--poll`` seconds, installs digits
1.0.0 everywhere and rolls 1.1.0 out to 100% of the fleet in five waves, assigning at
most ``--assign-per-minute`` devices a minute (pro rata over any 10 s). A size is
*sustained* when the rollout succeeds with every device COMMITTED, no virtual device
failed and the p99 of check-ins (desired-state polls) as the devices saw it stays
under ``--p99-limit-ms`` while the rollout runs.
Reports, per size: the time the rollout took, the server's CPU (share of one core,
over the rollout), check-ins per second the server answered, their p50/p99 latency as
the server measured it (its request histogram, so bucket edges) and as the devices saw
it (which includes this process's own event-loop delays; its CPU share is reported
too, to tell the two apart), and every request outcome. The p99 limit applies to the
devices' figure::

    python benchmarks/fleet.py --devices 2000,5000,10000
    python benchmarks/fleet.py --devices 10000 --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench

Results go to stdout as a table and to ``benchmarks/results/fleet-<size>.json``
(``fleet-<size>-tick<s>-analysis<s>.json`` with other controller timings, e.g. the
server's defaults: ``--tick 2 --analysis-interval 30``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from edgefleet.sim import runner
from edgefleet.sim.scenario import parse_scenario
from edgefleet.sim.server import EmbeddedServer

RESULTS = Path(__file__).parent / "results"

SCENARIO = """
name: fleet-benchmark
description: digits 1.1.0 to every device of a large fleet in five waves
baseline: 1.0.0
fleet:
  checkin_interval_s: [{low}, {high}]
  telemetry_interval_s: {telemetry}
  requests_per_s: 1000
  max_backoff_s: 30
server:
  rollout_tick_s: {tick}
  rollout_analysis_interval_s: {analysis}
releases:
  - version: 1.1.0
    settle_s: 300
    rollout:
      rate: {{max_assign_per_minute: {per_minute}}}
      waves:
        - {{percent: 1, bake_s: 10, device_timeout_s: 300}}
        - {{percent: 5, bake_s: 10, device_timeout_s: 300}}
        - {{percent: 25, bake_s: 10, device_timeout_s: 300}}
        - {{percent: 50, bake_s: 10, device_timeout_s: 300}}
        - {{percent: 100, bake_s: 10, device_timeout_s: 300}}
      trial: {{min_inferences: 500, min_seconds: 3, max_latency_ratio: 3.0, max_cpu_ratio: 3.0}}
      gates:
        - {{metric: download_failures, max: 0.1, min_samples: 10}}
        - {{metric: rollbacks, max: 0.05, min_samples: 10}}
        - {{metric: latency_p95, max_ratio: 2.5, min_samples: 5}}
        - {{metric: cpu_percent, max_ratio: 2.0, min_samples: 5}}
    expect:
      state: succeeded
      committed: all
time_limit_s: 3600
"""


def run_size(devices: int, args: argparse.Namespace, bundles: Path) -> dict[str, Any]:
    scenario = parse_scenario(
        SCENARIO.format(
            low=args.poll * 0.9,
            high=args.poll * 1.1,
            telemetry=args.telemetry,
            tick=args.tick,
            analysis=args.analysis_interval,
            per_minute=args.assign_per_minute,
        ),
        devices=devices,
    )
    work = Path(tempfile.mkdtemp(prefix=f"edgefleet-fleet-{devices}-"))
    server = EmbeddedServer(work / "server", scenario.server, database_url=args.database_url)
    server.start()
    marks: dict[str, float] = {}

    def say(line: str) -> None:
        print(f"  [{devices}] {line}", file=sys.stderr, flush=True)
        if line.startswith("rollout ro-") and "rollout" not in marks:
            marks["rollout"] = time.monotonic()
            marks["cpu"] = server.cpu_seconds()
            marks["sim_cpu"] = time.process_time()
            # One short blocking call in the simulator's loop, once: the server's
            # check-in count when the rollout starts, for the rate during it.
            marks["checkins"] = server_routes(server.url).get("GET desired", {}).get("count", 0)

    try:
        started = time.monotonic()
        result = runner.run_scenario(
            scenario,
            work_dir=work,
            bundle_cache=bundles,
            target=runner.RunTarget(server=server.url, token=server.token),
            say=say,
        )
        ended = time.monotonic()
        cpu = server.cpu_seconds()
        sim_cpu = time.process_time()
        routes = server_routes(server.url)
        served = routes.get("GET desired", _quantiles({}))
    finally:
        server.stop()
    (release,) = result.releases
    rollout_s = ended - marks["rollout"]
    p99 = served["p99_ms"]
    # What the devices saw while the rollout ran: the server's histogram starts when the
    # application gets the request, so it misses the time a request waits while the
    # server's loop is busy. (The whole run's figure, enrollment storm and first install
    # included, is reported beside it.)
    device_p99 = release.checkin_p99_ms
    sustained = result.passed and device_p99 is not None and device_p99 <= args.p99_limit_ms
    return {
        "devices": devices,
        "sustained": bool(sustained),
        "passed": result.passed,
        "failed_checks": [c.name for c in result.checks if not c.passed],
        "devices_committed": result.devices_committed,
        "rollout_state": release.state,
        "rollout_s": round(rollout_s, 1),
        "run_s": round(ended - started, 1),
        "server_cpu_share": round((cpu - marks["cpu"]) / rollout_s, 3),
        "simulator_cpu_share": round((sim_cpu - marks["sim_cpu"]) / rollout_s, 3),
        "offered_checkins_per_s": round(devices / args.poll, 1),
        # As the server measured them (its request-duration histogram: the upper edge
        # of the bucket holding the quantile) ...
        "checkins": served["count"],
        # During the rollout (the devices slow their polling when answers come late).
        "checkins_per_s": round((served["count"] - marks["checkins"]) / rollout_s, 1),
        "checkin_p50_ms": served["p50_ms"],
        "checkin_p99_ms": p99,
        # ... and as the virtual devices saw them while the rollout ran, which includes
        # the simulator's own event-loop delays on this shared 2-core machine ...
        "device_checkins": release.checkins,
        "device_checkin_p50_ms": release.checkin_p50_ms,
        "device_checkin_p99_ms": release.checkin_p99_ms,
        # ... and over the whole run: 'devices' enrolling within one poll interval of
        # each other, then the first install everywhere, before the rollout.
        "run_device_checkin_p50_ms": result.checkin_p50_ms,
        "run_device_checkin_p99_ms": result.checkin_p99_ms,
        # The simulator's own event-loop delay: the part of the devices' figures that
        # is this process, not the server (during the rollout, and over the run).
        "simulator_loop_lag_p99_ms": release.loop_lag_p99_ms,
        "run_simulator_loop_lag_p50_ms": result.loop_lag_p50_ms,
        "run_simulator_loop_lag_p99_ms": result.loop_lag_p99_ms,
        # The devices' check-ins during the rollout, 10 s at a time (t: seconds since
        # the rollout started): where the slow ones were.
        "rollout_checkin_windows": [
            {**w, "t": round(w["t"] - release.started_t, 1)}  # type: ignore[operator]
            for w in result.checkin_windows
            if w["t"] is not None
            and release.started_t - 10 < w["t"] <= (release.ended_t or float("inf"))
        ],
        # Every device route as the server measured it.
        "server_routes": routes,
        "requests": result.requests,
        "bytes_transferred": result.bytes_transferred,
        "poll_interval_s": args.poll,
        "telemetry_interval_s": args.telemetry,
        "rollout_tick_s": args.tick,
        "rollout_analysis_interval_s": args.analysis_interval,
        "max_assign_per_minute": args.assign_per_minute,
        "database": "postgresql" if args.database_url else "sqlite",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }


def server_routes(url: str) -> dict[str, dict[str, Any]]:
    """Requests the server answered per device route, with their latency quantiles
    (the upper edge of the bucket holding each), from its /metrics; as ``event loop
    lag``, how late its event loop woke a timer (its lag probes); as ``rollout
    controller``, how long the controller's steps took; and, as ``gc generation N``,
    how long the garbage collector's collections of each generation held the server."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "edgefleet_event_loop_lag_seconds":
            lag = buckets.setdefault("event loop lag", {})
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    lag[float(sample.labels["le"])] = sample.value
            continue
        if family.name == "edgefleet_background_task_duration_seconds":
            steps = buckets.setdefault("rollout controller", {})
            for sample in family.samples:
                if (
                    sample.name.endswith("_bucket")
                    and sample.labels.get("task") == "rollout controller"
                ):
                    steps[float(sample.labels["le"])] = sample.value
            continue
        if family.name == "edgefleet_gc_pause_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    pauses = buckets.setdefault(f"gc generation {sample.labels['generation']}", {})
                    pauses[float(sample.labels["le"])] = sample.value
            continue
        if family.name != "edgefleet_http_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            route = labels.get("route", "")
            if sample.name.endswith("_bucket") and route.startswith("/api/v1/devices/{"):
                name = f"{labels.get('method')} {route.rsplit('/', 1)[-1]}"
                edges = buckets.setdefault(name, {})
                edge = float(labels["le"])
                edges[edge] = edges.get(edge, 0.0) + sample.value
    return {name: _quantiles(edges) for name, edges in buckets.items()}


def _quantiles(buckets: dict[float, float]) -> dict[str, Any]:
    edges = sorted(buckets)
    count = buckets.get(float("inf"), 0.0)

    def quantile(q: float) -> float | None:
        for edge in edges:
            if count and buckets[edge] >= q * count:
                return None if edge == float("inf") else edge * 1000
        return None

    return {"count": int(count), "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="2000,5000,10000", help="comma-separated sizes")
    parser.add_argument("--poll", type=float, default=10.0, help="poll interval (s)")
    parser.add_argument("--telemetry", type=float, default=30.0, help="telemetry interval (s)")
    # Time compressed as in the scenarios (10 s bakes): a controller step every second
    # and a gate analysis every 5 s. The server's own defaults are 2 s and 30 s.
    parser.add_argument("--tick", type=float, default=1.0, help="controller tick (s)")
    parser.add_argument(
        "--analysis-interval", type=float, default=5.0, help="least time between analyses (s)"
    )
    parser.add_argument(
        "--assign-per-minute",
        type=int,
        default=6000,
        help="the rollout's max_assign_per_minute (pro rata over any 10 s: 1,000)",
    )
    parser.add_argument("--p99-limit-ms", type=float, default=1000.0)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--bundles", type=Path, default=None, help="example bundle cache")
    args = parser.parse_args()
    sizes = [int(s) for s in args.devices.split(",") if s.strip()]
    # Thousands of connections (the simulator's and the server's, which inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    bundles = args.bundles or Path(tempfile.gettempdir()) / "edgefleet-bench-examples"
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for devices in sizes:
        print(f"fleet of {devices} devices", file=sys.stderr, flush=True)
        row = run_size(devices, args, bundles)
        rows.append(row)
        name = f"fleet-{devices}"
        if (args.tick, args.analysis_interval) != (1.0, 5.0):
            name += f"-tick{args.tick:g}-analysis{args.analysis_interval:g}"
        (RESULTS / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
        if not row["sustained"]:
            print(f"  {devices} devices not sustained: {row['failed_checks']}", file=sys.stderr)
    header = (
        f"{'devices':>8} {'sustained':>9} {'rollout s':>9} {'server cpu':>10} {'sim cpu':>7} "
        f"{'check-ins/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'device p99':>10} "
        f"{'run p99':>8} {'committed':>9}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['devices']:>8} {row['sustained']!s:>9} {row['rollout_s']:>9} "
            f"{row['server_cpu_share']:>10.0%} {row['simulator_cpu_share']:>7.0%} "
            f"{row['checkins_per_s']:>11} "
            f"{row['checkin_p50_ms']!s:>7} {row['checkin_p99_ms']!s:>7} "
            f"{row['device_checkin_p99_ms']!s:>10} "
            f"{row['run_device_checkin_p99_ms']!s:>8} "
            f"{row['devices_committed']:>9}"
        )


if __name__ == "__main__":
    main()

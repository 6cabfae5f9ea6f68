"""Benchmark: how often the default trial decides right on real agent processes.

Issue #32 asks that, with the default trial policy (no ``trial`` in the desired state),
the good digits 1.1.0 commits over 1.0.0 *every time* and the heavy 1.2.0 (about twice
1.1.0's latency) rolls back over 1.1.0 *every time*, on an idle machine and with a CPU
hog (one busy process per core) started at the update. The test
(tests/agent/test_trial_real_agents.py) runs that once; this counts it over rounds.

Starts ``edgefleet server`` in its own process (embedded SQLite) and registers digits
1.0.0, 1.1.0 and 1.2.0. Then, per condition (``idle``, then ``cpu-hog``) and per round,
two fresh devices, each a real ``edgefleet agent run`` process polling every 0.5 s:

- *good*: 1.0.0 installed (with a short trial, setup), then 1.1.0 with the default trial;
- *heavy*: 1.1.0 installed the same way, then 1.2.0 with the default trial.

The agents of ``--rounds-at-once`` rounds (default: all of them) run at the same time,
so their trials probe at the same time; ``--rounds-at-once 1`` runs the rounds one
after another (slower: a good trial lasts at least its 60 s minimum). The hog runs only
while the cpu-hog condition's updates do; the idle condition has none.

Reports per update the final event (COMMITTED / ROLLED_BACK and its reason), the
trial's elapsed_s and the paired probe numbers from the event's details, and per
condition and release the counts and ranges. Results go to stdout as a table and to
``benchmarks/results/trial.json``; the exit status is 1 when any update ended other
than expected (a good release not committed, a heavy one not rolled back by a paired
check, latency or CPU: whichever first has the evidence)::

    python benchmarks/trial.py --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgefleet.examples.digits import ensure_examples
from edgefleet.fleet.domain import TrialPolicy

RESULTS = Path(__file__).parent / "results"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
CONDITIONS = ("idle", "cpu-hog")
#: kind -> (installed first, the update under test, the final state expected of it, the
#: reasons that state may give: the heavy model is slower in both paired measures, and
#: either check may have its evidence first)
UPDATES = {
    "good": ("1.0.0", "1.1.0", "COMMITTED", ("trial_passed",)),
    "heavy": ("1.1.0", "1.2.0", "ROLLED_BACK", ("trial_failed:latency", "trial_failed:cpu")),
}
INSTALL_TRIAL = {"min_inferences": 0, "min_seconds": 0}
FINAL_STATES = ("COMMITTED", "ROLLED_BACK", "FAILED")
PAIRED = (
    "probe_pairs",
    "latency_probes_over",
    "latency_ratio_median",
    "cpu_ratio_median",
    "latency_p50_ms",
    "baseline_latency_p50_ms",
    "latency_p95_ms",
    "baseline_latency_p95_ms",
)
DEFAULT = TrialPolicy()
SERVER_CMD = [sys.executable, "-m", "edgefleet", "server"]

console = Console(stderr=True)


@dataclass
class Server:
    """An ``edgefleet server`` process and an admin client for it."""

    url: str
    http: httpx.Client
    admin_token: str

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self.admin_token}"}
        return self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def upload(self, bundle: Path) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(bundle, arcname=bundle.name)
        response = self.admin(
            "POST",
            "/api/v1/models",
            content=buffer.getvalue(),
            headers={"Content-Type": "application/gzip"},
        )
        response.raise_for_status()

    def token(self) -> str:
        response = self.admin("POST", "/api/v1/tokens", json={"kind": "enrollment"})
        response.raise_for_status()
        return str(response.json()["token"])

    def desire(self, device: str, version: str, trial: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"model": "digits", "version": version}
        if trial is not None:
            body["trial"] = trial
        self.admin("PUT", f"/api/v1/devices/{device}/desired", json=body).raise_for_status()

    def events(self, device: str) -> list[dict[str, Any]] | None:
        """The device's events, ``None`` while it has not enrolled."""
        response = self.admin("GET", f"/api/v1/devices/{device}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return list(response.json()["events"])

    def final_event(self, device: str, version: str) -> dict[str, Any] | None:
        """The device's last COMMITTED / ROLLED_BACK / FAILED event for ``version``."""
        final = [
            e
            for e in self.events(device) or []
            if e["version"] == version and e["to_state"] in FINAL_STATES
        ]
        return final[-1] if final else None


@contextlib.contextmanager
def server_process(work: Path) -> Iterator[Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EDGEFLEET_HOME": str(work / "server")}
    env.pop("EDGEFLEET_DATABASE_URL", None)
    process = subprocess.Popen(
        [*SERVER_CMD, "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "server.log").open("wb"),
    )
    try:
        with httpx.Client(timeout=60) as http:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{url}/readyz").status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start; see {work / 'server.log'}")
                time.sleep(0.1)
            admin = (work / "server" / "admin.token").read_text().strip()
            yield Server(url, http, admin)
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_agent(server: Server, work: Path, device: str) -> subprocess.Popen[bytes]:
    """``edgefleet agent run`` for one fresh device (its own state directory)."""
    config = work / f"{device}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": server.url,
                "device_id": device,
                "enrollment_token": server.token(),
                "state_dir": str(work / device),
                "hardware": "x86_64",
                "firmware": "2.0.0",
                "serve_port": None,
                "poll_interval_s": 0.5,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_AGENT_CRASH_AT"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / f"{device}.log").open("wb"),
    )


@contextlib.contextmanager
def agents(server: Server, work: Path, devices: list[str]) -> Iterator[None]:
    processes = [start_agent(server, work, device) for device in devices]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def cpu_hog(on: bool) -> Iterator[None]:
    """One busy process per core while the block runs (none when ``on`` is false)."""
    count = (os.cpu_count() or 1) if on else 0
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def wait_for(
    server: Server,
    wanted: dict[str, str],
    timeout: float,
    progress: Progress,
    task: Any,
) -> dict[str, tuple[dict[str, Any] | None, float]]:
    """Each device's final event for its version in ``wanted`` and the seconds it took
    to show on the server (``None``: not settled within ``timeout``)."""
    start = time.monotonic()
    settled: dict[str, tuple[dict[str, Any] | None, float]] = {}
    while len(settled) < len(wanted) and time.monotonic() - start < timeout:
        for device, version in wanted.items():
            if device in settled:
                continue
            event = server.final_event(device, version)
            if event is not None:
                settled[device] = (event, time.monotonic() - start)
                progress.advance(task)
        time.sleep(0.2)
    for device in wanted:
        settled.setdefault(device, (None, time.monotonic() - start))
    return settled


def run_batch(
    server: Server,
    work: Path,
    condition: str,
    rounds: list[int],
    progress: Progress,
) -> list[dict[str, Any]]:
    """Fresh good and heavy devices for ``rounds``, all at once: install, then update."""
    devices = {f"{condition}-r{r}-{kind}": (r, kind) for r in rounds for kind in UPDATES}
    label = f"{condition} rounds {rounds[0] + 1}-{rounds[-1] + 1}"
    with agents(server, work, list(devices)):
        enroll = progress.add_task(f"{label}: enroll", total=len(devices))
        deadline = time.monotonic() + 120
        waiting = set(devices)
        while waiting and time.monotonic() < deadline:
            for device in sorted(waiting):
                if server.events(device) is not None:
                    waiting.discard(device)
                    progress.advance(enroll)
            time.sleep(0.2)
        if waiting:
            raise RuntimeError(f"not enrolled within 120 s: {sorted(waiting)}")
        for device, (_, kind) in devices.items():
            server.desire(device, UPDATES[kind][0], INSTALL_TRIAL)
        install = progress.add_task(f"{label}: install", total=len(devices))
        installed = wait_for(
            server,
            {device: UPDATES[kind][0] for device, (_, kind) in devices.items()},
            180,
            progress,
            install,
        )
        for device, (event, _) in installed.items():
            if event is None or event["to_state"] != "COMMITTED":
                raise RuntimeError(f"{device}: the install did not commit: {event}")
        update = progress.add_task(f"{label}: update (default trial)", total=len(devices))
        load_before = os.getloadavg()
        with cpu_hog(condition == "cpu-hog"):
            for device, (_, kind) in devices.items():
                server.desire(device, UPDATES[kind][1])
            outcomes = wait_for(
                server,
                {device: UPDATES[kind][1] for device, (_, kind) in devices.items()},
                DEFAULT.deadline_s + 60,
                progress,
                update,
            )
        load_after = os.getloadavg()
    rows = []
    for device, (r, kind) in devices.items():
        event, seen_s = outcomes[device]
        details = (event or {}).get("details") or {}
        state, reason = (event["to_state"], event.get("reason")) if event else ("TIMEOUT", None)
        rows.append(
            {
                "condition": condition,
                "round": r + 1,
                "kind": kind,
                "device": device,
                "from": UPDATES[kind][0],
                "to": UPDATES[kind][1],
                "outcome": state,
                "reason": reason,
                "expected": state == UPDATES[kind][2] and reason in UPDATES[kind][3],
                "elapsed_s": details.get("elapsed_s"),
                "seen_after_s": round(seen_s, 1),
                **{name: details.get(name) for name in PAIRED},
                "latency_over_share": details.get("latency_over_share"),
                "agents_at_once": len(devices),
                "loadavg_1m_at_update": round(load_before[0], 2),
                "loadavg_1m_at_end": round(load_after[0], 2),
                "details": details,
            }
        )
    return rows


def machine() -> dict[str, Any]:
    import onnxruntime

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    return {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def span(values: tuple[float, float] | None) -> str:
    if values is None:
        return "-"
    low, high = (f"{v}" if isinstance(v, int) else f"{v:.3g}" for v in values)
    return low if low == high else f"{low}-{high}"


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per condition and update: the outcomes and, for each number, its [min, max]."""
    summary = []
    for condition in CONDITIONS:
        for kind, (_, version, state, reasons) in UPDATES.items():
            group = [r for r in rows if r["condition"] == condition and r["kind"] == kind]
            if not group:
                continue
            outcomes: dict[str, int] = {}
            for r in group:
                key = f"{r['outcome']} {r['reason']}"
                outcomes[key] = outcomes.get(key, 0) + 1
            ranges: dict[str, tuple[float, float] | None] = {}
            for name in ("elapsed_s", "latency_over_share", *PAIRED):
                values = [r[name] for r in group if r.get(name) is not None]
                ranges[name] = (min(values), max(values)) if values else None
            elapsed = [r["elapsed_s"] for r in group if r["elapsed_s"] is not None]
            summary.append(
                {
                    "condition": condition,
                    "kind": kind,
                    "update": f"{UPDATES[kind][0]} -> {version}",
                    "expected": f"{state} {' or '.join(reasons)}",
                    "as_expected": sum(r["expected"] for r in group),
                    "runs": len(group),
                    "outcomes": outcomes,
                    "elapsed_s_median": statistics.median(elapsed) if elapsed else None,
                    **ranges,
                }
            )
    return summary


def print_summary(summary: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    table = Table(title="default trial on real agents (ranges over the rounds)")
    for column in (
        "condition",
        "update",
        "as expected",
        "trial s",
        "pairs",
        "over share",
        "latency ratio median",
        "cpu ratio median",
        "p50 ms cand / prev",
        "p95 ms cand / prev",
    ):
        table.add_column(column)
    for s in summary:
        table.add_row(
            s["condition"],
            s["update"],
            f"{s['as_expected']}/{s['runs']}: "
            + ", ".join(f"{n} {key}" for key, n in sorted(s["outcomes"].items())),
            span(s["elapsed_s"]),
            span(s["probe_pairs"]),
            span(s["latency_over_share"]),
            span(s["latency_ratio_median"]),
            span(s["cpu_ratio_median"]),
            f"{span(s['latency_p50_ms'])} / {span(s['baseline_latency_p50_ms'])}",
            f"{span(s['latency_p95_ms'])} / {span(s['baseline_latency_p95_ms'])}",
        )
    Console(width=max(Console().width, 160)).print(table)
    for r in rows:
        if not r["expected"]:
            console.print(
                f"[bold red]UNEXPECTED[/] {r['device']} {r['from']} -> {r['to']}: "
                f"{r['outcome']} {r['reason']}; details {json.dumps(r['details'])}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds per condition")
    parser.add_argument(
        "--rounds-at-once",
        type=int,
        default=None,
        help="rounds whose agents run at the same time (default: all)",
    )
    parser.add_argument("--bundles", type=Path, default=None, help="example bundle cache")
    args = parser.parse_args()
    at_once = args.rounds_at_once or args.repeats
    bundles_dir = args.bundles or Path(tempfile.gettempdir()) / "edgefleet-bench-examples"
    started = time.monotonic()
    load_start = uptime()
    console.print(f"load before: {load_start}")
    rows: list[dict[str, Any]] = []
    condition_s: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        work = Path(tmp)
        setup = progress.add_task("examples and server", total=len(VERSIONS))
        bundles = ensure_examples(bundles_dir, list(VERSIONS), seed=0)
        with server_process(work) as server:
            for version in VERSIONS:
                server.upload(bundles[version])
                progress.advance(setup)
            for condition in CONDITIONS:
                condition_start = time.monotonic()
                for first in range(0, args.repeats, at_once):
                    batch = list(range(first, min(first + at_once, args.repeats)))
                    rows += run_batch(server, work, condition, batch, progress)
                condition_s[condition] = round(time.monotonic() - condition_start, 1)
    load_end = uptime()
    console.print(f"load after: {load_end}")
    summary = summarize(rows)
    result = {
        "benchmark": "trial",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip(),
        "machine": machine(),
        "repeats": args.repeats,
        "rounds_at_once": at_once,
        "default_trial": DEFAULT.model_dump(),
        "uptime_before": load_start,
        "uptime_after": load_end,
        "condition_s": condition_s,
        "run_s": round(time.monotonic() - started, 1),
        "summary": summary,
        "updates": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trial.json").write_text(json.dumps(result, indent=2) + "\n")
    print_summary(summary, rows)
    m = result["machine"]
    print(
        f"machine: {m['arch']}, {m['cores']} cores, {m['cpu_model']}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}; {result['run_s']} s "
        f"(idle {condition_s.get('idle')} s, cpu-hog {condition_s.get('cpu-hog')} s)"
    )
    if not all(r["expected"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Benchmark: device check-ins per second against one server process.

Starts ``edgefleet server`` as its own process (embedded SQLite, or PostgreSQL with
``--database-url``), enrolls ``--devices`` devices, then runs a load generator in a
second process: ``--connections`` keep-alive HTTP/1.1 connections, each cycling through
its share of the devices. One check-in is ``GET /api/v1/devices/{id}/desired`` with the
device's ETag in ``If-None-Match`` (answered 304 when nothing changed, as almost every
poll of a real fleet is); every ``--report-every``-th check-in is followed by a
``PUT .../reported`` (a state change). Prints check-ins/s and latency percentiles.

Usage::

    python benchmarks/checkin.py --devices 2000 --seconds 20
    python benchmarks/checkin.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench

The load generator is a minimal asyncio HTTP/1.1 client (no HTTP library per request),
so that on a 2-core machine the generator leaves a core to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int, database_url: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGEFLEET_HOME": str(home)}
    env.pop("EDGEFLEET_DATABASE_URL", None)
    if database_url:
        env["EDGEFLEET_DATABASE_URL"] = database_url
    log = (home / "server.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgefleet",
            "server",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


def enroll(url: str, admin: str, count: int) -> list[dict[str, str]]:
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(timeout=30) as http:
        token = http.post(
            f"{url}/api/v1/tokens", json={"kind": "enrollment", "uses": count}, headers=headers
        ).json()["token"]
        devices = []
        for i in range(count):
            device_id = f"bench-{i:06d}"
            body = {
                "device_id": device_id,
                "enrollment_token": token,
                "attributes": {"hw": "x86_64", "region": ["eu-west", "us-east"][i % 2]},
                "poll_interval_s": 60,
            }
            answer = http.post(f"{url}/api/v1/enroll", json=body)
            if answer.status_code != 201:
                raise SystemExit(f"enrollment failed: {answer.text}")
            credential = answer.json()["credential"]
            desired = http.get(
                f"{url}/api/v1/devices/{device_id}/desired",
                headers={"Authorization": f"Bearer {credential}"},
            )
            devices.append(
                {"id": device_id, "credential": credential, "etag": desired.headers["etag"]}
            )
    return devices


REPORTED = json.dumps({"agent_state": "IDLE", "model": "digits", "version": "1.0.0"}).encode()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def connection_loop(
    port: int,
    devices: list[dict[str, str]],
    stop_at: float,
    report_every: int,
    latencies: list[float],
    counts: dict[str, int],
    report_latencies: list[float],
    interval: float | None,
    offset: float,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    requests = [
        (
            (
                f"GET /api/v1/devices/{d['id']}/desired HTTP/1.1\r\nHost: bench\r\n"
                f"Authorization: Bearer {d['credential']}\r\nIf-None-Match: {d['etag']}\r\n\r\n"
            ).encode(),
            (
                f"PUT /api/v1/devices/{d['id']}/reported HTTP/1.1\r\nHost: bench\r\n"
                f"Authorization: Bearer {d['credential']}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(REPORTED)}\r\n\r\n"
            ).encode()
            + REPORTED,
        )
        for d in devices
    ]
    i = 0
    clock = time.perf_counter
    scheduled = clock() + offset
    while clock() < stop_at:
        get, put = requests[i % len(requests)]
        if interval is None:
            start = clock()
        else:
            # Open loop: requests leave on a fixed schedule, and latency counts from the
            # scheduled time, so a slow answer is not hidden by the requests it delayed.
            scheduled += interval
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            start = scheduled
        writer.write(get)
        status = await read_response(reader)
        latencies.append(clock() - start)
        counts[str(status)] = counts.get(str(status), 0) + 1
        i += 1
        if report_every and i % report_every == 0:
            start = clock()
            writer.write(put)
            status = await read_response(reader)
            report_latencies.append(clock() - start)
            counts[f"reported {status}"] = counts.get(f"reported {status}", 0) + 1
    writer.close()


def load(
    port: int,
    devices: list[dict[str, str]],
    connections: int,
    seconds: float,
    report_every: int,
    rate: float | None,
    out: multiprocessing.Queue,
) -> None:  # type: ignore[type-arg]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    latencies: list[float] = []
    report_latencies: list[float] = []
    counts: dict[str, int] = {}

    async def main() -> float:
        stop_at = time.perf_counter() + seconds
        shares = [devices[i::connections] for i in range(connections)]
        started = time.perf_counter()
        await asyncio.gather(
            *(
                connection_loop(
                    port,
                    share,
                    stop_at,
                    report_every,
                    latencies,
                    counts,
                    report_latencies,
                    connections / rate if rate else None,
                    index / (rate or 1) if rate else 0.0,
                )
                for index, share in enumerate(shares)
                if share
            )
        )
        return time.perf_counter() - started

    try:
        elapsed = asyncio.run(main())
    except Exception as exc:  # report instead of leaving the parent waiting
        out.put({"error": repr(exc)})
        return
    latencies.sort()
    report_latencies.sort()
    out.put(
        {"elapsed": elapsed, "latencies": latencies, "counts": counts, "reports": report_latencies}
    )


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--report-every", type=int, default=10)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="offered check-ins per second (open loop); default: as fast as answers come",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(home, port, args.database_url)
        try:
            wait_ready(url, server)
            admin = (home / "admin.token").read_text().strip()
            devices = enroll(url, admin, args.devices)
            queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            generator = multiprocessing.Process(
                target=load,
                args=(
                    port,
                    devices,
                    args.connections,
                    args.seconds,
                    args.report_every,
                    args.rate,
                    queue,
                ),
            )
            generator.start()
            result = queue.get(timeout=args.seconds + 120)
            generator.join()
            if "error" in result:
                raise SystemExit(f"load generator failed: {result['error']}")
            errors = (home / "server.log").read_text(errors="replace")
            if "Traceback" in errors:
                print("server logged errors:\n" + errors[-3000:], file=sys.stderr)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    latencies = result["latencies"]
    rate = len(latencies) / result["elapsed"]
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    offered = f"offered {args.rate:.0f}/s (open loop)" if args.rate else "closed loop"
    print(
        f"backend: {backend}; {args.devices} devices, {args.connections} connections, "
        f"{args.seconds:.0f} s, {offered}; PUT reported every {args.report_every} check-ins"
    )
    print(f"responses: {result['counts']}")
    print(
        f"check-ins/s: {rate:.0f}; latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    reports = result["reports"]
    if reports:
        p50, p99 = statistics.median(reports) * 1000, percentile(reports, 0.99) * 1000
        rate = len(reports) / result["elapsed"]
        print(f"reported/s: {rate:.0f}; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()

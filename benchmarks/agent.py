"""Benchmark: the device agent's footprint and a 50 MB model update.

Starts a real server in a subprocess, registers a ~50 MB model (a wide MLP trained on
the digits data; its golden samples come from the model itself) and a small one, and
runs real agent processes:

1. idle: an agent serving the small model, polling every second, for ``--idle-seconds``:
   RSS and CPU share (from /proc);
2. update: ``edgefleet agent run --once`` applying the 50 MB model (TUF refresh,
   download, verification, smoke test, activation, trial) under GNU time: wall time and
   peak RSS;
3. interrupted download: the agent is killed (SIGKILL) after part of the 50 MB download,
   restarted, and the bytes it fetched again are counted.

Usage: ``python benchmarks/agent.py [--idle-seconds 20]`` (needs GNU ``/usr/bin/time``).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import yaml

from edgefleet.examples.digits import build_examples, load_split
from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.golden import GoldenSamples, write_golden


def big_bundle(out: Path) -> tuple[Path, int]:
    """A ~50 MB digits model (64-3000-4000-10 MLP) as a registrable bundle."""
    import onnxruntime
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, x_test, y_train, _ = load_split(0)
    model = MLPClassifier((3000, 4000), max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train / 16, y_train)
    onx = to_onnx(model, x_train[:1], options={MLPClassifier: {"zipmap": False}}, target_opset=17)
    bundle = out / "digits-9.0.0"
    bundle.mkdir(parents=True)
    path = bundle / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    golden_x = x_test[:8]
    labels, probs = session.run(None, {"X": golden_x})
    write_golden(
        bundle / "golden.npz",
        GoldenSamples({"X": golden_x}, {"label": labels, "probabilities": probs}),
    )
    sha, size = sha256_file(path)
    manifest: dict[str, Any] = {
        "format": 1,
        "name": "digits",
        "version": "9.0.0",
        "inputs": [{"name": "X", "dtype": "float32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "dtype": "int64", "shape": [-1], "role": "label"},
            {
                "name": "probabilities",
                "dtype": "float32",
                "shape": [-1, 10],
                "role": "probabilities",
            },
        ],
        "variants": [
            {
                "name": "onnx-fp32",
                "file": "model.onnx",
                "sha256": sha,
                "size": size,
                "hardware": ["x86_64", "aarch64"],
            }
        ],
        "golden": {"file": "golden.npz", "tolerance": {"atol": 1e-3, "rtol": 1e-2}},
    }
    (bundle / "edgefleet.yaml").write_text(yaml.safe_dump(manifest))
    return bundle, size


def upload(http: httpx.Client, url: str, token: str, bundle: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(bundle, arcname=bundle.name)
    response = http.post(
        f"{url}/api/v1/models",
        content=buffer.getvalue(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/gzip"},
    )
    response.raise_for_status()


def agent_config(work: Path, url: str, token: str, name: str, poll: float) -> Path:
    config = work / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": url,
                "device_id": name,
                "enrollment_token": token,
                "state_dir": str(work / name),
                "hardware": "x86_64",
                "firmware": "1.0.0",
                "serve_port": None,
                "poll_interval_s": poll,
                "trial_replay_per_s": 500,
            }
        )
    )
    return config


def rss_and_cpu(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = (
        next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        / 1024
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    agent_cmd = [sys.executable, "-m", "edgefleet", "agent", "run"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "EDGEFLEET_HOME": str(work / "server")}
        env.pop("EDGEFLEET_DATABASE_URL", None)
        server = subprocess.Popen(
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
            stderr=subprocess.DEVNULL,
        )
        try:
            http = httpx.Client(timeout=120)
            for _ in range(300):
                try:
                    if http.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            admin = (work / "server" / "admin.token").read_text().strip()
            headers = {"Authorization": f"Bearer {admin}"}
            small = build_examples(work / "bundles")[0]
            upload(http, url, admin, small)
            big, big_size = big_bundle(work / "big")
            upload(http, url, admin, big)

            def token() -> str:
                return str(
                    http.post(
                        f"{url}/api/v1/tokens", json={"kind": "enrollment"}, headers=headers
                    ).json()["token"]
                )

            def desired(device: str, version: str) -> None:
                body = {
                    "model": "digits",
                    "version": version,
                    "trial": {
                        "min_inferences": 50,
                        "min_seconds": 0,
                        "max_latency_ratio": 1000,
                        "max_cpu_ratio": 1000,
                    },
                }
                http.put(
                    f"{url}/api/v1/devices/{device}/desired", json=body, headers=headers
                ).raise_for_status()

            # 1. idle
            idle_cfg = agent_config(work, url, token(), "idle", 1.0)
            subprocess.run(
                [*agent_cmd, "--config", str(idle_cfg), "--once"], check=True, capture_output=True
            )
            desired("idle", "1.0.0")
            subprocess.run(
                [*agent_cmd, "--config", str(idle_cfg), "--once"], check=True, capture_output=True
            )
            daemon = subprocess.Popen(
                [*agent_cmd, "--config", str(idle_cfg)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(5)  # settle: imports, model load
            _, cpu0 = rss_and_cpu(daemon.pid)
            time.sleep(args.idle_seconds)
            rss1, cpu1 = rss_and_cpu(daemon.pid)
            daemon.send_signal(signal.SIGINT)
            daemon.wait(timeout=30)
            idle_cpu = (cpu1 - cpu0) / args.idle_seconds * 100

            # 2. a 50 MB update
            up_cfg = agent_config(work, url, token(), "update", 1.0)
            subprocess.run(
                [*agent_cmd, "--config", str(up_cfg), "--once"], check=True, capture_output=True
            )
            desired("update", "1.0.0")
            subprocess.run(
                [*agent_cmd, "--config", str(up_cfg), "--once"], check=True, capture_output=True
            )
            desired("update", "9.0.0")
            start = time.perf_counter()
            timed = subprocess.run(
                [
                    "/usr/bin/time",
                    "-f",
                    "maxrss_kib=%M",
                    *agent_cmd,
                    "--config",
                    str(up_cfg),
                    "--once",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            update_s = time.perf_counter() - start
            peak = (
                int(
                    next(x for x in timed.stderr.splitlines() if x.startswith("maxrss_kib=")).split(
                        "="
                    )[1]
                )
                / 1024
            )
            outcome = timed.stdout.strip().splitlines()[-1]

            # 3. interrupted download
            cut_cfg = agent_config(work, url, token(), "cut", 1.0)
            subprocess.run(
                [*agent_cmd, "--config", str(cut_cfg), "--once"], check=True, capture_output=True
            )
            desired("cut", "9.0.0")
            killed = subprocess.run(
                [*agent_cmd, "--config", str(cut_cfg), "--once"],
                capture_output=True,
                env={**os.environ, "EDGEFLEET_AGENT_CRASH_AT": "download_chunk:400"},
            )
            partial = sum(
                p.stat().st_size for p in (work / "cut" / "slots").glob("*/.model.*.part")
            )
            resumed = subprocess.run(
                [*agent_cmd, "--config", str(cut_cfg), "--once"],
                capture_output=True,
                text=True,
                check=True,
            )
            fetched = int(
                next(x for x in resumed.stdout.splitlines() if x.startswith("downloaded")).split()[
                    1
                ]
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    refetched = partial + fetched - big_size
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    print("| what | result |")
    print("|---|---|")
    print(
        f"| idle agent (serving digits 1.0.0, polling every 1 s) | RSS {rss1:.0f} MiB, "
        f"CPU {idle_cpu:.1f}% of one core over {args.idle_seconds:.0f} s |"
    )
    print(
        f"| apply a {big_size / 1e6:.0f} MB update (refresh, download, verify, smoke test, "
        f"activate, trial) | {update_s:.1f} s, peak RSS {peak:.0f} MiB; {outcome} |"
    )
    print(
        f"| interrupted download (SIGKILL after {partial / 1e6:.1f} of {big_size / 1e6:.0f} MB), "
        f"then restart | {fetched / 1e6:.1f} MB fetched after restart; {refetched} bytes "
        f"fetched twice (killed run exit {killed.returncode}) |"
    )


if __name__ == "__main__":
    main()

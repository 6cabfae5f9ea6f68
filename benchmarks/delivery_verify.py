"""Benchmark: device-side cost of a verified TUF download of a large artifact.

Publishes a random artifact (default 50 MB) as a signed target, serves the repository
with Python's static ``http.server`` on loopback, and measures in fresh child processes
(so peak RSS is the device code's own):

1. ``resolve + download``: metadata refresh with ``tuf.ngclient``, custom-field checks,
   streamed download into the destination directory, whole-file length and hash
   verification, atomic rename;
2. ``verify only``: python-tuf's ``TargetFile.verify_length_and_hashes`` on the file;
3. the peer: coreutils ``sha256sum`` of the same file.

Usage: ``python benchmarks/delivery_verify.py [--size-mb 50] [--repeat 5]`` (needs GNU
``/usr/bin/time``, Debian package ``time``).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgefleet.config import Settings
from edgefleet.registry.artifacts import LocalArtifactStore
from edgefleet.signing.keys import Keyring
from edgefleet.signing.layout import ArtifactInfo, custom_fields
from edgefleet.signing.publish import open_repository
from edgefleet.signing.repository import NewTarget

TARGET = "models/bench/1.0.0/onnx-fp32/model.onnx"

DOWNLOAD = """
import sys, time
from pathlib import Path
from edgefleet.signing.client import DeliveryClient
from edgefleet.signing.policy import DeviceFacts
work, url = Path(sys.argv[1]), sys.argv[2]
client = DeliveryClient(work / "device", url + "/metadata/", url + "/targets/",
                        pinned_root=(work / "root.json").read_bytes())
start = time.perf_counter()
target = client.resolve(sys.argv[3], DeviceFacts("x86_64", "1.0"))
client.download(target, work / "slot" / "model.onnx")
print(time.perf_counter() - start)
"""

IMPORTS_ONLY = """
import time
start = time.perf_counter()
import edgefleet.signing.client, tuf.api.metadata  # noqa: F401
print(time.perf_counter() - start)
"""

VERIFY = """
import sys, time
from tuf.api.metadata import Metadata
work = sys.argv[1]
targets = Metadata.from_file(work + "/device/targets.json")
info = targets.signed.targets[sys.argv[3]]
start = time.perf_counter()
with open(work + "/slot/model.onnx", "rb") as f:
    info.verify_length_and_hashes(f)
print(time.perf_counter() - start)
"""


def measured(argv: list[str]) -> tuple[str, float, float]:
    """Run ``argv`` under GNU time; its stdout, wall seconds and peak RSS in MiB.

    GNU time (Debian package ``time``) reports the command's own maximum resident set;
    ``wait4`` from this process would report the parent's RSS inherited at fork.
    """
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss_kib=%M", *argv], capture_output=True, text=True, check=True
    )
    elapsed = time.perf_counter() - start
    line = next(x for x in result.stderr.splitlines() if x.startswith("maxrss_kib="))
    return result.stdout, elapsed, int(line.removeprefix("maxrss_kib=")) / 1024


def child(code: str, *args: str) -> tuple[float, float]:
    """Run ``code`` in a fresh interpreter; the seconds it printed and its peak RSS."""
    stdout, _, rss = measured([sys.executable, "-c", code, *args])
    return float(stdout.strip().splitlines()[-1]), rss


def sha256sum(path: Path) -> tuple[float, float]:
    _, elapsed, rss = measured(["sha256sum", str(path)])
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = Settings(home=work / "home", database_url_override=None)
        Keyring.generate(settings.home / "keys", {})
        repository = open_repository(settings)
        repository.initialise({})
        store = LocalArtifactStore(settings.artifacts_dir)
        blob = store.put(io.BytesIO(os.urandom(args.size_mb * 1_000_000)))
        info = ArtifactInfo(
            model="bench",
            version="1.0.0",
            variant="onnx-fp32",
            runtime="onnxruntime",
            precision="fp32",
            hardware=("any",),
            release=1,
            golden="models/bench/1.0.0/onnx-fp32/golden.npz",
            atol=1e-4,
            rtol=1e-3,
        )
        repository.add_targets(
            [
                NewTarget(
                    TARGET, blob.size, blob.sha256, custom_fields(info), store.path(blob.sha256)
                )
            ]
        )
        (work / "root.json").write_bytes(repository.root_bytes())
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
                str(repository.root_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            port = line.split("port ")[1].split()[0]
            url = f"http://127.0.0.1:{port}"
            _, baseline_rss = child(IMPORTS_ONLY)
            downloads, verifies, peers = [], [], []
            download_rss = verify_rss = peer_rss = 0.0
            for i in range(args.repeat):
                run = work / f"run{i}"
                run.mkdir()
                (run / "root.json").write_bytes(repository.root_bytes())
                seconds, rss = child(DOWNLOAD, str(run), url, TARGET)
                downloads.append(seconds)
                download_rss = max(download_rss, rss)
                seconds, rss = child(VERIFY, str(run), url, TARGET)
                verifies.append(seconds)
                verify_rss = max(verify_rss, rss)
                seconds, rss = sha256sum(run / "slot" / "model.onnx")
                peers.append(seconds)
                peer_rss = max(peer_rss, rss)
        finally:
            server.terminate()
            server.wait()
    down, verify, peer = (statistics.median(x) for x in (downloads, verifies, peers))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"artifact: {args.size_mb} MB random bytes, median of {args.repeat}, loopback HTTP")
    print(f"interpreter with the device imports and nothing else: {baseline_rss:.0f} MiB peak RSS")
    print("| what | seconds | peak RSS of the process | ratio to sha256sum |")
    print("|---|---|---|---|")
    rows = [
        ("resolve + download + verify (edgefleet DeliveryClient)", down, download_rss),
        ("verify only (TargetFile.verify_length_and_hashes)", verify, verify_rss),
    ]
    for what, seconds, rss in rows:
        print(f"| {what} | {seconds:.3f} | {rss:.0f} MiB | {seconds / peer:.2f} |")
    print(f"| coreutils sha256sum | {peer:.3f} | {peer_rss:.0f} MiB | 1.00 |")


if __name__ == "__main__":
    main()

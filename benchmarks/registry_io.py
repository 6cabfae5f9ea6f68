"""Benchmark: artifact store ingest and end-to-end registration.

Measures, on this machine:

1. ``LocalArtifactStore.put`` of a large file (hash while writing, fsync, atomic
   rename), as throughput and peak-RSS growth, against the coreutils peer doing the
   same work in two passes: ``sha256sum FILE && cp FILE DEST && sync DEST``.
2. ``edgefleet model register`` of the digits example bundle (manifest and hash checks,
   ONNX Runtime golden-sample verification of both variants, reference profile, blob
   writes, one SQLite transaction), in-process, median of several fresh stores.

Usage: ``python benchmarks/registry_io.py [--size-mib 256] [--repeat 5]``; prints a
markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from edgefleet.config import Settings
from edgefleet.examples.digits import build_examples
from edgefleet.registry.artifacts import LocalArtifactStore
from edgefleet.store.bootstrap import open_registry


def make_file(path: Path, size_mib: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(size_mib):
            f.write(block)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_put(source: Path, work: Path, repeat: int) -> tuple[float, float]:
    times = []
    rss_before = peak_rss_mib()
    for i in range(repeat):
        store = LocalArtifactStore(work / f"store-{i}")
        start = time.perf_counter()
        store.put_file(source)
        times.append(time.perf_counter() - start)
        shutil.rmtree(work / f"store-{i}", ignore_errors=True)
    return statistics.median(times), peak_rss_mib() - rss_before


def bench_coreutils(source: Path, work: Path, repeat: int) -> float:
    times = []
    for i in range(repeat):
        dest = work / f"copy-{i}"
        start = time.perf_counter()
        subprocess.run(["sha256sum", str(source)], check=True, capture_output=True)
        subprocess.run(["cp", str(source), str(dest)], check=True)
        subprocess.run(["sync", str(dest)], check=True)
        times.append(time.perf_counter() - start)
        dest.unlink()
    return statistics.median(times)


def bench_register(work: Path, repeat: int) -> float:
    bundles = build_examples(work / "bundles")
    times = []
    for i in range(repeat):
        settings = Settings(home=work / f"home-{i}", database_url_override=None)
        with open_registry(settings) as registry:
            registry.register(bundles[0])  # 1.1.0 names 1.0.0 as its parent
            start = time.perf_counter()
            registry.register(bundles[1])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("EDGEFLEET_BENCH_DIR")) as tmp:
        work = Path(tmp)
        source = work / "artifact.bin"
        make_file(source, args.size_mib)
        subprocess.run(["cat", str(source)], check=True, stdout=subprocess.DEVNULL)  # warm cache
        put_s, rss_growth = bench_put(source, work, args.repeat)
        peer_s = bench_coreutils(source, work, args.repeat)
        register_s = bench_register(work, args.repeat)
    mib = args.size_mib
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    print()
    print("| what | edgefleet | peer | ratio (peer time / edgefleet time) |")
    print("|---|---|---|---|")
    print(
        f"| artifact store ingest, {mib} MiB file (hash + write + fsync + rename), "
        f"median of {args.repeat} | {put_s:.3f} s ({mib / put_s:.0f} MiB/s), peak RSS "
        f"+{rss_growth:.0f} MiB | `sha256sum && cp && sync`: {peer_s:.3f} s "
        f"({mib / peer_s:.0f} MiB/s) | {peer_s / put_s:.2f} |"
    )
    print(
        f"| register digits 1.1.0 (2 ONNX variants verified, profile of 540 samples, "
        f"SQLite), median of {args.repeat} | {register_s * 1000:.0f} ms | none | - |"
    )


if __name__ == "__main__":
    main()

"""Benchmark: the runtime's overhead per prediction, and what shadow mode costs live.

For each model, runs the same inputs through a bare ``onnxruntime.InferenceSession.run``
and through ``ModelRuntime.predict`` (validation, routing, metrics), single-sample and
in batches of 32, alternating the two in rounds so both see the same machine state, and
reports medians. Then measures live-request latency percentiles with and without a
shadow candidate sampling 10% of requests.

Models: the digits example (a 64-input MLP whose inference takes ~10 µs, so any fixed
cost shows) and a wider MLP trained the same way (hidden layers 1024 x 1024, ~0.3 ms),
closer to the size of real edge models.

Usage: ``python benchmarks/runtime.py [--seconds 2]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.examples.digits import build_examples, load_split
from edgefleet.runtime.backend import OnnxBackend
from edgefleet.runtime.metrics import ModelIdentity
from edgefleet.runtime.runtime import ModelRuntime


def wide_model(out: Path) -> Path:
    """A wider digits MLP (two 1024-unit layers), exported like the examples."""
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, _, y_train, _ = load_split(0)
    model = make_pipeline(
        StandardScaler(), MLPClassifier((1024, 1024), max_iter=20, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    onnx_model = to_onnx(
        model, x_train[:1], options={MLPClassifier: {"zipmap": False}}, target_opset=17
    )
    path = out / "wide.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return path


def per_call(fn: Any, seconds: float) -> float:
    """Median microseconds per call over rounds of ~50 ms."""
    rounds = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.05:
            fn()
            n += 1
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


def overhead(path: Path, x: np.ndarray, seconds: float) -> tuple[float, float]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    bare = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runtime = ModelRuntime(backend=OnnxBackend(threads=1))
    runtime.load(path, ModelIdentity("bench", "1.0.0"))
    feeds = {"X": x}
    bare_us, runtime_us = [], []
    for _ in range(5):  # alternate, so drift in machine state hits both alike
        bare_us.append(per_call(lambda: bare.run(None, feeds), seconds / 10))
        runtime_us.append(per_call(lambda: runtime.predict(feeds), seconds / 10))
    return statistics.median(bare_us), statistics.median(runtime_us)


def live_latency(
    path: Path, candidate: Path, rows: np.ndarray, shadow: bool, n: int
) -> tuple[float, float]:
    runtime = ModelRuntime(backend=OnnxBackend(threads=1))
    runtime.load(path, ModelIdentity("bench", "1.0.0"))
    if shadow:
        runtime.set_shadow(candidate, ModelIdentity("bench", "1.1.0"), fraction=0.1)
    latencies = []
    for i in range(n):
        x = {"X": rows[i % len(rows)][None, :]}
        start = time.perf_counter()
        runtime.predict(x)
        latencies.append((time.perf_counter() - start) * 1e3)
    runtime.drain_shadow()
    runtime.clear_shadow()
    latencies.sort()
    return statistics.median(latencies), latencies[int(0.99 * len(latencies))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundles = build_examples(work / "bundles")
        models = {
            "digits 1.0.0 (64-16-10 MLP)": bundles[0] / "model-fp32.onnx",
            "wide MLP (64-1024-1024-10)": wide_model(work),
        }
        _, x_test, _, _ = load_split(0)
        machine = f"{platform.machine()}, {os.cpu_count()} cores"
        print(f"machine: {machine}, Python {platform.python_version()}; ONNX Runtime on 1 thread")
        print("| model | batch | bare session.run | ModelRuntime.predict | overhead |")
        print("|---|---|---|---|---|")
        for name, path in models.items():
            for batch in (1, 32):
                bare, ours = overhead(path, x_test[:batch], args.seconds)
                extra = f"{ours - bare:+.1f} µs ({(ours / bare - 1) * 100:+.1f}%)"
                print(f"| {name} | {batch} | {bare:.1f} µs | {ours:.1f} µs | {extra} |")
        print()
        print("| model | live p50 / p99 without shadow | with shadow at 10% | p99 change |")
        print("|---|---|---|---|")
        for name, path in models.items():
            n = 20000 if "digits" in name else 4000
            candidate = bundles[1] / "model-fp32.onnx" if "digits" in name else path
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(3):
                for shadow in (False, True):
                    runs[shadow].append(live_latency(path, candidate, x_test, shadow, n))
            p50_off = statistics.median(r[0] for r in runs[False])
            p99_off = statistics.median(r[1] for r in runs[False])
            p50_on = statistics.median(r[0] for r in runs[True])
            p99_on = statistics.median(r[1] for r in runs[True])
            without = f"{p50_off * 1000:.1f} / {p99_off * 1000:.1f} µs"
            with_shadow = f"{p50_on * 1000:.1f} / {p99_on * 1000:.1f} µs"
            change = f"{(p99_on / p99_off - 1) * 100:+.1f}%"
            print(f"| {name} | {without} | {with_shadow} | {change} |")


if __name__ == "__main__":
    main()

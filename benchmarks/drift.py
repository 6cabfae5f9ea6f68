"""Benchmarks of drift monitoring (issue #19), one sub-command each.

``payload``: what a device sends for drift, in bytes. A model with ``--features`` numeric
inputs (default 100) and a 10-class probabilities output, profiled on standard-normal
data, is served by the real ``ModelRuntime`` (a synthetic session stands in for ONNX
Runtime: a fixed random linear map and a softmax), one single-row request at a time at
each ``--rates`` (requests per second, default 1 and 10) of simulated time. Every
``--interval`` seconds (default 30, the agent's telemetry interval here) the agent's
sample is taken (``runtime.telemetry(reset=True)`` and this machine's health), and
``--per-post`` samples (default 2: check-ins every 60 s) go in one body to
``POST /api/v1/devices/{id}/telemetry``, encoded as the agent's HTTP client encodes it;
every body is validated as the device API validates it. One hour of it is measured:
bytes raw and gzip-compressed (each body on its own, as a compressing transport would
send it), the whole and the drift part alone (``feature_counts`` and ``sketches`` of
the sample that closes the hour's summary period). Budget: 16 KB compressed per device
per hour for the drift part (checked against 16,000 bytes). Numbers vary by a few bytes
from run to run: the reservoirs draw from the OS's entropy, and health is this machine's.

Usage::

    python benchmarks/drift.py payload [--features 100] [--rates 1 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter

from edgefleet.drift.sketch import HAVE_KLL
from edgefleet.fleet.domain import TelemetryBatch
from edgefleet.registry.domain import TensorSpec
from edgefleet.registry.profile import compute_profile
from edgefleet.runtime.health import HealthProbe
from edgefleet.runtime.metrics import ModelIdentity
from edgefleet.runtime.runtime import ModelRuntime

Array = npt.NDArray[Any]

#: Drift part of the payload: at most this many bytes, gzip-compressed, per device-hour.
BUDGET_BYTES = 16_000
CLASSES = 10
#: The device API's body model (what server/hotpath.py validates a telemetry body with).
TELEMETRY_BODY = TypeAdapter(TelemetryBatch)


# -- payload ---------------------------------------------------------------------------


class SyntheticSession:
    """A classifier with ``features`` float inputs: softmax of a fixed random linear map."""

    def __init__(self, features: int, seed: int) -> None:
        self.inputs: tuple[TensorSpec, ...] = (
            TensorSpec(name="X", dtype="float32", shape=(None, features)),
        )
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec(
                name="probabilities", dtype="float32", shape=(None, CLASSES), role="probabilities"
            ),
        )
        rng = np.random.default_rng(seed)
        self.weights = (rng.standard_normal((features, CLASSES)) / math.sqrt(features)).astype(
            np.float32
        )

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        logits = feeds["X"] @ self.weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"probabilities": (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)}


@dataclass
class SyntheticBackend:
    """Loads every path as the same ``SyntheticSession``."""

    session: SyntheticSession
    name: str = "synthetic"

    def load(self, path: Path) -> SyntheticSession:
        return self.session


class SimulatedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _encode(body: Any) -> bytes:
    """A JSON body as the agent's HTTP client (httpx) encodes it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _gzip(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=6, mtime=0))


@dataclass(frozen=True)
class PayloadResult:
    rate: float
    samples: int
    posts: int
    total_raw: int
    total_gzip: int
    drift_raw: int
    drift_gzip: int
    sketches: int
    sketch_rows: int

    @property
    def within_budget(self) -> bool:
        return self.drift_gzip <= BUDGET_BYTES


def measure_payload(
    *,
    features: int,
    rate: float,
    interval_s: float,
    per_post: int,
    hours: float,
    seed: int,
) -> PayloadResult:
    """One device's telemetry over ``hours`` at ``rate`` requests per second, measured."""
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((10_000, features)).astype(np.float32)
    session = SyntheticSession(features, seed)
    profile = compute_profile(
        {"X": reference}, probabilities=session.run({"X": reference})["probabilities"]
    )
    # Start a few seconds past an hour so that the measured hour holds exactly one
    # closing of the summary period (periods end on the hour).
    start = math.floor(datetime(2026, 6, 1, tzinfo=UTC).timestamp() / 3600) * 3600 + 5.0
    clock = SimulatedClock(start)
    runtime = ModelRuntime(backend=SyntheticBackend(session), clock=clock)
    runtime.load(Path("synthetic.onnx"), ModelIdentity("tabular", "1.0.0"), profile=profile)
    with tempfile.TemporaryDirectory() as state_dir:
        health = HealthProbe(disk_path=Path(state_dir))
        samples: list[dict[str, Any]] = []
        requests, elapsed = 0, 0.0
        end = hours * 3600
        while elapsed < end:
            elapsed = min(elapsed + interval_s, end)
            due = math.floor(elapsed * rate)
            for _ in range(due - requests):
                runtime.predict({"X": rng.standard_normal((1, features)).astype(np.float32)})
            requests = due
            clock.now = start + elapsed
            samples.append(
                {
                    "at": datetime.fromtimestamp(clock.now, UTC).isoformat(),
                    "health": health.sample().to_dict(),
                    "models": runtime.telemetry(reset=True),
                }
            )
    bodies = [
        _encode({"samples": samples[i : i + per_post]}) for i in range(0, len(samples), per_post)
    ]
    for body in bodies:
        TELEMETRY_BODY.validate_json(body)  # what the device API would refuse is no payload
    closing = [entry for sample in samples for entry in sample["models"] if "period_end" in entry]
    if len(closing) != 1:
        raise RuntimeError(f"expected one closed summary period in the hour, got {len(closing)}")
    (entry,) = closing
    drift = _encode(
        {"feature_counts": entry.get("feature_counts", {}), "sketches": entry.get("sketches", {})}
    )
    return PayloadResult(
        rate=rate,
        samples=len(samples),
        posts=len(bodies),
        total_raw=sum(len(body) for body in bodies),
        total_gzip=sum(_gzip(body) for body in bodies),
        drift_raw=len(drift),
        drift_gzip=_gzip(drift),
        sketches=len(entry.get("sketches", {})),
        sketch_rows=int(entry.get("sketch_rows", 0)),
    )


def payload(args: argparse.Namespace) -> dict[str, Any]:
    """``payload``: measure and print the table; returns the numbers."""
    results = [
        measure_payload(
            features=args.features,
            rate=rate,
            interval_s=args.interval,
            per_post=args.per_post,
            hours=1.0,
            seed=args.seed,
        )
        for rate in args.rates
    ]
    print(
        f"One device-hour of telemetry: {args.features} numeric features, samples every "
        f"{args.interval:g} s, {args.per_post} per POST; datasketches "
        f"{'installed' if HAVE_KLL else 'MISSING: bins only'}"
    )
    header = (
        f"{'requests/s':>10} {'samples':>7} {'total raw':>10} {'total gzip':>10} "
        f"{'drift raw':>10} {'drift gzip':>10} {'sketches':>8} {'rows':>5}  budget 16 KB"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.rate:>10g} {r.samples:>7} {r.total_raw:>10,} {r.total_gzip:>10,} "
            f"{r.drift_raw:>10,} {r.drift_gzip:>10,} {r.sketches:>8} {r.sketch_rows:>5}  "
            f"{'within' if r.within_budget else 'OVER'}"
        )
    print(
        "total: every POST body of the hour (gzip: each body compressed on its own); "
        "drift: feature_counts + sketches of the sample that closes the period"
    )
    return {
        "benchmark": "payload",
        "features": args.features,
        "interval_s": args.interval,
        "per_post": args.per_post,
        "have_kll": HAVE_KLL,
        "budget_bytes": BUDGET_BYTES,
        "results": [r.__dict__ | {"within_budget": r.within_budget} for r in results],
    }


# -- entry point -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    commands = parser.add_subparsers(dest="command", required=True)

    sizes = commands.add_parser("payload", help="bytes a device sends for drift per hour")
    sizes.add_argument("--features", type=int, default=100)
    sizes.add_argument("--rates", type=float, nargs="+", default=[1.0, 10.0])
    sizes.add_argument("--interval", type=float, default=30.0, help="telemetry interval, s")
    sizes.add_argument("--per-post", type=int, default=2, help="samples per telemetry POST")
    sizes.add_argument("--seed", type=int, default=0)
    sizes.set_defaults(run=payload)

    args = parser.parse_args()
    results = args.run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

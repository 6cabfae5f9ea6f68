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

``evidently``: the same data both ways. 100 features of five shapes, 100,000 reference
and 100,000 current rows with drift planted on 16 features (mean shifts, scale changes
and mixtures, several sizes each; fixed seed). edgefleet: the reference profile
(``compute_profile``: bins and quantile summaries of the reference sample); the current
rows split over 1,000 devices of 100 rows, each device's telemetry built by the
runtime's recorder (``ModelMetrics``: bins, reservoir, summaries), merged and scored by
the service's pure scoring (``drift/scoring.py``: calibrated p-values,
Benjamini-Hochberg, effect thresholds of the default monitor). Timed whole (device
summaries + merge + scoring) and without the devices' part. Evidently:
``Report([DataDriftPreset()]).run`` on the two DataFrames (needs the ``bench-drift``
extra). The verdict per feature side by side, each disagreement explained by statistic
and threshold; and edgefleet's verdicts against the same profile without summaries (KS
and Wasserstein from the bins, as for a profile built without ``datasketches``).

``fleet``: 100,000 devices' summaries of 100 features, confidence and the predicted
classes, merged and scored per segment (20 sites and the whole fleet) by the same pure
scoring: wall time and peak memory (``ru_maxrss``). One site drifts on five features, so
the result shows where alarms land.

``calibration``: no-drift replays of a fleet whose devices differ (rows of one device
correlated): how often a look raises any alarm, against the per-look alpha the
configured false-alarm rate gives, also with clustering ignored and for an offline KS
test on the raw rows (``scipy.stats.ks_2samp``, rows taken as independent); then
detection delays (looks until the first alarm) of shifts of 0.1, 0.2 and 0.5 standard
deviations on one feature, for edgefleet, the offline KS test and an always-fire
baseline.

Usage::

    python benchmarks/drift.py payload [--features 100] [--rates 1 10] [--json out.json]
    python benchmarks/drift.py evidently [--repeats 3] [--evidently-repeats 3]
    python benchmarks/drift.py fleet [--devices 100000] [--sites 20]
    python benchmarks/drift.py calibration [--looks 2000] [--replays 30]

``evidently``, ``fleet`` and ``calibration`` write ``benchmarks/results/drift-<name>.json``
(``--json`` writes elsewhere); ``payload`` writes only with ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import gzip
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter
from scipy import special  # type: ignore[import-untyped]
from scipy import stats as scipy_stats

from edgefleet.drift import calibrate
from edgefleet.drift.calibrate import Dispersion
from edgefleet.drift.monitor import FLEET_SEGMENT, Monitor, format_duration, load_monitor
from edgefleet.drift.ports import DriftBucket, WindowDevice
from edgefleet.drift.scoring import (
    CONFIDENCE,
    Layout,
    Rules,
    Scored,
    WindowAccumulator,
    WindowData,
    decide_all,
    profile_features,
    profile_reference,
    score,
)
from edgefleet.drift.segments import SegmentPlan, plan_segments
from edgefleet.drift.sketch import HAVE_KLL, SERVER_K, QuantileSummary
from edgefleet.fleet.domain import TelemetryBatch
from edgefleet.registry.domain import TensorSpec
from edgefleet.registry.profile import ReferenceProfile, bucket_index, compute_profile
from edgefleet.runtime.health import HealthProbe
from edgefleet.runtime.metrics import (
    CONFIDENCE_ROWS,
    SKETCH_ROWS,
    ModelIdentity,
    ModelMetrics,
)
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


# -- shared by evidently, fleet and calibration: the service's scoring, as it runs -------

RESULTS = Path(__file__).parent / "results"
#: The model version and the one-hour window every look of these benchmarks scores.
VERSION = "1.0.0"
WINDOW_START = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(hours=1)


def bench_monitor(**fields: Any) -> Monitor:
    """A monitor of the benchmark model: the defaults (every feature; PSI, Jensen-Shannon,
    KS, Wasserstein at their default thresholds; 0.01 false alarms per 7 days over
    one-hour looks) unless ``fields`` say otherwise."""
    return load_monitor({"model": "bench", **fields})


def accumulate(
    layout: Layout, plan: SegmentPlan, devices: Iterable[tuple[int, Sequence[DriftBucket]]]
) -> WindowData:
    """What the service does with a window's telemetry: each device's buckets folded
    into per-segment bins, dispersion sums and merged quantile summaries (read when the
    reference profile has summaries to compare them with, ``Layout.has_summaries``)."""
    window = WindowAccumulator(
        layout, len(plan.segments), WINDOW_START, WINDOW_END, summaries=layout.has_summaries
    )
    for pk, buckets in devices:
        window.add_device(plan.members[pk], buckets)
    return window.finish()


def single_segment_plan(devices: int) -> SegmentPlan:
    """Every device in the fleet-wide segment only (a monitor without ``segments``)."""
    return plan_segments(
        [WindowDevice(pk, f"device-{pk}", None, None, None) for pk in range(devices)], []
    )


def closed_period(
    feature_counts: Mapping[str, Sequence[int]],
    sketches: Mapping[str, str],
    sketch_rows: int,
    **extra: Any,
) -> dict[str, Any]:
    """A telemetry bucket's drift fields for a summary period that closed at the
    window's end (``ModelStats.to_dict`` of the snapshot that closed it)."""
    return {
        "feature_counts": {name: list(counts) for name, counts in feature_counts.items()},
        "sketches": dict(sketches),
        "sketch_rows": sketch_rows,
        "period_start": WINDOW_START.timestamp(),
        "period_end": WINDOW_END.timestamp(),
        **extra,
    }


def by_feature(scored: Scored, segment: str = FLEET_SEGMENT) -> dict[str, dict[str, Any]]:
    """A segment's scores as feature -> statistic -> score (value, threshold, p-value,
    BH cut, drifted, approximate)."""
    table: dict[str, dict[str, Any]] = {}
    for entry in scored.scores:
        if entry["segment"] == segment:
            table.setdefault(entry["feature"], {})[entry["statistic"]] = entry
    return table


def machine() -> dict[str, Any]:
    """This machine and the versions that shape the numbers."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    versions: dict[str, str | None] = {}
    for package in ("numpy", "scipy", "datasketches", "pandas", "evidently"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        **versions,
    }


def run_facts() -> dict[str, Any]:
    """When and on what commit a run was made, and the load it started under."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "machine": machine(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- evidently ---------------------------------------------------------------------------

#: Shapes of the features (by feature index modulo their number): drift is planted in
#: units of each feature's own standard deviation, so scales and skew vary.
BASES = ("normal", "lognormal", "gamma", "uniform", "student_t")


PlantKind = Literal["mean_shift", "scale", "mixture"]


@dataclass(frozen=True)
class Plant:
    """Drift planted on one feature of the current rows.

    ``mean_shift``: every value moves by ``size`` reference standard deviations.
    ``scale``: values spread ``size`` times as far from the reference mean.
    ``mixture``: a share ``size`` of the rows comes from a new component centred three
    standard deviations above the mean (half a standard deviation wide).
    """

    feature: int
    kind: PlantKind
    size: float

    def describe(self) -> str:
        if self.kind == "mean_shift":
            return f"mean + {self.size:g} sd"
        if self.kind == "scale":
            return f"sd x {self.size:g}"
        return f"{self.size:.0%} of rows at mean + 3 sd"


#: Several sizes of each kind, from ones a tool may reasonably miss (or that straddle
#: a threshold) to plain drift. Planted on every sixth feature, so on every shape.
_SIZES: list[tuple[PlantKind, float]] = [
    ("mean_shift", 0.05),
    ("mean_shift", 0.1),
    ("mean_shift", 0.15),
    ("mean_shift", 0.2),
    ("mean_shift", 0.5),
    ("mean_shift", 1.0),
    ("scale", 1.05),
    ("scale", 1.1),
    ("scale", 1.2),
    ("scale", 1.5),
    ("scale", 2.0),
    ("mixture", 0.01),
    ("mixture", 0.03),
    ("mixture", 0.05),
    ("mixture", 0.1),
    ("mixture", 0.3),
]
PLANTS: tuple[Plant, ...] = tuple(Plant(6 * i, kind, size) for i, (kind, size) in enumerate(_SIZES))


def _draw(base: str, rng: np.random.Generator, rows: int) -> Array:
    if base == "normal":
        return rng.normal(10.0, 2.0, rows)
    if base == "lognormal":
        return rng.lognormal(0.0, 0.5, rows)
    if base == "gamma":
        return rng.gamma(2.0, 1.0, rows)
    if base == "uniform":
        return rng.uniform(0.0, 1.0, rows)
    return rng.standard_t(5.0, rows)


def planted_data(
    features: int, reference_rows: int, current_rows: int, plants: Sequence[Plant], seed: int
) -> tuple[Array, Array]:
    """Reference and current rows ``[rows, features]`` (float32, what a device's model
    gets) with ``plants`` applied to the current rows; everything else is drawn from
    the same distribution on both sides."""
    rng = np.random.default_rng(seed)
    planted = {p.feature: p for p in plants}
    reference = np.empty((reference_rows, features), dtype=np.float32)
    current = np.empty((current_rows, features), dtype=np.float32)
    for f in range(features):
        base = BASES[f % len(BASES)]
        ref = _draw(base, rng, reference_rows)
        cur = _draw(base, rng, current_rows)
        plant = planted.get(f)
        if plant is not None:
            mean, sd = float(ref.mean()), float(ref.std())
            if plant.kind == "mean_shift":
                cur = cur + plant.size * sd
            elif plant.kind == "scale":
                cur = mean + plant.size * (cur - mean)
            else:
                moved = rng.random(current_rows) < plant.size
                cur[moved] = rng.normal(mean + 3.0 * sd, 0.5 * sd, int(moved.sum()))
        reference[:, f] = ref
        current[:, f] = cur
    return reference, current


def device_telemetry(rows: Array, profile: ReferenceProfile, pk: int, seed: int) -> DriftBucket:
    """One device's telemetry bucket for the window, built as the device builds it: its
    rows go through the runtime's recorder (``ModelMetrics``: bins of the reference
    profile, a reservoir of ``SKETCH_ROWS`` rows, one quantile summary per feature when
    the summary period closes) and its snapshot is serialised as the agent sends it."""
    clock = SimulatedClock(WINDOW_START.timestamp() + 1.0)
    recorder = ModelMetrics(
        ModelIdentity("bench", VERSION),
        profile=profile,
        clock=clock,
        rng=np.random.default_rng([seed, pk]),
    )
    # One request with the device's rows as its batch: the recorder samples the
    # features of its first request, so every row is counted into the bins.
    recorder.observe({"X": rows}, {}, latency_ms=1.0)
    clock.now = WINDOW_END.timestamp()
    data = recorder.snapshot(reset=True).to_dict()
    return DriftBucket(device_pk=pk, bucket=WINDOW_START, version=VERSION, data=data)


@dataclass(frozen=True)
class EdgefleetRun:
    device_s: float
    merge_s: float
    score_s: float
    scored: Scored
    cut: float
    window: WindowData

    @property
    def total_s(self) -> float:
        return self.device_s + self.merge_s + self.score_s


def run_edgefleet(
    current: Array,
    profile: ReferenceProfile,
    monitor: Monitor,
    devices: int,
    seed: int,
) -> EdgefleetRun:
    """The edgefleet path on the current rows, timed in three parts: the devices'
    summaries, the service's merge, and scoring with the look's decision."""
    blocks = np.array_split(current, devices)
    started = time.perf_counter()
    telemetry = [
        (pk, [device_telemetry(block, profile, pk, seed)]) for pk, block in enumerate(blocks)
    ]
    built = time.perf_counter()
    layout = Layout.of(profile_features(profile, monitor))
    plan = single_segment_plan(devices)
    data = accumulate(layout, plan, telemetry)
    merged = time.perf_counter()
    scored = score(
        layout,
        plan.segments,
        data,
        profile_reference(layout),
        Rules.of(monitor),
    )
    cut = decide_all([scored], monitor.look_alpha())
    done = time.perf_counter()
    return EdgefleetRun(built - started, merged - built, done - merged, scored, cut, data)


@dataclass(frozen=True)
class EvidentlyVerdict:
    method: str
    threshold: float
    value: float

    @property
    def drifted(self) -> bool:
        # Evidently's p-value tests drift below their threshold, distances at or above.
        if "p_value" in self.method:
            return self.value < self.threshold
        return self.value >= self.threshold


def run_evidently(reference: Any, current: Any) -> tuple[float, dict[str, EvidentlyVerdict]]:
    """Evidently's ``DataDriftPreset`` on the two DataFrames (its default per-column
    test), timed; the verdict per column."""
    from evidently import Report  # type: ignore[import-untyped]
    from evidently.presets import DataDriftPreset  # type: ignore[import-untyped]

    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    elapsed = time.perf_counter() - started
    verdicts: dict[str, EvidentlyVerdict] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            verdicts[config["column"]] = EvidentlyVerdict(
                config["method"], float(config["threshold"]), float(metric["value"])
            )
    return elapsed, verdicts


def explain(feature: dict[str, Any], evidently: EvidentlyVerdict, cut: float) -> str:
    """Why the two tools disagree on a feature, by statistic and threshold."""
    theirs = (
        f"Evidently: {evidently.method} {evidently.value:.3f} "
        f"{'>=' if evidently.drifted else '<'} {evidently.threshold:g}"
    )
    parts = []
    for name, entry in feature.items():
        value, threshold, p = entry["value"], entry["threshold"], entry["p_value"]
        if entry["drifted"]:
            parts.append(f"{name} {value:.3f} >= {threshold:g} with p {p:.1e} <= cut {cut:.1e}")
        elif value >= threshold:
            parts.append(f"{name} {value:.3f} >= {threshold:g} but p {p:.1e} > cut {cut:.1e}")
        else:
            parts.append(f"{name} {value:.3f} < {threshold:g}")
    return f"{theirs}; edgefleet: " + ", ".join(parts)


def verdict_rows(
    names: Sequence[str],
    plants: Sequence[Plant],
    verdicts: Mapping[str, EvidentlyVerdict],
    scored: Scored,
    cut: float,
    bins_scored: Scored,
) -> list[dict[str, Any]]:
    """Per feature: what was planted, Evidently's verdict, edgefleet's (every statistic),
    whether they agree and, where not, why; and edgefleet's verdict against a profile
    without quantile summaries (KS and Wasserstein from the bins)."""
    table = by_feature(scored)
    bins_table = by_feature(bins_scored)
    planted = {p.feature: p for p in plants}
    rows = []
    for f, name in enumerate(names):
        ours = table.get(name, {})
        theirs = verdicts[name]
        drifted = any(entry["drifted"] for entry in ours.values())
        plant = planted.get(f)
        row: dict[str, Any] = {
            "feature": name,
            "shape": BASES[f % len(BASES)],
            "planted": plant.describe() if plant else None,
            "evidently": {
                "method": theirs.method,
                "value": round(theirs.value, 4),
                "threshold": theirs.threshold,
                "drifted": theirs.drifted,
            },
            "edgefleet": {
                "drifted": drifted,
                "statistics": {
                    stat: {
                        "value": round(entry["value"], 4),
                        "threshold": entry["threshold"],
                        "p_value": entry["p_value"],
                        "drifted": entry["drifted"],
                    }
                    for stat, entry in ours.items()
                },
            },
            "agree": drifted == theirs.drifted,
            "edgefleet_profile_bins": {
                "drifted": any(e["drifted"] for e in bins_table.get(name, {}).values()),
                "fired": [s for s, e in bins_table.get(name, {}).items() if e["drifted"]],
                "wasserstein": round(bins_table[name]["wasserstein"]["value"], 4)
                if "wasserstein" in bins_table.get(name, {})
                else None,
            },
        }
        if not row["agree"]:
            row["why"] = explain(ours, theirs, cut)
        rows.append(row)
    return rows


def tally(rows: Sequence[Mapping[str, Any]], ours: str) -> dict[str, int]:
    """Agreement on planted features and false positives on clean ones, for edgefleet's
    verdict under key ``ours``."""
    planted = [r for r in rows if r["planted"]]
    clean = [r for r in rows if not r["planted"]]
    return {
        "planted": len(planted),
        "planted_both": sum(r[ours]["drifted"] and r["evidently"]["drifted"] for r in planted),
        "planted_edgefleet_only": sum(
            r[ours]["drifted"] and not r["evidently"]["drifted"] for r in planted
        ),
        "planted_evidently_only": sum(
            r["evidently"]["drifted"] and not r[ours]["drifted"] for r in planted
        ),
        "planted_neither": sum(
            not r[ours]["drifted"] and not r["evidently"]["drifted"] for r in planted
        ),
        "clean": len(clean),
        "false_positives_edgefleet": sum(r[ours]["drifted"] for r in clean),
        "false_positives_evidently": sum(r["evidently"]["drifted"] for r in clean),
        "disagreements": sum(r[ours]["drifted"] != r["evidently"]["drifted"] for r in rows),
    }


def evidently(args: argparse.Namespace) -> dict[str, Any]:
    """``evidently``: the same data through edgefleet and Evidently; times and verdicts."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: off
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError as exc:
        raise SystemExit(
            "the evidently benchmark needs the bench-drift extra: pip install -e '.[bench-drift]'"
        ) from exc
    facts = run_facts()
    plants = [p for p in PLANTS if p.feature < args.features]
    print(
        f"data: {args.features} features x {args.reference_rows:,} reference rows x "
        f"{args.current_rows:,} current rows, {len(plants)} planted, seed {args.seed}",
        flush=True,
    )
    reference, current = planted_data(
        args.features, args.reference_rows, args.current_rows, plants, args.seed
    )
    started = time.perf_counter()
    profile = compute_profile({"X": reference})  # bins and quantile summaries
    reference_s = time.perf_counter() - started
    monitor = bench_monitor(outputs=[])

    runs = []
    for r in range(args.repeats):
        run = run_edgefleet(current, profile, monitor, args.devices, args.seed + r)
        runs.append(run)
        print(
            f"edgefleet: device summaries {run.device_s:.2f} s, merge {run.merge_s:.2f} s, "
            f"scoring {run.score_s:.2f} s",
            flush=True,
        )
    names = [f.name for f in profile.inputs[0].features]
    ref_frame = pd.DataFrame(reference, columns=names)
    cur_frame = pd.DataFrame(current, columns=names)
    evidently_s: list[float] = []
    verdicts: dict[str, EvidentlyVerdict] = {}
    for _ in range(args.evidently_repeats):
        elapsed, verdicts = run_evidently(ref_frame, cur_frame)
        evidently_s.append(elapsed)
        print(f"Evidently DataDriftPreset: {elapsed:.1f} s", flush=True)

    last = runs[-1]
    # The same window against a profile without summaries (one from before they
    # existed, or built without datasketches): KS and Wasserstein from the bins.
    bins_layout = Layout.of(profile_features(profile.model_copy(update={"sketches": {}}), monitor))
    bins_scored = score(
        bins_layout,
        single_segment_plan(args.devices).segments,
        last.window,
        profile_reference(bins_layout),
        Rules.of(monitor),
    )
    decide_all([bins_scored], monitor.look_alpha())
    rows = verdict_rows(names, plants, verdicts, last.scored, last.cut, bins_scored)
    changed = [
        name
        for name in names
        if len({any(e["drifted"] for e in by_feature(r.scored)[name].values()) for r in runs}) > 1
    ]
    whole = statistics.median(r.total_s for r in runs)
    server = statistics.median(r.merge_s + r.score_s for r in runs)
    peer = statistics.median(evidently_s)
    summary = tally(rows, "edgefleet")
    print_verdicts(rows, last.cut)
    print(
        f"\nedgefleet whole path (device summaries + merge + scoring), median of "
        f"{len(runs)}: {whole:.2f} s; merge + scoring: {server:.2f} s. Evidently, median of "
        f"{len(evidently_s)}: {peer:.1f} s. Ratio: {peer / whole:.1f}x (whole path), "
        f"{peer / server:.1f}x (merge + scoring). Reference profile (bins and summaries): "
        f"{reference_s:.2f} s (once, at registration)."
    )
    print(f"verdicts: {summary}")
    bins_only = tally(rows, "edgefleet_profile_bins")
    print(f"  against a profile without summaries (KS, Wasserstein from bins): {bins_only}")
    print(f"  verdicts that changed between the {len(runs)} runs (reservoir draws): {changed}")
    return {
        "benchmark": "drift-evidently",
        **facts,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "features": args.features,
        "reference_rows": args.reference_rows,
        "current_rows": args.current_rows,
        "devices": args.devices,
        "rows_per_device": args.current_rows // args.devices,
        "sketch_rows": int(last.window.sketch_rows[0]),
        "seed": args.seed,
        "monitor": monitor.canonical(),
        "look_alpha": monitor.look_alpha(),
        "bh_cut": last.cut,
        "plants": [p.__dict__ | {"described": p.describe()} for p in plants],
        "reference_build_s": round(reference_s, 3),
        "edgefleet_runs": [
            {
                "device_summaries_s": round(r.device_s, 3),
                "merge_s": round(r.merge_s, 3),
                "scoring_s": round(r.score_s, 3),
                "total_s": round(r.total_s, 3),
            }
            for r in runs
        ],
        "edgefleet_total_s": round(whole, 3),
        "edgefleet_merge_scoring_s": round(server, 3),
        "evidently_s": [round(s, 2) for s in evidently_s],
        "evidently_median_s": round(peer, 2),
        "ratio_whole_path": round(peer / whole, 1),
        "ratio_merge_scoring": round(peer / server, 1),
        "summary": summary,
        "summary_profile_bins": bins_only,
        "verdicts_changed_between_runs": changed,
        "verdicts": rows,
    }


def print_verdicts(rows: Sequence[Mapping[str, Any]], cut: float) -> None:
    """The planted features and every disagreement, side by side."""
    print(f"\n{'feature':<8} {'shape':<10} {'planted':<24} {'Evidently':<22} edgefleet")
    for row in rows:
        if row["planted"] is None and row["agree"]:
            continue
        ev = row["evidently"]
        stats_ = row["edgefleet"]["statistics"]
        fired = [s for s, e in stats_.items() if e["drifted"]]
        ours = "DRIFT (" + ", ".join(fired) + ")" if fired else "no drift"
        w = stats_.get("wasserstein", {}).get("value")
        print(
            f"{row['feature']:<8} {row['shape']:<10} {row['planted'] or '-':<24} "
            f"{'DRIFT' if ev['drifted'] else 'no drift':<8} W {ev['value']:<10.3f} "
            f"{ours:<40} W {w if w is None else round(w, 3)}"
            + ("" if row["agree"] else "  <- " + row["why"])
        )


# -- fleet -------------------------------------------------------------------------------


class FleetTelemetry:
    """A fleet's telemetry of one window, device by device, as the service reads it: for
    each device one bucket with its summary period's bins (every feature, on the
    profile's edges), quantile summaries of its reservoir (``SKETCH_ROWS`` rows of every
    feature; ``CONFIDENCE_ROWS`` top-1 confidences) and its per-sample confidence and
    predicted-class counts.

    Devices differ: each has its own offset per feature (normal, standard deviation
    ``device_sd`` in reference units) and its own number of rows. Devices of
    ``drifted_site`` have the first ``drifted_features`` features shifted by ``shift``
    reference standard deviations.

    ``per_site`` distinct device buckets are made per site and handed out in turn to the
    site's devices (building 10 million summaries would take longer than scoring them).
    The service's work does not shrink with it: every device's bucket is decoded,
    checked and merged on its own, as from the database.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        confidences: Array,
        *,
        devices: int,
        sites: int,
        per_site: int,
        seed: int,
        device_sd: float = 0.1,
        drifted_site: int = 3,
        drifted_features: int = 5,
        shift: float = 0.5,
    ) -> None:
        self.devices = devices
        self.sites = sites
        self.drifted_site = drifted_site
        self.drifted_features = drifted_features
        features = profile.inputs[0].features
        self.drifted_names = [f.name for f in features[:drifted_features]]
        edges = np.array([f.edges for f in features])  # the same number of edges each
        confidence_shares = np.array(profile.confidence_counts) / sum(profile.confidence_counts)
        class_shares = np.array(profile.class_counts) / sum(profile.class_counts)
        rng = np.random.default_rng(seed)
        names = [f.name for f in features]
        self.pool: list[list[dict[str, Any]]] = []
        for site in range(sites):
            made = []
            for _ in range(min(per_site, -(-devices // sites))):
                offset = rng.normal(0.0, device_sd, len(names))
                if site == drifted_site:
                    offset[:drifted_features] += shift
                # Rows in the period's bins: a request a second or so, every 8th sampled.
                rows = int(rng.integers(200, 700))
                below = special.ndtr(edges - offset[:, None])  # P(x < edge), [features, edges]
                counts = rng.multinomial(rows, np.diff(below, prepend=0.0, append=1.0, axis=1))
                reservoir = offset + rng.standard_normal((SKETCH_ROWS, len(names)))
                sketches = {
                    name: QuantileSummary.of(reservoir[:, f], k=SERVER_K).to_text()
                    for f, name in enumerate(names)
                }
                sketches[CONFIDENCE] = QuantileSummary.of(
                    rng.choice(confidences, CONFIDENCE_ROWS), k=SERVER_K
                ).to_text()
                made.append(
                    closed_period(
                        dict(zip(names, counts.tolist(), strict=True)),
                        sketches,
                        SKETCH_ROWS,
                        confidence_counts=rng.multinomial(rows * 8, confidence_shares).tolist(),
                        class_counts=rng.multinomial(rows * 8, class_shares).tolist(),
                    )
                )
            self.pool.append(made)

    def site(self, pk: int) -> int:
        return pk % self.sites

    def window_devices(self) -> list[WindowDevice]:
        return [
            WindowDevice(
                pk, f"device-{pk}", None, None, None, {"site": f"site-{self.site(pk):02d}"}
            )
            for pk in range(self.devices)
        ]

    def __iter__(self) -> Iterator[tuple[int, list[DriftBucket]]]:
        for pk in range(self.devices):
            made = self.pool[self.site(pk)]
            data = made[(pk // self.sites) % len(made)]
            yield pk, [DriftBucket(device_pk=pk, bucket=WINDOW_START, version=VERSION, data=data)]


def fleet(args: argparse.Namespace) -> dict[str, Any]:
    """``fleet``: a fleet's summaries merged and scored per segment; time and memory."""
    facts = run_facts()
    rng = np.random.default_rng(args.seed)
    session = SyntheticSession(args.features, args.seed)
    reference = rng.standard_normal((args.reference_rows, args.features)).astype(np.float32)
    probabilities = session.run({"X": reference})["probabilities"]
    profile = compute_profile({"X": reference}, probabilities=probabilities)
    monitor = bench_monitor(segments=["site"])
    layout = Layout.of(profile_features(profile, monitor))
    started = time.perf_counter()
    source = FleetTelemetry(
        profile,
        probabilities.max(axis=1),
        devices=args.devices,
        sites=args.sites,
        per_site=args.per_site,
        seed=args.seed,
        shift=args.shift,
    )
    generating_s = time.perf_counter() - started
    gc.collect()
    rss_before = peak_rss_mib()
    print(
        f"fleet: {args.devices:,} devices ({args.per_site} distinct per site), "
        f"{args.features} features + confidence + classes, {args.sites} sites; telemetry "
        f"made in {generating_s:.1f} s; peak RSS so far {rss_before:.0f} MiB",
        flush=True,
    )

    started = time.perf_counter()
    plan = plan_segments(source.window_devices(), ["site"])
    planned = time.perf_counter()
    data = accumulate(layout, plan, source)
    merged = time.perf_counter()
    rss_merged = peak_rss_mib()
    scored = score(
        layout,
        plan.segments,
        data,
        profile_reference(layout),
        Rules.of(monitor),
    )
    cut = decide_all([scored], monitor.look_alpha())
    done = time.perf_counter()
    rss_after = peak_rss_mib()

    drifted: dict[str, list[str]] = {}
    for entry in scored.scores:
        if entry["drifted"]:
            features = drifted.setdefault(entry["segment"], [])
            if entry["feature"] not in features:
                features.append(entry["feature"])
    expected_segment = f"site=site-{source.drifted_site:02d}"
    result = {
        "benchmark": "drift-fleet",
        **facts,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "devices": args.devices,
        "distinct_per_site": args.per_site,
        "features": args.features,
        "outputs": ["confidence", "classes"],
        "sites": args.sites,
        "segments": len(plan.segments),
        "summaries_decoded": args.devices * (args.features + 1),
        "tests": len(set(scored.tests)),
        "scores": len(scored.scores),
        "planted": {
            "segment": expected_segment,
            "features": source.drifted_names,
            "shift_sd": args.shift,
        },
        "segment_plan_s": round(planned - started, 3),
        "merge_s": round(merged - planned, 3),
        "scoring_s": round(done - merged, 3),
        "total_s": round(done - started, 3),
        "generating_telemetry_s": round(generating_s, 3),
        "peak_rss_before_mib": round(rss_before, 1),
        "peak_rss_after_merge_mib": round(rss_merged, 1),
        "peak_rss_mib": round(rss_after, 1),
        "bh_cut": cut,
        "drifted": drifted,
        "as_planted": drifted == {expected_segment: source.drifted_names},
    }
    print(
        f"segment plan {result['segment_plan_s']} s, merge {result['merge_s']} s, scoring "
        f"{result['scoring_s']} s: {result['total_s']} s in all; peak RSS {rss_merged:.0f} MiB "
        f"after the merge, {rss_after:.0f} MiB after scoring ({rss_before:.0f} MiB before); "
        f"{len(scored.pvalues):,} tests"
    )
    print(f"drifted: {drifted}; as planted: {result['as_planted']}")
    return result


# -- calibration -------------------------------------------------------------------------


class ClusteredFleet:
    """Looks of a fleet whose devices differ.

    Within a look, device ``d``'s rows of a feature are ``u_d + e`` with
    ``u_d ~ N(0, icc)`` drawn afresh per device and look (its setting: its lighting, its
    sensor, this hour) and ``e ~ N(0, 1 - icc)``: every row is N(0, 1) like the
    reference, but the rows of one device are correlated (intraclass correlation
    ``icc``). Devices have 20 to 100 rows a look. Each sends the bins of all its rows and
    the quantile summaries of a reservoir of ``SKETCH_ROWS`` of them (its first rows: the
    rows are exchangeable, so that is a uniform sample)."""

    def __init__(self, profile: ReferenceProfile, devices: int, icc: float) -> None:
        features = profile.inputs[0].features
        self.names = [f.name for f in features]
        self.edges = [f.edges for f in features]
        self.devices = devices
        self.icc = icc

    def look(
        self, rng: np.random.Generator, shift: Mapping[int, float] | None = None
    ) -> tuple[list[tuple[int, list[DriftBucket]]], Array]:
        """One look's telemetry, device by device, and its raw rows ``[rows, features]``
        (only the offline KS test reads them); ``shift`` moves features by that many
        standard deviations (feature index -> size)."""
        count = len(self.names)
        moved = np.zeros(count)
        for feature, size in (shift or {}).items():
            moved[feature] = size
        within = math.sqrt(1.0 - self.icc)
        telemetry = []
        raw = []
        for pk in range(self.devices):
            rows = int(rng.integers(20, 101))
            offset = rng.normal(0.0, math.sqrt(self.icc), count)
            values = moved + offset + within * rng.standard_normal((rows, count))
            raw.append(values)
            counts = {
                name: np.bincount(
                    bucket_index(values[:, f], self.edges[f]), minlength=len(self.edges[f]) + 1
                ).tolist()
                for f, name in enumerate(self.names)
            }
            reservoir = values[:SKETCH_ROWS]
            sketches = {
                name: QuantileSummary.of(reservoir[:, f], k=SERVER_K).to_text()
                for f, name in enumerate(self.names)
            }
            data = closed_period(counts, sketches, len(reservoir))
            bucket = DriftBucket(device_pk=pk, bucket=WINDOW_START, version=VERSION, data=data)
            telemetry.append((pk, [bucket]))
        return telemetry, np.concatenate(raw)


def as_independent_rows(data: WindowData) -> WindowData:
    """The same window with clustering ignored: every row counted as a device of its own
    (a one-row device adds only its count to the dispersion sums), so the design effect
    is 1 and the window weighs as many independent rows as it has."""
    dispersion = {
        bins: Dispersion(
            totals=d.totals,
            sums_sq=d.totals.copy(),
            cross=d.totals[..., :, None] * np.eye(bins),
            n_x=d.totals.copy(),
            n=d.n,
            n_sq=d.n.copy(),
            devices=np.rint(d.n).astype(np.int64),
        )
        for bins, d in data.dispersion.items()
    }
    return dataclasses.replace(data, dispersion=dispersion)


@dataclass(frozen=True)
class LookTests:
    """One look's scores before the decision: the p-value, test, effect and threshold of
    every statistic of every feature, and their features. A feature's statistics share
    its test; the tests are one Benjamini-Hochberg family."""

    pvalues: Array
    tests: Array
    effects: Array
    thresholds: Array
    features: list[str]
    statistics: list[str]

    @classmethod
    def of(cls, scored: Scored) -> LookTests:
        return cls(
            np.array(scored.pvalues),
            np.array(scored.tests),
            np.array([s["value"] for s in scored.scores]),
            np.array([s["threshold"] for s in scored.scores]),
            [s["feature"] for s in scored.scores],
            [s["statistic"] for s in scored.scores],
        )

    def fired(self, alpha: float, *, thresholds: bool = True) -> list[int]:
        """The tests that drift at ``alpha``: the service's decision (``calibrate.decide``,
        as ``decide_all`` calls it) with the statistics' practical-size thresholds, or on
        evidence alone."""
        decision = calibrate.decide(
            self.pvalues,
            self.effects,
            self.thresholds if thresholds else 0.0,
            alpha,
            tests=self.tests,
        )
        return [int(i) for i in np.flatnonzero(decision.drifted)]

    def alarms(self, alpha: float, *, thresholds: bool = True) -> set[str]:
        """The features the look raises an alarm on at ``alpha`` (see ``fired``)."""
        return {self.features[i] for i in self.fired(alpha, thresholds=thresholds)}


def offline_ks_pvalues(raw: Array, reference: Array) -> Array:
    """``scipy.stats.ks_2samp`` of the window's raw rows against the reference's raw
    rows, per feature: the offline test, which takes rows as independent."""
    return np.array(
        [scipy_stats.ks_2samp(raw[:, f], reference[:, f]).pvalue for f in range(raw.shape[1])]
    )


def offline_ks_alarms(pvalues: Array, names: Sequence[str], alpha: float) -> set[str]:
    """The offline test's alarms: Benjamini-Hochberg over the features at ``alpha``."""
    rejected = np.flatnonzero(calibrate.benjamini_hochberg(pvalues, alpha))
    return {names[int(i)] for i in rejected}


class Scorer:
    """Scores looks of a ``ClusteredFleet`` as the service does (one segment, "all")."""

    def __init__(self, profile: ReferenceProfile, monitor: Monitor, devices: int) -> None:
        self.layout = Layout.of(profile_features(profile, monitor))
        self.plan = single_segment_plan(devices)
        self.reference = profile_reference(self.layout)
        self.rules = Rules.of(monitor)

    def window(self, telemetry: Sequence[tuple[int, list[DriftBucket]]]) -> WindowData:
        return accumulate(self.layout, self.plan, telemetry)

    def tests(self, data: WindowData) -> LookTests:
        scored = score(self.layout, self.plan.segments, data, self.reference, self.rules)
        return LookTests.of(scored)


def clopper_pearson(hits: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided confidence interval of a rate from ``hits`` of ``trials``."""
    tail = (1.0 - level) / 2.0
    low = 0.0 if hits == 0 else float(scipy_stats.beta.ppf(tail, hits, trials - hits + 1))
    high = 1.0 if hits == trials else float(scipy_stats.beta.ppf(1 - tail, hits + 1, trials - hits))
    return low, high


#: The variants of the no-drift replays: (name, clustering ignored, with thresholds).
VARIANTS: tuple[tuple[str, bool, bool], ...] = (
    ("calibrated", False, False),
    ("calibrated_thresholds", False, True),
    ("clustering_ignored", True, False),
    ("clustering_ignored_thresholds", True, True),
)


def no_drift(
    fleet_: ClusteredFleet,
    scorer: Scorer,
    reference: Array,
    looks: int,
    alphas: Sequence[float],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Looks without drift: how many raise any alarm, per variant and per-look alpha."""
    counts = {name: dict.fromkeys(alphas, 0) for name, _, _ in VARIANTS}
    counts["offline_ks"] = dict.fromkeys(alphas, 0)
    # Looks in which a statistic had a discovery (calibrated, evidence alone).
    by_statistic: dict[float, Counter[str]] = {alpha: Counter() for alpha in alphas}
    phis = []
    started = time.perf_counter()
    for look in range(looks):
        telemetry, raw = fleet_.look(rng)
        data = scorer.window(telemetry)
        phis.append(float(np.median(next(iter(data.dispersion.values())).phi())))
        tests = {False: scorer.tests(data), True: scorer.tests(as_independent_rows(data))}
        ks_p = offline_ks_pvalues(raw, reference)
        for alpha in alphas:
            for name, ignored, thresholds in VARIANTS:
                counts[name][alpha] += bool(tests[ignored].alarms(alpha, thresholds=thresholds))
            fired = tests[False].fired(alpha, thresholds=False)
            by_statistic[alpha].update({tests[False].statistics[i] for i in fired})
            counts["offline_ks"][alpha] += bool(offline_ks_alarms(ks_p, fleet_.names, alpha))
        if (look + 1) % max(1, looks // 10) == 0:
            print(
                f"  {look + 1} looks, {time.perf_counter() - started:.0f} s; calibrated: "
                + ", ".join(f"{counts['calibrated'][a]} at {a:g}" for a in alphas),
                flush=True,
            )
    rows = []
    for alpha in alphas:
        row: dict[str, Any] = {"configured": alpha, "looks": looks, "expected": alpha * looks}
        for name, values in counts.items():
            row[name] = {"alarms": values[alpha], "rate": values[alpha] / looks}
        low, high = clopper_pearson(counts["calibrated"][alpha], looks)
        row["calibrated"]["rate_95"] = [round(low, 5), round(high, 5)]
        row["calibrated"]["ratio"] = round(counts["calibrated"][alpha] / looks / alpha, 3)
        row["calibrated"]["looks_by_statistic"] = dict(by_statistic[alpha])
        rows.append(row)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "phi_median": round(statistics.median(phis), 3),
        "phi_range": [round(min(phis), 3), round(max(phis), 3)],
        "rates": rows,
    }


def detection_delays(
    fleet_: ClusteredFleet,
    scorer: Scorer,
    reference: Array,
    shifts: Sequence[float],
    replays: int,
    max_looks: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """For each shift of feature 0 (in standard deviations, from the first look on):
    looks until the first alarm on that feature (0: the first look after the shift
    starts), per method, over ``replays`` replays of at most ``max_looks`` looks."""
    feature = fleet_.names[0]
    rows = []
    for size in shifts:
        methods = ("edgefleet", "edgefleet_evidence_only", "offline_ks")
        found: dict[str, list[int | None]] = {m: [] for m in methods}
        for _ in range(replays):
            first: dict[str, int | None] = dict.fromkeys(methods)
            for look in range(max_looks):
                telemetry, raw = fleet_.look(rng, {0: size})
                tests = scorer.tests(scorer.window(telemetry))
                fired = {
                    "edgefleet": feature in tests.alarms(alpha),
                    "edgefleet_evidence_only": feature in tests.alarms(alpha, thresholds=False),
                    "offline_ks": feature
                    in offline_ks_alarms(offline_ks_pvalues(raw, reference), fleet_.names, alpha),
                }
                for method, hit in fired.items():
                    if hit and first[method] is None:
                        first[method] = look
                if all(value is not None for value in first.values()):
                    break
            for method, value in first.items():
                found[method].append(value)
        row: dict[str, Any] = {"shift_sd": size, "replays": replays, "max_looks": max_looks}
        for method, values in found.items():
            hits = sorted(v for v in values if v is not None)
            row[method] = {
                "detected": len(hits),
                "median_delay": statistics.median(hits) if hits else None,
                "max_delay": hits[-1] if hits else None,
                "delays": values,
            }
        row["always_fire"] = {"detected": replays, "median_delay": 0, "max_delay": 0}
        rows.append(row)
        print(
            f"  shift {size:g} sd: "
            + "; ".join(
                f"{m} {row[m]['detected']}/{replays}, median delay {row[m]['median_delay']}"
                for m in methods
            ),
            flush=True,
        )
    return rows


def calibration(args: argparse.Namespace) -> dict[str, Any]:
    """``calibration``: false alarms of no-drift replays, detection delays of shifts."""
    facts = run_facts()
    rng = np.random.default_rng(args.seed)
    reference = rng.standard_normal((args.reference_rows, args.features))
    profile = compute_profile({"X": reference})
    monitor = bench_monitor(outputs=[])
    default_alpha = monitor.look_alpha()
    fleet_ = ClusteredFleet(profile, args.devices, args.icc)
    scorer = Scorer(profile, monitor, args.devices)
    alphas = sorted({*args.alphas, default_alpha}, reverse=True)
    print(
        f"calibration: {args.devices} devices x 20-100 rows a look, {args.features} features, "
        f"intraclass correlation {args.icc:g}; {args.looks} no-drift looks at per-look "
        f"alpha {', '.join(f'{a:g}' for a in alphas)}",
        flush=True,
    )
    quiet = no_drift(fleet_, scorer, reference, args.looks, alphas, rng)
    print(f"design effect phi: median {quiet['phi_median']}, range {quiet['phi_range']}")
    for row in quiet["rates"]:
        print(
            f"  alpha {row['configured']:g}: calibrated {row['calibrated']['rate']:.4f} "
            f"(x{row['calibrated']['ratio']}, 95% {row['calibrated']['rate_95']}), with "
            f"thresholds {row['calibrated_thresholds']['rate']:.4f}; clustering ignored "
            f"{row['clustering_ignored']['rate']:.4f} (with thresholds "
            f"{row['clustering_ignored_thresholds']['rate']:.4f}); offline KS "
            f"{row['offline_ks']['rate']:.4f}; calibrated alarms by statistic: "
            f"{row['calibrated']['looks_by_statistic']}"
        )
    started = time.perf_counter()
    print(
        f"detection delay at the default monitor's per-look alpha {default_alpha:.3g} "
        f"({monitor.false_alarms.rate} per {format_duration(monitor.false_alarms.per)}, "
        f"{format_duration(monitor.window)} looks)",
        flush=True,
    )
    delays = detection_delays(
        fleet_, scorer, reference, args.shifts, args.replays, args.max_looks, default_alpha, rng
    )
    return {
        "benchmark": "drift-calibration",
        **facts,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "devices": args.devices,
        "rows_per_device": [20, 100],
        "features": args.features,
        "statistics": list(monitor.thresholds()),
        "icc": args.icc,
        "reference_rows": args.reference_rows,
        "seed": args.seed,
        "monitor": monitor.canonical(),
        "default_look_alpha": default_alpha,
        "no_drift": quiet,
        "delays_alpha": default_alpha,
        "delays_s": round(time.perf_counter() - started, 1),
        "delays": delays,
    }


# -- entry point -------------------------------------------------------------------------


def arguments() -> argparse.ArgumentParser:
    """The command line: one sub-command per benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    commands = parser.add_subparsers(dest="command", required=True)

    sizes = commands.add_parser("payload", help="bytes a device sends for drift per hour")
    sizes.add_argument("--features", type=int, default=100)
    sizes.add_argument("--rates", type=float, nargs="+", default=[1.0, 10.0])
    sizes.add_argument("--interval", type=float, default=30.0, help="telemetry interval, s")
    sizes.add_argument("--per-post", type=int, default=2, help="samples per telemetry POST")
    sizes.add_argument("--seed", type=int, default=0)
    sizes.set_defaults(run=payload, results=None)

    peer = commands.add_parser("evidently", help="the same data through Evidently's preset")
    peer.add_argument("--features", type=int, default=100)
    peer.add_argument("--reference-rows", type=int, default=100_000)
    peer.add_argument("--current-rows", type=int, default=100_000)
    peer.add_argument("--devices", type=int, default=1000, help="devices the rows split over")
    peer.add_argument("--repeats", type=int, default=3, help="runs of the edgefleet path")
    peer.add_argument("--evidently-repeats", type=int, default=3)
    peer.add_argument("--seed", type=int, default=19)
    peer.set_defaults(run=evidently, results=RESULTS / "drift-evidently.json")

    scale = commands.add_parser("fleet", help="a fleet's summaries merged and scored per site")
    scale.add_argument("--devices", type=int, default=100_000)
    scale.add_argument("--features", type=int, default=100)
    scale.add_argument("--sites", type=int, default=20)
    scale.add_argument("--reference-rows", type=int, default=100_000)
    scale.add_argument("--shift", type=float, default=0.5, help="drift of the drifted site, sd")
    scale.add_argument("--per-site", type=int, default=100, help="distinct device buckets")
    scale.add_argument("--seed", type=int, default=19)
    scale.set_defaults(run=fleet, results=RESULTS / "drift-fleet.json")

    calib = commands.add_parser("calibration", help="false alarms and detection delays")
    calib.add_argument("--looks", type=int, default=2000, help="no-drift looks")
    calib.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.05, 0.01])
    calib.add_argument("--devices", type=int, default=100)
    calib.add_argument("--features", type=int, default=10)
    calib.add_argument("--icc", type=float, default=0.05, help="intraclass correlation")
    calib.add_argument("--reference-rows", type=int, default=50_000)
    calib.add_argument("--shifts", type=float, nargs="+", default=[0.1, 0.2, 0.5])
    calib.add_argument("--replays", type=int, default=30, help="replays per shift")
    calib.add_argument("--max-looks", type=int, default=24, help="looks per replay")
    calib.add_argument("--seed", type=int, default=19)
    calib.set_defaults(run=calibration, results=RESULTS / "drift-calibration.json")
    return parser


def main() -> None:
    args = arguments().parse_args()
    results = args.run(args)
    target = args.json or args.results
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {target}")


if __name__ == "__main__":
    main()

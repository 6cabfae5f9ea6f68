"""The ``digits`` example model: real classifiers for the demo and the tests.

Two versions are built, the second measurably better than the first:

- ``digits-1.0.0``: standardisation + an MLP with 16 hidden units, briefly trained;
- ``digits-1.1.0``: standardisation + an MLP with 64 hidden units, trained to converge.

Each bundle holds an ``onnx-fp32`` variant and an ``onnx-int8`` variant (dynamic
quantization), golden samples for each variant, the held-out set as the reference
sample, a model card and a manifest whose metrics were measured here. Model bytes are
deterministic for a given seed and library versions; latency figures are measurements
and vary from run to run::

    bundles = build_examples(Path("bundles"), seed=0)
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgefleet import __version__
from edgefleet.errors import MissingDependencyError
from edgefleet.progress import NO_PROGRESS, Progress
from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.golden import INPUT_PREFIX, GoldenSamples, write_golden, write_npz

INPUT_NAME = "X"  # the input name skl2onnx gives a model converted from an array
CLASSES = tuple(str(i) for i in range(10))
GOLDEN_COUNT = 16
LATENCY_RUNS = 300
ONNX_OPSET = 17


@dataclass(frozen=True)
class DigitsRecipe:
    """How one version of the digits model is trained."""

    version: str
    hidden_layers: tuple[int, ...]
    max_iter: int
    parent: str | None
    summary: str


RECIPES = (
    DigitsRecipe("1.0.0", (16,), 60, None, "small MLP (16 hidden units), briefly trained"),
    DigitsRecipe("1.1.0", (64,), 300, "1.0.0", "larger MLP (64 hidden units), trained to converge"),
)


@dataclass(frozen=True)
class Measured:
    accuracy: float
    latency_p50_ms: float
    latency_p95_ms: float
    probabilities: np.ndarray
    labels: np.ndarray


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import onnxruntime
        import skl2onnx
        import sklearn
    except ImportError as exc:
        raise MissingDependencyError.for_extra("examples", exc.name or "scikit-learn") from exc
    return sklearn, skl2onnx, onnxruntime


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _measure(path: Path, x: np.ndarray, y: np.ndarray) -> Measured:
    session = _session(path)
    labels, probabilities = session.run(["label", "probabilities"], {INPUT_NAME: x})
    timings = []
    for i in range(LATENCY_RUNS):
        sample = x[i % len(x) : i % len(x) + 1]
        start = time.perf_counter()
        session.run(None, {INPUT_NAME: sample})
        timings.append((time.perf_counter() - start) * 1000)
    return Measured(
        accuracy=float(np.mean(labels == y)),
        latency_p50_ms=float(np.percentile(timings, 50)),
        latency_p95_ms=float(np.percentile(timings, 95)),
        probabilities=np.asarray(probabilities, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
    )


def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def _ram_mb(path: Path, x: np.ndarray) -> float | None:
    """RSS growth from loading the model and running a batch, in MB (Linux only)."""
    before = _rss_bytes()
    session = _session(path)
    session.run(None, {INPUT_NAME: x})
    after = _rss_bytes()
    if before is None or after is None:
        return None
    return round(max(after - before, 0) / 2**20 + 1, 1)


def _train(recipe: DigitsRecipe, x_train: np.ndarray, y_train: np.ndarray, seed: int) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=recipe.hidden_layers,
            max_iter=recipe.max_iter,
            alpha=1e-3,
            random_state=seed,
        ),
    )
    with warnings.catch_warnings():
        # 1.0.0 is deliberately trained short of convergence.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return model


def _export(model: Any, sample: np.ndarray, fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    onnx_model = to_onnx(
        model,
        sample,
        options={MLPClassifier: {"zipmap": False}},
        target_opset=ONNX_OPSET,
    )
    fp32.write_bytes(_canonical(onnx_model).SerializeToString())
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # quantize_dynamic suggests pre-processing we don't need
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        quant_logger.setLevel(level)
    import onnx

    int8.write_bytes(_canonical(onnx.load(str(int8))).SerializeToString())


def _canonical(model: Any) -> Any:
    """Sort the opset imports, which the converters emit in set (hash-seed) order.

    Without this the same weights serialise to different bytes from one Python process
    to the next, and the artifact's SHA-256 would not be reproducible.
    """
    from onnx import helper

    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in imports)
    return model


def _golden_indices(fp32: Measured, int8: Measured) -> np.ndarray:
    # Confident samples on which both variants agree: a label there cannot flip on
    # another CPU's rounding, so a device's smoke test fails only for a real fault.
    confident = (fp32.probabilities.max(axis=1) >= 0.9) & (int8.probabilities.max(axis=1) >= 0.9)
    agree = fp32.labels == int8.labels
    return np.flatnonzero(confident & agree)[:GOLDEN_COUNT]


def _model_card(
    recipe: DigitsRecipe, fp32: Measured, int8: Measured, n_train: int, n_test: int
) -> str:
    return f"""# digits {recipe.version}

Handwritten digit classifier (0-9) on 8x8 grey-level images, flattened to 64 features
with values 0-16. Built by `edgefleet examples build` as the example model of edgefleet.

## Model
{recipe.summary}; `StandardScaler` then `MLPClassifier` from scikit-learn, exported to
ONNX (opset {ONNX_OPSET}). Outputs `label` (int64 class index) and `probabilities`
(float32, one column per class).

## Data
`sklearn.datasets.load_digits` (1,797 images shipped with scikit-learn), stratified
split: {n_train} training images, {n_test} held out. The held-out set is the reference
sample for drift; golden samples are confident held-out images.

## Measured on the held-out set (this machine, {platform.machine()}, 1 thread)
| variant | accuracy | latency p50 | latency p95 |
|---|---|---|---|
| onnx-fp32 | {fp32.accuracy:.4f} | {fp32.latency_p50_ms:.3f} ms | {fp32.latency_p95_ms:.3f} ms |
| onnx-int8 | {int8.accuracy:.4f} | {int8.latency_p50_ms:.3f} ms | {int8.latency_p95_ms:.3f} ms |

## Intended use and limits
A demonstration and test model. It has only seen clean, centred digits from one
data set; it is not meant for real handwriting recognition.
"""


def build_version(
    recipe: DigitsRecipe,
    out: Path,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    seed: int,
    progress: Progress = NO_PROGRESS,
) -> Path:
    """Train, export, measure and write the bundle of one digits version."""
    sklearn, skl2onnx, onnxruntime = _libraries()
    x_train, x_test, y_train, y_test = data
    bundle = out / f"digits-{recipe.version}"
    bundle.mkdir(parents=True, exist_ok=True)
    advance = progress.task(f"digits {recipe.version}", total=5)

    model = _train(recipe, x_train, y_train, seed)
    advance(1)
    fp32_path, int8_path = bundle / "model-fp32.onnx", bundle / "model-int8.onnx"
    _export(model, x_train[:1], fp32_path, int8_path)
    advance(1)
    fp32, int8 = _measure(fp32_path, x_test, y_test), _measure(int8_path, x_test, y_test)
    ram_mb = _ram_mb(fp32_path, x_test)
    advance(1)

    chosen = _golden_indices(fp32, int8)
    golden_inputs = {INPUT_NAME: x_test[chosen]}
    for path, name in ((fp32_path, "golden-fp32.npz"), (int8_path, "golden-int8.npz")):
        # Run the golden batch as one batch: a dynamically quantized model picks its
        # activation scale per batch, so its outputs depend on what is batched together.
        labels, probabilities = _session(path).run(["label", "probabilities"], golden_inputs)
        write_golden(
            bundle / name,
            GoldenSamples(
                inputs=golden_inputs,
                outputs={"label": np.asarray(labels), "probabilities": np.asarray(probabilities)},
            ),
        )
    write_npz(bundle / "reference.npz", {f"{INPUT_PREFIX}{INPUT_NAME}": x_test})
    (bundle / "MODEL_CARD.md").write_text(
        _model_card(recipe, fp32, int8, len(x_train), len(x_test)), encoding="utf-8"
    )
    advance(1)

    def variant(
        name: str, path: Path, precision: str, hardware: list[str], m: Measured, golden: str
    ) -> dict[str, Any]:
        sha256, size = sha256_file(path)
        return {
            "name": name,
            "file": path.name,
            "sha256": sha256,
            "size": size,
            "runtime": "onnxruntime",
            "precision": precision,
            "hardware": hardware,
            "metrics": {
                "accuracy": round(m.accuracy, 4),
                "latency_p50_ms": round(m.latency_p50_ms, 4),
                "latency_p95_ms": round(m.latency_p95_ms, 4),
            },
            "golden": golden,
        }

    manifest = {
        "format": 1,
        "name": "digits",
        "version": recipe.version,
        "framework": (
            f"scikit-learn {sklearn.__version__} -> ONNX opset {ONNX_OPSET} "
            f"(skl2onnx {skl2onnx.__version__}, onnxruntime {onnxruntime.__version__})"
        ),
        "description": f"Digit classifier for 8x8 images: {recipe.summary}.",
        "model_card": "MODEL_CARD.md",
        "author": "edgefleet examples",
        "data_version": (
            f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}), "
            f"stratified 70/30 split, seed {seed}"
        ),
        "code_version": f"edgefleet {__version__} edgefleet.examples.digits",
        "parent": recipe.parent,
        "tags": ["example", "digits", "mlp"],
        "inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "dtype": "int64", "shape": [-1], "role": "label"},
            {
                "name": "probabilities",
                "dtype": "float32",
                "shape": [-1, 10],
                "role": "probabilities",
            },
        ],
        "classes": list(CLASSES),
        "compatibility": {"hardware": ["x86_64", "aarch64", "armv7l"], "firmware": ">=1.0"},
        "resources": {
            "ram_mb": ram_mb,
            "disk_mb": round((fp32_path.stat().st_size + int8_path.stat().st_size) / 2**20, 3),
            "expected_latency_ms": round(fp32.latency_p95_ms, 4),
        },
        "metrics": {
            "accuracy": round(fp32.accuracy, 4),
            "latency_p50_ms": round(fp32.latency_p50_ms, 4),
            "latency_p95_ms": round(fp32.latency_p95_ms, 4),
        },
        "variants": [
            variant("onnx-fp32", fp32_path, "fp32", ["x86_64", "aarch64"], fp32, "golden-fp32.npz"),
            variant("onnx-int8", int8_path, "int8", ["aarch64", "armv7l"], int8, "golden-int8.npz"),
        ],
        "golden": {"file": "golden-fp32.npz", "tolerance": {"atol": 1e-4, "rtol": 1e-3}},
        "reference": {"file": "reference.npz", "bins": 10},
    }
    if recipe.parent is None:
        del manifest["parent"]
    (bundle / "edgefleet.yaml").write_text(
        yaml.safe_dump(manifest, sort_keys=False, width=100), encoding="utf-8"
    )
    advance(1)
    return bundle


def load_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits data, split into training and held-out parts (stratified, 70/30)."""
    _libraries()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.3, random_state=seed, stratify=y
    )
    return x_train, x_test, y_train, y_test


def build_examples(out: Path, *, seed: int = 0, progress: Progress = NO_PROGRESS) -> list[Path]:
    """Build every digits bundle under ``out`` and return their paths.

    Raises:
        MissingDependencyError: the ``examples`` extra is not installed.
    """
    data = load_split(seed)
    out.mkdir(parents=True, exist_ok=True)
    return [build_version(recipe, out, data, seed, progress) for recipe in RECIPES]

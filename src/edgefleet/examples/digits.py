"""The ``digits`` example model: real classifiers for the demo, the tests and the simulator.

Five versions can be built; by default only the first two, the release story of the
demo (``DEFAULT_VERSIONS``):

- ``digits-1.0.0``: standardisation + an MLP with 16 hidden units, briefly trained;
- ``digits-1.1.0``: standardisation + an MLP with 64 hidden units, trained to converge.

The other four are children of 1.1.0 that the fleet simulator's scenarios roll out:

- ``digits-1.1.1`` ("retrain"): 1.1.0's recipe from other initial weights, as fast and
  as accurate; scenarios state a regression on top of it (behaviour factors);
- ``digits-1.2.0`` ("heavy"): six hidden layers of 192 units; as accurate as 1.1.0 but
  about twice its single-sample latency (its CPU per inference);
- ``digits-1.3.0`` ("missing class"): 1.1.0's recipe trained without class 9, which it
  therefore never predicts; its ``probabilities`` keep ten columns, class 9's always 0;
- ``digits-1.4.0`` ("large"): 1.1.0's classifier with the same outputs in an 80 MB
  artifact, for delivery tests (a table of seeded random numbers that the graph reads
  and multiplies by zero).

Each bundle holds an ``onnx-fp32`` variant and an ``onnx-int8`` variant (dynamic
quantization), golden samples for each variant, the held-out set as the reference
sample, a model card and a manifest whose metrics were measured here. Model bytes are
deterministic for a given seed and library versions; latency figures are measurements
and vary from run to run::

    bundles = build_examples(Path("bundles"), seed=0)  # 1.0.0 and 1.1.0
    cached = ensure_examples(Path("cache"), ["1.1.0", "1.2.0"])  # builds what is missing
    cached["1.2.0"]  # Path("cache/digits-1.2.0")
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgefleet import __version__
from edgefleet.errors import EdgefleetError, MissingDependencyError
from edgefleet.progress import NO_PROGRESS, Progress
from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.golden import INPUT_PREFIX, GoldenSamples, write_golden, write_npz

INPUT_NAME = "X"  # the input name skl2onnx gives a model converted from an array
CLASSES = tuple(str(i) for i in range(10))
GOLDEN_COUNT = 16
LATENCY_RUNS = 300
ONNX_OPSET = 17
MANIFEST = "edgefleet.yaml"  # written last: a bundle that has one is complete
PADDING_ROW = 1024  # float32 values per row of a large model's padding table


class ExampleError(EdgefleetError):
    """An example model was asked for that cannot be built."""

    code = "example_error"


@dataclass(frozen=True)
class DigitsRecipe:
    """How one version of the digits model is trained, and what it is for.

    ``exclude_class`` leaves every training image of that class out, so the model never
    predicts it; ``pad_mb`` pads the artifact to about that many MB (2**20 bytes)
    without changing its outputs.
    """

    version: str
    hidden_layers: tuple[int, ...]
    max_iter: int
    parent: str | None
    summary: str
    purpose: str
    tags: tuple[str, ...] = ()
    exclude_class: int | None = None
    pad_mb: int = 0
    #: Added to the build's seed: a retrain of the same recipe on other initial weights.
    seed_offset: int = 0


RECIPES = (
    DigitsRecipe(
        version="1.0.0",
        hidden_layers=(16,),
        max_iter=60,
        parent=None,
        summary="small MLP (16 hidden units), briefly trained",
        purpose=(
            "The first release of the demo's story, trained short of convergence on "
            "purpose so that its successor is measurably better."
        ),
    ),
    DigitsRecipe(
        version="1.1.0",
        hidden_layers=(64,),
        max_iter=300,
        parent="1.0.0",
        summary="larger MLP (64 hidden units), trained to converge",
        purpose=(
            "The improved release that replaces 1.0.0 in the demo's story, and the "
            "parent of the simulator's scenario models 1.1.1, 1.2.0, 1.3.0 and 1.4.0."
        ),
    ),
    DigitsRecipe(
        version="1.1.1",
        hidden_layers=(64,),
        max_iter=300,
        parent="1.1.0",
        summary="1.1.0's MLP (64 hidden units) retrained from other initial weights",
        purpose=(
            "A retrain that behaves like 1.1.0: the same size, speed and accuracy. The "
            "fleet simulator's scenarios state a regression on top of it exactly "
            "(behaviour factors on latency, CPU, memory, confidence or class recall), "
            "so the gates are measured against a known effect, not a model that happens "
            "to be slower."
        ),
        tags=("retrain",),
        seed_offset=1,
    ),
    DigitsRecipe(
        version="1.2.0",
        hidden_layers=(192,) * 6,
        max_iter=300,
        parent="1.1.0",
        summary=(
            "wide, deep MLP (6 hidden layers of 192 units), trained to converge, "
            "as accurate as 1.1.0 at about twice the CPU per inference"
        ),
        purpose=(
            "The fleet simulator's cpu-spike scenario: as accurate as 1.1.0 but about "
            "twice its single-sample latency, so that only a gate on latency or CPU, not "
            "one on accuracy, can stop its rollout."
        ),
        tags=("heavy",),
    ),
    DigitsRecipe(
        version="1.3.0",
        hidden_layers=(64,),
        max_iter=300,
        parent="1.1.0",
        summary="1.1.0's MLP (64 hidden units) trained without class 9, which it never predicts",
        purpose=(
            "The fleet simulator's missing-class scenario: trained like 1.1.0 but with "
            "every training image of class 9 left out, so it never predicts 9 (the "
            "probabilities output keeps ten columns; class 9's is always 0). Its held-out "
            "accuracy counts every 9 as an error. A gate on the predicted-class mix "
            "should stop its rollout; it must never reach a real fleet."
        ),
        tags=("missing-class",),
        exclude_class=9,
    ),
    DigitsRecipe(
        version="1.4.0",
        hidden_layers=(64,),
        max_iter=300,
        parent="1.1.0",
        summary="1.1.0's MLP (64 hidden units) in an artifact padded to 80 MB",
        purpose=(
            "A delivery-test model padded to 80 MB: 1.1.0's classifier with the same "
            "outputs, plus a table of 80 MB of seeded random numbers that the graph "
            "reads, sums and multiplies by zero. It exercises downloads, resumption, disk "
            "space and storage with a large artifact; the numbers are random so that "
            "compression in transit cannot shrink it. It is no better a classifier than "
            "1.1.0."
        ),
        tags=("large",),
        pad_mb=80,
    ),
)
#: What ``build_examples`` builds unless told otherwise: the demo's release story.
DEFAULT_VERSIONS = ("1.0.0", "1.1.0")


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


def _metrics(measured: Measured) -> dict[str, dict[str, Any]]:
    """The manifest's metrics, each with its direction (``model compare`` needs it)."""
    return {
        "accuracy": {"value": round(measured.accuracy, 4), "higher_is_better": True},
        "latency_p50_ms": {"value": round(measured.latency_p50_ms, 4), "higher_is_better": False},
        "latency_p95_ms": {"value": round(measured.latency_p95_ms, 4), "higher_is_better": False},
    }


def _ram_mb(path: Path, x: np.ndarray) -> float | None:
    """RSS growth from loading the model and running a batch, in MB (Linux only)."""
    before = _rss_bytes()
    session = _session(path)
    session.run(None, {INPUT_NAME: x})
    after = _rss_bytes()
    if before is None or after is None:
        return None
    return round(max(after - before, 0) / 2**20 + 1, 1)


def _training_set(
    recipe: DigitsRecipe, x_train: np.ndarray, y_train: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The training images the recipe learns from (all but an excluded class)."""
    if recipe.exclude_class is None:
        return x_train, y_train
    kept = y_train != recipe.exclude_class
    return x_train[kept], y_train[kept]


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


def _convert(model: Any, sample: np.ndarray, recipe: DigitsRecipe, seed: int) -> Any:
    """The trained pipeline as an ONNX model, with the graph edits the recipe asks for."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    onnx_model = to_onnx(
        model,
        sample,
        options={MLPClassifier: {"zipmap": False}},
        target_opset=ONNX_OPSET,
    )
    if recipe.exclude_class is not None:
        _insert_class_column(onnx_model, recipe.exclude_class)
    if recipe.pad_mb:
        _pad(onnx_model, recipe.pad_mb, seed)
    return _canonical(onnx_model)


def _insert_class_column(model: Any, excluded: int) -> None:
    """Give ``probabilities`` an always-0 column for the class left out of training.

    skl2onnx emits one column per class seen in training, but the manifest declares all
    ten and drift profiles count classes by column, so the missing class gets a column
    in its place. ``label`` needs nothing: the converter maps the arg-max back to the
    class values the model was trained on.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    _rename_tensor(graph, "probabilities", "seen_probabilities")
    last = len(CLASSES) - 1  # Pad appends the zero column last; Gather moves it into place
    order = [*range(excluded), last, *range(excluded, last)]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0, 0, 0, 1], np.int64), "class_column_pads"),
            numpy_helper.from_array(np.array(order, np.int64), "class_order"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Pad", ["seen_probabilities", "class_column_pads"], ["padded_probabilities"]
            ),
            helper.make_node(
                "Gather", ["padded_probabilities", "class_order"], ["probabilities"], axis=1
            ),
        ]
    )
    output = next(o for o in graph.output if o.name == "probabilities")
    output.type.tensor_type.shape.dim[1].dim_value = len(CLASSES)


def _pad(model: Any, pad_mb: int, seed: int) -> None:
    """Make the model about ``pad_mb`` MB larger without changing what it computes.

    The padding is a table of seeded random float32 values (incompressible, so that no
    transport can shrink it) which the graph really uses: it gathers one row, sums it and
    adds the sum times zero to ``probabilities``, which leaves every output bit for bit
    as it was. ONNX Runtime folds the gather (and, in fp32, all of it) into constants when
    it loads the model, so inference costs about what it did, but a device still has to
    download, store and load every byte. Dynamic quantization stores the table in 8 bits,
    so the int8 variant carries a quarter of the padding.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    _rename_tensor(graph, "probabilities", "unpadded_probabilities")
    rows = pad_mb * 2**20 // (4 * PADDING_ROW)
    table = np.random.default_rng(seed).random((rows, PADDING_ROW), dtype=np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(table, "padding_table"),
            numpy_helper.from_array(np.array([0], np.int64), "padding_row"),
            numpy_helper.from_array(np.array(0, np.float32), "padding_weight"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Gather", ["padding_table", "padding_row"], ["padding_values"]),
            helper.make_node("ReduceSum", ["padding_values"], ["padding_sum"], keepdims=0),
            helper.make_node("Mul", ["padding_sum", "padding_weight"], ["padding_term"]),
            helper.make_node("Add", ["unpadded_probabilities", "padding_term"], ["probabilities"]),
        ]
    )


def _rename_tensor(graph: Any, old: str, new: str) -> None:
    """Rename a tensor wherever nodes produce or read it; graph outputs keep ``old``.

    The node that produced graph output ``old`` then produces ``new``, so nodes appended
    afterwards can compute ``old`` from it.
    """
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new


def _export(onnx_model: Any, fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32.write_bytes(onnx_model.SerializeToString())
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


def _golden_indices(
    fp32: Measured, int8: Measured, y: np.ndarray, excluded: int | None
) -> np.ndarray:
    # Confident samples on which both variants agree: a label there cannot flip on
    # another CPU's rounding, so a device's smoke test fails only for a real fault.
    confident = (fp32.probabilities.max(axis=1) >= 0.9) & (int8.probabilities.max(axis=1) >= 0.9)
    agree = fp32.labels == int8.labels
    # Images of a class the model never saw would make golden samples of its mistakes.
    known = np.ones(len(y), dtype=bool) if excluded is None else (y != excluded)
    return np.flatnonzero(confident & agree & known)[:GOLDEN_COUNT]


def _model_card(
    recipe: DigitsRecipe, fp32: Measured, int8: Measured, n_train: int, n_test: int
) -> str:
    left_out = (
        ""
        if recipe.exclude_class is None
        else f" (every image of class {recipe.exclude_class} left out)"
    )
    return f"""# digits {recipe.version}

Handwritten digit classifier (0-9) on 8x8 grey-level images, flattened to 64 features
with values 0-16. Built by `edgefleet examples build` as the example model of edgefleet.

## Model
{recipe.summary}; `StandardScaler` then `MLPClassifier` from scikit-learn, exported to
ONNX (opset {ONNX_OPSET}). Outputs `label` (int64 class index) and `probabilities`
(float32, one column per class).

## Data
`sklearn.datasets.load_digits` (1,797 images shipped with scikit-learn), stratified
split: {n_train} training images{left_out}, {n_test} held out. The held-out set is the
reference sample for drift; golden samples are confident held-out images.

## Measured on the held-out set (this machine, {platform.machine()}, 1 thread)
| variant | accuracy | latency p50 | latency p95 |
|---|---|---|---|
| onnx-fp32 | {fp32.accuracy:.4f} | {fp32.latency_p50_ms:.3f} ms | {fp32.latency_p95_ms:.3f} ms |
| onnx-int8 | {int8.accuracy:.4f} | {int8.latency_p50_ms:.3f} ms | {int8.latency_p95_ms:.3f} ms |

## Intended use and limits
{recipe.purpose}

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
    bundle = _bundle_dir(out, recipe)
    bundle.mkdir(parents=True, exist_ok=True)
    advance = progress.task(f"digits {recipe.version}", total=5)

    x_fit, y_fit = _training_set(recipe, x_train, y_train)
    model = _train(recipe, x_fit, y_fit, seed)
    advance(1)
    fp32_path, int8_path = bundle / "model-fp32.onnx", bundle / "model-int8.onnx"
    _export(_convert(model, x_fit[:1], recipe, seed), fp32_path, int8_path)
    advance(1)
    fp32, int8 = _measure(fp32_path, x_test, y_test), _measure(int8_path, x_test, y_test)
    ram_mb = _ram_mb(fp32_path, x_test)
    advance(1)

    chosen = _golden_indices(fp32, int8, y_test, recipe.exclude_class)
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
        _model_card(recipe, fp32, int8, len(x_fit), len(x_test)), encoding="utf-8"
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
            "metrics": _metrics(m),
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
        "data_version": _data_version(recipe, seed),
        "code_version": f"edgefleet {__version__} edgefleet.examples.digits",
        "parent": recipe.parent,
        "tags": ["example", "digits", "mlp", *recipe.tags],
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
        "metrics": _metrics(fp32),
        "variants": [
            variant("onnx-fp32", fp32_path, "fp32", ["x86_64", "aarch64"], fp32, "golden-fp32.npz"),
            variant("onnx-int8", int8_path, "int8", ["aarch64", "armv7l"], int8, "golden-int8.npz"),
        ],
        "golden": {"file": "golden-fp32.npz", "tolerance": {"atol": 1e-4, "rtol": 1e-3}},
        "reference": {"file": "reference.npz", "bins": 10},
    }
    if recipe.parent is None:
        del manifest["parent"]
    (bundle / MANIFEST).write_text(
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


def build_examples(
    out: Path,
    *,
    seed: int = 0,
    progress: Progress = NO_PROGRESS,
    versions: Sequence[str] | None = None,
) -> list[Path]:
    """Build digits bundles under ``out``, replacing any there, and return their paths.

    Builds ``versions`` (default ``DEFAULT_VERSIONS``) in release order, parents first.

    Raises:
        ExampleError: a version is not one of ``RECIPES``.
        MissingDependencyError: the ``examples`` extra is not installed.
    """
    recipes = _recipes(DEFAULT_VERSIONS if versions is None else versions)
    data = load_split(seed)
    out.mkdir(parents=True, exist_ok=True)
    return [build_version(recipe, out, data, seed, progress) for recipe in recipes]


def ensure_examples(
    out: Path, versions: Sequence[str], *, seed: int = 0, progress: Progress = NO_PROGRESS
) -> dict[str, Path]:
    """Build those of ``versions`` that ``out`` lacks, and return every bundle by version.

    A cache for callers that need the models run after run (the simulator). A bundle is
    reused when its manifest, written last, is there and records this seed and data;
    anything else under its name is rebuilt. Each bundle is built in a temporary
    directory under ``out`` and renamed into place, so an interrupted build never looks
    complete (it may leave a ``.building-*`` directory behind, safe to delete).

    Raises:
        ExampleError: a version is not one of ``RECIPES``.
        MissingDependencyError: the ``examples`` extra is not installed.
    """
    recipes = _recipes(versions)
    out.mkdir(parents=True, exist_ok=True)
    stale = [r for r in recipes if not _is_built(_bundle_dir(out, r), r, seed)]
    if stale:
        data = load_split(seed)
        for recipe in stale:
            _build_into_place(recipe, out, data, seed, progress)
    return {recipe.version: _bundle_dir(out, recipe) for recipe in recipes}


def _recipes(versions: Sequence[str]) -> list[DigitsRecipe]:
    """The recipes of ``versions``, in release order (parents first)."""
    known = [recipe.version for recipe in RECIPES]
    unknown = [version for version in versions if version not in known]
    if unknown:
        raise ExampleError(
            f"no digits example version {', '.join(unknown)}; the versions are {', '.join(known)}",
            details={"unknown": unknown, "known": known},
        )
    return [recipe for recipe in RECIPES if recipe.version in versions]


def _bundle_dir(out: Path, recipe: DigitsRecipe) -> Path:
    return out / f"digits-{recipe.version}"


def _data_version(recipe: DigitsRecipe, seed: int) -> str:
    """The manifest's ``data_version``: which data, split and seed trained the model."""
    sklearn, _, _ = _libraries()
    text = (
        f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}), "
        f"stratified 70/30 split, seed {seed}"
    )
    if recipe.exclude_class is not None:
        text += f", class {recipe.exclude_class} left out of training"
    return text


def _is_built(bundle: Path, recipe: DigitsRecipe, seed: int) -> bool:
    """Whether ``bundle`` is complete and was built from this seed and data."""
    try:
        manifest = yaml.safe_load((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(manifest, dict) and manifest.get("data_version") == _data_version(
        recipe, seed
    )


def _build_into_place(
    recipe: DigitsRecipe,
    out: Path,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    seed: int,
    progress: Progress,
) -> None:
    target = _bundle_dir(out, recipe)
    staging = Path(tempfile.mkdtemp(prefix=f".building-{target.name}-", dir=out))
    try:
        built = build_version(recipe, staging, data, seed, progress)
        if target.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside
            # (into the staging directory, removed below) first.
            target.rename(staging / "replaced")
        built.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

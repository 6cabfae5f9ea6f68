"""The inference runtime on the real digits models."""

import threading
from collections import Counter

import numpy as np
import pytest

from edgefleet.fleet.domain import ModelMetrics as TelemetryModelMetrics
from edgefleet.registry.domain import Tolerance
from edgefleet.registry.golden import compare_outputs
from edgefleet.runtime.errors import InferenceError, InvalidInputError, ModelLoadError, NoModelError
from edgefleet.runtime.metrics import ModelIdentity, ModelStats
from edgefleet.runtime.runtime import ModelRuntime


@pytest.mark.parametrize(
    ("version", "precision"), [("1.0.0", "fp32"), ("1.1.0", "fp32"), ("1.1.0", "int8")]
)
def test_predictions_reproduce_the_golden_samples(digits, version, precision):
    path, identity, golden = digits(version, precision)
    runtime = ModelRuntime()
    runtime.load(path, identity)
    prediction = runtime.predict(golden.inputs)
    assert prediction.model == identity
    assert (
        compare_outputs(golden.outputs, prediction.outputs, Tolerance(atol=1e-4, rtol=1e-3)) == []
    )


def test_no_model_yet():
    with pytest.raises(NoModelError, match="no model is active"):
        ModelRuntime().predict({"X": np.zeros((1, 64), np.float32)})


def test_bad_input_is_refused_counted_and_serving_continues(digits):
    path, identity, golden = digits()
    runtime = ModelRuntime()
    runtime.load(path, identity)
    good = golden.inputs["X"][:2]
    cases = {
        "dtype float64 , the model needs float32": {"X": good.astype(np.float64)},
        "has 63 at dimension 1": {"X": good[:, :63]},
        "has shape [64], the model needs [-1, 64]": {"X": good[0]},
        "NaN or infinite": {"X": np.where(good == 0, np.nan, good).astype(np.float32)},
        "empty batch": {"X": good[:0]},
        "missing ['X']": {"pixels": good},
        "cannot be read as float32": {"X": [["a"] * 64]},
    }
    for message, inputs in cases.items():
        with pytest.raises(InvalidInputError) as info:
            runtime.predict(inputs)
        assert (
            message.replace(" , ", ", ") in info.value.message or message in info.value.message
        ), (
            message,
            info.value.message,
        )
    # JSON-style nested lists are converted to the model's dtype.
    listed = runtime.predict({"X": good.tolist()})
    np.testing.assert_array_equal(listed.outputs["label"], golden.outputs["label"][:2])
    ((_, stats, _),) = runtime.metrics().values()
    assert stats.errors == {"input": len(cases)}
    assert stats.requests == 1 and stats.inferences == 2


def test_a_model_that_does_not_load_leaves_the_active_one_serving(digits, tmp_path):
    path, identity, golden = digits()
    runtime = ModelRuntime()
    runtime.load(path, identity)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelLoadError, match="does not load in ONNX Runtime"):
        runtime.load(broken, ModelIdentity("digits", "9.9.9"))
    assert runtime.active == identity
    assert runtime.predict(golden.inputs).model == identity


def test_a_model_that_throws_at_inference(failing_model):
    runtime = ModelRuntime()
    identity = ModelIdentity("fails", "1.0.0")
    runtime.load(failing_model, identity, warmup={"X": np.zeros((3, 1), np.float32)})
    with pytest.raises(InferenceError, match="the model failed at inference"):
        runtime.predict({"X": np.zeros((5, 1), np.float32)})
    assert runtime.predict({"X": np.ones((3, 1), np.float32)}).outputs["Y"].tolist() == [1, 1, 1]
    ((_, stats, _),) = runtime.metrics().values()
    assert stats.errors == {"inference": 1} and stats.requests == 1


def test_hot_swap_drops_nothing_and_never_mixes_models(digits):
    # Expected answers of each model, computed with a model alone.
    old_path, old_id, golden = digits("1.0.0")
    new_path, new_id, _ = digits("1.1.0")
    samples = [golden.inputs["X"][i : i + 1] for i in range(len(golden.inputs["X"]))]
    expected = {}
    for path, identity in ((old_path, old_id), (new_path, new_id)):
        alone = ModelRuntime()
        alone.load(path, identity)
        expected[identity] = [alone.predict({"X": x}).outputs for x in samples]
    runtime = ModelRuntime()
    runtime.load(old_path, old_id)
    prepared = {old_id: runtime.active_model, new_id: runtime.prepare(new_path, new_id)}
    stop = threading.Event()
    answered: Counter[str] = Counter()
    problems: list[str] = []

    def hammer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            index = int(rng.integers(len(samples)))
            try:
                prediction = runtime.predict({"X": samples[index]})
            except Exception as exc:  # a dropped request
                problems.append(f"dropped: {exc!r}")
                continue
            want = expected[prediction.model][index]
            same = all(np.array_equal(prediction.outputs[k], want[k]) for k in want)
            if not same:
                problems.append(
                    f"mixed: sample {index} answered as {prediction.model} with other outputs"
                )
            answered[prediction.model.version] += 1

    workers = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for worker in workers:
        worker.start()
    swaps = 0
    try:
        for swap in range(100):
            # Half the swaps re-load from disk (build + warm-up), half re-activate a
            # prepared session: both must be invisible to requests.
            target = new_id if swap % 2 == 0 else old_id
            if swap % 4 < 2:
                path = new_path if target == new_id else old_path
                runtime.load(path, target)
            else:
                runtime.activate(prepared[target])
            swaps += 1
            before = sum(answered.values())
            while sum(answered.values()) < before + 20 and not problems:
                threading.Event().wait(0.0005)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert swaps == 100
    assert problems == []
    assert answered["1.0.0"] > 100 and answered["1.1.0"] > 100
    total = sum(stats.requests for _, stats, _ in runtime.metrics().values())
    assert total == sum(
        answered.values()
    )  # every request counted once, for the model that answered


def test_metrics_are_mergeable_and_fit_the_telemetry_body(digits, example_bundles):
    from edgefleet.registry.bundle import load_bundle
    from edgefleet.registry.profile import compute_profile

    path, identity, golden = digits("1.1.0")
    reference = load_bundle(example_bundles["1.1.0"]).reference
    profile = compute_profile(
        reference, bins=10, class_count=10, probabilities=np.eye(10)[np.arange(540) % 10]
    )
    parts = []
    for _ in range(2):
        runtime = ModelRuntime(feature_every=1)
        runtime.load(path, identity, profile=profile)
        for row in golden.inputs["X"]:
            runtime.predict({"X": row[None, :]})
        runtime.predict(golden.inputs)
        ((_, stats, _),) = runtime.metrics().values()
        parts.append(stats)
        body = runtime.telemetry()
        TelemetryModelMetrics.model_validate(body[0])  # the server accepts it as it is
    total = ModelStats.merge_all(parts)
    assert total.inferences == 2 * 32 and total.requests == 2 * 17
    assert sum(total.class_counts) == 64 and sum(total.confidence_counts) == 64
    assert sum(total.latency_counts) == 34
    assert len(total.feature_counts) == 64
    assert all(sum(c) == 64 for c in total.feature_counts.values())
    np.testing.assert_array_equal(
        total.class_counts, np.bincount(np.concatenate([golden.outputs["label"]] * 4), minlength=10)
    )
    assert total.latency_quantile(0.5) is not None


def test_metrics_of_a_swapped_out_model_are_kept_until_reported(digits):
    old_path, old_id, golden = digits("1.0.0")
    new_path, new_id, _ = digits("1.1.0")
    runtime = ModelRuntime()
    runtime.load(old_path, old_id)
    runtime.predict(golden.inputs)
    runtime.load(new_path, new_id)
    runtime.predict(golden.inputs)
    roles = {
        identity.version: (stats.requests, role)
        for identity, stats, role in runtime.metrics(reset=True).values()
    }
    assert roles == {"1.0.0": (1, "retired"), "1.1.0": (1, "active")}
    # Quiet since the report: the swapped-out model is reported once more at zero
    # (a request still in flight on it would have been counted), then forgotten.
    quiet = {i.version: s.requests for i, s, _ in runtime.metrics(reset=True).values()}
    assert quiet == {"1.0.0": 0, "1.1.0": 0}
    assert {identity.version for identity, _, _ in runtime.metrics().values()} == {"1.1.0"}


def test_application_inputs_are_recorded_for_replay_bounded_and_sampled(digits):
    path, identity, golden = digits()
    runtime = ModelRuntime(record_inputs=3, record_every=2)
    runtime.load(path, identity)
    x = golden.inputs["X"]
    for i in range(10):
        runtime.predict({"X": x[i : i + 2]})  # batches of two: the first sample is kept
    runtime.predict({"X": x[:1]}, record=False)  # a replay is never recorded
    kept = runtime.recorded_inputs()
    assert len(kept) == 3  # the newest three of five sampled requests
    assert [sample["X"].shape for sample in kept] == [(1, 64)] * 3
    np.testing.assert_array_equal(np.concatenate([s["X"] for s in kept]), x[[5, 7, 9]])
    runtime.remember_inputs([{"X": x[:1]}])
    assert len(runtime.recorded_inputs()) == 3
    np.testing.assert_array_equal(runtime.recorded_inputs()[-1]["X"], x[:1])
    assert ModelRuntime().recorded_inputs() == []  # off by default
    with pytest.raises(ValueError, match="record_every"):
        ModelRuntime(record_every=0)

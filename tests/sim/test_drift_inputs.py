"""The simulator's input drift on its own: transforms, timing, ladders of pools, cohorts
(pure: no server, no ONNX; the model is a fixed linear classifier standing in for it)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.registry.profile import CONFIDENCE_EDGES
from edgefleet.sim.drift import (
    LEVELS,
    DriftInputError,
    DriftInputs,
    HeldOut,
    add_noise,
    amount_of,
    blur,
    blur_matrix,
    brighten,
    extent,
    level_of,
    mixed_shares,
    row_shares,
    traffic_shares,
)
from edgefleet.sim.scenario import Drift
from tests.sim.drifting import KEY, LinearModel, held_out

# -- transforms -------------------------------------------------------------------------


def test_brightness_shifts_by_a_share_of_the_range_and_stays_in_it():
    x = np.array([[0.0, 8.0, 15.0]])
    assert brighten(x, 0.125, 0.0, 16.0).tolist() == [[2.0, 10.0, 16.0]]
    assert brighten(x, -0.25, 0.0, 16.0).tolist() == [[0.0, 4.0, 11.0]]


def test_noise_grows_with_the_amount_on_the_same_draws():
    x = np.full((200, 16), 8.0)
    normal = np.random.default_rng(1).standard_normal(x.shape)
    assert np.array_equal(add_noise(x, 0.0, 0.0, 16.0, normal), x)
    small, large = add_noise(x, 0.05, 0.0, 16.0, normal), add_noise(x, 0.2, 0.0, 16.0, normal)
    assert 0.7 < small.std() < 0.9  # 0.05 x 16 = 0.8
    assert large.std() > 2.5 * small.std()
    assert np.all(np.abs(large - x) >= np.abs(small - x) - 1e-9)
    assert large.min() >= 0.0 and large.max() <= 16.0


def test_blur_spreads_a_point_symmetrically_and_keeps_a_flat_image_flat():
    assert np.array_equal(blur_matrix(8, 0.0), np.eye(8))
    kernel = blur_matrix(8, 1.0)
    assert np.allclose(kernel.sum(axis=1), 1.0)
    point = np.zeros((1, 64))
    point[0, 3 * 8 + 3] = 16.0
    spread = blur(point, 0.5, 8).reshape(8, 8)  # sigma 1 px
    assert spread[3, 3] < 16.0 and spread[3, 3] == spread.max()
    assert spread[3, 2] == pytest.approx(spread[2, 3]) and spread[3, 1] < spread[3, 2]
    # Blurring the mirrored image is mirroring the blurred one.
    mirrored = point.reshape(8, 8)[::-1, ::-1].reshape(1, 64)
    assert np.allclose(blur(mirrored, 0.5, 8).reshape(8, 8), spread[::-1, ::-1])
    assert np.allclose(blur(np.full((2, 64), 5.0), 1.0, 8), 5.0)
    digits = np.random.default_rng(2).uniform(0, 16, (50, 64))
    assert blur(digits, 1.0, 8).std(axis=1).mean() < 0.5 * digits.std(axis=1).mean()


def test_blur_needs_square_images():
    with pytest.raises(DriftInputError, match="8x8 images"):
        blur(np.zeros((3, 60)), 0.5, 8)


def test_class_mix_moves_from_the_traffic_towards_its_classes():
    base = np.array([0.25, 0.25, 0.25, 0.25])
    assert np.allclose(mixed_shares(base, {3: 0.7}, 0.0), base)
    # The other classes keep their proportions and share what is left.
    assert np.allclose(mixed_shares(base, {3: 0.7}, 1.0), [0.1, 0.1, 0.1, 0.7])
    assert np.allclose(mixed_shares(base, {3: 0.7}, 0.5), [0.175, 0.175, 0.175, 0.475])
    assert np.allclose(mixed_shares([0.5, 0.3, 0.2], {0: 0.0}, 1.0), [0.0, 0.6, 0.4])
    with pytest.raises(DriftInputError, match=r"classes \[7\]"):
        mixed_shares(base, {7: 0.5}, 1.0)


def test_traffic_shares_and_row_shares_draw_classes_at_their_shares():
    labels = np.array([0] * 10 + [1] * 30 + [2] * 60)
    shares = traffic_shares(labels, {"2": 0.1})
    assert np.allclose(shares, [0.45, 0.45, 0.1])
    per_row = row_shares(labels, shares)
    assert per_row.sum() == pytest.approx(1.0)
    assert np.allclose(np.bincount(labels, weights=per_row), shares)
    with pytest.raises(DriftInputError, match=r"classes \[5\]"):
        traffic_shares(labels, {"5": 0.1})


# -- timing ---------------------------------------------------------------------------


def test_a_drift_ramps_from_its_start_or_comes_at_once():
    gradual = Drift(transform="blur", intensity=0.5, start_s=10, ramp_s=40)
    sudden = Drift(transform="brightness", intensity=-0.2, start_s=5)
    assert extent(gradual, None) == 0.0 and extent(gradual, 9.9) == 0.0
    assert extent(gradual, 30.0) == pytest.approx(0.5) and extent(gradual, 500.0) == 1.0
    assert extent(sudden, 4.9) == 0.0 and extent(sudden, 5.0) == 1.0
    assert [level_of(f) for f in (0.0, 0.04, 0.05, 0.5, 0.96, 1.0)] == [0, 0, 0, 5, 10, 10]
    assert amount_of(gradual, LEVELS - 1) == 0.5 and amount_of(sudden, 5) == pytest.approx(-0.1)


# -- ladders and pools ------------------------------------------------------------------


def test_each_drift_gets_a_ladder_and_class_mix_runs_no_model():
    model = LinearModel()
    drifts = [
        Drift(transform="blur", intensity=1.0, cohort="site:a"),
        Drift(transform="class_mix", intensity=1.0, classes={"0": 0.9}),
    ]
    inputs = DriftInputs(drifts, held_out(), model)
    made = inputs.prepare([KEY, ("1.1.0", "onnx-int8")])
    assert made == 2 * (1 + 2 * (LEVELS - 1))
    # The model ran on the base rows and on each blur level; class mix reuses its answers.
    assert len(model.calls) == 2 * LEVELS
    assert all(rows == 80 for _, rows in model.calls)
    assert inputs.prepare([KEY]) == 0  # kept


def test_a_pool_holds_the_models_answers_on_the_transformed_rows():
    held = held_out()
    model = LinearModel()
    inputs = DriftInputs([Drift(transform="brightness", intensity=0.5)], held, model)
    base, bright = inputs.pool(KEY, (0,)), inputs.pool(KEY, (10,))
    assert np.array_equal(base.inputs, held.inputs)
    assert np.allclose(bright.inputs, np.clip(held.inputs + 8.0, 0, 16))
    assert np.allclose(bright.probabilities, model(KEY, bright.inputs))
    assert base.accuracy(held.labels) == pytest.approx(1.0)
    assert bright.mean_confidence() < base.mean_confidence()


def test_draws_come_up_at_the_pools_row_shares_and_are_counted_on_the_bins():
    held = held_out()
    drift = Drift(transform="class_mix", intensity=1.0, classes={"2": 0.7})
    inputs = DriftInputs([drift], held, LinearModel())
    rng = np.random.default_rng(3)
    for level, share in ((0, 0.25), (10, 0.7)):
        pool = inputs.pool(KEY, (level,))
        rows = pool.draw(20_000, rng)
        assert np.mean(held.labels[rows] == 2) == pytest.approx(share, abs=0.015)
        classes, confidence = pool.class_counts(rows), pool.confidence_counts(rows)
        assert len(classes) == 4 and sum(classes) == 20_000
        assert len(confidence) == len(CONFIDENCE_EDGES) + 1 and sum(confidence) == 20_000
        # The model answers each row right, so its predictions move with the mix.
        assert classes[2] / 20_000 == pytest.approx(share, abs=0.015)


def test_drifts_combine_in_the_scenarios_order_and_noise_is_fixed_by_the_seed():
    held = held_out()
    drifts = [
        Drift(transform="noise", intensity=0.1),
        Drift(transform="brightness", intensity=0.25, cohort="kind:camera"),
    ]
    one = DriftInputs(drifts, held, LinearModel(), seed=4)
    again = DriftInputs(drifts, held, LinearModel(), seed=4)
    other = DriftInputs(drifts, held, LinearModel(), seed=5)
    both = one.pool(KEY, (10, 10)).inputs
    assert np.array_equal(both, again.pool(KEY, (10, 10)).inputs)
    assert not np.array_equal(both, other.pool(KEY, (10, 10)).inputs)
    noisy = one.pool(KEY, (10, 0)).inputs
    assert np.allclose(both, np.clip(noisy + 4.0, 0, 16), atol=1e-5)


def test_a_device_is_in_the_drifts_whose_cohort_it_matches_at_their_levels():
    drifts = [
        Drift(transform="blur", intensity=1.0, cohort="site:a AND kind:camera", ramp_s=100),
        Drift(transform="brightness", intensity=0.1, start_s=50),
    ]
    inputs = DriftInputs(drifts, held_out(), LinearModel())
    camera = inputs.membership({"site": "a", "kind": "camera"}, "d1")
    gateway = inputs.membership({"site": "a", "kind": "gateway"}, "d2")
    assert camera == (True, True) and gateway == (False, True)
    assert inputs.levels(camera, None) == (0, 0)
    assert inputs.levels(camera, 30.0) == (3, 0)
    assert inputs.levels(gateway, 60.0) == (0, 10)
    assert inputs.levels(camera, 60.0) == (6, 10)
    fleet = [({"site": "a", "kind": "camera"}, "d1"), ({"site": "b", "kind": "camera"}, "d3")]
    assert inputs.members(fleet) == [1, 2]


def test_drifts_the_inputs_cannot_take_are_refused():
    flat = HeldOut("X", np.zeros((4, 10), np.float32), np.arange(4), np.full(4, 0.25))
    with pytest.raises(DriftInputError, match="square images"):
        DriftInputs([Drift(transform="blur", intensity=0.5)], flat, LinearModel())
    with pytest.raises(DriftInputError, match=r"classes \[9\]"):
        DriftInputs(
            [Drift(transform="class_mix", intensity=1.0, classes={"9": 0.5})],
            held_out(),
            LinearModel(),
        )

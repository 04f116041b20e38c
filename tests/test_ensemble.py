"""Greedy ensemble selection (Caruana et al., 2004) on validation probabilities: pure NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from autotransfer.final.ensemble import (TEMPERATURE_BOUNDS, accuracy, average, bagged_ensemble, fit_temperature,
                                   greedy_ensemble, log_loss, temperature_scale)

Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])


def onehot_probs(pred: list[int], confidence: float = 0.8, k: int = 3) -> np.ndarray:
    p = np.full((len(pred), k), (1 - confidence) / (k - 1))
    p[np.arange(len(pred)), pred] = confidence
    return p


def half_right(y: np.ndarray, first: bool) -> np.ndarray:
    """Confidently right on one half of the items, slightly wrong and unsure on the other."""
    p = onehot_probs(list(y), confidence=0.9)
    unsure = slice(len(y) // 2, None) if first else slice(0, len(y) // 2)
    wrong = (y[unsure] + 1) % 3
    p[unsure] = 0.3
    rows = np.arange(len(y))[unsure]
    p[rows, wrong] = 0.4
    return p


def test_complementary_models_are_averaged():
    # a is right on the first half, b on the second: their average is right more often than either.
    a, b = half_right(Y, True), half_right(Y, False)
    bad = onehot_probs([2, 2, 1, 1, 0, 0, 2, 2])
    choice = greedy_ensemble({"a": a, "b": b, "bad": bad}, Y)
    assert choice.is_ensemble and set(choice.weights) == {"a", "b"}
    assert sum(choice.weights.values()) == pytest.approx(1.0)
    assert choice.val_log_loss < choice.single_log_loss
    mixed = average({"a": a, "b": b}, choice.weights)
    assert choice.val_log_loss == pytest.approx(log_loss(mixed, Y))
    assert choice.val_accuracy == pytest.approx(accuracy(mixed, Y)) == 1.0 and choice.single_accuracy == 0.5


def test_a_dominant_model_stays_single():
    best = onehot_probs(list(Y), confidence=0.9)
    worse = onehot_probs([1, 1, 2, 0, 0, 2, 0, 1], confidence=0.9)
    choice = greedy_ensemble({"worse": worse, "best": best}, Y)
    assert choice.weights == {"best": 1.0} and not choice.is_ensemble and choice.single == "best"
    assert choice.to_dict()["val_accuracy_gain"] == 0.0


def test_replacement_gives_weights_and_member_cap_holds():
    rng = np.random.default_rng(0)
    probs = {f"m{i}": rng.dirichlet(np.ones(3), size=len(Y)) for i in range(6)}
    capped = greedy_ensemble(probs, Y, max_members=2, max_steps=15)
    assert len(capped.weights) <= 2
    assert all(abs(w * len(capped.steps) - round(w * len(capped.steps))) < 1e-9 for w in capped.weights.values())
    assert capped.val_log_loss <= capped.single_log_loss


def test_needs_candidates():
    with pytest.raises(ValueError):
        greedy_ensemble({}, Y)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_fit_temperature_recovers_the_over_confidence_and_keeps_the_argmax():
    # Labels drawn from softmax(z); the model reports softmax(2.5 z): over-confident by T = 2.5.
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(4000, 5))
    y = np.array([rng.choice(5, p=p) for p in _softmax(z)])
    over = _softmax(2.5 * z)
    t = fit_temperature(over, y)
    assert t == pytest.approx(2.5, rel=0.1)
    scaled = temperature_scale(over, t)
    assert log_loss(scaled, y) < log_loss(over, y) - 0.05
    exact = over.min(axis=1) > 1e-6  # where no probability was clipped before the log
    assert exact.mean() > 0.5
    np.testing.assert_allclose(scaled[exact], _softmax(2.5 * z / t)[exact], atol=1e-6)
    assert (scaled.argmax(1) == over.argmax(1)).all()
    assert fit_temperature(_softmax(z), y) == pytest.approx(1.0, rel=0.1)  # calibrated already


def test_fit_temperature_stays_in_bounds_and_needs_labels():
    perfect = onehot_probs(list(Y), confidence=0.6)  # right and unsure: sharpening always helps
    assert fit_temperature(perfect, Y) == pytest.approx(TEMPERATURE_BOUNDS[0], rel=0.01)
    wrong = onehot_probs(list((Y + 1) % 3), confidence=0.99)  # confidently wrong: flattening always helps
    assert fit_temperature(wrong, Y) == pytest.approx(TEMPERATURE_BOUNDS[1], rel=0.01)
    assert fit_temperature(perfect[:0], Y[:0]) == 1.0


def _noisy_copies(n_models: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Models of equal skill with independent errors: every one adds to an average."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 150)
    return {f"m{i}": _softmax(rng.normal(scale=1.5, size=(150, 3)) + 1.5 * np.eye(3)[y]) for i in range(n_models)}, y


def test_bagged_selection_spreads_weight_within_the_member_cap_and_beats_the_single_model():
    probs, y = _noisy_copies(8)
    one_pass = greedy_ensemble(probs, y, max_members=4)
    bagged = bagged_ensemble(probs, y, max_members=4, bags=20, seed=0)
    assert bagged.bags == 20 and bagged.to_dict()["bags"] == 20
    assert bagged.is_ensemble and len(bagged.weights) <= 4 and set(bagged.weights) <= set(probs)
    assert sum(bagged.weights.values()) == pytest.approx(1.0)
    assert bagged.val_log_loss == pytest.approx(log_loss(average(probs, bagged.weights), y))
    assert bagged.val_log_loss < bagged.single_log_loss and bagged.single == one_pass.single
    assert bagged.weights == bagged_ensemble(probs, y, max_members=4, bags=20, seed=0).weights  # seeded
    assert bagged_ensemble(probs, y, max_members=2, bags=20, seed=1).weights.keys().__len__() <= 2
    assert bagged_ensemble(probs, y, max_members=4, bags=1).weights == one_pass.weights


def test_bagged_selection_keeps_a_dominant_model_single():
    best = onehot_probs(list(Y), confidence=0.9)
    worse = {f"w{i}": onehot_probs([1, 1, 2, 0, 0, 2, 0, 1], confidence=0.9) for i in range(3)}
    choice = bagged_ensemble({**worse, "best": best}, Y, bags=20, seed=0)
    assert choice.weights == {"best": 1.0} and choice.single == "best"

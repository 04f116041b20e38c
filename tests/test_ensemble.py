"""Greedy ensemble selection (Caruana et al., 2004) on validation probabilities: pure NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from autotransfer.ensemble import accuracy, average, greedy_ensemble, log_loss

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

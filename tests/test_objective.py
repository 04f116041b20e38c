"""--metric and --class-weight: what they resolve to, and that balanced weights change decisions."""
from __future__ import annotations

import numpy as np
import pytest

from autotransfer.final.ensemble import scaled_selection
from autotransfer.objective import Objective, balanced_weights, resolve
from autotransfer.space import TuneSpace
from autotransfer.train.trainer import probe_head_weights, warm_up_head
from autotransfer.train.task import HEAD_LAYER, build_head


def _skewed(n: int = 400, minority: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 90/10 task whose classes overlap: an unweighted fit calls almost everything the majority."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < minority).astype(np.int64)
    x = rng.normal(size=(n, 4)) + 0.9 * y[:, None] * np.array([1.0, 0.5, 0.0, 0.0])
    return x.astype(np.float32), y


def _predictions(head: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.argmax(x @ head[0] + head[1], axis=1)


def test_auto_picks_macro_f1_and_balanced_weights_for_imbalanced_labels_only():
    skewed, even = np.array([0] * 90 + [1] * 10), np.array([0] * 50 + [1] * 45)
    assert resolve("auto", "auto", skewed) == Objective("macro_f1", True)
    assert resolve("auto", "auto", even) == Objective("accuracy", False)
    assert resolve("accuracy", "auto", skewed) == Objective("accuracy", False)
    assert resolve("auto", "none", skewed) == Objective("macro_f1", False)
    assert resolve("log_loss", "balanced", even) == Objective("log_loss", True)
    assert Objective.from_dict(Objective("macro_f1", True).to_dict()) == Objective("macro_f1", True)


def test_balanced_weights_give_every_class_the_same_total():
    y = np.array([0] * 90 + [1] * 10)
    w = balanced_weights(y, 3)
    assert w[2] == 0.0
    assert np.isclose(w[0] * 90, w[1] * 10)
    assert np.isclose((w[y]).sum(), len(y))


def test_macro_f1_score_punishes_ignoring_the_small_class_where_accuracy_does_not():
    y = np.array([0] * 90 + [1] * 10)
    majority = np.tile([0.9, 0.1], (100, 1))
    assert Objective("accuracy").score(majority, y) == pytest.approx(0.9)
    assert Objective("macro_f1").score(majority, y) < 0.5
    assert Objective("log_loss").score(majority, y) < 0.0


def test_class_weights_change_a_90_10_heads_decisions():
    x, y = _skewed()
    xt, yt = _skewed(seed=1)
    plain = _predictions(probe_head_weights(x, y, 2), xt)
    balanced = _predictions(probe_head_weights(x, y, 2, balanced=True), xt)
    recall = [float(np.mean(p[yt == 1] == 1)) for p in (plain, balanced)]
    assert recall[1] > recall[0] + 0.2
    assert Objective("macro_f1").score(np.eye(2)[balanced], yt) > Objective("macro_f1").score(np.eye(2)[plain], yt)


def test_class_weights_reach_a_keras_fit():
    """The Adam warm-up (and every Keras fit of a trial) weighs the small class up."""
    import keras

    x, y = _skewed()
    xt, yt = _skewed(seed=1)
    space = TuneSpace(head_warmup="adam", head_epochs=30, batch_size=32, head_learning_rate=5e-2)
    minority = []
    for balanced in (False, True):
        keras.utils.set_random_seed(0)
        inp = keras.Input((4,))
        model = keras.Model(inp, build_head(inp, 2, dropout=0.0))
        warm_up_head(model, x, y, num_classes=2, space=space, dropout=0.0, seed=0, balanced=balanced)
        probs = model.predict(xt, verbose=0)
        minority.append(int(np.sum(np.argmax(probs, axis=1) == 1)))
        assert model.get_layer(HEAD_LAYER) is not None
    assert minority[1] > minority[0] + 20


def test_balanced_selection_weighs_the_small_class_rows_up():
    """Two candidates: one right on the big class only, one right on the small class only. Plain
    log-loss picks the first alone; balanced weights make the second count as much."""
    y = np.array([0] * 90 + [1] * 10)
    big = np.where(y[:, None] == 0, [0.95, 0.05], [0.9, 0.1])
    small = np.where(y[:, None] == 1, [0.05, 0.95], [0.45, 0.55])
    plain, _ = scaled_selection({"big": big, "small": small}, y, max_members=2)
    balanced, _ = scaled_selection({"big": big, "small": small}, y, max_members=2, balanced=True)
    assert plain.weights.get("small", 0.0) < balanced.weights.get("small", 0.0)


def test_a_balanced_trial_fine_tunes_with_class_weights(tiny_modules, data_splits, monkeypatch):
    """A trial whose class_weight parameter says balanced passes Keras class weights to its
    fine-tuning fit (and an unweighted one passes none)."""
    import keras

    from autotransfer.backbones import BackboneSpec
    from autotransfer.train.trainer import train_trial

    data, splits = data_splits
    seen = []
    real_fit = keras.Model.fit

    def fit(self, *args, **kwargs):
        seen.append(kwargs.get("class_weight"))
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    space = TuneSpace(unfreeze_blocks=1, learning_rate=1e-3, head_warmup="probe", max_epochs=1, batch_size=16)
    params = {"unfreeze_blocks": 1, "learning_rate": 1e-3, "patience": 1, "dropout": 0.0}
    spec = BackboneSpec("good", tiny_modules["good"], 16)
    for balanced in (False, True):
        seen.clear()
        train_trial(spec, {**params, **({"class_weight": "balanced"} if balanced else {})}, data, splits,
                    space=space, num_classes=data.num_classes, seed=0)
        assert seen and all((w is not None) == balanced for w in seen)
    assert set(seen[-1]) == set(np.unique(data.labels[splits.train]).tolist())

"""Cross-validation for small data: folds, out-of-fold heads and selection, reverted trials not repeated."""
from __future__ import annotations

import importlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from autotransfer.backbones import BackboneSpec
from autotransfer.data import cv_folds, load_data, make_cv_splits
from autotransfer.testing import pattern_images
from autotransfer.tune import TuneSpace, tune


def test_cv_folds_partition_every_labelled_row_and_keep_a_given_test_split_out():
    x, y = pattern_images(10, num_classes=3, size=8, seed=0)
    split = np.array(["train"] * len(y), dtype=object)
    split[::6] = "test"
    data = load_data(x, labels=y)
    data.split = split
    s = make_cv_splits(data, folds=cv_folds(y[split != "test"]), seed=0)
    test = np.flatnonzero(split == "test")
    assert np.array_equal(s.test, test)
    union = np.sort(np.concatenate(s.folds))
    assert np.array_equal(union, np.flatnonzero(split != "test"))  # every labelled row, each once
    assert np.array_equal(s.val, s.folds[0]) and np.array_equal(np.sort(s.labelled), union)
    for f in s.folds:  # stratified: every class in every fold
        assert set(y[f]) == {0, 1, 2}
    ids = s.fold_ids()
    for j, f in enumerate(s.folds):
        assert np.array_equal(np.sort(s.labelled[ids == j]), f)
    assert type(s).from_dict(s.to_dict()).to_dict() == s.to_dict()


def test_cv_folds_follow_the_smallest_class():
    assert cv_folds(np.array([0] * 20 + [1] * 3)) == 3
    assert cv_folds(np.array([0] * 20 + [1] * 30)) == 5
    assert cv_folds(np.array([0] * 20 + [1])) == 0


def test_out_of_fold_heads_predict_each_row_from_a_head_that_did_not_see_it():
    from autotransfer.final.crossfit import oof_heads
    from autotransfer.train.trainer import probe_head_weights

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 12)
    data = load_data(rng.random((36, 8, 8, 3)).astype("float32"), labels=y)
    s = make_cv_splits(data, folds=3, seed=0)
    feats = rng.normal(size=(36, 5)) + np.eye(3)[y] @ rng.normal(size=(3, 5)) * 2
    features = {"a": {"train": feats[s.train], "val": feats[s.val]}}
    heads = oof_heads(features, {"a": BackboneSpec("a", "a", 0)}, s, y, 3, seed=0)
    head0, oof = heads["probe:a"]
    assert oof.shape == (36, 3) and np.allclose(oof.sum(axis=1), 1)
    # Fold 2's rows: the head fitted on folds 0 and 1 alone, with the train split's C.
    from autotransfer.train.trainer import choose_head_c

    ids = s.fold_ids()
    x = np.concatenate([feats[s.train], feats[s.val]])
    ylab = y[s.labelled]
    c = choose_head_c(x[ids != 0], ylab[ids != 0], seed=0)
    k, b = probe_head_weights(x[ids != 2].astype("float32"), ylab[ids != 2], 3, seed=0, C=c)
    z = x[ids == 2] @ k + b
    expect = np.exp(z - z.max(1, keepdims=True))
    assert np.allclose(oof[ids == 2], expect / expect.sum(1, keepdims=True), atol=1e-5)
    # The member's own head is the train-only (fold-0) fit: what validation judges.
    k0, _ = probe_head_weights(x[ids != 0].astype("float32"), ylab[ids != 0], 3, seed=0, C=c)
    assert np.allclose(head0[0], k0)


def test_member_weights_come_from_out_of_fold_predictions_over_every_row(monkeypatch):
    from autotransfer.final.members import choose_members
    from autotransfer.tune.tune import TrialSummary

    class Tuned:  # a trial perfect on fold 0 (its val) but wrong on the other folds
        y = np.repeat([0, 1], 20)
        val = np.eye(2)[y[:8]] * 0.98 + 0.01
        summaries = {0: TrialSummary(0, "b", {}, 1.0, 0.05, val, 2, 10.0)}
        models = {0: None}
        best_trial_id = 0

    y = Tuned.y
    bad = np.eye(2)[y] * 0.98 + 0.01
    bad[8:] = bad[8:][:, ::-1]  # out of fold it predicts the wrong class
    good_head = np.eye(2)[y] * 0.7 + 0.15
    from autotransfer.backbones import BackboneSpec

    spec = BackboneSpec(name="h", handle="x", input_size=8)
    monkeypatch.setattr("autotransfer.final.members._head_model", lambda spec, head, k: None)  # no network needed
    final = choose_members(Tuned(), {"probe:h": ([np.zeros((1, 2)), np.zeros(2)], good_head)}, {"h": spec, "b": spec},
                           y, num_classes=2, max_members=2, keep_tuned=False, trial_probs={0: bad})
    assert [m.name for m in final.members] == ["probe:h"]
    assert final.pool["trial 0"] is bad and len(final.labels) == 40
    # Scored on its validation split alone, the same trial would have been chosen.
    on_val = choose_members(Tuned(), {"probe:h": ([np.zeros((1, 2)), np.zeros(2)], good_head[:8])},
                            {"h": spec, "b": spec}, y[:8], num_classes=2, max_members=2, keep_tuned=False)
    assert "trial 0" in [m.name for m in on_val.members]


def test_reverted_twin_matches_the_configuration_not_the_learning_rate_far_off():
    from autotransfer.backbones import BackboneSpec
    from autotransfer.tune.tune import TrialSummary, reverted_twin

    spec = BackboneSpec(name="b", handle="x", input_size=224)
    base = {"backbone": "b", "unfreeze_blocks": 2, "augment": "none", "learning_rate": 1e-4, "input_size": "native"}
    done = {0: TrialSummary(0, "b", {**base, "input_size": 224}, 0.8, 0.5, None, 0, 10.0)}
    assert reverted_twin(spec, {**base, "learning_rate": 1.5e-4}, done).trial_id == 0
    assert reverted_twin(spec, {**base, "learning_rate": 1e-3}, done) is None
    assert reverted_twin(spec, {**base, "unfreeze_blocks": 3}, done) is None
    assert reverted_twin(spec, {**base, "augment": "flip"}, done) is None
    assert reverted_twin(spec, {**base, "input_size": 128}, done) is None
    kept = {0: replace(done[0], finetune_epochs=3)}  # fine-tuning that paid is worth another seed
    assert reverted_twin(spec, base, kept) is None


def test_a_configuration_whose_fine_tuning_reverted_is_not_run_again(tiny_modules, tmp_path, monkeypatch):
    from autotransfer.backbones import BackboneSpec
    from autotransfer.data import make_splits

    tune_module = importlib.import_module("autotransfer.tune.tune")
    real, calls = tune_module.train_trial, []

    def reverted(*args, **kwargs):  # as on small data: fine-tuning never beats the warmed-up head
        calls.append(1)
        return replace(real(*args, **kwargs), finetune_epochs=0)

    monkeypatch.setattr(tune_module, "train_trial", reverted)
    x, y = pattern_images(12, num_classes=3, size=16, seed=1)
    data = load_data(x, labels=y)
    space = TuneSpace(unfreeze_blocks=(1, 1), learning_rate=(1e-3, 1e-3), head_learning_rate=5e-2, patience=(1, 1),
                      dropout=(0.0, 0.0), head_epochs=2, max_epochs=2, batch_size=16)
    spec = BackboneSpec(name="good", handle=tiny_modules["good"], input_size=16)
    result = tune([spec], data, make_splits(data, seed=0), space=space, backend="optuna", max_trials=3,
                  out_dir=tmp_path, seed=0)
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert len(calls) == 1
    assert list(rows["status"]) == ["ok", "repeat", "repeat"]
    assert list(result.summaries) == [0]


def test_the_estimate_rechooses_members_without_each_fold():
    from autotransfer.final.ensemble import scaled_selection, temperature_scale
    from autotransfer.final.crossfit import nested_selection_probs

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    folds = np.repeat([0, 1, 2], 30)
    right = np.eye(3)[y] * 0.8 + 0.2 / 3
    lucky = np.eye(3)[np.where(folds == 2, y, (y + 1) % 3)] * 0.9 + 0.1 / 3  # right on fold 2 only
    pool = {"right": right, "lucky": lucky, "noise": rng.dirichlet(np.ones(3), 90)}
    nested = nested_selection_probs(pool, y, folds, max_members=2, seed=0)
    fit = folds != 1
    choice, temps = scaled_selection({n: p[fit] for n, p in pool.items()}, y[fit], max_members=2, seed=0)
    expect = sum(w * temperature_scale(pool[n][~fit], temps[n]) for n, w in choice.weights.items())
    assert np.allclose(nested[folds == 1], expect)
    # Fold 2's rows are predicted by a choice made without them: "lucky" cannot earn its place there.
    fit2 = folds != 2
    choice2, _ = scaled_selection({n: p[fit2] for n, p in pool.items()}, y[fit2], max_members=2, seed=0)
    assert "lucky" not in choice2.weights


def test_a_trial_is_cross_fitted_in_two_refits_each_blind_to_the_rows_it_predicts(monkeypatch):
    from autotransfer import budget
    from autotransfer.final import crossfit
    from autotransfer.tune.tune import TrialSummary

    assert budget.fold_groups(5) == [[1, 2], [3, 4]]
    assert budget.fold_groups(3) == [[1], [2]] and budget.fold_groups(2) == [[1]]
    y = np.repeat([0, 1, 2], 10)
    data = load_data(np.zeros((30, 4, 4, 3), dtype="float32"), labels=y)
    s = make_cv_splits(data, folds=5, seed=0)
    fits = []

    def refit(spec, params, data, parts, **kwargs):  # the "model" is the rows it trained on
        fits.append(np.concatenate(parts))
        return np.concatenate(parts), False

    def predict(model, data, rows, input_size):  # right where blind to the row, wrong where it saw it
        seen = np.isin(rows, model)
        return np.eye(3)[np.where(seen, (y[rows] + 1) % 3, y[rows])]

    monkeypatch.setattr(crossfit, "refit_trial", refit)
    trial = TrialSummary(7, "b", {}, 1.0, 0.1, np.eye(3)[y[s.val]], 2, 10.0)
    from autotransfer.backbones import BackboneSpec

    oof = crossfit.cross_fit_trial(trial, BackboneSpec(name="b", handle="x", input_size=4), data, s, space=None, deadline=None, features=None,
                                   predict=predict)
    assert len(fits) == 2 and all(len(f) == 18 for f in fits)  # 3 of 5 folds each
    assert np.array_equal(oof.argmax(1), y[s.labelled])  # every row, in order, from a model blind to it
    # Its cost: two refits on 3/5 of the rows (0.75 of a trial's 4/5 each) and the refit on all rows.
    assert budget.cross_fit_factor(s) == pytest.approx(30 / 24 + 2 * 18 / 24)
    assert budget.cross_fit_factor(replace(s, folds=None)) == pytest.approx(30 / 24)

from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from autotransfer.backbones import BackboneSpec, HubBackbone
from autotransfer.data import image_dataset
from autotransfer.errors import UserInputError
from autotransfer.tune import (
    HEAD_LAYER,
    ParamSpec,
    TRIAL_COLUMNS,
    TuneSpace,
    get_backend,
    render_keras_tuner,
    render_optuna,
    train_trial,
    tune,
)

FAST = TuneSpace(unfreeze_blocks=(0, "all"), learning_rate=(1e-3, 1e-2), head_learning_rate=5e-2,
                 patience=(1, 2), dropout=(0.0, 0.2), head_epochs=4, max_epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def specs(tiny_modules):
    return [BackboneSpec(name, handle, 16) for name, handle in tiny_modules.items()]


# -- space ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, constraint", [
    ("learning_rate", [1e-3, 1e-5], "[low, high] with 0 < low < high"),
    ("learning_rate", 0.01, "[low, high] with 0 < low < high"),
    ("unfreeze_blocks", [0, "most"], '[low, high] with integers 0 <= low <= high (high may be "all")'),
    ("unfreeze_blocks", [-1, 2], '[low, high] with integers 0 <= low <= high (high may be "all")'),
    ("patience", [3, 2], "[low, high] with integers 1 <= low <= high"),
    ("dropout", [0.0, 1.0], "[low, high] with 0 <= low <= high < 1"),
    ("head_learning_rate", -1, "a number or [low, high] with 0 < low <= high"),
    ("max_epochs", True, "an integer >= 1"),
    ("batch_size", 0, "an integer >= 1 or a list of them"),
    ("head_warmup", "sgd", "'probe' or 'adam'"),
])
def test_space_validation_messages(field, value, constraint):
    with pytest.raises(UserInputError) as err:
        TuneSpace.from_dict({field: value}, "s.yaml")
    assert str(err.value) == f"search space s.yaml: tuning.{field} must be {constraint}. Got {value!r} instead."


def test_space_defaults_unknown_fields_and_yaml_strings():
    assert TuneSpace.from_dict(None, "s") == TuneSpace()
    assert TuneSpace().to_dict()["unfreeze_blocks"] == [0, 3]
    space = TuneSpace.from_dict({"learning_rate": ["1e-5", "1e-3"], "unfreeze_blocks": [1, "all"]}, "s")
    assert space.learning_rate == (1e-5, 1e-3) and TuneSpace.from_dict(space.to_dict(), "s") == space
    with pytest.raises(UserInputError, match=r"search space s: unknown tuning field 'lr'\. Allowed: "):
        TuneSpace.from_dict({"lr": 1}, "s")
    with pytest.raises(UserInputError, match=r"unknown tuning field 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        TuneSpace.from_dict({"learning_rat": 1}, "s")


def test_params_render_to_both_backends():
    import keras_tuner as kt
    import optuna

    params = TuneSpace(unfreeze_blocks=(1, "all"), patience=(2, 2)).params(["a", "b"], max_blocks=4)
    by_name = {p.name: p for p in params}
    assert by_name["unfreeze_blocks"].high == 4 and by_name["learning_rate"].log
    hp = kt.HyperParameters()
    values = render_keras_tuner(params, hp)
    assert set(values) == {"backbone", "unfreeze_blocks", "learning_rate", "head_learning_rate", "patience",
                           "min_delta", "batch_size", "dropout", "augment", "lr_schedule", "layer_decay",
                           "label_smoothing", "input_size"}
    assert hp._hps["learning_rate"][0].sampling == "log" and values["patience"] == 2
    assert hp._hps["backbone"][0].values == ["a", "b"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = render_optuna(params, trial)
    assert values["backbone"] in ("a", "b") and 1 <= values["unfreeze_blocks"] <= 4 and values["patience"] == 2
    assert 1e-5 <= values["learning_rate"] <= 1e-3
    assert trial.distributions["learning_rate"].log
    with pytest.raises(ValueError, match="log scale"):
        ParamSpec("x", "float", 0.0, 1.0, log=True)


# -- trainer ----------------------------------------------------------------------------------------
def test_finetune_last_block_only_and_beats_chance(data_splits, specs):
    data, splits = data_splits
    weak_head = TuneSpace(head_epochs=1, head_learning_rate=1e-3, max_epochs=3, batch_size=8, head_warmup="adam")
    params = {"unfreeze_blocks": 1, "learning_rate": 3e-2, "patience": 3, "dropout": 0.0}
    out = train_trial(specs[0], params, data, splits, space=weak_head, num_classes=4, seed=0)
    assert out.val_accuracy > out.head_val_accuracy and out.val_accuracy >= 0.5  # chance is 0.25
    assert out.epochs == 1 + len(out.history["finetune"]["loss"]) and out.params["unfreeze_blocks"] == 1
    fresh = HubBackbone(specs[0].handle)
    tuned = out.model.get_layer("backbone")
    for name, before, after in zip(fresh.variable_names, fresh._wrapped, tuned._wrapped):
        same = np.array_equal(before.numpy(), after.numpy())
        assert same != (name in ("head/kernel", "head/bias")), name


def test_probe_warmup_head_is_a_cross_validated_logistic_regression(data_splits, specs):
    from autotransfer.train.trainer import HEAD_CS, fit_head, probe_head_weights

    data, splits = data_splits
    params = {"unfreeze_blocks": 0, "learning_rate": 1e-3, "patience": 1, "dropout": 0.3}
    out = train_trial(specs[1], params, data, splits, space=replace(FAST, head_warmup="probe"), num_classes=4, seed=0)
    backbone = HubBackbone(specs[1].handle, input_size=16)
    feats = {s: extract(backbone, data, getattr(splits, s)) for s in ("train", "val")}
    y = {s: np.asarray(data.labels)[getattr(splits, s)] for s in ("train", "val")}
    scaler, clf = fit_head(feats["train"], y["train"], seed=0)
    assert float(np.ravel(clf.C_)[0]) in HEAD_CS  # C chosen from the grid by cross-validation
    proba = clf.predict_proba(scaler.transform(feats["val"]))
    # Head-only trial (dropout is off at inference) = that regression: same val accuracy, same probabilities.
    assert out.head_val_accuracy == pytest.approx(float(np.mean(proba.argmax(1) == y["val"])))
    kernel, bias = probe_head_weights(feats["train"], y["train"], 4, seed=0)
    np.testing.assert_allclose(out.model.get_layer(HEAD_LAYER).get_weights()[0], kernel, rtol=1e-5, atol=1e-6)
    z = feats["val"] @ kernel + bias
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), proba, atol=1e-5)
    np.testing.assert_allclose(out.val_probs, proba, atol=1e-5)


def extract(backbone, data, idx):
    from autotransfer.probe import extract_features

    return extract_features(backbone, image_dataset(data, idx, image_size=16, batch_size=16, with_labels=False))


def test_head_warmup_from_cached_features_matches_backbone(data_splits, specs, caplog):
    data, splits = data_splits
    spec = specs[0]
    bb = HubBackbone(spec.handle)
    feats = {s: np.concatenate([bb(x).numpy() for x, _ in image_dataset(data, getattr(splits, s), image_size=16)])
             for s in ("train", "val", "test")}
    params = {"unfreeze_blocks": 0, "learning_rate": 1e-3, "patience": 1, "dropout": 0.1}
    kw = dict(space=FAST, num_classes=4, seed=3)
    cached = train_trial(spec, params, data, splits, features={spec.name: feats}, **kw)
    direct = train_trial(spec, params, data, splits, **kw)
    assert cached.val_accuracy == direct.val_accuracy == cached.history["head"]["val_accuracy"][-1]
    for a, b in zip(cached.model.get_layer(HEAD_LAYER).get_weights(), direct.model.get_layer(HEAD_LAYER).get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with caplog.at_level(logging.WARNING):  # a cache of the wrong shape is ignored, not trusted
        train_trial(spec, params, data, splits, features={spec.name: {"train": feats["val"], "val": feats["val"]}}, **kw)
    assert "do not match" in caplog.text


# -- backends with a fake objective (no training) -------------------------------------------------
PARAMS = TuneSpace().params(["a", "b"], max_blocks=3)


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_backend_max_trials_and_failed_trial(backend, tmp_path):
    calls = []

    def objective(p, report):
        calls.append(p)
        if len(calls) == 2:
            raise RuntimeError("boom")
        report(0, 0.5)
        return 0.5 + p["dropout"] / 10

    kw = {"max_epochs": 2} if backend == "keras-tuner" else {}
    records = get_backend(backend, **kw).search(objective, PARAMS, max_trials=4, deadline=None, seed=0, work_dir=tmp_path)
    assert len(records) == len(calls) == 4
    assert records[1].status == "failed: RuntimeError: boom"
    assert [r.status for r in records if r is not records[1]] == ["ok"] * 3
    assert len({r.trial_id for r in records}) == 4 and {"backbone", "learning_rate"} <= set(records[0].params)


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backend_runs_the_first_values_first(backend, seed, tmp_path):
    # The sampler alone often gives two trials the same backbone; `first` makes both get one.
    def objective(p, report):
        report(0, 0.5)
        return 0.5

    kw = {"max_epochs": 2} if backend == "keras-tuner" else {}
    records = get_backend(backend, **kw).search(objective, PARAMS, max_trials=3, deadline=None, seed=seed,
                                                work_dir=tmp_path, first=[{"backbone": "b"}, {"backbone": "a"}])
    assert [r.params["backbone"] for r in records[:2]] == ["b", "a"] and len(records) == 3
    assert len({r.params["learning_rate"] for r in records[:2]}) == 2  # the other parameters are still sampled


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_backend_deadline_stops_search(backend, tmp_path):
    def objective(p, report):
        time.sleep(0.3)
        return 0.5

    deadline = time.time() + 0.5
    records = get_backend(backend).search(objective, PARAMS, max_trials=20, deadline=deadline, seed=0, work_dir=tmp_path)
    assert 1 <= len(records) <= 3


def test_optuna_pruning_hook(tmp_path):
    import optuna

    class PruneAfterFirstEpoch(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.last_step is not None and trial.last_step >= 1

    def objective(p, report):
        for epoch in range(5):
            if report(epoch, 0.1 * epoch):
                return 0.1 * epoch
        return 0.5

    backend = get_backend("optuna", pruner=PruneAfterFirstEpoch())
    records = backend.search(objective, PARAMS, max_trials=3, deadline=None, seed=0, work_dir=tmp_path)
    assert [r.status for r in records] == ["pruned"] * 3
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in backend.study.trials)


# -- tune() end to end ------------------------------------------------------------------------------
@pytest.mark.slow
def test_tune_keras_tuner_writes_files_and_keeps_best_model(data_splits, specs, tmp_path):
    data, splits = data_splits
    seen = []
    result = tune(specs[:2], data, splits, space=FAST, backend="keras-tuner", max_trials=3, out_dir=tmp_path,
                  progress=lambda *a: seen.append(a))
    trials = result.trials
    assert len(trials) == 3 and list(trials.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert (trials["status"] == "ok").all() and seen[-1][:3] == ("tune", 3, 3)
    assert list(np.loadtxt(tmp_path / "trials.csv", delimiter=",", dtype=str, max_rows=1)[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    best = json.loads((tmp_path / "best.json").read_text())
    assert set(best) == {"backbone", "config", "val_accuracy", "val_loss", "trial_id", "weights"}
    assert (tmp_path / "trials").is_dir() and best["weights"].endswith("model.weights.h5")
    assert best["val_accuracy"] == result.best_val_accuracy == trials["val_accuracy"].max()
    assert best["backbone"] == result.best_backbone and best["config"]["learning_rate"] == result.best_params["learning_rate"]
    # the kept model is the best trial's, still usable after later trials cleared the session
    val = image_dataset(data, splits.val, image_size=16)
    probs = result.best_model.predict(val, verbose=0)
    acc = float(np.mean(probs.argmax(-1) == data.labels[splits.val]))
    assert acc == pytest.approx(result.best_val_accuracy)
    assert result.best_model.evaluate(val, verbose=0, return_dict=True)["accuracy"] == pytest.approx(acc)


def test_tune_optuna_all_pruned_still_returns_a_model(data_splits, specs, tmp_path):
    import optuna

    class PruneAll(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    data, splits = data_splits
    result = tune(specs[:2], data, splits, space=FAST, backend=get_backend("optuna", pruner=PruneAll()),
                  max_trials=2, out_dir=tmp_path)
    assert list(result.trials["status"]) == ["pruned", "pruned"] and list(result.trials["epochs"]) == [1, 1]
    assert result.best_model is not None and (tmp_path / "best.json").exists()


def test_tune_time_budget_stops_running_trial(data_splits, specs, tmp_path):
    data, splits = data_splits
    t0 = time.time()
    result = tune(specs[:1], data, splits, space=FAST, backend="optuna", max_trials=5, time_budget_s=0.05,
                  out_dir=tmp_path)
    assert len(result.trials) == 1 and result.trials["status"][0] == "timeout"
    assert time.time() - t0 < 15


def test_hyperband_starts_with_a_bracket_that_fits_the_trial_cap():
    import keras_tuner as kt

    from autotransfer.tune.keras_tuner_backend import _oracle_class

    def oracle(max_trials):
        return _oracle_class()(objective=kt.Objective("val_accuracy", direction="max"), max_epochs=12, factor=3,
                               max_trials=max_trials, deadline=None)

    big = oracle(100)
    assert big._current_bracket == big._get_num_brackets() - 1  # plain Hyperband order
    small = oracle(4)
    assert small.bracket_trials(small._current_bracket) <= 4
    assert [b["bracket_num"] for b in small._brackets] == [small._current_bracket]
    assert small._get_epochs(small._current_bracket, 0) > big._get_epochs(big._current_bracket, 0)
    assert oracle(1)._current_bracket == 0  # one trial: the full-budget bracket


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["optuna", "keras-tuner"])
def test_interrupted_search_keeps_finished_trials_on_disk(backend, data_splits, specs, tmp_path, monkeypatch):
    tune_module = importlib.import_module("autotransfer.tune.tune")  # the package re-exports tune() under that name

    real = tune_module.train_trial
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C during the second trial
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_module, "train_trial", fake)
    monkeypatch.setattr(tune_module, "reverted_twin", lambda *a: None)  # every trial trains (counted above)
    data, splits = data_splits
    with pytest.raises(KeyboardInterrupt):
        tune(specs[:1], data, splits, space=FAST, backend=backend, max_trials=3, out_dir=tmp_path, seed=0)
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert list(rows["status"]) == ["ok", "interrupted"]
    assert rows["val_accuracy"].iloc[0] > 0
    # Resuming runs the interrupted trial again and stops at the cap: three finished trials in all.
    monkeypatch.setattr(tune_module, "train_trial", real)
    result = tune(specs[:1], data, splits, space=FAST, backend=backend, max_trials=3, out_dir=tmp_path, seed=0,
                  resume=True)
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert (rows["status"] == "ok").sum() == 3 and len(result.summaries) == 3
    assert list(rows["status"]) == (["ok", "interrupted", "ok", "ok"] if backend == "optuna" else ["ok"] * 3)
    assert result.best_trial_id in result.models


@pytest.mark.slow
def test_a_ctrl_c_that_tensorflow_reports_as_another_error_still_interrupts(data_splits, specs, tmp_path,
                                                                           monkeypatch):
    from autotransfer import interrupts

    tune_module = importlib.import_module("autotransfer.tune.tune")
    real, calls, ctrl_c = tune_module.train_trial, [], [True]

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C inside TF's C code: it surfaces as SystemError
            monkeypatch.setitem(interrupts._state, "seen", ctrl_c[0])
            raise SystemError("<built-in function ...> returned a result with an exception set")
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_module, "train_trial", fake)
    data, splits = data_splits
    with pytest.raises(KeyboardInterrupt):
        tune(specs[:1], data, splits, space=FAST, backend="optuna", max_trials=3, out_dir=tmp_path, seed=0)
    assert list(pd.read_csv(tmp_path / "trials.csv")["status"]) == ["ok", "interrupted"]
    ctrl_c[0] = False  # without a Ctrl-C the same error fails the trial
    calls.clear()
    tune(specs[:1], data, splits, space=FAST, backend="optuna", max_trials=3, out_dir=tmp_path / "b", seed=0)
    assert list(pd.read_csv(tmp_path / "b" / "trials.csv")["status"].str[:19]) == [
        "ok", "failed: SystemError", "ok"]


@pytest.mark.slow
def test_fresh_search_discards_an_earlier_one(data_splits, specs, tmp_path):
    data, splits = data_splits
    tune(specs[:1], data, splits, space=FAST, backend="optuna", max_trials=2, out_dir=tmp_path, seed=0)
    result = tune(specs[:1], data, splits, space=FAST, backend="optuna", max_trials=1, out_dir=tmp_path, seed=0)
    assert len(result.trials) == 1 and len(pd.read_csv(tmp_path / "trials.csv")) == 1


def test_a_shared_study_takes_a_trial_for_dead_only_after_its_silence(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from autotransfer.tune.optuna_backend import OptunaBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", direction="maximize")
    asked = study.ask()  # another worker's, before its first heartbeat
    OptunaBackend(role="worker", stale_s=60)._requeue(study)
    assert study.trials[asked.number].state == TrialState.RUNNING
    asked.suggest_float("x", 0.0, 1.0)  # its worker goes on (this raised UpdateFinishedTrialError)
    time.sleep(0.05)
    OptunaBackend(role="worker", stale_s=0.01)._requeue(study)  # silent past stale_s: dead, run again
    assert study.trials[asked.number].state == TrialState.FAIL
    assert study.trials[asked.number].user_attrs["interrupted"] is True
    assert [t.user_attrs.get("rerun_of") for t in study.trials[1:]] == [asked.number]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_first_trials_follow_probe_order_without_augmentation(backend, data_splits, specs, tmp_path):
    # One trial per candidate, best probe first, each unaugmented so it may take the cached-prefix path;
    # the sampler alone would often augment (2 of 3 choices) and repeat a backbone.
    data, splits = data_splits
    space = replace(FAST, unfreeze_blocks=(1, 2), augment=("flip", "none", "flip+crop"))
    order = [specs[1], specs[0]]
    kw = {"max_epochs": 2} if backend == "keras-tuner" else {}
    result = tune(order, data, splits, space=space, backend=get_backend(backend, **kw), max_trials=2,
                  out_dir=tmp_path, seed=1)
    trials = result.trials.sort_values("trial_id") if backend == "optuna" else result.trials
    assert list(trials["backbone"]) == [s.name for s in order]
    assert list(trials["augment"]) == ["none", "none"]
    assert all(trials["prefix_cut"].astype(str).isin(["head", "block_01"]))  # took the cached path


def test_the_refit_reserve_counts_the_epochs_a_refit_replays():
    from autotransfer.final.reserve import refit_reserve
    from autotransfer.tune.tune import REFIT_MIN_SHARE, TrialSummary

    def trial(i, acc, kept, ran, seconds=100.0):
        return TrialSummary(i, "b", {}, acc, 0.5, np.zeros((2, 2)), kept, seconds, False, ran)

    kept_all = trial(0, 0.9, 10, 10)         # a cosine run keeps its last epoch: the whole trial again
    reverted = trial(1, 0.8, 0, 10)          # fine-tuning never beat the head: a head-only refit
    early = trial(2, 0.7, 3, 6)              # early stopping kept epoch 3 of 6
    unknown = trial(3, 0.6, 2, None)         # a record from before the field: assume the whole trial
    assert kept_all.refit_seconds == 100.0 and early.refit_seconds == 50.0 and unknown.refit_seconds == 100.0
    assert reverted.refit_seconds == 100.0 * REFIT_MIN_SHARE
    trials = {t.trial_id: t for t in (kept_all, reverted, early, unknown)}
    assert refit_reserve(trials, members=2, factor=1.5) == 1.5 * (100.0 + 100.0 * REFIT_MIN_SHARE)
    assert refit_reserve(trials, members=4, factor=1.0) == 100.0 + 10.0 + 50.0 + 100.0


def test_the_refit_reserve_counts_the_trials_member_selection_would_pick():
    from autotransfer.budget import FINAL_MEMBER_S
    from autotransfer.final.reserve import refit_reserve
    from autotransfer.tune.tune import TrialSummary

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)

    def probs(right, confidence):
        """Right on a ``right`` share of items, putting ``confidence`` on its answer."""
        guess = np.where(rng.random(len(y)) < right, y, (y + 1) % 3)
        p = np.full((len(y), 3), (1 - confidence) / 2)
        p[np.arange(len(y)), guess] = confidence
        return p

    # The trial ranked first (by its recorded val accuracy, the old rule) predicts worse than the
    # other trial and the head: selection leaves it out, and the reserve with it.
    first = TrialSummary(0, "b", {}, 0.95, 2.0, probs(0.5, 0.6), 10, 300.0, False, 10)
    good = TrialSummary(1, "b", {}, 0.8, 0.4, probs(0.88, 0.8), 4, 40.0, False, 4)
    trials = {0: first, 1: good}
    heads = {"probe:c": probs(0.87, 0.7)}
    assert refit_reserve(trials, members=1, factor=1.5) == 1.5 * 300.0  # one member: the best trial
    assert refit_reserve(trials, members=2, factor=1.5) == 1.5 * 340.0  # no labels: the best two
    picked = refit_reserve(trials, members=2, factor=1.5, y_val=y, heads=heads)
    from autotransfer.final.ensemble import scaled_selection
    from autotransfer.final.members import selection_pool

    choice, _ = scaled_selection(selection_pool([first, good], heads), y, max_members=2)
    assert set(choice.weights) == {"trial 1", "probe:c"}  # the premise
    assert picked == pytest.approx(1.5 * 40.0 + 2 * FINAL_MEMBER_S)
    # Cross-validation: a trial the time left cannot cross-fit is no member; the reserve leaves it out.
    poor = refit_reserve(trials, members=2, factor=5.0, y_val=y, heads=heads, affordable_s=100.0)
    assert poor == pytest.approx(FINAL_MEMBER_S * len(scaled_selection(heads, y, max_members=2)[0].weights))
    assert refit_reserve(trials, members=2, factor=5.0, y_val=y, heads=heads, affordable_s=300.0) == pytest.approx(
        5.0 * 40.0 + 2 * FINAL_MEMBER_S)


def test_kept_trials_skip_copies_of_a_kept_model():
    from autotransfer.tune.tune import TrialSummary, kept_trials

    head = np.array([[0.7, 0.3], [0.2, 0.8]])

    def trial(i, acc, probs):
        return TrialSummary(i, "b", {}, acc, 0.5, probs, 0, 10.0)

    # Trials 1 and 3 reverted to the same warmed-up head: one model, the earlier kept.
    trials = {0: trial(0, 0.9, np.array([[0.9, 0.1], [0.4, 0.6]])), 1: trial(1, 0.8, head),
              2: trial(2, 0.7, np.array([[0.6, 0.4], [0.1, 0.9]])), 3: trial(3, 0.8, head + 1e-7)}
    assert [s.trial_id for s in kept_trials(trials, 3)] == [0, 1, 2]
    assert [s.trial_id for s in kept_trials(trials, 2)] == [0, 1]


def test_under_cross_validation_a_trial_starts_only_with_time_to_cross_fit_it():
    from autotransfer.budget import Deadline
    from autotransfer.tune.tune import REFIT_MIN_SHARE, TrialSummary, crossfit_start_s

    assert crossfit_start_s({}, 3.0) == 0.0
    kept = TrialSummary(0, "b", {}, 0.9, 0.3, None, 10, 200.0, False, 10)  # the best: refits all of its 200 s
    reverted = TrialSummary(1, "b", {}, 0.8, 0.4, None, 0, 60.0, False, 10)
    other = TrialSummary(2, "b", {}, 0.7, 0.5, None, 5, 100.0, False, 10)
    trials = {0: kept, 1: reverted, 2: other}
    assert reverted.refit_seconds == 60.0 * REFIT_MIN_SHARE
    # A median trial (100 s), then the best one's cross-fit and refit (3 x 200 s).
    assert crossfit_start_s(trials, 3.0) == pytest.approx(100.0 + 3.0 * 200.0)
    deadline = Deadline(time.time() + 1000.0, reserve_s=200.0, start_s=700.0)
    assert deadline.can_start() and not deadline.passed()
    deadline.start_s = 850.0
    assert not deadline.can_start() and not deadline.passed()  # a running trial goes on


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_backends_start_no_trial_without_the_time_it_needs(backend, tmp_path):
    from autotransfer.budget import Deadline

    deadline = Deadline(time.time() + 600.0, start_s=700.0)  # a trial and its cross-fit: 700 s
    records = get_backend(backend).search(lambda p, report: 0.5, PARAMS, max_trials=5, deadline=deadline, seed=0,
                                          work_dir=tmp_path)
    assert len(records) == 1  # the first trial always runs


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_the_built_in_backends_pass_the_conformance_check(backend, tmp_path):
    from autotransfer.testing.conformance import check_tuner_backend

    check_tuner_backend(lambda: get_backend(backend), tmp_path)


def test_the_backend_check_catches_a_backend_that_ignores_the_deadline(tmp_path):
    from autotransfer.testing.conformance import check_tuner_backend
    from autotransfer.tune.optuna_backend import OptunaBackend

    class Hasty(OptunaBackend):  # runs every trial whatever the deadline says
        def search(self, objective, params, *, deadline, **kwargs):
            return super().search(objective, params, deadline=None, **kwargs)

    with pytest.raises(AssertionError, match="only the first runs"):
        check_tuner_backend(lambda: Hasty(), tmp_path)


def test_trials_are_ranked_by_the_runs_metric_and_weigh_classes_as_it_says(data_splits, specs, tmp_path):
    """--metric macro_f1 with balanced weights: each trial's record holds its val macro-F1 (what the
    tuner was told), the best trial is the one with the highest, and every trial trained with the
    balanced class-weight parameter (its refits replay it)."""
    from sklearn.metrics import f1_score

    from autotransfer.objective import Objective

    data, splits = data_splits
    result = tune(specs[:2], data, splits, space=replace(FAST, max_epochs=1), backend="optuna", max_trials=2,
                  out_dir=tmp_path, objective=Objective("macro_f1", balanced=True))
    y_val = data.labels[splits.val]
    for s in result.summaries.values():
        expected = f1_score(y_val, s.val_probs.argmax(1), average="macro", labels=np.unique(y_val), zero_division=0)
        assert s.val_score == pytest.approx(expected) and s.score == s.val_score
        assert s.params["class_weight"] == "balanced"
    assert result.best_trial_id == max(result.summaries.values(), key=lambda s: s.key).trial_id

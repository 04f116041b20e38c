"""The final model: ensemble export, refit on train+val, budget use and probe order (tiny modules)."""
from __future__ import annotations

import importlib
import time

import numpy as np
import pytest
import tensorflow as tf

from autotransfer.backbones import BackboneSpec
from autotransfer.data import decode_image_bytes
from autotransfer.final.ensemble import log_loss, temperature_scale
from autotransfer.tune import HEAD_LAYER, TuneSpace, build_task_model, tune
from autotransfer.train.task import build_ensemble
from autotransfer.train.trainer import probe_head_weights, refit_trial

FAST = TuneSpace(unfreeze_blocks=(0, "all"), learning_rate=(1e-3, 1e-2), head_learning_rate=5e-2,
                 patience=(1, 2), dropout=(0.0, 0.2), head_epochs=4, max_epochs=2, batch_size=16)


def _pngs(n: int, size: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [tf.io.encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).numpy() for _ in range(n)]


def test_ensemble_export_serves_the_weighted_mean_of_its_members(tiny_modules, tmp_path):
    from autotransfer.export import export_model, load_exported, make_predict_request, run_predict_request

    rng = np.random.default_rng(1)
    members = []
    for name, size, weight, flip, temp in (("good", 16, 0.5, False, 1.0), ("medium", 24, 0.3, True, 2.0),
                                           ("good", 24, 0.2, False, 0.7)):
        model, bb = build_task_model(BackboneSpec(name, tiny_modules[name], size), 4, dropout=0.0)
        kernel = rng.normal(size=(bb.output_dim, 4)).astype("float32")
        model.get_layer(HEAD_LAYER).set_weights([kernel, np.zeros(4, "float32")])
        members.append((model, size, weight, flip, temp))
    ensemble, sizes = build_ensemble(members)
    assert sizes == [16, 24]
    path = export_model(ensemble, class_names=list("abcd"), input_size=sizes, export_dir=tmp_path, model_name="ens")
    blobs = _pngs(5, 20)
    served = run_predict_request(load_exported(path), make_predict_request(blobs, model_name="ens",
                                                                           signature_name="serving_bytes"))
    expected = 0
    for model, size, weight, flip, temp in members:
        x = np.stack([decode_image_bytes(tf.constant(b), size).numpy() for b in blobs])  # the training decode
        p = temperature_scale(model(x, training=False).numpy(), temp)
        if flip:
            p = 0.5 * (p + temperature_scale(model(x[:, :, ::-1], training=False).numpy(), temp))
        expected = expected + weight * p
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert list(served["label"].astype(str)) == [list("abcd")[i] for i in expected.argmax(1)]
    one = run_predict_request(load_exported(path), make_predict_request(blobs[:1], model_name="ens",
                                                                        signature_name="serving_bytes"))
    np.testing.assert_allclose(one["probabilities"], expected[:1], atol=1e-5)  # batch-1, as TF Serving may send


def test_single_member_is_the_model_itself(tiny_modules):
    model, _ = build_task_model(BackboneSpec("good", tiny_modules["good"], 16), 4, dropout=0.0)
    assert build_ensemble([(model, 16, 1.0, False)]) == (model, [16])
    scaled, _ = build_ensemble([(model, 16, 1.0, False, 2.0)])  # a temperature needs the wrapper
    assert scaled is not model


def test_keep_tuned_serves_a_refit_trial_as_the_mean_of_its_refit_and_tuned_weights(tiny_modules):
    from autotransfer.final.ensemble import EnsembleChoice
    from autotransfer.final.members import FinalModel, Member

    rng = np.random.default_rng(2)

    def model(name: str):
        m, bb = build_task_model(BackboneSpec(name, tiny_modules[name], 16), 4, dropout=0.0)
        m.get_layer(HEAD_LAYER).set_weights([rng.normal(size=(bb.output_dim, 4)).astype("float32"), np.zeros(4, "float32")])
        return m

    spec = BackboneSpec("good", tiny_modules["good"], 16)
    trial = Member("trial 3", spec, 0.75, model("good"), {"unfreeze_blocks": 1}, trial_id=3, refit_model=model("good"),
                   temperature=1.5)
    probe = Member("probe:medium", BackboneSpec("medium", tiny_modules["medium"], 16), 0.25, model("medium"),
                   {"unfreeze_blocks": 0}, refit_model=model("medium"))
    choice = EnsembleChoice({"trial 3": 0.75, "probe:medium": 0.25}, 0.1, 0.9, "trial 3", 0.2, 0.8)
    x = np.random.default_rng(3).uniform(0, 255, (5, 16, 16, 3)).astype("float32")
    p = {id(m): m(x, training=False).numpy() for m in (trial.model, trial.refit_model, probe.model, probe.refit_model)}
    for m in (trial.model, trial.refit_model):  # both halves keep the member's temperature
        p[id(m)] = temperature_scale(p[id(m)], 1.5)

    blend = FinalModel([trial, probe], choice, keep_tuned=True)
    served, _ = blend.model(refit=True)
    expected = 0.375 * p[id(trial.refit_model)] + 0.375 * p[id(trial.model)] + 0.25 * p[id(probe.refit_model)]
    np.testing.assert_allclose(served(x, training=False).numpy(), expected, atol=1e-5)
    assert [d["blended"] for d in blend.to_dict()["members"]] == [True, False]  # a linear head serves its refit alone
    assert blend.to_dict()["models_served"] == 3
    assert [d["temperature"] for d in blend.to_dict()["members"]] == [1.5, 1.0]
    tuned_only, _ = blend.model(refit=False)  # what validation chose: the tuned weights alone
    np.testing.assert_allclose(tuned_only(x, training=False).numpy(),
                               0.75 * p[id(trial.model)] + 0.25 * p[id(probe.model)], atol=1e-5)

    refit_only, _ = FinalModel([trial, probe], choice, keep_tuned=False).model(refit=True)
    np.testing.assert_allclose(refit_only(x, training=False).numpy(),
                               0.75 * p[id(trial.refit_model)] + 0.25 * p[id(probe.refit_model)], atol=1e-5)


def test_members_are_chosen_on_temperature_scaled_probabilities(tiny_modules):
    from types import SimpleNamespace

    from autotransfer.final.ensemble import fit_temperature, greedy_ensemble
    from autotransfer.final.members import choose_members
    from autotransfer.tune.tune import TrialSummary

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 200)
    over = softmax(8 * (rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[y]))  # the more accurate, over-confident
    calibrated = softmax(rng.normal(size=(200, 4)) + 1.7 * np.eye(4)[y])
    assert greedy_ensemble({"trial 0": over, "probe:good": calibrated}, y).single == "probe:good"  # unscaled
    spec = BackboneSpec("good", tiny_modules["good"], 16)
    model, bb = build_task_model(spec, 4, dropout=0.0)
    summary = TrialSummary(trial_id=0, backbone="good", params={"unfreeze_blocks": 1}, val_accuracy=0.8, val_loss=1.0,
                           val_probs=over, finetune_epochs=2, seconds=1.0)
    tuned = SimpleNamespace(summaries={0: summary}, models={0: model}, best_trial_id=0)
    heads = {"probe:good": ([np.zeros((bb.output_dim, 4), "float32"), np.zeros(4, "float32")], calibrated)}
    final = choose_members(tuned, heads, {"good": spec}, y, num_classes=4, max_members=4, keep_tuned=False)
    assert final.choice.single == "trial 0"
    trial = next(m for m in final.members if m.name == "trial 0")
    assert trial.temperature == pytest.approx(fit_temperature(over, y)) and trial.temperature > 2.0
    assert final.choice.single_log_loss == pytest.approx(log_loss(temperature_scale(over, trial.temperature), y))
    assert final.to_dict()["members"][0]["temperature"] == final.members[0].temperature


def test_refit_trains_on_the_indices_it_is_given(tiny_modules, monkeypatch):
    from autotransfer.data import load_data, make_splits
    from autotransfer.probe import extract_features
    from autotransfer.backbones import HubBackbone
    from autotransfer.data import image_dataset
    from autotransfer.testing import pattern_images

    trainer = importlib.import_module("autotransfer.train.trainer")
    x, y = pattern_images(16, seed=1)
    data = load_data(x, labels=y)
    splits = make_splits(data, seed=0)
    idx = np.concatenate([splits.train, splits.val])
    spec = BackboneSpec("good", tiny_modules["good"], 16)
    seen = {}
    real = trainer._train_stream

    def spy(data_, indices, **kw):
        seen["indices"], seen["augment"] = np.asarray(indices), kw["augment"]
        return real(data_, indices, **kw)

    monkeypatch.setattr(trainer, "_train_stream", spy)
    space = FAST.__class__(**{**FAST.__dict__, "head_warmup": "probe"})
    params = {"unfreeze_blocks": 1, "learning_rate": 1e-2, "patience": 1, "dropout": 0.0, "augment": "crop"}
    model, timed_out = refit_trial(spec, params, data, idx, space=space, num_classes=4, finetune_epochs=2)
    assert not timed_out
    np.testing.assert_array_equal(seen["indices"], idx)  # train+val rows, nothing else
    assert seen["augment"] == "crop"
    # head-only refit: the head is the logistic regression on the train+val features
    head_only, _ = refit_trial(spec, {**params, "unfreeze_blocks": 0}, data, idx, space=space, num_classes=4,
                               finetune_epochs=0)
    feats = extract_features(HubBackbone(spec.handle), image_dataset(data, idx, image_size=16, with_labels=False))
    kernel, _ = probe_head_weights(feats, np.asarray(data.labels)[idx], 4)
    np.testing.assert_allclose(head_only.get_layer(HEAD_LAYER).get_weights()[0], kernel, rtol=1e-4, atol=1e-5)


def test_refit_does_the_linear_heads_first_so_a_trial_that_no_longer_fits_is_skipped(monkeypatch):
    from types import SimpleNamespace

    from autotransfer.final.ensemble import EnsembleChoice
    from autotransfer.final.members import FinalModel, Member

    final_mod = importlib.import_module("autotransfer.final.members")
    order, clock = [], {"left": 50.0}

    def head(features, labels, num_classes, seed=0, balanced=False, standardize=True):
        order.append("probe")
        clock["left"] -= 20.0  # the heads' refit time is spent before any trial is checked
        return [np.zeros((features.shape[1], num_classes), "float32"), np.zeros(num_classes, "float32")]

    def trial_refit(*args, **kwargs):
        order.append("trial")
        return object(), False

    monkeypatch.setattr(final_mod, "probe_head_weights", head)
    monkeypatch.setattr(final_mod, "refit_trial", trial_refit)
    monkeypatch.setattr(final_mod, "_head_model", lambda spec, head, k: "head model")
    trial = Member("trial 1", BackboneSpec("a", "a", 16), 0.7, None, {}, refit_seconds=40.0, trial_id=1)
    probe = Member("probe:b", BackboneSpec("b", "b", 16), 0.3, None, {})
    final = FinalModel([trial, probe], EnsembleChoice({"trial 1": 0.7, "probe:b": 0.3}, 0.1, 0.9, "trial 1", 0.2, 0.8))
    data = SimpleNamespace(labels=np.arange(10) % 4, num_classes=4)
    final_mod.refit_members(final, data, np.arange(10), features={("b", 16): np.zeros((10, 8))}, space=None,
                            deadline=SimpleNamespace(remaining=lambda: clock["left"]), factor=1.0)
    # Heaviest first would have started the 40 s trial with 50 s left and the head after it, past the deadline.
    assert order == ["probe"]
    assert probe.refit_model == "head model" and trial.refit_model is None
    assert trial.refit_note == "kept the tuned weights: refit needs ~40 s, 30 s left"


@pytest.mark.slow
def test_time_budget_without_a_trial_cap_runs_until_the_deadline(data_splits, tiny_modules, tmp_path):
    data, splits = data_splits
    specs = [BackboneSpec(n, tiny_modules[n], 16) for n in ("good", "medium")]
    space = FAST.__class__(**{**FAST.__dict__, "unfreeze_blocks": (0, 0), "head_epochs": 1})
    t0 = time.time()
    result = tune(specs, data, splits, space=space, backend="optuna", max_trials=None, time_budget_s=12,
                  out_dir=tmp_path, seed=0)
    took = time.time() - t0
    # Tuning stopped at the deadline, not after a fixed number of trials: asserted on time, since
    # how many trials fit in 12 s depends on the machine (6 on a loaded CI machine, more elsewhere).
    assert took >= 12 and len(result.trials) >= 2
    assert took < 12 + 10  # the last trial starts before the deadline and stops at it
    assert (result.trials["status"] == "timeout").sum() <= 1  # only the trial the deadline cut
    with pytest.raises(Exception, match="max_trials, a time budget, or both"):
        tune(specs, data, splits, space=space, backend="optuna", max_trials=None, out_dir=tmp_path)


def test_trials_fine_tune_on_the_augmented_stream(tiny_modules, monkeypatch):
    from autotransfer.data import load_data, make_splits
    from autotransfer.testing import pattern_images

    trainer = importlib.import_module("autotransfer.train.trainer")
    x, y = pattern_images(16, seed=1)
    data = load_data(x, labels=y)
    splits = make_splits(data, seed=0)
    kinds, real = [], trainer.augment_dataset

    def spy(ds, kind, **kw):
        kinds.append(kind)
        return real(ds, kind, **kw)

    monkeypatch.setattr(trainer, "augment_dataset", spy)
    params = {"unfreeze_blocks": 1, "learning_rate": 1e-2, "patience": 1, "dropout": 0.0, "augment": "flip"}
    out = trainer.train_trial(BackboneSpec("good", tiny_modules["good"], 16), params, data, splits, space=FAST,
                              num_classes=4)
    # What flip does to a batch is tests/tune/test_augment.py's; here: fine-tuning trains on that stream.
    assert kinds == ["flip"] and out.params["augment"] == "flip" and len(out.history["finetune"]["loss"]) >= 1

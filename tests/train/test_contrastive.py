"""The SetFit-style contrastive trial: pair sampling, the cached path against the full one, the
trial pulling classes apart, its revert, its refit, and its parameters through both tuner backends."""
from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from autotransfer.space import TuneSpace
from autotransfer.train.contrastive import pair_batches, sample_pairs

SPACE = TuneSpace(head_warmup="probe", trial_type=("contrastive",), contrastive_steps=(30, 30), batch_size=(8,))
PARAMS = {"unfreeze_blocks": 2, "learning_rate": 1e-2, "dropout": 0.0, "patience": 2, "trial_type": "contrastive",
          "contrastive_steps": 30, "batch_size": 8, "pairs_per_example": 4}


def test_pairs_positives_share_a_class_negatives_do_not_and_a_seed_repeats_them():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    a, b, t = sample_pairs(labels, pairs_per_example=6, seed=3)
    assert len(a) == len(labels) * 6  # per iteration one positive and one negative per item
    assert np.all(labels[a[t == 1]] == labels[b[t == 1]]) and np.all(a[t == 1] != b[t == 1])
    assert np.all(labels[a[t == 0]] != labels[b[t == 0]])
    assert np.bincount(a, minlength=len(labels)).tolist() == [6] * len(labels)
    again = sample_pairs(labels, pairs_per_example=6, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, t), again))
    assert not np.array_equal(a, sample_pairs(labels, pairs_per_example=6, seed=4)[0])


def test_batches_group_pairs_of_similar_length_and_cover_every_pair():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=40)
    a, b, _ = sample_pairs(rng.integers(0, 3, size=40), pairs_per_example=4, seed=0)
    batches = pair_batches(a, b, batch_size=8, lengths=lengths, seed=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(a)))
    longer = np.maximum(lengths[a], lengths[b])
    padded = sum(len(x) * longer[x].max() for x in batches)
    unsorted = sum(len(x) * longer[x].max() for x in pair_batches(a, b, batch_size=8, lengths=None, seed=0))
    assert padded < unsorted  # less padding than batches in sampling order


@pytest.fixture(scope="module")
def tiny_minilm(tmp_path_factory):
    pytest.importorskip("tensorflow_text")
    from autotransfer.testing.minilm import write_tiny_minilm

    return str(write_tiny_minilm(tmp_path_factory.mktemp("minilm")))


@pytest.fixture(scope="module")
def texts_data():
    from autotransfer.data import load_data, make_splits
    from autotransfer.testing import pattern_texts

    texts, labels = pattern_texts(12, num_classes=3, seed=0)
    data = load_data(texts, labels=labels)
    return data, make_splits(data, seed=0)


@pytest.mark.slow  # builds the tiny MiniLM module
def test_cached_hidden_states_give_the_full_paths_embeddings_after_training(tiny_minilm, texts_data):
    import tensorflow as tf

    from autotransfer.backbones import HubBackbone
    from autotransfer.train.contrastive import contrastive_fit, pair_encoder
    from autotransfer.train.prefix import PrefixCacheSettings

    data, splits = texts_data
    bb = HubBackbone(tiny_minilm)
    assert bb.prefix_cut(1) == "layer_2" and bb.prefix_cut(2) == "layer_1" and bb.prefix_cut(3) is None
    texts = tf.constant([data.items[i] for i in splits.val])
    for cut in ("layer_1", "layer_2"):
        np.testing.assert_allclose(bb.suffix(cut, bb.prefix(cut, texts)), bb(texts), atol=1e-5)
    bb.set_unfrozen_blocks(2)
    cached = pair_encoder(bb, data, splits.train, size=0, unfreeze_blocks=2)
    full = pair_encoder(bb, data, splits.train, size=0, unfreeze_blocks=2, prefix_cache=PrefixCacheSettings(enabled=False))
    assert cached.cut == "layer_1" and full.cut is None
    labels = np.asarray(data.labels)[splits.train]
    before = full.embed_all()
    contrastive_fit(cached, labels, {**PARAMS, "contrastive_steps": 3}, seed=0)  # weights move, through the cache
    after = full.embed_all()
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(cached.embed_all(), after, atol=1e-4)


def _cosine_gap(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean same-class cosine minus mean different-class cosine (pairs of distinct items)."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cos, same = e @ e.T, labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return float(cos[same & off].mean() - cos[~same].mean())


def _train_embeddings(model, data, rows) -> np.ndarray:
    import tensorflow as tf

    from autotransfer.train.task import BACKBONE_LAYER

    return np.asarray(model.get_layer(BACKBONE_LAYER)(tf.constant([data.items[i] for i in rows])))


@pytest.mark.slow  # two trials on the tiny MiniLM module
def test_a_contrastive_trial_pulls_classes_apart_and_is_kept_only_when_better(tiny_minilm, texts_data):
    from autotransfer.backbones import BackboneSpec
    from autotransfer.train.task import build_task_model
    from autotransfer.train.trainer import train_trial

    data, splits = texts_data
    spec = BackboneSpec("tiny_minilm", tiny_minilm, 0)
    labels = np.asarray(data.labels)[splits.train]
    frozen, _ = build_task_model(spec, 3, dropout=0.0)
    gap_before = _cosine_gap(_train_embeddings(frozen, data, splits.train), labels)
    out = train_trial(spec, PARAMS, data, splits, space=SPACE, num_classes=3, seed=0)
    phase = out.history["finetune"]
    assert len(phase["step_loss"]) == 30 and phase["prefix_cut"] == "layer_1" and out.params["prefix_cut"] == "layer_1"
    assert np.mean(phase["step_loss"][-5:]) < np.mean(phase["step_loss"][:5])
    assert out.finetune_epochs == 1 and out.val_accuracy > out.head_val_accuracy  # kept: it beat the frozen head on val
    assert _cosine_gap(_train_embeddings(out.model, data, splits.train), labels) > gap_before + 0.05
    # A learning rate too small to change anything: no better on val, so the frozen head is kept, and recorded.
    still = train_trial(spec, {**PARAMS, "learning_rate": 1e-12, "contrastive_steps": 2}, data, splits, space=SPACE,
                        num_classes=3, seed=0)
    assert still.finetune_epochs == 0 and still.val_accuracy == still.head_val_accuracy
    assert len(still.history["finetune"]["step_loss"]) == 2
    np.testing.assert_allclose(_train_embeddings(still.model, data, splits.train),
                               _train_embeddings(frozen, data, splits.train), atol=1e-6)


@pytest.mark.slow  # a contrastive refit on the tiny MiniLM module
def test_a_kept_contrastive_trial_refits_on_other_rows(tiny_minilm, texts_data):
    import time

    from autotransfer.backbones import BackboneSpec
    from autotransfer.train import contrastive
    from autotransfer.train.trainer import refit_trial

    data, splits = texts_data
    spec = BackboneSpec("tiny_minilm", tiny_minilm, 0)
    seen = []
    real = contrastive.contrastive_fit

    def spy(encoder, labels, params, **kw):
        seen.append((len(labels), int(params["contrastive_steps"])))
        return real(encoder, labels, params, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(contrastive, "contrastive_fit", spy)
    try:
        model, timed_out = refit_trial(spec, {**PARAMS, "backbone": "tiny_minilm"}, data, (splits.train, splits.val),
                                       space=SPACE, num_classes=3, finetune_epochs=1, seed=0)
        _, late = refit_trial(spec, PARAMS, data, splits.train, space=SPACE, num_classes=3, finetune_epochs=1,
                              deadline=time.time() - 1)
    finally:
        mp.undo()
    assert not timed_out and late
    assert seen[0] == (len(splits.train) + len(splits.val), 30)  # the trial's steps, on the refit's rows
    probs = np.asarray(model(np.asarray([data.items[i] for i in splits.val], dtype=object)))
    assert probs.shape == (len(splits.val), 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_a_fine_tuning_space_renders_what_it_did_and_a_contrastive_one_adds_its_fields():
    names = [p.name for p in TuneSpace().params(["a"], 3)]
    assert "trial_type" not in names and "contrastive_steps" not in TuneSpace().fixed_defaults()
    space = TuneSpace.from_dict({"trial_type": ["finetune", "contrastive"], "contrastive_steps": [10, 40],
                                 "pairs_per_example": [2, 8]}, "x")
    specs = {p.name: p for p in space.params(["a"], 3)}
    assert specs["trial_type"].choices == ("finetune", "contrastive")
    assert (specs["contrastive_steps"].low, specs["contrastive_steps"].high) == (10, 40)
    assert specs["pairs_per_example"].choices == (2, 8)
    assert TuneSpace.from_dict(space.to_dict(), "x") == space
    from autotransfer.errors import UserInputError

    with pytest.raises(UserInputError, match="pairs_per_example must be an even integer"):
        TuneSpace.from_dict({"pairs_per_example": 3}, "x")
    with pytest.raises(UserInputError, match="trial_type must be one of finetune, contrastive"):
        TuneSpace.from_dict({"trial_type": "setfit"}, "x")


@pytest.mark.slow  # whole searches on both backends
@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_contrastive_params_reach_the_fit_through_both_backends(backend, tiny_minilm, texts_data, tmp_path):
    from autotransfer.backbones import BackboneSpec
    from autotransfer.train import contrastive
    from autotransfer.tune import tune

    data, splits = texts_data
    space = TuneSpace(head_warmup="probe", trial_type=("contrastive",), contrastive_steps=(2, 6), batch_size=(4, 8),
                      unfreeze_blocks=(1, 2), learning_rate=(1e-4, 1e-2), pairs_per_example=(2, 4))
    seen = []
    real = contrastive.contrastive_fit

    def spy(encoder, labels, params, **kw):
        bb = encoder.backbone
        names = {id(v): b for b in bb.blocks for v in bb.block_variables(b)}
        open_blocks = [b for b in bb.blocks if any(names.get(id(v)) == b and v.trainable for v in bb.block_variables(b))]
        out = real(encoder, labels, params, **kw)
        seen.append({"params": dict(params), "open": open_blocks, "blocks": bb.blocks, "steps": len(out["step_loss"]),
                     "cut": encoder.cut})
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(contrastive, "contrastive_fit", spy)
    try:
        tune([BackboneSpec("tiny_minilm", tiny_minilm, 0)], data, splits, space=space, backend=backend, max_trials=3,
             out_dir=tmp_path, seed=1)
    finally:
        mp.undo()
    rows = pd.read_csv(tmp_path / "trials.csv").set_index("trial_id")
    ran = rows[rows["status"] == "ok"]
    assert len(seen) == len(ran) >= 2 and set(ran["trial_type"]) == {"contrastive"}
    for (_, row), s in zip(ran.iterrows(), seen):
        k = int(row["unfreeze_blocks"])
        assert s["open"] == s["blocks"][len(s["blocks"]) - k:]  # exactly the trial's last k blocks
        assert s["steps"] == int(row["contrastive_steps"]) == s["params"]["contrastive_steps"]
        assert s["params"]["learning_rate"] == pytest.approx(row["learning_rate"])
        assert s["params"]["batch_size"] == int(row["batch_size"])
        assert s["params"]["pairs_per_example"] == int(row["pairs_per_example"])
        assert s["cut"] == s["blocks"][len(s["blocks"]) - k]
    assert importlib.import_module("autotransfer.train.contrastive").contrastive_fit is real

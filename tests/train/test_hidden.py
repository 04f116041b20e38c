"""Fine-tuning text trials on cached hidden states: the length-bucketed stream, the cached path
against the full one (same batches, same weights: same val probabilities), and refits."""
from __future__ import annotations

import numpy as np
import pytest

from autotransfer.space import TuneSpace
from autotransfer.train.hidden import HiddenStates, epoch_batches, hidden_stream, length_batches, predict_in_order

#: One batch holds every training item, so both paths take the same gradient steps.
SPACE = TuneSpace(head_warmup="probe", batch_size=(64,), max_epochs=1)
PARAMS = {"unfreeze_blocks": 2, "learning_rate": 3e-2, "dropout": 0.0, "patience": 2, "batch_size": 64,
          "lr_schedule": "constant", "max_epochs": 1}


def _states(lengths: list[int], hidden: int = 3) -> HiddenStates:
    return HiddenStates([np.full((n, hidden), i + 1, np.float32) for i, n in enumerate(lengths)])


def test_each_epoch_covers_every_item_once_in_batches_of_similar_length():
    lengths = np.random.default_rng(0).integers(1, 80, size=203)
    one, two = epoch_batches(lengths, 8, seed=0, epoch=0), epoch_batches(lengths, 8, seed=0, epoch=1)
    for batches in (one, two):
        assert sorted(np.concatenate(batches).tolist()) == list(range(203))
        assert len(batches) == -(-203 // 8) and sum(len(b) < 8 for b in batches) == 1  # one partial batch
    assert not all(np.array_equal(a, b) for a, b in zip(one, two))  # reshuffled each epoch
    assert all(np.array_equal(a, b) for a, b in zip(one, epoch_batches(lengths, 8, seed=0, epoch=0)))  # seeded
    padded = sum(len(b) * lengths[b].max() for b in one)
    unsorted = sum(len(b) * lengths[b].max() for b in length_batches(lengths, 8, window=1))
    assert padded < 0.8 * unsorted  # grouping by length saves padding


def test_the_stream_pads_each_batch_to_its_longest_item():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    states = _states(lengths)
    labels = np.arange(7) % 3
    seen = []
    for (hidden, mask), y in hidden_stream(states, labels, batch_size=3, num_classes=3, seed=1).take(3):
        mask = mask.numpy()
        rows = (hidden.numpy()[:, 0, 0] - 1).astype(int)  # item i's states are all i + 1
        assert mask.shape[1] == max(lengths[r] for r in rows)
        assert mask.sum(axis=1).tolist() == [lengths[r] for r in rows]
        assert np.all(hidden.numpy()[mask == 0] == 0) and np.argmax(y, -1).tolist() == labels[rows].tolist()
        seen += rows.tolist()
    assert sorted(seen) == list(range(7))  # three batches: one epoch


def test_predictions_come_back_in_item_order():
    states = _states([4, 1, 6, 2, 9])
    out = predict_in_order(lambda x: x[0][:, :1, 0] * 10, states, batch_size=2)
    assert out[:, 0].tolist() == [10, 20, 30, 40, 50]


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


def _one_epoch(spec, data, splits, enabled: bool) -> dict:
    """A seeded task model with the LP-FT head, fine-tuned one epoch on one path: its val
    probabilities before (``head``), after on that path (``probs``) and from raw strings
    (``on_strings``), the cut and the epoch's history."""
    import keras

    from autotransfer import modalities
    from autotransfer.train import trainer
    from autotransfer.train.prefix import PrefixCacheSettings

    keras.utils.set_random_seed(0)
    _, _, model, backbone, effective = trainer._trial_model(spec, PARAMS, SPACE, 3, None)
    labels = np.asarray(data.labels)
    feats = trainer._head_features(None, spec, backbone, data, {"train": splits.train})["train"]
    model.get_layer(trainer.HEAD_LAYER).set_weights(trainer.probe_head_weights(feats, labels[splits.train], 3))
    val = list(modalities.for_data(data).dataset(data, splits.val, batch_size=64))
    head = trainer.predict_probs(model, val)
    history, predict = trainer._fine_tune_phase(
        model, backbone, PARAMS, effective, data, splits, size=0, num_classes=3, seed=0, val_batches=val,
        prefix_cache=PrefixCacheSettings(enabled=enabled), callbacks=[])
    return {"head": head, "probs": predict(), "on_strings": trainer.predict_probs(model, val),
            "cut": effective["prefix_cut"], "history": history}


@pytest.mark.slow  # two fine-tuning epochs on the tiny MiniLM module
def test_the_cached_path_gives_the_full_paths_val_probabilities_after_an_epoch(tiny_minilm, texts_data):
    from autotransfer.backbones import BackboneSpec

    data, splits = texts_data
    spec = BackboneSpec("tiny_minilm", tiny_minilm, 0)
    full, cached = (_one_epoch(spec, data, splits, enabled=e) for e in (False, True))
    assert full["cut"] == "" and cached["cut"] == "layer_1"
    assert np.abs(cached["probs"] - cached["head"]).max() > 1e-2  # the epoch moved the weights
    np.testing.assert_allclose(cached["probs"], cached["on_strings"], atol=1e-5)  # same weights, both paths
    np.testing.assert_allclose(cached["probs"], full["probs"], atol=1e-4)  # same start, same batch
    np.testing.assert_allclose(cached["history"]["val_loss"], full["history"]["val_loss"], atol=1e-4)


@pytest.mark.slow  # three refits on the tiny MiniLM module
def test_a_refit_takes_the_cached_path_and_matches_the_full_one(tiny_minilm, texts_data, monkeypatch):
    import tensorflow as tf

    from autotransfer.backbones import BackboneSpec
    from autotransfer.train import hidden
    from autotransfer.train.prefix import PrefixCacheSettings
    from autotransfer.train.trainer import refit_trial

    data, splits = texts_data
    spec = BackboneSpec("tiny_minilm", tiny_minilm, 0)
    computed, states = [], hidden.hidden_states
    monkeypatch.setattr(hidden, "hidden_states", lambda bb, cut, texts, **kw: computed.append((cut, len(texts)))
                        or states(bb, cut, texts, **kw))
    texts = tf.constant([data.items[i] for i in splits.val])
    probs = {}
    for enabled in (True, False):
        model, timed_out = refit_trial(spec, PARAMS, data, (splits.train, splits.val), space=SPACE, num_classes=3,
                                       finetune_epochs=1, prefix_cache=PrefixCacheSettings(enabled=enabled))
        probs[enabled] = np.asarray(model(texts))
        assert not timed_out
    assert computed == [("layer_1", len(splits.train) + len(splits.val))]  # once, and only with the cache on
    head_only, _ = refit_trial(spec, PARAMS, data, (splits.train, splits.val), space=SPACE, num_classes=3,
                               finetune_epochs=0)
    assert np.abs(probs[True] - np.asarray(head_only(texts))).max() > 1e-2  # the refit's epoch moved the weights
    np.testing.assert_allclose(probs[True], probs[False], atol=1e-4)

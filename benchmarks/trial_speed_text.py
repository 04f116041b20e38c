"""``trial_speed.py --text``: a text fine-tuning epoch on cached hidden states against the full encoder.

MiniLM (``zoo://all_minilm_l6_v2/feature_vector``) with its last 1 and 2 layers open, on a seeded
sample of ``--texts`` real texts of each data set (tweets: short; drug reviews: long), 80% train /
20% val, batch 16, constant LR 1e-4, dropout 0, no class weights. In one process, per setting:

* today's path: the whole task model on raw strings, the trial's shuffled stream (one step first
  to trace, then ``--repeats`` timed epochs);
* the cut: each item's hidden states entering the first open layer computed once (timed
  separately: ``states once``), then ``--repeats`` timed epochs of the model from the cut, batches
  of similar length padded to their longest (:mod:`autotransfer.train.hidden`), after one epoch
  that traces;
* equality: from the same starting weights, one epoch on the cut and one epoch of the whole model
  on the same batches of raw strings; ``max |dlogit|`` is the largest difference between the two
  trained models' val logits (log-probabilities centred per row: the head's logits up to a
  per-row constant), and ``same w`` the cut's against the whole model's on strings at the
  cut's trained weights.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).parent))
import text_accuracy as ta  # noqa: E402
from trial_speed import EpochTimer  # noqa: E402

HANDLE = "zoo://all_minilm_l6_v2/feature_vector"
BATCH = 16


def texts_of(name: str, n: int, seed: int = 0) -> tuple[Any, Any]:
    """(LabelledData, Splits) of a seeded sample of ``n`` texts of ``name`` (80/20 train/val)."""
    from autotransfer.data import load_data
    from autotransfer.data.split import Splits

    wheels = ta.ROOT / ".cache" / "wheels"  # where text_accuracy.py keeps them
    frame = ta.read_tweets(wheels) if name == "tweets" else ta.read_drugreviews(wheels)[0]
    frame = frame.iloc[np.random.default_rng(seed).permutation(len(frame))[:n]].reset_index(drop=True)
    data = load_data(frame["text"].tolist(), labels=frame["label"].tolist())
    cut = int(0.8 * n)
    return data, Splits(train=np.arange(cut), val=np.arange(cut, n), test=np.arange(n, n))


def _logits(probs: np.ndarray) -> np.ndarray:
    log = np.log(np.clip(probs, 1e-30, None))
    return log - log.mean(axis=1, keepdims=True)


def _fresh(spec: Any, data: Any, blocks: int, params: dict) -> tuple[keras.Model, Any, list]:
    """The seeded task model with ``blocks`` layers open, and its starting weights."""
    from autotransfer.train import trainer

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model, backbone = trainer.build_task_model(spec, data.num_classes, dropout=0.0)
    backbone.set_unfrozen_blocks(blocks)
    return model, backbone, model.get_weights()


def _timed_fit(model: keras.Model, backbone: Any, stream: Any, steps: int, params: dict, *, warm_epochs: int,
               repeats: int) -> list[float]:
    """Compile, run ``warm_epochs`` epochs (0: one step) to trace, then time ``repeats`` epochs."""
    from autotransfer.train import trainer

    trainer.compile_fine_tune(model, backbone, params, steps=steps, max_epochs=1)
    model.fit(stream, epochs=1, steps_per_epoch=steps if warm_epochs else 1, verbose=0)
    timer = EpochTimer()
    model.fit(stream, epochs=repeats, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return timer.seconds


def run_one(spec: Any, data: Any, splits: Any, blocks: int, repeats: int) -> dict:
    """Today's path, the cut and the equality check for one setting (see the module docstring)."""
    from autotransfer import modalities
    from autotransfer.train import hidden as hd
    from autotransfer.train import trainer
    from autotransfer.train.prefix import PrefixCacheSettings

    params = {"learning_rate": 1e-4, "lr_schedule": "constant", "batch_size": BATCH, "augment": "none",
              "unfreeze_blocks": blocks, "layer_decay": 1.0}
    val = list(modalities.for_data(data).dataset(data, splits.val, batch_size=64))
    kw = {"size": 0, "num_classes": data.num_classes, "seed": 0, "val_batches": val}
    model, backbone, start = _fresh(spec, data, blocks, params)
    fit_model, stream, steps, _, _, _ = trainer._fine_tune_inputs(
        model, backbone, params, data, splits, prefix_cache=PrefixCacheSettings(enabled=False), **kw)
    full_s = _timed_fit(fit_model, backbone, stream, steps, params, warm_epochs=0, repeats=repeats)

    model.set_weights(start)
    computed, compute = [], hd.hidden_states  # the states the trainer computes: train's first
    hd.hidden_states = lambda *a, **k: computed.append(compute(*a, **k)) or computed[-1]
    t0 = time.perf_counter()
    try:
        fit_model, stream, steps, _, cut, predict = trainer._fine_tune_inputs(
            model, backbone, params, data, splits, prefix_cache=PrefixCacheSettings(), **kw)
    finally:
        hd.hidden_states = compute
    once = time.perf_counter() - t0
    trainer.compile_fine_tune(fit_model, backbone, params, steps=steps, max_epochs=1)
    fit_model.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0)  # epoch 0: traces; the equality epoch
    cached_probs, same_w = predict(), trainer.predict_probs(model, val)
    timer = EpochTimer()
    fit_model.fit(stream, epochs=repeats, steps_per_epoch=steps, verbose=0, callbacks=[timer])

    # The whole model from the same start, on the cut's epoch-0 batches of raw strings.
    model.set_weights(start)
    lengths = computed[0].lengths
    texts, labels = np.asarray(data.items, object)[splits.train], np.asarray(data.labels)[splits.train]
    eye = np.eye(data.num_classes, dtype=np.float32)
    batches = [(tf.constant(list(texts[b])), eye[labels[b]]) for b in hd.epoch_batches(lengths, BATCH, seed=0, epoch=0)]
    trainer.compile_fine_tune(model, backbone, params, steps=steps, max_epochs=1)
    model.fit(tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=(
        tf.TensorSpec([None], tf.string), tf.TensorSpec([None, data.num_classes], tf.float32))),
        epochs=1, verbose=0)
    full_probs = trainer.predict_probs(model, val)
    return {"cut": cut, "tokens": float(lengths.mean()), "full": float(np.median(full_s)), "cached": float(np.median(timer.seconds)), "once": once,
            "dlogit": float(np.abs(_logits(cached_probs) - _logits(full_probs)).max()),
            "same_w": float(np.abs(_logits(cached_probs) - _logits(same_w)).max()),
            "full_runs": full_s, "cached_runs": timer.seconds}


def main(*, texts: int, blocks: list[int], repeats: int, datasets: list[str]) -> None:
    from autotransfer.backbones import BackboneSpec

    spec = BackboneSpec("all_minilm_l6_v2", HANDLE, 0)
    print(f"MiniLM, {texts} texts per data set (80% train / 20% val), batch {BATCH}, constant LR 1e-4, "
          f"median of {repeats} timed epochs per path", flush=True)
    print(f"{'data':<13}{'tokens/text':>12}{'blocks':>7}{'cut':>9}{'full s/ep':>11}{'cut s/ep':>10}{'ratio':>7}"
          f"{'states once s':>15}{'max |dlogit|':>14}{'same w':>9}", flush=True)
    for name in datasets:
        data, splits = texts_of(name, texts)
        for n in blocks:
            r = run_one(spec, data, splits, n, repeats)
            print(f"{name:<13}{r['tokens']:>12.1f}{n:>7}{r['cut']:>9}{r['full']:>11.2f}{r['cached']:>10.2f}"
                  f"{r['cached'] / r['full']:>7.2f}{r['once']:>15.1f}{r['dlogit']:>14.1e}{r['same_w']:>9.1e}"
                  f"   runs full {np.round(r['full_runs'], 2).tolist()} cut {np.round(r['cached_runs'], 2).tolist()}",
                  flush=True)

"""Fine-tuning epoch time with the frozen-prefix cache against the full forward pass.

Usage: python benchmarks/trial_speed.py [--images 500] [--blocks 1,2,4] [--epochs 3]
       python benchmarks/trial_speed.py --text [--texts 500] [--blocks 1,2] [--repeats 2]
  (needs the zoo: `autotransfer zoo build`; ``--text``: MiniLM, see :mod:`trial_speed_text`)

On scikit-learn's digits (real scans, upsampled to each backbone's size; ``--images`` of them,
80% train / 20% val), for EfficientNet-Lite0 at 224 px and Lite2 at 260 px and each number of
unfrozen trailing blocks, trains twice from the same weights and seed: once the full network over images, once
from the cut on cached prefix activations (:mod:`autotransfer.train.prefix`).
Both start from the same seeded task model with the same probe head and fine-tune for
``--epochs`` epochs (no early stopping). Prints the median time of the epochs after the first
(which traces) on each path, their ratio (target <= 0.4 at 1-2 blocks), the one-time cost of
computing the prefix, and the largest difference between the whole network's val probabilities
after training on the two paths (target <= 1e-4).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import keras
import numpy as np

from autotransfer.backbones import BackboneSpec
from autotransfer.data import load_data
from autotransfer.data.split import Splits
from autotransfer.probe.cache import ENV_VAR
from autotransfer.train.prefix import PrefixCacheSettings
from autotransfer.tune import TuneSpace

MODELS = [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)]


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._t)


def digits(n: int, seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(seed).permutation(len(d.target))[:n]
    # 8x8 scans in 0..16 -> uint8 RGB; image_dataset resizes them to the backbone's size.
    x = np.repeat((d.images[idx] * (255 / 16)).astype(np.uint8)[..., None], 3, axis=-1)
    data = load_data(x, labels=d.target[idx])
    cut = int(0.8 * n)
    return data, Splits(train=np.arange(cut), val=np.arange(cut, n), test=np.arange(n, n))


def run_one(name: str, size: int, blocks: int, data, splits, epochs: int) -> dict:
    """Fine-tune the same start (seeded task model, probe head) on both paths for ``epochs``
    epochs, no early stopping; the val probabilities are the whole network's, on images."""
    from autotransfer.data import image_dataset
    from autotransfer.train import trainer

    spec = BackboneSpec(name, f"zoo://{name}/feature_vector", size)
    space = TuneSpace(unfreeze_blocks=(blocks, blocks), learning_rate=(1e-3, 1e-3), max_epochs=epochs, batch_size=32)
    params = {**space.fixed_defaults(), "unfreeze_blocks": blocks, "learning_rate": 1e-3, "lr_schedule": "constant"}
    labels = np.asarray(data.labels)
    val_images = list(image_dataset(data, splits.val, image_size=size, batch_size=64))
    out = {}
    for cached in (False, True):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model, backbone = trainer.build_task_model(spec, data.num_classes, dropout=0.0)
        feats = trainer.extract_features(backbone, image_dataset(data, splits.train, image_size=size, batch_size=64,
                                                                 with_labels=False))
        head = trainer.probe_head_weights(feats, labels[splits.train], data.num_classes, seed=0)
        model.get_layer(trainer.HEAD_LAYER).set_weights(head)
        backbone.set_unfrozen_blocks(blocks)
        t0 = time.perf_counter()
        fit_model, stream, steps, _, cut = trainer._fine_tune_inputs(
            model, backbone, params, data, splits, size=size, num_classes=data.num_classes, seed=0,
            val_batches=val_images, prefix_cache=PrefixCacheSettings(enabled=cached))[:5]
        setup = time.perf_counter() - t0
        trainer._compile_fine_tune(fit_model, backbone, params, steps=steps, max_epochs=epochs)
        timer = EpochTimer()
        fit_model.fit(stream, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        out[cached] = {"epoch": float(np.median(timer.seconds[1:])), "setup": setup, "cut": cut,
                       "probs": trainer.predict_probs(model, val_images)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--blocks", default=None, help="default 1,2,4 (images), 1,2 (text)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--text", action="store_true", help="MiniLM on tweets and drug reviews (trial_speed_text.py)")
    ap.add_argument("--texts", type=int, default=500)
    ap.add_argument("--datasets", default="tweets,drugreviews")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.text:
        from trial_speed_text import main as text_main

        args.blocks = args.blocks or "1,2"
        text_main(texts=args.texts, blocks=[int(b) for b in args.blocks.split(",")], repeats=args.repeats,
                  datasets=args.datasets.split(","))
        return
    args.blocks = args.blocks or "1,2,4"
    os.environ[ENV_VAR] = tempfile.mkdtemp(prefix="trial-speed-")  # a cold prefix cache
    data, splits = digits(args.images)
    print(f"{args.images} digits images ({len(splits.train)} train / {len(splits.val)} val), {args.epochs} epochs, "
          "batch 32, constant LR, no augmentation")
    print(f"{'model':<20}{'px':>5}{'blocks':>7}{'cut':>10}{'full s/ep':>11}{'cached s/ep':>13}{'ratio':>7}"
          f"{'prefix once s':>15}{'max |dp|':>10}")
    for name, size in MODELS:
        for blocks in [int(b) for b in args.blocks.split(",")]:
            r = run_one(name, size, blocks, data, splits, args.epochs)
            full, cached = r[False], r[True]
            once = cached["setup"] - full["setup"]  # the one-time prefix pass over train and val
            diff = float(np.max(np.abs(full["probs"] - cached["probs"])))
            print(f"{name:<20}{size:>5}{blocks:>7}{cached['cut'] or '-':>10}{full['epoch']:>11.2f}"
                  f"{cached['epoch']:>13.2f}{cached['epoch'] / full['epoch']:>7.2f}{once:>15.1f}{diff:>10.1e}",
                  flush=True)


if __name__ == "__main__":
    main()

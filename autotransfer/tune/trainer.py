"""One tuning trial: warm up a new head on the frozen backbone, then fine-tune its last blocks.

Phase 1 fits the head on backbone *features* (cached by the probe, or extracted here in one
pass): with the backbone frozen and BatchNorm in inference mode the features do not change
between epochs, so this is the same optimisation as training the full model, at the cost of one
forward pass. By default (``head_warmup: adam``) the head trains for ``head_epochs`` at
``head_learning_rate``; ``head_warmup: probe`` makes it the probe's converged logistic regression
instead (standardisation folded into the Dense weights): linear probing then fine-tuning (LP-FT,
Kumar et al., ICLR 2022), so every trial starts where the probe ended. Phase 2 unfreezes the last
``unfreeze_blocks`` blocks, recompiles with the (small) fine-tuning learning rate and trains with
early stopping; it is kept only if it beats the phase-1 head on val.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np

from autotransfer.backbones import BackboneSpec
from autotransfer.probe.featurize import extract_features
from autotransfer.probe.scorers import fit_linear_probe
from autotransfer.tune.space import TuneSpace
from autotransfer.tune.task import HEAD_LAYER, build_head, build_task_model

log = logging.getLogger(__name__)

ReportFn = Callable[[int, float], bool]
LOSS = "sparse_categorical_crossentropy"


@dataclass
class TrialOutcome:
    """What one trial produced. ``model`` holds the best weights seen (head-only or fine-tuned)."""

    val_accuracy: float
    epochs: int
    seconds: float
    history: dict[str, dict[str, list[float]]]
    model: keras.Model
    params: dict[str, Any] = field(default_factory=dict)  # effective values (unfreeze_blocks clipped)
    timed_out: bool = False
    pruned: bool = False
    head_val_accuracy: float = float("nan")  # after phase 1, on the full task model


class _Flags:
    timed_out = False
    pruned = False


class _Report(keras.callbacks.Callback):
    """Passes each epoch's val accuracy to the tuner's pruning hook (epochs numbered across phases)."""

    def __init__(self, report: ReportFn, offset: int, flags: _Flags) -> None:
        super().__init__()
        self.report, self.offset, self.flags = report, offset, flags

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        acc = (logs or {}).get("val_accuracy")
        if acc is not None and self.report(self.offset + epoch, float(acc)):
            self.flags.pruned = True
            self.model.stop_training = True


class _Deadline(keras.callbacks.Callback):
    """Stops training at the first batch that ends past ``deadline`` (a ``time.time()`` value)."""

    def __init__(self, deadline: float, flags: _Flags) -> None:
        super().__init__()
        self.deadline, self.flags = deadline, flags

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if time.time() >= self.deadline:
            self.flags.timed_out = True
            self.model.stop_training = True


def _evaluate(model: keras.Model, batches: Any) -> tuple[float, float]:
    """(accuracy, cross-entropy) of ``model`` in inference mode over ``(x, y)`` batches.

    Direct calls instead of ``model.evaluate``: no per-model tracing, which dominates on small data.
    """
    hits = total = 0
    nll = 0.0
    for x, y in batches:
        p = np.asarray(model(x, training=False), dtype="float64")
        y = np.asarray(y)
        hits += int(np.sum(np.argmax(p, axis=-1) == y))
        nll -= float(np.sum(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
        total += len(y)
    return hits / max(1, total), nll / max(1, total)


def _accuracy(model: keras.Model, batches: Any) -> float:
    return _evaluate(model, batches)[0]


class _Validate(keras.callbacks.Callback):
    """Writes ``val_accuracy``/``val_loss`` into the epoch logs; must come first in the callback list."""

    def __init__(self, batches: Any) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["val_accuracy"], logs["val_loss"] = _evaluate(self.model, self.batches)


def _usable_features(features: dict | None, name: str, splits: Any, dim: int) -> dict[str, np.ndarray] | None:
    f = (features or {}).get(name)
    if not f or "train" not in f or "val" not in f:
        return None
    tr, va = np.asarray(f["train"]), np.asarray(f["val"])
    if tr.shape != (len(splits.train), dim) or va.shape != (len(splits.val), dim):
        log.warning("Cached features of %s do not match the splits/backbone (%s, %s); extracting them again.",
                    name, tr.shape, va.shape)
        return None
    return {"train": tr.astype("float32"), "val": va.astype("float32")}


def probe_head_weights(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                       seed: int = 0) -> list[np.ndarray]:
    """Dense-softmax ``[kernel [D, K], bias [K]]`` equal to the probe's logistic regression.

    The probe standardises features then fits a multinomial logistic regression; folding the
    scaler in gives ``softmax(x @ kernel + bias)`` = the probe's ``predict_proba(x)``. Classes
    absent from ``labels`` get a very negative bias (never predicted until fine-tuning moves them).
    """
    model = fit_linear_probe(features, labels, seed=seed)
    scaler, clf = model[0], model[-1]
    coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    if coef.shape[0] == 1 and len(clf.classes_) == 2:  # binary: sklearn keeps one row (class 1 vs 0)
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    mean = np.asarray(getattr(scaler, "mean_", 0.0), np.float64)
    scale = np.asarray(getattr(scaler, "scale_", 1.0), np.float64)
    w = coef / scale
    b = intercept - w @ (mean * np.ones(features.shape[1]))
    kernel = np.zeros((features.shape[1], num_classes), np.float32)
    bias = np.full(num_classes, -30.0, np.float32)
    for row, cls in enumerate(clf.classes_):
        kernel[:, int(cls)] = w[row]
        bias[int(cls)] = b[row]
    return [kernel, bias]


def train_trial(
    spec: BackboneSpec,
    params: dict[str, Any],
    data: Any,
    splits: Any,
    *,
    space: TuneSpace,
    num_classes: int,
    features: dict | None = None,
    deadline: float | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    report: ReportFn | None = None,
    seed: int = 0,
) -> TrialOutcome:
    """Train one configuration on a fresh backbone and return its best validation accuracy.

    Args:
        spec: the backbone (``params["backbone"]`` is ignored here; the caller resolves it).
        params: ``unfreeze_blocks``, ``learning_rate``, ``patience``, ``dropout`` and optionally
            ``max_epochs`` (a tuner's epoch budget; default ``space.max_epochs``).
        data, splits: a ``LabelledData`` and its ``Splits``.
        features: ``{backbone name: {"train": [n, D], "val": [n, D], ...}}`` cached by the probe,
            aligned with ``splits``; used for the head warm-up when they fit.
        deadline: ``time.time()`` value after which training stops (the outcome says ``timed_out``).
        callbacks: extra Keras callbacks for the fine-tuning fit.
        report: pruning hook ``report(epoch, val_accuracy) -> stop?``, called after every epoch of
            both phases (epochs numbered 0.. across phases).
    """
    from autotransfer.data import image_dataset  # lazy: imports TensorFlow's image ops

    t0 = time.time()
    keras.utils.set_random_seed(seed)
    flags = _Flags()
    model, backbone = build_task_model(spec, num_classes, dropout=float(params["dropout"]))
    n_unfreeze = min(int(params.get("unfreeze_blocks", 0)), backbone.num_blocks)
    max_epochs = int(params.get("max_epochs", space.max_epochs))
    effective = {**params, "backbone": spec.name, "unfreeze_blocks": n_unfreeze, "max_epochs": max_epochs}
    size, bs = spec.input_size, space.batch_size
    y_train = np.asarray(data.labels, dtype="int64")[splits.train]
    y_val = np.asarray(data.labels, dtype="int64")[splits.val]
    val_ds = image_dataset(data, splits.val, image_size=size, batch_size=bs, cache=True)

    def timing_callbacks(offset: int) -> list[keras.callbacks.Callback]:
        cbs: list[keras.callbacks.Callback] = []
        if report is not None:
            cbs.append(_Report(report, offset, flags))
        if deadline is not None:
            cbs.append(_Deadline(deadline, flags))
        return cbs

    # -- phase 1: head warm-up on features ------------------------------------------------------
    feats = _usable_features(features, spec.name, splits, backbone.output_dim)
    from_cache = feats is not None
    if feats is None:
        train_plain = image_dataset(data, splits.train, image_size=size, batch_size=bs)
        feats = {"train": extract_features(backbone, train_plain), "val": extract_features(backbone, val_ds)}
    head_in = keras.Input((backbone.output_dim,), dtype="float32")
    head_model = keras.Model(head_in, build_head(head_in, num_classes, dropout=float(params["dropout"])))
    if space.head_warmup == "probe":
        head_model.get_layer(HEAD_LAYER).set_weights(probe_head_weights(feats["train"], y_train, num_classes, seed=seed))
        # No training: one validation step, so the pruning hook sees the head's accuracy at epoch 0.
        acc, loss = _evaluate(head_model, [(feats["val"], y_val)])
        head_hist = keras.callbacks.History()
        head_hist.history = {"val_loss": [loss], "val_accuracy": [acc], "loss": [math.nan]}
        if report is not None and report(0, acc):
            flags.pruned = True
        if deadline is not None and time.time() > deadline:
            flags.timed_out = True
    else:
        # One tf.function call per epoch: per-step dispatch dominates for a linear head.
        head_model.compile(keras.optimizers.Adam(space.head_learning_rate), LOSS, metrics=["accuracy"],
                           steps_per_execution=max(1, -(-len(y_train) // bs)))
        head_hist = head_model.fit(
            feats["train"], y_train, epochs=space.head_epochs, batch_size=bs, shuffle=True, verbose=0,
            callbacks=[_Validate([(feats["val"], y_val)]), *timing_callbacks(0)],
        )
    head_epochs = len(head_hist.history.get("loss", []))
    model.get_layer(HEAD_LAYER).set_weights(head_model.get_layer(HEAD_LAYER).get_weights())
    head_val = _accuracy(model, val_ds)
    feat_val = float(head_hist.history["val_accuracy"][-1])  # computed with the final head weights
    # Same weights on the same inputs: a gap means the cache was computed differently.
    if from_cache and abs(head_val - feat_val) > 1.0 / max(1, len(y_val)) + 1e-6:
        log.warning("Head on cached features of %s scores %.4f on val but %.4f on the backbone; "
                    "the feature cache may be stale.", spec.name, feat_val, head_val)
    del head_model, feats

    # -- phase 2: fine-tune the last blocks -----------------------------------------------------
    ft_history: dict[str, list[float]] = {}
    final = head_val
    if n_unfreeze > 0 and max_epochs > 0 and not (flags.pruned or flags.timed_out):
        head_weights = model.get_weights()
        backbone.set_unfrozen_blocks(n_unfreeze)
        model.compile(keras.optimizers.Adam(float(params["learning_rate"])), LOSS, metrics=["accuracy"])
        train_ds = image_dataset(data, splits.train, image_size=size, batch_size=bs, shuffle=True, seed=seed, cache=True)
        stop = keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=int(params["patience"]), restore_best_weights=True
        )
        hist = model.fit(
            train_ds, epochs=max_epochs, verbose=0, shuffle=False,  # train_ds shuffles itself
            callbacks=[_Validate(val_ds), stop, *timing_callbacks(head_epochs), *callbacks],
        )
        ft_history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
        best_ft = max(ft_history.get("val_accuracy", [float("-inf")]))
        if best_ft > head_val:
            final = _accuracy(model, val_ds)  # EarlyStopping restored the best epoch's weights
        else:
            # Fine-tuning never beat the warmed-up head: keep the head-only weights.
            model.set_weights(head_weights)
        del head_weights
    if not ft_history:
        # Hand back a compiled model so callers can evaluate() it directly.
        model.compile(keras.optimizers.Adam(space.head_learning_rate), LOSS, metrics=["accuracy"])
    return TrialOutcome(
        val_accuracy=final,
        epochs=head_epochs + len(ft_history.get("loss", [])),
        seconds=time.time() - t0,
        history={"head": {k: [float(v) for v in vs] for k, vs in head_hist.history.items()}, "finetune": ft_history},
        model=model,
        params=effective,
        timed_out=flags.timed_out,
        pruned=flags.pruned,
        head_val_accuracy=head_val,
    )

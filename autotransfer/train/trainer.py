"""One tuning trial: warm up a new head on the frozen backbone, then fine-tune its last blocks.

Phase 1 fits the head on backbone *features* (cached by the probe, or extracted here in one
pass): with the backbone frozen and BatchNorm in inference mode the features do not change
between epochs, so this is the same optimisation as training the full model, at the cost of one
forward pass. ``head_warmup: adam`` trains the head for ``head_epochs`` at ``head_learning_rate``;
``head_warmup: probe`` makes it a logistic regression on the same features, with its inverse
regularisation C chosen by cross-validation (standardisation folded into the Dense weights):
linear probing then fine-tuning (LP-FT, Kumar et al., ICLR 2022). Phase 2 unfreezes the last
``unfreeze_blocks`` blocks and trains with the fine-tuning optimizer (Adam, optional cosine
schedule and layer-wise decay, :mod:`autotransfer.train.optimizer`), augmented batches
(:mod:`autotransfer.train.augment`) and label smoothing; a constant learning rate stops early on
val accuracy (restoring the best epoch), a cosine schedule runs its course and keeps the last
weights. Fine-tuning is kept only if it beats the phase-1 head on val.

:func:`refit_trial` replays a finished trial's recipe on more data (train+val) for exactly the
fine-tuning epochs that trial kept, without validation.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from autotransfer import modalities
from autotransfer.backbones import BackboneSpec
from autotransfer.probe.featurize import extract_features, feature_dataset
from autotransfer.train.augment import augment_dataset
from autotransfer.train.optimizer import fine_tune_optimizer
from autotransfer.train.prefix import DEFAULT_SETTINGS, PrefixCacheSettings
from autotransfer.space import TuneSpace, trial_input_size
from autotransfer.train.task import HEAD_LAYER, build_head, build_task_model

log = logging.getLogger(__name__)

ReportFn = Callable[[int, float], bool]
#: The val probabilities ``[n_val, K]`` of a model's current weights, in val order.
PredictFn = Callable[[], np.ndarray]
SPARSE_LOSS = "sparse_categorical_crossentropy"
#: Inverse regularisation strengths the LP-FT head chooses from by cross-validation (log grid).
HEAD_CS = tuple(float(c) for c in np.logspace(-3, 1, 9))


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
    val_loss: float = float("nan")
    val_probs: np.ndarray | None = None      # [n_val, K] of the kept weights (ensemble selection)
    finetune_epochs: int = 0                 # fine-tuning epochs behind the kept weights (0: the head alone)


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


def _deadline_passed(deadline: Any) -> bool:
    if deadline is None:
        return False
    passed = getattr(deadline, "passed", None)
    return passed() if callable(passed) else time.time() >= float(deadline)


class _Deadline(keras.callbacks.Callback):
    """Stops training at the first batch that ends past ``deadline`` (a ``time.time()`` value or an
    object with ``passed()``, e.g. :class:`autotransfer.budget.Deadline`)."""

    def __init__(self, deadline: Any, flags: _Flags) -> None:
        super().__init__()
        self.deadline, self.flags = deadline, flags

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if _deadline_passed(self.deadline):
            self.flags.timed_out = True
            self.model.stop_training = True


def predict_probs(model: keras.Model, batches: Any) -> np.ndarray:
    """Class probabilities of ``model`` in inference mode over ``x`` or ``(x, y)`` batches.

    Direct calls instead of ``model.predict``: no per-model tracing, which dominates on small data.
    """
    out = [np.asarray(model(b[0] if isinstance(b, (tuple, list)) else b, training=False), dtype="float64")
           for b in batches]
    return np.concatenate(out) if out else np.zeros((0, 0))


def _scores(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, cross-entropy) of ``probs`` against integer labels ``y``."""
    if not len(y):
        return 0.0, 0.0
    nll = -np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)))
    return float(np.mean(np.argmax(probs, axis=-1) == y)), float(nll)


def _evaluate(model: keras.Model, batches: Any) -> tuple[float, float]:
    """(accuracy, cross-entropy) of ``model`` over ``(x, y)`` batches."""
    batches = list(batches) if not isinstance(batches, list) else batches
    y = np.concatenate([np.asarray(b[1]) for b in batches]) if batches else np.zeros(0, np.int64)
    return _scores(predict_probs(model, batches), y)


class _Validate(keras.callbacks.Callback):
    """Writes ``val_accuracy``/``val_loss`` into the epoch logs; must come first in the callback list."""

    def __init__(self, batches: Any) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["val_accuracy"], logs["val_loss"] = _evaluate(self.model, self.batches)


def _usable_features(features: dict | None, name: str, sizes: dict[str, int], dim: int) -> dict[str, np.ndarray] | None:
    """The cached ``{split: [n, dim]}`` arrays of ``name`` for the splits in ``sizes``, if they fit."""
    f = (features or {}).get(name)
    if not f or any(s not in f for s in sizes):
        return None
    arrays = {s: np.asarray(f[s]) for s in sizes}
    if any(a.shape != (sizes[s], dim) for s, a in arrays.items()):
        log.warning("Cached features of %s do not match the splits/backbone (%s); extracting them again.",
                    name, {s: a.shape for s, a in arrays.items()})
        return None
    return {s: a.astype("float32") for s, a in arrays.items()}


def probe_head_weights(features: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int = 0,
                       C: float | str = "cv", balanced: bool = False, standardize: bool = True) -> list[np.ndarray]:
    """Dense-softmax ``[kernel [D, K], bias [K]]`` equal to a standardised logistic regression.

    ``C="cv"`` chooses the inverse regularisation from :data:`HEAD_CS` by cross-validated
    log-likelihood (a weakly regularised head separates a small train split perfectly, leaving
    fine-tuning no gradient and an ensemble over-confident members); a number fixes it (the
    probe's scorers use 1.0). Folding the scaler in gives ``softmax(x @ kernel + bias)`` =
    ``predict_proba(x)``. Classes absent from ``labels`` get a very negative bias. ``balanced``: every
    class weighs the same in the fit (scikit-learn's ``class_weight="balanced"``).
    ``standardize=False`` fits on the features as they are (sparse TF-IDF: see :func:`fit_head`).
    """
    scaler, clf = fit_head(features, labels, seed=seed, C=C, balanced=balanced, standardize=standardize)
    coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    if coef.shape[0] == 1 and len(clf.classes_) == 2:  # binary: sklearn keeps one row (class 1 vs 0)
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    w = coef / scaler.scale_ if scaler is not None else coef
    b = intercept - w @ scaler.mean_ if scaler is not None else intercept
    kernel = np.zeros((features.shape[1], num_classes), np.float32)
    bias = np.full(num_classes, -30.0, np.float32)
    for row, cls in enumerate(clf.classes_):
        kernel[:, int(cls)] = w[row]
        bias[int(cls)] = b[row]
    return [kernel, bias]


def choose_head_c(features: np.ndarray, labels: np.ndarray, *, seed: int = 0, balanced: bool = False,
                  standardize: bool = True) -> float:
    """The C that :func:`probe_head_weights` with ``C="cv"`` would choose (1.0 when a class is too
    small to cross-validate): for fitting the same head on other rows without choosing again."""
    _, clf = fit_head(features, labels, seed=seed, balanced=balanced, standardize=standardize)
    return float(np.ravel(clf.C_)[0]) if hasattr(clf, "C_") else float(clf.C)


def fit_head(features: np.ndarray, labels: np.ndarray, *, seed: int = 0, C: float | str = "cv",
             balanced: bool = False, standardize: bool = True) -> tuple[Any, Any]:
    """``(StandardScaler, LogisticRegression[CV])`` fitted on ``features``; see :func:`probe_head_weights`.

    ``standardize=False`` gives ``(None, ...)``: the regression sees the features unscaled. That is
    the rule for sparse, l2-normalised TF-IDF rows, where scaling each n-gram to unit variance
    blows rare n-grams up to the weight of common ones (and the regression then needs a far
    smaller C); dense encoder features are standardised. ``balanced``: every class weighs the same."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from autotransfer.probe.scorers import blas_threads

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    scaler = StandardScaler().fit(x) if standardize else None
    z = scaler.transform(x) if scaler is not None else x
    folds = min(3, int(np.min(np.bincount(y)[np.unique(y)])))
    weight = "balanced" if balanced else None
    with blas_threads(z), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if C == "cv" and folds >= 2:
            # The C path with warm starts: about the cost of two plain fits.
            clf = LogisticRegressionCV(Cs=list(HEAD_CS), l1_ratios=(0.0,), use_legacy_attributes=False,
                                       cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                       scoring="neg_log_loss", max_iter=1000, random_state=seed,
                                       class_weight=weight).fit(z, y)
        else:
            clf = LogisticRegression(C=1.0 if C == "cv" else float(C), max_iter=1000, random_state=seed,
                                     class_weight=weight).fit(z, y)
    return scaler, clf


def _head_features(features: dict | None, spec: BackboneSpec, backbone: Any, data: Any,
                   indices: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Backbone features of each index set in ``indices`` (cached by the probe when they fit)."""
    feats = _usable_features(features, spec.name, {k: len(v) for k, v in indices.items()}, backbone.output_dim)
    if feats is not None:
        return feats
    return {k: extract_features(backbone, feature_dataset(data, idx, spec.input_size, 64)) for k, idx in indices.items()}


def is_balanced(params: dict[str, Any]) -> bool:
    """Whether a trial's classes weigh the same (its ``class_weight`` parameter, set by the run's
    ``--class-weight``; absent: no weights)."""
    return params.get("class_weight", "none") == "balanced"


def class_weight(balanced: bool, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Keras ``class_weight`` giving every class of ``labels`` the same total weight, or None."""
    from autotransfer.objective import Objective

    return Objective(balanced=balanced).class_weight(labels, num_classes)


def warm_up_head(model: keras.Model, feats: np.ndarray, labels: np.ndarray, *, num_classes: int, space: TuneSpace,
                 dropout: float, seed: int, val: tuple[np.ndarray, np.ndarray] | None = None,
                 callbacks: Sequence[keras.callbacks.Callback] = (), head: list[np.ndarray] | None = None,
                 learning_rate: float | None = None, batch_size: int | None = None, balanced: bool = False) -> dict:
    """Phase 1: set ``model``'s head from features; returns the history dict.

    ``head``: precomputed LP-FT head weights (the same for every trial of one backbone and split).
    ``learning_rate``, ``batch_size``: the trial's (``head_warmup: adam``; default: the space's).
    ``balanced``: every class weighs the same (balanced class weights).
    """
    fixed = space.fixed_defaults()
    head_in = keras.Input((feats.shape[1],), dtype="float32")
    head_model = keras.Model(head_in, build_head(head_in, num_classes, dropout=dropout))
    if space.head_warmup == "probe":
        weights = head if head is not None else probe_head_weights(feats, labels, num_classes, seed=seed,
                                                                    balanced=balanced)
        head_model.get_layer(HEAD_LAYER).set_weights(weights)
        history = {"loss": [math.nan]}
        if val is not None:
            acc, loss = _evaluate(head_model, [val])
            history.update(val_loss=[loss], val_accuracy=[acc])
    else:
        bs = int(batch_size or fixed["batch_size"])
        lr = float(learning_rate or fixed["head_learning_rate"])
        # One tf.function call per epoch: per-step dispatch dominates for a linear head.
        head_model.compile(keras.optimizers.Adam(lr), SPARSE_LOSS, metrics=["accuracy"],
                           steps_per_execution=steps_per_epoch(len(labels), bs))
        cbs = [_Validate([val])] if val is not None else []
        hist = head_model.fit(feats, labels, epochs=space.head_epochs, batch_size=bs, shuffle=True, verbose=0,
                              callbacks=[*cbs, *callbacks], class_weight=class_weight(balanced, labels, num_classes))
        history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    model.get_layer(HEAD_LAYER).set_weights(head_model.get_layer(HEAD_LAYER).get_weights())
    return history


def _train_stream(data: Any, indices: np.ndarray, *, size: int, batch_size: int, num_classes: int, augment: str,
                  seed: int) -> tuple[Any, int]:
    """(endless augmented one-hot batches of ``indices``, steps per epoch)."""
    modality = modalities.for_data(data)
    ds = modality.dataset(data, indices, size=size, batch_size=batch_size, shuffle=True, seed=seed, cache=True)
    return (augment_dataset(ds, augment, num_classes=num_classes, seed=seed, modality=modality),
            steps_per_epoch(len(indices), batch_size))


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    """Batches in one pass over ``n_items`` (the last one partial)."""
    return max(1, -(-n_items // batch_size))


def _train_inputs(model: keras.Model, backbone: Any, effective: dict[str, Any], data: Any,
                  indices: np.ndarray | tuple[np.ndarray, ...], *, size: int, num_classes: int, seed: int,
                  cut: str | None, prefix_cache: PrefixCacheSettings) -> tuple[keras.Model, Any, int, str | None]:
    """(model to fit, train stream over ``indices`` (one array or its parts, :func:`~autotransfer.train.prefix.as_parts`),
    steps per epoch, prefix cut or None).

    Where ``cut`` names a fixed frozen prefix (:func:`autotransfer.train.prefix.prefix_cut`) and its
    activations fit the cache bound: a model from the cut block on over the cached activations
    (text: the hidden states, :func:`_hidden_train_inputs`), sharing the task model's layers and
    variables. Else the full task model on (augmented) images or raw texts.
    """
    from autotransfer.train import prefix as px

    batch = int(effective["batch_size"])
    text = cut is not None and getattr(backbone, "modality", "image") == "text"
    if text:
        hidden = _hidden_train_inputs(model, backbone, cut, data, np.concatenate(px.as_parts(indices)), batch=batch,
                                      num_classes=num_classes, seed=seed, prefix_cache=prefix_cache)
        if hidden is not None:
            return hidden
    x = None if cut is None or text else px.prefix_activations(backbone, cut, data, indices, size=size,
                                                               settings=prefix_cache)
    indices = np.concatenate(px.as_parts(indices))
    if x is None:
        train_ds, steps = _train_stream(data, indices, size=size, batch_size=batch, num_classes=num_classes,
                                        augment=str(effective["augment"]), seed=seed)
        return model, train_ds, steps, None
    labels = np.asarray(data.labels, dtype=np.int64)[indices]
    stream = px.activation_stream(x, labels, batch_size=batch, num_classes=num_classes, seed=seed)
    return px.suffix_model(model, backbone, cut, tuple(x.shape[1:])), stream, steps_per_epoch(len(indices), batch), cut


def _hidden_train_inputs(model: keras.Model, backbone: Any, cut: str, data: Any, indices: np.ndarray, *, batch: int,
                         num_classes: int, seed: int,
                         prefix_cache: PrefixCacheSettings) -> tuple[keras.Model, Any, int, str] | None:
    """:func:`_train_inputs` of a text cut: each item's hidden states entering ``cut``, computed
    once (:mod:`autotransfer.train.hidden`), in seeded batches of similar length padded to their
    longest; None when they pass the cache bound."""
    from autotransfer.train import hidden as hd
    from autotransfer.train import prefix as px

    states = hd.hidden_states(backbone, cut, hd.model_inputs(data, indices), limit_bytes=prefix_cache.limit_bytes)
    if states is None:
        return None
    labels = np.asarray(data.labels, dtype=np.int64)[indices]
    stream = hd.hidden_stream(states, labels, batch_size=batch, num_classes=num_classes, seed=seed)
    fit_model = px.text_suffix_model(model, backbone, cut, states.hidden_size)
    return fit_model, stream, steps_per_epoch(len(indices), batch), cut


def _fine_tune_inputs(model: keras.Model, backbone: Any, effective: dict[str, Any], data: Any, splits: Any, *,
                      size: int, num_classes: int, seed: int, val_batches: list,
                      prefix_cache: PrefixCacheSettings) -> tuple[keras.Model, Any, int, list, str | None, PredictFn]:
    """(model to fit, train stream, steps per epoch, val batches for it, prefix cut or None, the
    val probabilities of the current weights in val order): a trial's :func:`_train_inputs` on the
    train split, with the val split on the same path."""
    from autotransfer.train import prefix as px

    kw = {"size": size, "num_classes": num_classes, "seed": seed, "prefix_cache": prefix_cache}
    cut = px.prefix_cut(backbone, effective, prefix_cache)
    fit_model, stream, steps, cut = _train_inputs(model, backbone, effective, data, splits.train, cut=cut, **kw)
    val = None if cut is None else _cut_val_inputs(fit_model, backbone, cut, data, splits.val, size=size,
                                                   prefix_cache=prefix_cache)
    if cut is not None and val is None:  # val over the cache bound: both on the full path
        fit_model, stream, steps, cut = _train_inputs(model, backbone, effective, data, splits.train, cut=None, **kw)
    if cut is None or val is None:
        return fit_model, stream, steps, val_batches, None, lambda: predict_probs(model, val_batches)
    return fit_model, stream, steps, val[0], cut, val[1] or (lambda: predict_probs(model, val_batches))


def _cut_val_inputs(fit_model: keras.Model, backbone: Any, cut: str, data: Any, val: np.ndarray, *, size: int,
                    prefix_cache: PrefixCacheSettings) -> tuple[list, PredictFn | None] | None:
    """(val batches for a model from ``cut`` on, the val probabilities in val order from the same
    states or None: the full model's), or None over the cache bound. Text: the hidden states,
    batched by length; images: the cached activations."""
    from autotransfer.train import hidden as hd
    from autotransfer.train import prefix as px

    y_val = np.asarray(data.labels, dtype=np.int64)[val]
    if getattr(backbone, "modality", "image") == "text":
        states = hd.hidden_states(backbone, cut, hd.model_inputs(data, val), limit_bytes=prefix_cache.limit_bytes)
        if states is None:
            return None
        return hd.eval_batches(states, y_val), lambda: hd.predict_in_order(hd.model_predict(fit_model), states)
    val_x = px.prefix_activations(backbone, cut, data, val, size=size, settings=prefix_cache)
    if val_x is None:
        return None
    return [(tf.constant(val_x[i:i + 64], tf.float32), y_val[i:i + 64]) for i in range(0, len(y_val), 64)], None


def _compile_fine_tune(model: keras.Model, backbone: Any, params: dict[str, Any], *, steps: int,
                       max_epochs: int) -> None:
    compile_fine_tune(model, backbone, params, steps=steps, max_epochs=max_epochs)


def compile_fine_tune(model: keras.Model, backbone: Any, params: dict[str, Any], *, steps: int,
                      max_epochs: int) -> None:
    """Compile ``model`` for the fine-tuning phase of a trial with ``params``: its optimizer
    (learning rate, schedule over ``steps`` x ``max_epochs``, layer decay) and its loss (one-hot
    labels, label smoothing). The plan times this same step."""
    optimizer = fine_tune_optimizer(float(params["learning_rate"]), schedule=str(params.get("lr_schedule", "constant")),
                                    decay_steps=steps * max_epochs, backbone=backbone,
                                    layer_decay=float(params.get("layer_decay", 1.0)))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=float(params.get("label_smoothing", 0.0)))
    model.compile(optimizer, loss)


def at_trial_size(spec: BackboneSpec, params: dict[str, Any]) -> BackboneSpec:
    """``spec`` at the trial's ``input_size`` (its own size for ``native`` or no such parameter)."""
    size = trial_input_size(params.get("input_size"), spec.input_size)
    return spec if size == spec.input_size else replace(spec, input_size=size)


def _effective(spec: BackboneSpec, params: dict[str, Any], space: TuneSpace, num_blocks: int) -> dict[str, Any]:
    """The trial's parameters with defaults filled in, ``unfreeze_blocks`` clipped to the backbone
    and ``input_size`` in pixels."""
    merged = {**space.fixed_defaults(), **params}
    return {**merged, "backbone": spec.name, "input_size": trial_input_size(merged.get("input_size"), spec.input_size),
            "unfreeze_blocks": min(int(params.get("unfreeze_blocks", 0)), num_blocks),
            "max_epochs": int(params.get("max_epochs", space.max_epochs))}


def _trial_model(spec: BackboneSpec, params: dict[str, Any], space: TuneSpace, num_classes: int,
                 features: Any) -> tuple[BackboneSpec, Any, keras.Model, Any, dict[str, Any]]:
    """A fresh task model at the trial's input size: (spec at that size, the features still valid
    for it (the probe's are of the candidate's own size), model, backbone, effective parameters)."""
    sized = at_trial_size(spec, params)
    if sized is not spec:
        features = None
    model, backbone = build_task_model(sized, num_classes, dropout=float(params["dropout"]))
    return sized, features, model, backbone, _effective(sized, params, space, backbone.num_blocks)


def _timing_callbacks(report: ReportFn | None, deadline: Any, flags: _Flags,
                      offset: int) -> list[keras.callbacks.Callback]:
    """The pruning-hook and deadline callbacks of one fit, its epochs numbered from ``offset``."""
    cbs: list[keras.callbacks.Callback] = []
    if report is not None:
        cbs.append(_Report(report, offset, flags))
    if deadline is not None:
        cbs.append(_Deadline(deadline, flags))
    return cbs


def _head_phase(model: keras.Model, backbone: Any, spec: BackboneSpec, params: dict[str, Any],
                effective: dict[str, Any], data: Any, splits: Any, *, space: TuneSpace, num_classes: int,
                features: dict | None, seed: int, head: list[np.ndarray] | None, report: ReportFn | None,
                deadline: Any, flags: _Flags) -> dict:
    """Phase 1: warm up ``model``'s head on backbone features of the train split; returns its history.

    ``head_warmup: probe`` trains nothing, so the pruning hook is called once with the head's val
    accuracy as epoch 0 and the deadline is checked once.
    """
    labels = np.asarray(data.labels, dtype="int64")
    feats = _head_features(features, spec, backbone, data, {"train": splits.train, "val": splits.val})
    history = warm_up_head(model, feats["train"], labels[splits.train], num_classes=num_classes, space=space,
                           dropout=float(params["dropout"]), seed=seed, val=(feats["val"], labels[splits.val]),
                           callbacks=_timing_callbacks(report, deadline, flags, 0), head=head,
                           learning_rate=effective["head_learning_rate"], batch_size=effective["batch_size"],
                           balanced=is_balanced(effective))
    if space.head_warmup == "probe":
        if report is not None and report(0, history["val_accuracy"][0]):
            flags.pruned = True
        flags.timed_out = flags.timed_out or _deadline_passed(deadline)
    return history


def _warn_if_stale_features(name: str, feature_val: float, head_val: float, n_val: int) -> None:
    """Warn when the head's val accuracy on cached features (``feature_val``) and on the backbone
    (``head_val``) differ by more than one item: the same weights on the same inputs, so a gap
    means the cache was computed differently."""
    if abs(head_val - feature_val) > 1.0 / max(1, n_val) + 1e-6:
        log.warning("Head on cached features of %s scores %.4f on val but %.4f on the backbone; "
                    "the feature cache may be stale.", name, feature_val, head_val)


def _fine_tune_phase(model: keras.Model, backbone: Any, params: dict[str, Any], effective: dict[str, Any],
                     data: Any, splits: Any, *, size: int, num_classes: int, seed: int, val_batches: list,
                     prefix_cache: PrefixCacheSettings,
                     callbacks: Sequence[keras.callbacks.Callback]) -> tuple[dict[str, list[float]], PredictFn]:
    """Phase 2: unfreeze the trial's last blocks and fine-tune ``model`` in place; returns the
    epoch history and the val probabilities of the weights it leaves (on the path it took). Sets
    ``effective["prefix_cut"]`` (``""``: the full path)."""
    backbone.set_unfrozen_blocks(effective["unfreeze_blocks"])
    fit_model, train_ds, steps, fit_val, cut, predict = _fine_tune_inputs(
        model, backbone, effective, data, splits, size=size, num_classes=num_classes, seed=seed,
        val_batches=val_batches, prefix_cache=prefix_cache)
    effective["prefix_cut"] = cut or ""
    max_epochs = effective["max_epochs"]
    _compile_fine_tune(fit_model, backbone, effective, steps=steps, max_epochs=max_epochs)
    # A cosine schedule runs to its end and keeps the last weights: mid-schedule weights were
    # trained at a high learning rate, and the epoch a noisy validation split picks does not
    # replay in a refit (a refit of that many epochs scores lower). A constant rate stops early.
    stop = [] if effective["lr_schedule"] == "cosine" else [keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=int(params["patience"]),
        min_delta=float(effective["min_delta"]), restore_best_weights=True)]
    weights = class_weight(is_balanced(effective), np.asarray(data.labels, dtype="int64")[splits.train], num_classes)
    hist = fit_model.fit(train_ds, epochs=max_epochs, steps_per_epoch=steps, verbose=0, shuffle=False,  # by tf.data
                         callbacks=[_Validate(fit_val), *stop, *callbacks], class_weight=weights)
    return {k: [float(v) for v in vs] for k, vs in hist.history.items()}, predict


def _kept_epochs(history: dict[str, list[float]], cosine: bool, head_val: float) -> int:
    """Fine-tuning epochs behind the weights a fit left (early stopping restored its best epoch; a
    cosine run keeps its last), or 0 where they do not beat the warmed-up head's ``head_val``."""
    accs = history.get("val_accuracy", [])
    kept_acc = accs[-1] if cosine and accs else max(accs, default=float("-inf"))
    if not kept_acc > head_val:
        return 0
    return len(accs) if cosine else int(np.argmax(accs)) + 1


def train_trial(spec: BackboneSpec, params: dict[str, Any], data: Any, splits: Any, *, space: TuneSpace,
                num_classes: int, features: dict | None = None, deadline: Any = None,
                callbacks: Sequence[keras.callbacks.Callback] = (), report: ReportFn | None = None,
                seed: int = 0, head: list[np.ndarray] | None = None,
                prefix_cache: PrefixCacheSettings = DEFAULT_SETTINGS) -> TrialOutcome:
    """Train one configuration on a fresh backbone and return its best validation accuracy
    (``params["trial_type"] == "contrastive"``: :func:`~autotransfer.train.contrastive.train_contrastive_trial`).

    Args:
        spec: the backbone (``params["backbone"]`` is ignored here; the caller resolves it).
        params: ``unfreeze_blocks``, ``learning_rate``, ``patience``, ``dropout`` and optionally
            ``augment``, ``lr_schedule``, ``layer_decay``, ``label_smoothing``, ``max_epochs`` (a
            tuner's epoch budget; default ``space.max_epochs``); missing ones take the space's defaults.
        data, splits: a ``LabelledData`` and its ``Splits``.
        features: ``{backbone name: {"train": [n, D], "val": [n, D], ...}}`` cached by the probe,
            aligned with ``splits``; used for the head warm-up when they fit.
        deadline: ``time.time()`` value (or ``Deadline``) after which training stops (``timed_out``).
        callbacks: extra Keras callbacks for the fine-tuning fit.
        report: pruning hook ``report(epoch, val_accuracy) -> stop?``, called after every epoch of
            both phases (epochs numbered 0.. across phases).
        head: precomputed LP-FT head weights for this backbone and train split (``head_warmup: probe``).
        prefix_cache: whether and how to fine-tune on cached frozen-prefix activations where the trial
            allows it (:mod:`autotransfer.train.prefix`; ``params["prefix_cut"]`` of the outcome names the cut).
    """
    kw = {"space": space, "num_classes": num_classes, "features": features, "deadline": deadline, "report": report,
          "seed": seed, "head": head, "prefix_cache": prefix_cache}
    if params.get("trial_type", "finetune") == "contrastive":  # SetFit-style: its own module
        from autotransfer.train.contrastive import train_contrastive_trial

        return train_contrastive_trial(spec, params, data, splits, **kw)
    return _finetune_trial(spec, params, data, splits, callbacks=callbacks, **kw)


def _finetune_trial(spec: BackboneSpec, params: dict[str, Any], data: Any, splits: Any, *, space: TuneSpace,
                    num_classes: int, features: dict | None, deadline: Any, callbacks: Sequence[keras.callbacks.Callback],
                    report: ReportFn | None, seed: int, head: list[np.ndarray] | None,
                    prefix_cache: PrefixCacheSettings) -> TrialOutcome:
    """:func:`train_trial` of a fine-tuning trial: the head warm-up, then fine-tuning, reverted
    when it does not beat the head on val."""
    t0 = time.time()
    keras.utils.set_random_seed(seed)
    flags = _Flags()
    spec, features, model, backbone, effective = _trial_model(spec, params, space, num_classes, features)
    y_val = np.asarray(data.labels, dtype="int64")[splits.val]
    val_ds = modalities.for_data(data).dataset(data, splits.val, size=spec.input_size, batch_size=64, cache=True)
    head_hist = _head_phase(model, backbone, spec, params, effective, data, splits, space=space,
                            num_classes=num_classes, features=features, seed=seed, head=head, report=report,
                            deadline=deadline, flags=flags)
    head_epochs = len(head_hist.get("loss", []))
    val_batches = list(val_ds)
    val_probs = predict_probs(model, val_batches)
    head_val, head_loss = _scores(val_probs, y_val)
    _warn_if_stale_features(spec.name, float(head_hist["val_accuracy"][-1]), head_val, len(y_val))
    ft_history: dict[str, list[float]] = {}
    final, final_loss, kept_epochs = head_val, head_loss, 0
    if effective["unfreeze_blocks"] > 0 and effective["max_epochs"] > 0 and not (flags.pruned or flags.timed_out):
        head_weights = model.get_weights()
        ft_history, predict_val = _fine_tune_phase(
            model, backbone, params, effective, data, splits, size=spec.input_size, num_classes=num_classes, seed=seed,
            val_batches=val_batches, prefix_cache=prefix_cache,
            callbacks=[*_timing_callbacks(report, deadline, flags, head_epochs), *callbacks])
        kept_epochs = _kept_epochs(ft_history, effective["lr_schedule"] == "cosine", head_val)
        if kept_epochs:
            val_probs = predict_val()
            final, final_loss = _scores(val_probs, y_val)
        else:  # fine-tuning never beat the warmed-up head: keep the head-only weights
            model.set_weights(head_weights)
        del head_weights
    _compile_for_evaluation(model, space)
    return TrialOutcome(
        val_accuracy=final, epochs=head_epochs + len(ft_history.get("loss", [])), seconds=time.time() - t0,
        history={"head": head_hist, "finetune": ft_history}, model=model, params=effective,
        timed_out=flags.timed_out, pruned=flags.pruned, head_val_accuracy=head_val, val_loss=final_loss,
        val_probs=val_probs.astype("float32"), finetune_epochs=kept_epochs,
    )


def load_trial_model(spec: BackboneSpec, params: dict[str, Any], space: TuneSpace, num_classes: int,
                     weights: Any) -> keras.Model:
    """A finished trial's model rebuilt from its (effective) parameters and checkpointed weights."""
    model, _ = build_task_model(at_trial_size(spec, params), num_classes, dropout=float(params.get("dropout", 0.0)))
    model.load_weights(str(weights))
    _compile_for_evaluation(model, space)
    return model


def _compile_for_evaluation(model: keras.Model, space: TuneSpace) -> None:
    # Hand back a model compiled for integer labels so callers can evaluate() it directly.
    model.compile(keras.optimizers.Adam(space.fixed_defaults()["head_learning_rate"]), SPARSE_LOSS, metrics=["accuracy"])


def refit_trial(
    spec: BackboneSpec,
    params: dict[str, Any],
    data: Any,
    indices: np.ndarray,
    *,
    space: TuneSpace,
    num_classes: int,
    finetune_epochs: int,
    features: np.ndarray | None = None,
    deadline: Any = None,
    seed: int = 0,
    prefix_cache: PrefixCacheSettings = DEFAULT_SETTINGS,
) -> tuple[keras.Model, bool]:
    """Train ``params`` (a finished trial's effective parameters) from scratch on ``indices`` (one
    array, or its parts: the splits, whose frozen-prefix activations the trial cached).

    The head warm-up as in the trial, then exactly ``finetune_epochs`` fine-tuning epochs (the
    epochs the trial's early stopping kept; 0 = head only) on the same learning-rate schedule; a
    contrastive trial whose phase was kept (``finetune_epochs`` 1) replays its steps, then its head
    (:func:`~autotransfer.train.contrastive.refit_contrastive_trial`).
    ``features``: backbone features of ``indices`` in that order (the probe's), else extracted;
    ``prefix_cache``: the frozen-prefix settings, as in :func:`train_trial`. Returns ``(model, timed_out)``; a timed-out refit must not replace the tuned model.
    """
    from autotransfer.train import prefix as px

    if params.get("trial_type", "finetune") == "contrastive" and finetune_epochs > 0:  # a kept contrastive phase
        from autotransfer.train.contrastive import refit_contrastive_trial

        return refit_contrastive_trial(spec, params, data, indices, space=space, num_classes=num_classes,
                                       deadline=deadline, seed=seed, prefix_cache=prefix_cache)
    keras.utils.set_random_seed(seed)
    flags = _Flags()
    spec, features, model, backbone, effective = _trial_model(spec, params, space, num_classes, features)
    parts = px.as_parts(indices)
    indices = np.concatenate(parts)
    labels = np.asarray(data.labels, dtype="int64")[indices]
    given = None if features is None else {spec.name: {"all": features}}
    feats = _head_features(given, spec, backbone, data, {"all": indices})["all"]
    cbs = [_Deadline(deadline, flags)] if deadline is not None else []
    warm_up_head(model, feats, labels, num_classes=num_classes, space=space, dropout=float(params["dropout"]),
                 seed=seed, callbacks=cbs, learning_rate=effective["head_learning_rate"],
                 batch_size=effective["batch_size"], balanced=is_balanced(effective))
    del feats
    n_unfreeze = effective["unfreeze_blocks"]
    if n_unfreeze > 0 and finetune_epochs > 0 and not flags.timed_out:
        backbone.set_unfrozen_blocks(n_unfreeze)
        # The frozen-prefix path where the trial could take it: the full path costs a refit about
        # twice its trial's time.
        fit_model, train_ds, steps, _ = _train_inputs(model, backbone, effective, data, tuple(parts), size=spec.input_size,
                                                      num_classes=num_classes, seed=seed,
                                                      cut=px.prefix_cut(backbone, effective, prefix_cache),
                                                      prefix_cache=prefix_cache)
        _compile_fine_tune(fit_model, backbone, effective, steps=steps, max_epochs=effective["max_epochs"])
        fit_model.fit(train_ds, epochs=int(finetune_epochs), steps_per_epoch=steps, verbose=0, shuffle=False,
                      callbacks=cbs, class_weight=class_weight(is_balanced(effective), labels, num_classes))
        del fit_model, train_ds
    backbone.set_unfrozen_blocks(0)
    _compile_for_evaluation(model, space)
    return model, flags.timed_out

"""Out-of-fold predictions for small data (cross-validation mode, ``Splits.folds``).

Every labelled row is predicted by a model that did not train on it, so that member selection,
temperatures and the run's estimate use all rows instead of one small validation split: k-fold
cross-fitting, as AutoGluon's bagging does. Linear heads are cheap and always cross-fitted; a
fine-tuned trial is cross-fitted by replaying its recipe (its parameters and kept fine-tuning
epochs, :func:`~autotransfer.train.trainer.refit_trial`) on the complement of each group of the
other folds, while the time allows. Fold 0 is the validation split the trial itself was judged on,
so its own validation predictions fill that fold.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable, Mapping

import numpy as np

from autotransfer.backbones import BackboneSpec
from autotransfer.budget import cross_fit_factor, fold_groups
from autotransfer.final.members import PROBE_PREFIX, softmax, standardize_head
from autotransfer.train.prefix import DEFAULT_SETTINGS, PrefixCacheSettings
from autotransfer.train.trainer import at_trial_size, choose_head_c, probe_head_weights, refit_trial


def oof_heads(features: Mapping[str, Mapping[str, np.ndarray]], specs: Mapping[str, BackboneSpec], splits: Any,
              y_all: np.ndarray, num_classes: int, *, seed: int = 0,
              balanced: bool = False) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """``{probe:<name>: (head trained on train, out-of-fold probabilities over splits.labelled)}``.

    The inverse regularisation C is chosen once, by cross-validation on the train split (the
    fold-0 fit), and reused for the other folds: one choice per candidate, as the fixed-split head.
    ``balanced``: every class weighs the same in each fit.
    """
    fold_ids = splits.fold_ids()
    y = np.asarray(y_all, dtype=np.int64)[splits.labelled]
    out = {}
    for name, f in features.items():
        if name not in specs or "train" not in f or "val" not in f:
            continue
        x = np.concatenate([f["train"], f["val"]]).astype(np.float32)
        scaled = standardize_head(specs[name])
        c = choose_head_c(x[fold_ids != 0], y[fold_ids != 0], seed=seed, balanced=balanced, standardize=scaled)
        oof = np.zeros((len(y), num_classes))
        head0 = None
        for j in range(len(splits.folds)):
            fit = fold_ids != j
            head = probe_head_weights(x[fit], y[fit], num_classes, seed=seed, C=c, balanced=balanced,
                                      standardize=scaled)
            oof[~fit] = softmax(x[~fit].astype(np.float64) @ head[0] + head[1])
            head0 = head if j == 0 else head0
        out[PROBE_PREFIX + name] = (head0, oof)
    return out


def nested_selection_probs(pool: Mapping[str, np.ndarray], y: np.ndarray, fold_ids: np.ndarray, *, max_members: int,
                           seed: int = 0, balanced: bool = False) -> np.ndarray:
    """Out-of-fold probabilities of the member selection itself (nested cross-validation): for each
    fold, temperatures, members and weights are chosen on the other folds' rows of ``pool``
    (``{candidate: out-of-fold probabilities}``) and applied to its rows. The chosen ensemble scored
    on the rows that chose it overstates its accuracy by what the choice fitted to their noise; this
    estimate pays for the choice, as the export's test items would."""
    from autotransfer.final.ensemble import scaled_selection, temperature_scale

    out = np.zeros(np.shape(next(iter(pool.values()))), dtype=np.float64)
    for j in np.unique(fold_ids):
        fit = fold_ids != j
        choice, temps = scaled_selection({n: p[fit] for n, p in pool.items()}, y[fit], max_members=max_members,
                                         seed=seed, balanced=balanced)
        out[~fit] = sum(w * temperature_scale(pool[n][~fit], temps[n]) for n, w in choice.weights.items())
    return out


def fold_parts(splits: Any, held: list[int]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """``(training parts, held-out rows)`` for the folds ``held``: the other folds, each one part (a
    frozen-prefix refit caches each fold's activations once for every cross-fit), and the union of
    the ``held`` folds, sorted as their rows are in :attr:`Splits.labelled`."""
    parts = tuple(f for i, f in enumerate(splits.folds) if i not in held)
    return parts, np.sort(np.concatenate([splits.folds[i] for i in held]))


def cross_fit_trial(summary: Any, spec: BackboneSpec, data: Any, splits: Any, *, space: Any, deadline: Any,
                    features: np.ndarray | None, predict: Callable[..., np.ndarray], seed: int = 0,
                    prefix_cache: PrefixCacheSettings = DEFAULT_SETTINGS) -> np.ndarray | None:
    """Out-of-fold probabilities over ``splits.labelled`` of a finished trial's recipe, or None
    when the deadline cut a fit short.

    ``summary``: its :class:`~autotransfer.tune.tune.TrialSummary` (val predictions fill fold 0).
    ``features``: the probe's features of ``splits.labelled`` when the trial runs at the probed
    size, else None (extracted per fit). ``predict(model, data, rows, input_size=)``: probabilities.
    """
    import keras

    fold_ids = splits.fold_ids()
    oof = np.zeros((len(fold_ids), data.num_classes))
    oof[fold_ids == 0] = summary.val_probs
    spec = at_trial_size(spec, summary.params)
    for group in fold_groups(len(splits.folds)):
        parts, held = fold_parts(splits, group)
        feats = None if features is None else np.concatenate([features[fold_ids == i] for i in range(len(splits.folds))
                                                               if i not in group])
        model, timed_out = refit_trial(spec, summary.params, data, parts, space=space, num_classes=data.num_classes,
                                       finetune_epochs=summary.finetune_epochs, features=feats, deadline=deadline,
                                       seed=seed + summary.trial_id, prefix_cache=prefix_cache)
        if not timed_out:
            oof[np.isin(fold_ids, group)] = predict(model, data, held, input_size=spec.input_size)
        del model
        keras.backend.clear_session(free_memory=False)
        gc.collect()
        if timed_out:
            return None
    return oof


def cross_fit_trials(tuned: Any, specs: Mapping[str, BackboneSpec], data: Any, splits: Any, *, space: Any,
                     deadline: Any, features: Mapping[tuple[str, int], np.ndarray], predict: Callable[..., np.ndarray],
                     max_trials: int, probed_sizes: Mapping[str, int], seed: int = 0,
                     log: Callable[[str], None] = lambda _: None,
                     prefix_cache: PrefixCacheSettings = DEFAULT_SETTINGS) -> dict[int, np.ndarray]:
    """``{trial id: out-of-fold probabilities}`` of the best kept trials (at most ``max_trials``),
    best first, each only when its folds plus its later refit fit the time left after the refits
    already promised. A trial reverted to its head at the probed size is the probe's linear head
    (a member candidate already) and is skipped. ``features``: ``{(candidate, probed size): probe
    features of splits.labelled}``."""
    refits = len(fold_groups(len(splits.folds)))
    refit_share = len(splits.labelled) / max(1, len(splits.train))
    kept = sorted((tuned.summaries[t] for t in tuned.models), key=lambda s: s.key, reverse=True)
    out: dict[int, np.ndarray] = {}
    promised = 0.0
    for s in kept:
        if len(out) == max_trials:
            break
        size = at_trial_size(specs[s.backbone], s.params).input_size
        if s.finetune_epochs == 0 and size == probed_sizes.get(s.backbone):
            continue
        need = cross_fit_factor(splits) * s.refit_seconds
        if deadline.remaining() < need + promised:
            log(f"cross-fit: trial {s.trial_id} skipped: its {refits} cross-fits and refit need ~{need:.0f} s, "
                f"{max(0.0, deadline.remaining() - promised):.0f} s left")
            continue
        t0 = time.monotonic()
        oof = cross_fit_trial(s, specs[s.backbone], data, splits, space=space, deadline=deadline,
                              features=features.get((s.backbone, size)), predict=predict, seed=seed,
                              prefix_cache=prefix_cache)
        if oof is None:
            log(f"cross-fit: trial {s.trial_id} ran out of time")
            continue
        out[s.trial_id] = oof
        promised += s.refit_seconds * refit_share
        log(f"cross-fit: trial {s.trial_id} on {len(splits.folds) - 1} more folds in {time.monotonic() - t0:.0f} s")
    return out


__all__ = ["cross_fit_trial", "cross_fit_trials", "fold_parts", "nested_selection_probs", "oof_heads"]

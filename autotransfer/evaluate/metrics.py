"""Scores of a model on labelled items: metrics, the cross-validated estimate and its interval, error examples."""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from autotransfer import modalities
from autotransfer.data import LabelledData

__all__ = ["CV_NOTE", "NO_TEST_NOTE", "bootstrap_interval", "cv_estimate", "error_examples", "evaluate_model",
           "evaluation_split", "metrics_from_probs", "model_inputs", "predict_proba"]

#: What test_metrics.json and the report say when the data has no test split.
NO_TEST_NOTE = ("The data has no test split (its split column lists no 'test' rows), so these scores are on the "
                "validation split, of the model as tuned on train; validation also chose the trials and members, "
                "so they are optimistic, and the exported refit model (train+val) has no held-out score. "
                "Mark some rows 'test' for an honest estimate.")


def evaluation_split(splits: Any) -> tuple[np.ndarray, str]:
    """``(indices, split name)`` the final model is scored on: test, or val when test is empty."""
    test = np.asarray(splits.test, dtype=np.int64)
    if len(test):
        return test, "test"
    return np.asarray(splits.val, dtype=np.int64), "val"


def model_inputs(data: LabelledData, indices: np.ndarray, input_sizes: int | Sequence[int], *,
                 batch_size: int = 32) -> tf.data.Dataset:
    """Unlabelled batches of ``indices`` for a model with one input per size in ``input_sizes``
    (a tuple of batches in that order when there are several, as :func:`build_ensemble` expects)."""
    sizes = [int(input_sizes)] if isinstance(input_sizes, (int, np.integer)) else [int(s) for s in input_sizes]
    modality = modalities.for_data(data)
    sets = [modality.dataset(data, indices, size=s, batch_size=batch_size, with_labels=False) for s in sizes]
    return sets[0] if len(sets) == 1 else tf.data.Dataset.zip(tuple(sets))


def predict_proba(model: keras.Model, data: LabelledData, indices: np.ndarray, *, input_size: int | Sequence[int],
                  batch_size: int = 32) -> np.ndarray:
    """Class probabilities of ``model`` for ``indices`` (``[0, K]`` when there are none)."""
    if len(indices) == 0:
        return np.zeros((0, len(data.class_names)), np.float32)
    ds = model_inputs(data, indices, input_size, batch_size=batch_size)
    return np.concatenate([np.asarray(model(x if not isinstance(x, tuple) else list(x), training=False))
                           for x in ds])


def evaluate_model(
    model: keras.Model, data: LabelledData, indices: np.ndarray, *, input_size: int | Sequence[int],
    batch_size: int = 16,
) -> dict[str, Any]:
    """Accuracy, macro F1 and the confusion matrix of ``model`` on ``indices`` of ``data``.

    ``input_size``: the model's input size, or its sizes (an ensemble of members at several sizes).
    No indices: NaN accuracy and F1, an all-zero confusion matrix and ``num_test`` 0.
    """
    indices = np.asarray(indices, dtype=np.int64)
    probs = predict_proba(model, data, indices, input_size=input_size, batch_size=batch_size)
    return metrics_from_probs(probs, np.asarray(data.labels)[indices], list(data.class_names))


def metrics_from_probs(probs: np.ndarray, y_true: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """:func:`evaluate_model`'s metrics from class probabilities ``[N, K]`` and true labels ``[N]``."""
    k = len(class_names)
    if len(y_true) == 0:
        return {"accuracy": math.nan, "macro_f1": math.nan, "confusion_matrix": [[0] * k for _ in range(k)],
                "class_names": list(class_names), "num_test": 0}
    y_pred = probs.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=list(range(k)), zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
        "class_names": list(class_names),
        "num_test": int(len(y_true)),
    }


#: Bootstrap resamples behind a 95% interval.
BOOTSTRAP_SAMPLES = 1000


def bootstrap_interval(probs: np.ndarray, y_true: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = 0) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals of accuracy and macro-F1 (rows resampled with replacement)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probs).argmax(axis=1)
    k = int(np.asarray(probs).shape[1])
    rng = np.random.default_rng(seed)
    acc, f1 = [], []
    for _ in range(samples):
        i = rng.integers(0, len(y_true), len(y_true))
        acc.append(float(np.mean(y_pred[i] == y_true[i])))
        f1.append(float(f1_score(y_true[i], y_pred[i], average="macro", labels=list(range(k)), zero_division=0)))
    return {"accuracy_ci95": [float(np.percentile(acc, 2.5)), float(np.percentile(acc, 97.5))],
            "macro_f1_ci95": [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))]}


#: How test_metrics.json and the report describe a cross-validated estimate.
CV_NOTE = ("Cross-validated estimate: every one of the {n} labelled items was predicted by models that did not "
           "train on it ({k} stratified folds), averaged with members, weights and temperatures chosen without "
           "that item's fold (nested), and the 95% interval bootstraps those predictions. The exported model was "
           "then refit on all {n} items.")


def cv_estimate(probs: np.ndarray, y_true: np.ndarray, class_names: list[str], *, folds: int,
                seed: int = 0) -> dict[str, Any]:
    """Metrics of out-of-fold ``probs`` over every labelled row, with bootstrap intervals."""
    out = metrics_from_probs(probs, y_true, class_names)
    out.update(bootstrap_interval(probs, y_true, seed=seed), folds=int(folds), num_labelled=int(len(y_true)),
               method=f"{folds}-fold cross-validation, out-of-fold predictions, member selection nested, "
                      "95% bootstrap interval")
    return out


#: Misclassified items the report shows.
MAX_EXAMPLES = 12


def error_examples(probs: np.ndarray, data: LabelledData, indices: np.ndarray, *,
                   limit: int = MAX_EXAMPLES) -> list[dict[str, Any]]:
    """The ``limit`` misclassified items the model was surest of (most confident first), each with
    its index, true and predicted class, confidence and how the modality shows it in the report."""
    indices = np.asarray(indices, dtype=np.int64)
    if not len(indices):
        return []
    y_true = np.asarray(data.labels)[indices]
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-probs[wrong, y_pred[wrong]], kind="stable")][:limit]
    shown = modalities.for_data(data).show(data, indices[wrong]) if len(wrong) else []
    names = list(data.class_names)
    return [{"index": int(indices[j]), "true": names[int(y_true[j])], "predicted": names[int(y_pred[j])],
             "confidence": float(probs[j, y_pred[j]]), "item": item} for j, item in zip(wrong.tolist(), shown)]

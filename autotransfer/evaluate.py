"""Test-split evaluation of the tuned model and the fine-tune-vs-probe verdict."""
from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from autotransfer.data import LabelledData, image_dataset
from autotransfer.verdict import verdict

__all__ = ["evaluate_model", "model_inputs", "predict_proba", "verdict"]


def model_inputs(data: LabelledData, indices: np.ndarray, input_sizes: int | Sequence[int], *,
                 batch_size: int = 32) -> tf.data.Dataset:
    """Unlabelled batches of ``indices`` for a model with one image input per size in ``input_sizes``
    (a tuple of batches in that order when there are several, as :func:`build_ensemble` expects)."""
    sizes = [int(input_sizes)] if isinstance(input_sizes, (int, np.integer)) else [int(s) for s in input_sizes]
    sets = [image_dataset(data, indices, image_size=s, batch_size=batch_size, with_labels=False) for s in sizes]
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
    """
    probs = predict_proba(model, data, indices, input_size=input_size, batch_size=batch_size)
    y_true = data.labels[indices]
    y_pred = probs.argmax(axis=1)
    k = len(data.class_names)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=list(range(k)), zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
        "class_names": list(data.class_names),
        "num_test": int(len(indices)),
    }

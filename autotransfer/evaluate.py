"""Test-split evaluation of the tuned model and the fine-tune-vs-probe verdict."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from autotransfer.data import LabelledData, image_dataset
from autotransfer.verdict import verdict

__all__ = ["evaluate_model", "verdict"]


def evaluate_model(
    model: keras.Model, data: LabelledData, indices: np.ndarray, *, input_size: int, batch_size: int = 16
) -> dict[str, Any]:
    """Accuracy, macro F1 and the confusion matrix of ``model`` on ``indices`` of ``data``."""
    ds = image_dataset(data, indices, image_size=input_size, batch_size=batch_size, with_labels=False)
    probs = model.predict(ds, verbose=0)
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

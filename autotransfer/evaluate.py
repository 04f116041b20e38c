"""Test-split evaluation of the tuned model and the fine-tune-vs-probe verdict."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from autotransfer.data import LabelledData, image_dataset


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


def verdict(
    accuracy: float,
    probe_accuracy: float,
    *,
    num_test: int,
    train_per_class: float,
    unfreeze_blocks: int,
    trials_ok: int,
    budget_hit: bool,
) -> tuple[bool, str]:
    """Whether fine-tuning beat the best linear probe on the test split, and a one-paragraph why."""
    diff_pp = 100 * (accuracy - probe_accuracy)
    one_image_pp = 100 / max(num_test, 1)
    beats = accuracy > probe_accuracy
    if beats:
        text = f"Fine-tuning beat the best linear probe by {diff_pp:.1f} pp on the test split"
        if diff_pp <= one_image_pp * 2:
            text += f" (within two test images, {2 * one_image_pp:.1f} pp: treat as a tie)"
        return True, text + "."
    reasons = []
    if unfreeze_blocks == 0:
        reasons.append("the best trial unfroze no backbone block, so it is itself a probe with a trained head")
    if train_per_class < 50:
        reasons.append(f"with ~{train_per_class:.0f} training images per class, frozen features are already near what this data can support and fine-tuning risks over-fitting")
    if budget_hit:
        reasons.append("the time budget stopped tuning early")
    if trials_ok < 3:
        reasons.append(f"only {trials_ok} trial(s) finished, too few to tune the learning rate and depth")
    if abs(diff_pp) <= one_image_pp * 2:
        reasons.append(f"the gap ({diff_pp:.1f} pp) is within two test images ({2 * one_image_pp:.1f} pp) and is noise")
    if not reasons:
        reasons.append("the selected configuration over-fitted the validation split; more data or a wider search would help")
    return False, (
        f"Fine-tuning did not beat the best linear probe ({100 * accuracy:.1f}% vs {100 * probe_accuracy:.1f}%): "
        + "; ".join(reasons) + "."
    )

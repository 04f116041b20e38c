"""What a run optimises: the metric tuning and ensemble selection maximise, and whether classes weigh
equally (balanced class weights) in every fit and every choice.

``--metric auto`` picks macro-F1 when the labels are imbalanced (the largest class at least
:data:`IMBALANCE_RATIO` times the smallest), else accuracy: on imbalanced labels accuracy rewards
ignoring a small class, the failure a user of such data asks about first. ``--class-weight auto``
weighs classes equally exactly when the metric is macro-F1: heads, fine-tuning, temperatures and
the selection's log-loss then all count each class as much as the others, so the exported argmax
is the balanced decision macro-F1 scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ``--metric`` values (``auto`` resolves to one of the others from the labels).
METRICS = ("auto", "accuracy", "macro_f1", "log_loss")
#: ``--class-weight`` values.
CLASS_WEIGHTS = ("auto", "balanced", "none")
#: ``auto``: labels whose largest class has at least this many times the items of the smallest are
#: imbalanced (macro-F1, balanced weights); below it accuracy and plain weights.
IMBALANCE_RATIO = 1.5


def balanced_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights ``n / (K * count)`` over the classes present in ``y`` (scikit-learn's
    ``class_weight="balanced"``); absent classes get 0."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    out = np.zeros(num_classes)
    out[present] = len(y) / (present.sum() * counts[present])
    return out


@dataclass(frozen=True)
class Objective:
    """The run's metric (``accuracy``, ``macro_f1`` or ``log_loss``) and class weighting."""

    metric: str = "accuracy"
    balanced: bool = False

    def sample_weights(self, y: np.ndarray, num_classes: int | None = None) -> np.ndarray | None:
        """Each row's weight (balanced: its class's :func:`balanced_weights`), or None (all equal)."""
        if not self.balanced:
            return None
        y = np.asarray(y, dtype=np.int64)
        return balanced_weights(y, num_classes or int(y.max()) + 1)[y]

    def class_weight(self, y: np.ndarray, num_classes: int) -> dict[int, float] | None:
        """Keras' ``class_weight`` for labels like ``y``, or None when classes are not weighted."""
        if not self.balanced:
            return None
        return {k: float(w) for k, w in enumerate(balanced_weights(y, num_classes)) if w > 0}

    def score(self, probs: np.ndarray, y: np.ndarray) -> float:
        """The metric of ``probs`` (argmax decisions) on labels ``y``; larger is better (log-loss is
        negated)."""
        from sklearn.metrics import f1_score

        probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
        if self.metric == "macro_f1":
            return float(f1_score(y, probs.argmax(axis=1), average="macro", labels=np.unique(y), zero_division=0))
        if self.metric == "log_loss":
            return -weighted_log_loss(probs, y, self.sample_weights(y, probs.shape[1]))
        return float(np.mean(probs.argmax(axis=1) == y))

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "class_weight": "balanced" if self.balanced else "none"}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Objective":
        """The objective :meth:`to_dict` wrote (None: the default, accuracy unweighted)."""
        d = d or {}
        return cls(str(d.get("metric", "accuracy")), d.get("class_weight") == "balanced")


def weighted_log_loss(probs: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of the true class, each row weighted by ``weights`` (None: equally)."""
    p = np.clip(np.asarray(probs, dtype=np.float64)[np.arange(len(y)), np.asarray(y, dtype=np.int64)], 1e-15, 1.0)
    return float(np.average(-np.log(p), weights=weights))


def imbalance(y: np.ndarray) -> float:
    """Largest over smallest class count among the classes present in ``y`` (1.0 when balanced)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64))
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else 1.0


def resolve(metric: str, class_weight: str, y: np.ndarray) -> Objective:
    """The run's :class:`Objective` from ``--metric`` and ``--class-weight`` and its labelled rows ``y``."""
    if metric == "auto":
        metric = "macro_f1" if imbalance(y) >= IMBALANCE_RATIO else "accuracy"
    balanced = metric == "macro_f1" if class_weight == "auto" else class_weight == "balanced"
    return Objective(metric, balanced)


__all__ = ["CLASS_WEIGHTS", "IMBALANCE_RATIO", "METRICS", "Objective", "balanced_weights", "imbalance", "resolve",
           "weighted_log_loss"]

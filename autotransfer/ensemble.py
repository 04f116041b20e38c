"""Greedy ensemble selection on validation probabilities (Caruana et al., ICML 2004).

Pure NumPy: given every candidate model's class probabilities on the validation split, build the
ensemble one model at a time, each step adding (with replacement) the model whose addition gives
the lowest validation log-loss of the averaged probabilities. A model added k times out of n steps
gets weight k/n. Selection starts from the best single model, so the ensemble is that model until
averaging helps; it is kept only when it beats the best single model on validation.

Log-loss rather than accuracy: on a validation split of ~100 images accuracy moves in steps of one
image and most additions tie, while the log-loss still ranks them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

_EPS = 1e-7


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class."""
    p = np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)
    return float(-np.mean(np.log(p)))


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == y)) if len(y) else float("nan")


@dataclass
class EnsembleChoice:
    """The selected weights (name -> weight, summing to 1) and the validation figures behind them."""

    weights: dict[str, float]
    val_log_loss: float
    val_accuracy: float
    single: str                      # the best single model (by validation log-loss)
    single_log_loss: float
    single_accuracy: float
    steps: list[str] = field(default_factory=list)  # the model added at each step

    @property
    def is_ensemble(self) -> bool:
        return len(self.weights) > 1

    def to_dict(self) -> dict:
        return {
            "weights": dict(self.weights), "val_log_loss": self.val_log_loss, "val_accuracy": self.val_accuracy,
            "single": self.single, "single_log_loss": self.single_log_loss, "single_accuracy": self.single_accuracy,
            "val_accuracy_gain": self.val_accuracy - self.single_accuracy,
            "val_log_loss_gain": self.single_log_loss - self.val_log_loss, "steps": list(self.steps),
        }


def greedy_ensemble(val_probs: Mapping[str, np.ndarray], y_val: np.ndarray, *, max_steps: int = 20,
                    max_members: int = 4) -> EnsembleChoice:
    """Caruana's greedy forward selection with replacement over ``val_probs`` ({name: [n, K]}).

    At most ``max_steps`` additions and ``max_members`` distinct models (serving cost grows with
    members). Stops early when no addition lowers the validation log-loss. If the result does not
    beat the best single model on validation log-loss, the single model is returned.
    """
    if not val_probs:
        raise ValueError("greedy_ensemble: no candidate models.")
    y = np.asarray(y_val, dtype=np.int64)
    names = list(val_probs)
    probs = {n: np.asarray(val_probs[n], dtype=np.float64) for n in names}
    losses = {n: log_loss(probs[n], y) for n in names}
    # Ties on log-loss: the earlier name (callers list models best first).
    single = min(names, key=lambda n: (losses[n], names.index(n)))
    steps = [single]
    total = probs[single].copy()
    best_loss = losses[single]
    for _ in range(max_steps - 1):
        chosen = set(steps)
        pool = names if len(chosen) < max_members else [n for n in names if n in chosen]
        k = len(steps)
        trial = {n: log_loss((total + probs[n]) / (k + 1), y) for n in pool}
        pick = min(pool, key=lambda n: (trial[n], names.index(n)))
        if trial[pick] >= best_loss - 1e-9:
            break
        steps.append(pick)
        total += probs[pick]
        best_loss = trial[pick]
    counts = {n: steps.count(n) for n in dict.fromkeys(steps)}
    weights = {n: c / len(steps) for n, c in counts.items()}
    mixed = total / len(steps)
    return EnsembleChoice(weights=weights, val_log_loss=log_loss(mixed, y), val_accuracy=accuracy(mixed, y),
                          single=single, single_log_loss=losses[single], single_accuracy=accuracy(probs[single], y),
                          steps=steps)


def average(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The weighted mean of ``probs`` over the names in ``weights``."""
    return sum(float(w) * np.asarray(probs[n], dtype=np.float64) for n, w in weights.items())


__all__ = ["EnsembleChoice", "accuracy", "average", "greedy_ensemble", "log_loss"]

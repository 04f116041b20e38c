"""Greedy ensemble selection on validation probabilities (Caruana et al., ICML 2004), bagged.

Pure NumPy: given every candidate model's class probabilities on the validation split, build the
ensemble one model at a time, each step adding (with replacement) the model whose addition gives
the lowest validation log-loss of the averaged probabilities. A model added k times out of n steps
gets weight k/n. Selection starts from the best single model, so the ensemble is that model until
averaging helps; it is kept only when it beats the best single model on validation.
:func:`bagged_ensemble` averages such passes over random halves of the models (the paper's bagged
selection), which overfits a small validation split less.

Log-loss rather than accuracy: on a validation split of ~100 images accuracy moves in steps of one
image and most additions tie, while the log-loss still ranks them.

Fine-tuned networks are over-confident and the linear heads (cross-validated regularisation) are
not, so averaged raw probabilities give the fine-tuned members more say than their accuracy earns,
and the log-loss the selection ranks by punishes them for confidence rather than errors. Each
candidate is therefore temperature-scaled first (Guo et al., ICML 2017: one scalar per model,
fitted on the validation log-loss; it leaves the model's own argmax unchanged), and the export
serves the scaled probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

_EPS = 1e-7
#: The temperatures a model may get: wide enough for an over-confident fine-tuned network (about
#: 1.5-2.5 here), narrow enough that a tiny validation split cannot blow a model up or flatten it.
TEMPERATURE_BOUNDS = (0.5, 5.0)


def log_loss(probs: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean negative log-probability of the true class, each row weighted by ``weights`` (None: equally;
    the run's balanced class weights make every class count the same)."""
    p = np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)
    return float(-np.average(np.log(p), weights=weights))


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == y)) if len(y) else float("nan")


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)``: the probabilities of logits divided by the temperature."""
    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float64)
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The temperature within :data:`TEMPERATURE_BOUNDS` that minimises the log-loss of ``probs`` on
    labels ``y`` (1.0 without labels)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, dtype=np.int64)
    if not len(y):
        return 1.0
    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    res = minimize_scalar(lambda t: log_loss(temperature_scale(probs, float(np.exp(t))), y, weights), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-3})
    return float(np.exp(res.x))


@dataclass
class EnsembleChoice:
    """The selected weights (name -> weight, summing to 1) and the validation figures behind them."""

    weights: dict[str, float]
    val_log_loss: float
    val_accuracy: float
    single: str                      # the best single model (by validation log-loss)
    single_log_loss: float
    single_accuracy: float
    steps: list[str] = field(default_factory=list)  # the model added at each step (one greedy pass)
    bags: int = 1                    # greedy passes averaged (bagged selection)

    @property
    def is_ensemble(self) -> bool:
        return len(self.weights) > 1

    def to_dict(self) -> dict:
        return {
            "weights": dict(self.weights), "val_log_loss": self.val_log_loss, "val_accuracy": self.val_accuracy,
            "single": self.single, "single_log_loss": self.single_log_loss, "single_accuracy": self.single_accuracy,
            "val_accuracy_gain": self.val_accuracy - self.single_accuracy,
            "val_log_loss_gain": self.single_log_loss - self.val_log_loss, "steps": list(self.steps),
            "bags": self.bags,
        }


def greedy_ensemble(val_probs: Mapping[str, np.ndarray], y_val: np.ndarray, *, max_steps: int = 20,
                    max_members: int = 4, weights: np.ndarray | None = None) -> EnsembleChoice:
    """Caruana's greedy forward selection with replacement over ``val_probs`` ({name: [n, K]}).

    At most ``max_steps`` additions and ``max_members`` distinct models (serving cost grows with
    members). Stops early when no addition lowers the validation log-loss. If the result does not
    beat the best single model on validation log-loss, the single model is returned. ``weights``:
    each validation row's weight in the log-loss (None: equal).
    """
    if not val_probs:
        raise ValueError("greedy_ensemble: no candidate models.")
    y = np.asarray(y_val, dtype=np.int64)
    names = list(val_probs)
    probs = {n: np.asarray(val_probs[n], dtype=np.float64) for n in names}
    losses = {n: log_loss(probs[n], y, weights) for n in names}
    # Ties on log-loss: the earlier name (callers list models best first).
    single = min(names, key=lambda n: (losses[n], names.index(n)))
    steps = [single]
    total = probs[single].copy()
    best_loss = losses[single]
    for _ in range(max_steps - 1):
        chosen = set(steps)
        pool = names if len(chosen) < max_members else [n for n in names if n in chosen]
        k = len(steps)
        trial = {n: log_loss((total + probs[n]) / (k + 1), y, weights) for n in pool}
        pick = min(pool, key=lambda n: (trial[n], names.index(n)))
        if trial[pick] >= best_loss - 1e-9:
            break
        steps.append(pick)
        total += probs[pick]
        best_loss = trial[pick]
    counts = {n: steps.count(n) for n in dict.fromkeys(steps)}
    mixed = total / len(steps)
    return EnsembleChoice(weights={n: c / len(steps) for n, c in counts.items()},
                          val_log_loss=log_loss(mixed, y, weights), val_accuracy=accuracy(mixed, y),
                          single=single, single_log_loss=losses[single], single_accuracy=accuracy(probs[single], y),
                          steps=steps)


def bagged_ensemble(val_probs: Mapping[str, np.ndarray], y_val: np.ndarray, *, bags: int = 20,
                    fraction: float = 0.5, max_steps: int = 20, max_members: int = 4,
                    seed: int = 0, weights: np.ndarray | None = None) -> EnsembleChoice:
    """Bagged ensemble selection (Caruana et al., 2004, section 5.2): :func:`greedy_ensemble` on
    ``bags`` random subsets of the models (each model in a bag with probability ``fraction``), the
    bags' weights averaged, then the ``max_members`` heaviest kept and renormalised.

    One greedy pass over ~150 validation items overfits them: it stops after a few additions and
    leaves out models that only lose to the chosen ones by a fraction of an item. Averaging over
    bags gives every good model a share. The single best model is returned when the result does not
    beat it on validation log-loss (rows weighted by ``weights``, as in :func:`greedy_ensemble`).
    """
    names = list(val_probs)
    y = np.asarray(y_val, dtype=np.int64)
    full = greedy_ensemble(val_probs, y, max_steps=max_steps, max_members=max_members, weights=weights)
    if bags <= 1 or len(names) < 2:
        return full
    rng = np.random.default_rng(seed)
    summed: dict[str, float] = {}
    for _ in range(bags):
        subset = [n for n in names if rng.random() < fraction] or [names[int(rng.integers(len(names)))]]
        bag = greedy_ensemble({n: val_probs[n] for n in subset}, y, max_steps=max_steps, max_members=max_members,
                              weights=weights)
        for n, w in bag.weights.items():
            summed[n] = summed.get(n, 0.0) + w
    top = sorted(summed.items(), key=lambda kv: (-kv[1], names.index(kv[0])))[:max(1, max_members)]
    total = sum(w for _, w in top)
    chosen = {n: w / total for n, w in top}
    mixed = average(val_probs, chosen)
    loss = log_loss(mixed, y, weights)
    if len(chosen) > 1 and loss >= full.single_log_loss - 1e-9:
        chosen, mixed, loss = {full.single: 1.0}, np.asarray(val_probs[full.single], np.float64), full.single_log_loss
    return EnsembleChoice(weights=chosen, val_log_loss=loss, val_accuracy=accuracy(mixed, y), single=full.single,
                          single_log_loss=full.single_log_loss, single_accuracy=full.single_accuracy, steps=[],
                          bags=bags)


def scaled_selection(val_probs: Mapping[str, np.ndarray], y_val: np.ndarray, *, max_members: int = 4,
                     seed: int = 0, balanced: bool = False) -> tuple[EnsembleChoice, dict[str, float]]:
    """Each model temperature-scaled on val (:func:`fit_temperature`), then :func:`bagged_ensemble`
    over the scaled probabilities. Returns the choice and every model's temperature. ``balanced``:
    every class of ``y_val`` weighs the same in both log-losses (the run's balanced class weights)."""
    from autotransfer.objective import Objective

    weights = Objective(balanced=balanced).sample_weights(y_val, np.shape(next(iter(val_probs.values())))[1])
    temps = {n: fit_temperature(p, y_val, weights) for n, p in val_probs.items()}
    choice = bagged_ensemble({n: temperature_scale(p, temps[n]) for n, p in val_probs.items()}, y_val,
                             max_members=max(1, max_members), seed=seed, weights=weights)
    return choice, temps


def average(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The weighted mean of ``probs`` over the names in ``weights``."""
    return sum(float(w) * np.asarray(probs[n], dtype=np.float64) for n, w in weights.items())


__all__ = ["TEMPERATURE_BOUNDS", "EnsembleChoice", "accuracy", "average", "bagged_ensemble", "fit_temperature",
           "greedy_ensemble", "log_loss", "scaled_selection", "temperature_scale"]

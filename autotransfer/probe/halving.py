"""Successive halving over candidates (Jamieson & Talwalkar 2016; Li et al.'s Hyperband rung).

Rung r scores the surviving candidates on a stratified subsample of the TRAIN split with
``min_per_class * eta**r`` items per class (``subsample`` is nested, so rung r+1 contains rung r's
items and only the new ones need featurizing), keeps the best ``max(top_k, ceil(n / eta))`` and
grows the budget, until ``top_k`` remain or the next budget would be the whole train split. The
survivors then get the ordinary full-data probe (all splits). Eliminated candidates keep their
rung scores only: no full-data score and no val/test accuracy (NaN in the leaderboard).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from autotransfer.data.split import subsample
from autotransfer.errors import check_param

#: ``score_rung(names, train_indices, rung) -> {name: score}`` (higher is better; NaN = failed).
RungScorer = Callable[[list[str], np.ndarray, int], dict[str, float]]


@dataclass
class Rung:
    """One rung: its budget, the items, who was scored, who was kept, and how long it took."""

    rung: int
    per_class: int
    num_items: int
    candidates: list[str]
    scores: dict[str, float]
    kept: list[str]
    seconds: float

    def to_dict(self) -> dict:
        return {"rung": self.rung, "per_class": self.per_class, "num_items": self.num_items,
                "candidates": list(self.candidates), "scores": dict(self.scores), "kept": list(self.kept),
                "seconds": self.seconds}


@dataclass
class HalvingResult:
    survivors: list[str]
    rungs: list[Rung] = field(default_factory=list)
    last_rung: dict[str, int] = field(default_factory=dict)  # name -> last subsample rung it was scored in

    def eliminated_order(self) -> list[str]:
        """Eliminated candidates, best first: later rung first, then that rung's score."""
        out = []
        for rung in reversed(self.rungs):
            gone = [n for n in rung.candidates if n not in rung.kept]
            gone.sort(key=lambda n: -_finite(rung.scores.get(n, math.nan)))
            out += gone
        return out


def _finite(v: float) -> float:
    return v if v is not None and math.isfinite(v) else -math.inf


def plan_budgets(num_train_per_class: int, *, eta: int, min_per_class: int, rungs: int | None = None) -> list[int]:
    """Per-class budgets of the subsample rungs, below the full train split (may be empty)."""
    budgets, b = [], int(min_per_class)
    while b < num_train_per_class and (rungs is None or len(budgets) < rungs):
        budgets.append(b)
        b *= eta
    return budgets


def successive_halving(
    names: Sequence[str],
    train_indices: np.ndarray,
    labels: np.ndarray,
    score_rung: RungScorer,
    *,
    eta: int = 3,
    min_per_class: int = 5,
    top_k: int = 2,
    rungs: int | None = None,
    seed: int = 0,
) -> HalvingResult:
    """Run the subsample rungs; returns the survivors (to be probed on full data) and the rungs.

    ``labels`` is the dataset's full label array. ``rungs`` caps the number of subsample rungs
    (None: as many as fit below the full train split). A candidate whose rung score is NaN (it
    failed) is dropped.
    """
    check_param("eta", eta, "probe", "an int >= 2", isinstance(eta, int) and eta >= 2)
    check_param("min_per_class", min_per_class, "probe", "an int >= 2", isinstance(min_per_class, int) and min_per_class >= 2)
    check_param("top_k", top_k, "probe", "an int >= 1", isinstance(top_k, int) and top_k >= 1)
    train_indices = np.asarray(train_indices, dtype=np.int64)
    counts = np.bincount(np.unique(np.asarray(labels)[train_indices], return_inverse=True)[1])
    # A budget >= the largest class would be the whole split: that is the final full-data rung.
    budgets = plan_budgets(int(counts.max()), eta=eta, min_per_class=min_per_class, rungs=rungs)
    alive = list(names)
    result = HalvingResult(survivors=alive, last_rung={})
    for r, per_class in enumerate(budgets):
        if len(alive) <= top_k:
            break
        t0 = time.perf_counter()
        idx = subsample(train_indices, labels, per_class, seed=seed)
        scores = score_rung(list(alive), idx, r)
        ok = [n for n in alive if math.isfinite(scores.get(n, math.nan))]
        keep_n = max(top_k, math.ceil(len(alive) / eta))
        # Stable: ties keep the candidates' order.
        kept = sorted(ok, key=lambda n: -scores[n])[:keep_n]
        for n in alive:
            result.last_rung[n] = r
        result.rungs.append(Rung(r, per_class, len(idx), list(alive), dict(scores), kept, time.perf_counter() - t0))
        alive = kept
    result.survivors = alive
    return result

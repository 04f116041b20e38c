"""Successive halving over candidates (Jamieson & Talwalkar 2016; Li et al.'s Hyperband rung).

Rung r scores the surviving candidates on a stratified subsample of the TRAIN split with
``min_per_class * eta**r`` items per class (``subsample`` is nested, so rung r+1 contains rung r's
items and only the new ones need featurizing), keeps the best ``max(top_k, ceil(n / eta))`` and
grows the budget, until ``top_k`` remain or the next budget would be the whole train split. The
survivors then get the ordinary full-data probe (all splits). Eliminated candidates keep their
rung scores only: no full-data score and no val/test accuracy (NaN in the leaderboard).

Small subsamples rank near-tied candidates by chance, and a candidate dropped at rung 0 never comes
back. So a rung also keeps candidates whose score is within ``keep_within`` standard errors of
the cut-off score, at most as many as the rank keeps, nearest first (so each rung still shrinks) (the kept-last candidate's): ``score_i >= cut - keep_within * sqrt(se_i**2 +
se_cut**2)``, with each score's standard error from its CV folds. ``keep_within=0`` is the classic
rule. Candidates that are clearly worse are still dropped, which is where the time is saved.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from autotransfer.data.split import subsample
from autotransfer.errors import check_param

#: ``score_rung(names, train_indices, rung) -> {name: score or (score, standard error)}``
#: (higher is better; NaN = failed; no standard error = 0).
RungScorer = Callable[[list[str], np.ndarray, int], dict[str, "float | tuple[float, float]"]]


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
    #: How many the classic rule keeps; ``kept`` may hold more (within the cut-off's noise).
    keep_n: int = 0
    cutoff: float = math.nan

    def to_dict(self) -> dict:
        return {"rung": self.rung, "per_class": self.per_class, "num_items": self.num_items,
                "candidates": list(self.candidates), "scores": dict(self.scores), "kept": list(self.kept),
                "keep_n": self.keep_n, "cutoff": self.cutoff, "seconds": self.seconds}


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


def _score_se(v: "float | tuple[float, float] | None") -> tuple[float, float]:
    if isinstance(v, tuple):
        return float(v[0]), float(v[1]) if v[1] is not None and math.isfinite(v[1]) else 0.0
    return (math.nan if v is None else float(v)), 0.0


def select_rung(scores: dict[str, "float | tuple[float, float]"], order: Sequence[str], keep_n: int,
                keep_within: float = 2.0) -> tuple[list[str], float]:
    """Who survives a rung: the ``keep_n`` best plus those within ``keep_within`` standard errors of
    the cut-off (see the module docstring), at most ``keep_n`` of them, nearest first: an
    unbounded band kept 9 -> 8 -> 7 -> 7 resolution candidates at 100-900 items, which made
    halving slower than no halving (196 s vs 187 s). Returns ``(kept best first, cut-off score)``; NaN scores
    (failed candidates) are dropped; ties keep ``order``."""
    pairs = {n: _score_se(scores.get(n)) for n in order}
    ok = [n for n in order if math.isfinite(pairs[n][0])]
    ranked = sorted(ok, key=lambda n: -pairs[n][0])  # stable: ties keep the candidates' order
    if len(ranked) <= keep_n:
        return ranked, (pairs[ranked[-1]][0] if ranked else math.nan)
    cut, cut_se = pairs[ranked[keep_n - 1]]
    near = [n for n in ranked[keep_n:] if pairs[n][0] >= cut - keep_within * math.hypot(pairs[n][1], cut_se)]
    return ranked[:keep_n] + near[:keep_n], cut


def plan_budgets(num_train_per_class: int, *, eta: int, min_per_class: int, rungs: int | None = None) -> list[int]:
    """Per-class budgets of the subsample rungs, below the full train split (may be empty)."""
    budgets, b = [], int(min_per_class)
    while b < num_train_per_class and (rungs is None or len(budgets) < rungs):
        budgets.append(b)
        b *= eta
    return budgets


@dataclass
class SuccessiveHalving:
    """A halving schedule: rung budgets grow by ``eta`` from ``min_per_class`` items per class; each
    rung keeps ``max(top_k, ceil(n / eta))`` candidates plus those within ``keep_within`` standard
    errors of the cut-off (0 = the classic rule). ``rungs`` caps the number of subsample rungs
    (None: as many as fit below the full train split); ``seed`` seeds the subsamples."""

    eta: int = 3
    min_per_class: int = 5
    top_k: int = 2
    rungs: int | None = None
    seed: int = 0
    keep_within: float = 2.0

    def __post_init__(self) -> None:
        check_param("eta", self.eta, "probe", "an int >= 2", isinstance(self.eta, int) and self.eta >= 2)
        check_param("min_per_class", self.min_per_class, "probe", "an int >= 2",
                    isinstance(self.min_per_class, int) and self.min_per_class >= 2)
        check_param("top_k", self.top_k, "probe", "an int >= 1", isinstance(self.top_k, int) and self.top_k >= 1)
        check_param("keep_within", self.keep_within, "probe", "a number >= 0",
                    isinstance(self.keep_within, (int, float)) and self.keep_within >= 0)

    def budgets(self, train_indices: np.ndarray, labels: np.ndarray) -> list[int]:
        """Per-class budgets of the subsample rungs for this train split (``labels``: all items')."""
        train_indices = np.asarray(train_indices, dtype=np.int64)
        counts = np.bincount(np.unique(np.asarray(labels)[train_indices], return_inverse=True)[1])
        # A budget >= the largest class would be the whole split: that is the final full-data rung.
        return plan_budgets(int(counts.max()), eta=self.eta, min_per_class=self.min_per_class, rungs=self.rungs)

    def run(self, names: Sequence[str], train_indices: np.ndarray, labels: np.ndarray,
            score_rung: RungScorer) -> HalvingResult:
        """Run the subsample rungs; returns the survivors (to be probed on full data) and the rungs.

        ``labels`` is the dataset's full label array. A candidate whose rung score is NaN (it
        failed) is dropped.
        """
        train_indices = np.asarray(train_indices, dtype=np.int64)
        alive = list(names)
        result = HalvingResult(survivors=alive, last_rung={})
        for r, per_class in enumerate(self.budgets(train_indices, labels)):
            if len(alive) <= self.top_k:
                break
            t0 = time.perf_counter()
            idx = subsample(train_indices, labels, per_class, seed=self.seed)
            raw = score_rung(list(alive), idx, r)
            keep_n = max(self.top_k, math.ceil(len(alive) / self.eta))
            kept, cut = select_rung(raw, alive, keep_n, self.keep_within)
            scores = {n: _score_se(v)[0] for n, v in raw.items()}
            for n in alive:
                result.last_rung[n] = r
            result.rungs.append(Rung(r, per_class, len(idx), list(alive), scores, kept, time.perf_counter() - t0,
                                     keep_n=keep_n, cutoff=cut))
            alive = kept
        result.survivors = alive
        return result


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
    keep_within: float = 2.0,
) -> HalvingResult:
    """``SuccessiveHalving(...).run(...)`` in one call (see :class:`SuccessiveHalving`)."""
    schedule = SuccessiveHalving(eta=eta, min_per_class=min_per_class, top_k=top_k, rungs=rungs, seed=seed,
                                 keep_within=keep_within)
    return schedule.run(names, train_indices, labels, score_rung)

"""The run's clock: when tuning must stop, and what the stages after it will need.

A :class:`Budget` is the run's time budget and start, and the reserve kept after the final model
for evaluating, exporting and reporting it. A :class:`Deadline` is a wall-clock end (``time.time()``) and a reserve that the tune stage raises
as trials finish (the refit of the likely ensemble members costs about as much as their trials
did), so that tuning uses the budget and the final model still fits in it. Backends ask
:meth:`Deadline.can_start` before starting a trial and the trainer asks :meth:`Deadline.passed`
between batches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np


class Deadline:
    """``end`` (a ``time.time()`` value, or None for no deadline) minus a movable ``reserve``."""

    def __init__(self, end: float | None, reserve_s: float = 0.0, start_s: float = 0.0) -> None:
        self.end = None if end is None else float(end)
        self.reserve_s = float(reserve_s)
        self.start_s = float(start_s)  # what a new trial needs before :attr:`at` to be of use

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        """A deadline ``seconds`` from now (None: none)."""
        return cls(None if seconds is None else time.time() + float(seconds))

    @property
    def at(self) -> float | None:
        """The time tuning must stop by, or None."""
        return None if self.end is None else self.end - self.reserve_s

    def remaining(self) -> float:
        """Seconds until :attr:`at` (infinite without a deadline; negative once passed)."""
        return float("inf") if self.end is None else self.at - time.time()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def can_start(self) -> bool:
        """Whether a new trial still has the :attr:`start_s` seconds it needs."""
        return self.remaining() > self.start_s

    def __float__(self) -> float:
        return float("inf") if self.at is None else self.at

    def __repr__(self) -> str:
        return f"Deadline(end={self.end}, reserve_s={self.reserve_s:.1f}, start_s={self.start_s:.1f})"


#: Evaluate, export and report need seconds after the final model is trained, more with every
#: model served (each is traced, verified and evaluated; the per-model share is the zoo's at
#: 240 px on 2 cores, benchmarks/README.md, scaled by pixels for other sizes).
EXPORT_RESERVE_S = 20.0
EXPORT_RESERVE_PER_MODEL_S = 17.5
EXPORT_REFERENCE_PX = 240
#: Seconds the final stage spends on each member besides a fine-tuned refit: the flip-averaging
#: check predicts val twice at the member's size, a linear head's refit rebuilds its backbone
#: (the larger of the two on 2 CPU cores with the zoo).
FINAL_MEMBER_S = 15.0
#: Refit members whose tuned twins the default export reserve counts: the ensembles measured had 1-3
#: fine-tuned members, most weight on 1-2 (the tuner's refit reserve counts the members it would pick).
REFIT_MEMBERS = 2


def export_seconds(size: int) -> float:
    """Export reserve of one served model of input ``size`` (0: not an image), at least a quarter share."""
    if size <= 0:
        return EXPORT_RESERVE_PER_MODEL_S
    return EXPORT_RESERVE_PER_MODEL_S * max(0.25, (size / EXPORT_REFERENCE_PX) ** 2)


@dataclass
class Budget:
    """The run's time budget (``seconds``, None: none) counted from ``start`` (a ``time.monotonic()``
    value; a resumed run's start lies before its process started, by what the earlier run spent),
    and the models its final stage may serve: ``ensemble`` members, ``twins`` of them also served
    with their tuned weights."""

    seconds: float | None
    start: float
    ensemble: int = 1
    twins: int = 0

    @classmethod
    def for_run(cls, config: Any, start: float) -> "Budget":
        """The budget of a run of ``config`` (a :class:`~autotransfer.config.RunConfig`)."""
        twins = min(config.ensemble, REFIT_MEMBERS) if config.refit and config.keep_tuned else 0
        return cls(config.time_budget_s, start, config.ensemble, twins)

    def spent(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def finish_reserve(self, models: int | None = None, *, sizes: list[int] | None = None) -> float:
        """Seconds kept after the final model for exporting ``models`` served models (default: the
        most the ensemble may serve) at the full share each; or, when their input ``sizes`` are
        known, each scaled by its pixels (a text model, size 0, takes the full share). The plan
        and the tuning deadline keep the default."""
        if sizes is not None:
            return EXPORT_RESERVE_S + sum(export_seconds(s) for s in sizes)
        return EXPORT_RESERVE_S + EXPORT_RESERVE_PER_MODEL_S * (self.ensemble + self.twins if models is None else models)

    def deadline(self, sizes: list[int] | None = None) -> float | None:
        """``time.time()`` by which the final model serving models of input ``sizes`` (default: the
        most the ensemble may serve) must be trained, leaving the export reserve after it."""
        if self.seconds is None:
            return None
        return time.time() + (self.seconds - self.spent()) - self.finish_reserve(sizes=sizes)

    def hit(self) -> bool:
        """Whether the final model's deadline has passed."""
        end = self.deadline()
        return end is not None and time.time() >= end


def as_deadline(value: "Deadline | float | None") -> Deadline:
    """A :class:`Deadline` from a ``time.time()`` float, None, or a Deadline (returned as is)."""
    return value if isinstance(value, Deadline) else Deadline(value)


#: Refits that cross-fit a fine-tuned trial: folds 1..k-1 are held out in this many groups. Two
#: refits on 3/5 of the rows cost about 1.5 trials where one refit per fold (k - 1 = 4 on 80%)
#: costs 4: within a 10-20 minute budget a trial's cross-fit and refit then take about 2.75 trials
#: instead of 5.25, so a fine-tuned trial can become a member at all. The price: its out-of-fold
#: predictions come from models trained on fewer rows than its refit, which errs against it.
CROSSFIT_REFITS = 2


def fold_groups(k: int, refits: int = CROSSFIT_REFITS) -> list[list[int]]:
    """Folds 1..k-1 in at most ``refits`` contiguous groups, each held out by one cross-fit refit
    (fold 0 is the trial's own validation split)."""
    return [list(map(int, g)) for g in np.array_split(np.arange(1, k), min(refits, k - 1)) if len(g)]


def cross_fit_factor(splits: Any) -> float:
    """What a trial's cross-fit plus its final refit cost, in multiples of the trial's own refit
    seconds (a refit's time grows with its rows); under a fixed split only the refit on train +
    val."""
    labelled = len(splits.train) + len(splits.val)
    refit = labelled / max(1, len(splits.train))
    if not splits.folds:
        return refit
    sizes = [len(f) for f in splits.folds]
    held = [sum(sizes[i] for i in g) for g in fold_groups(len(sizes))]
    return refit + sum((labelled - h) / max(1, len(splits.train)) for h in held)


__all__ = ["CROSSFIT_REFITS", "EXPORT_RESERVE_PER_MODEL_S", "EXPORT_RESERVE_S", "FINAL_MEMBER_S", "Budget", "Deadline", "as_deadline", "cross_fit_factor", "export_seconds", "fold_groups"]

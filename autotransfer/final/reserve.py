"""What the final stage will need after tuning: the tune stage stops that much before its deadline."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from autotransfer.budget import FINAL_MEMBER_S, cross_fit_factor
from autotransfer.final.ensemble import scaled_selection
from autotransfer.final.members import selection_pool
from autotransfer.tune.tune import KEEP_MODELS, ReserveFn, TrialSummary, kept_trials


def final_reserve(members: int, splits: object, y_val: np.ndarray, heads: Mapping[str, np.ndarray], *,
                  seed: int = 0, balanced: bool = False) -> ReserveFn | None:
    """The tune stage's :data:`~autotransfer.tune.tune.ReserveFn` for a final model of at most
    ``members`` members refit on every labelled row (None: no refit, nothing to reserve). ``heads``:
    the linear heads' val probabilities, member candidates beside the trials; ``balanced``: the
    selection's class weighting (the final stage's)."""
    if not members:
        return None
    factor, keep = cross_fit_factor(splits), max(KEEP_MODELS, members)

    def reserve(summaries: dict[int, TrialSummary], affordable_s: float | None) -> float:
        return refit_reserve(summaries, members=members, factor=factor, keep=keep, y_val=y_val, heads=heads, seed=seed,
                             affordable_s=affordable_s, balanced=balanced)

    return reserve


def refit_reserve(summaries: dict[int, TrialSummary], *, members: int, factor: float, keep: int = KEEP_MODELS,
                  y_val: np.ndarray | None = None, heads: Mapping[str, np.ndarray] | None = None,
                  seed: int = 0, affordable_s: float | None = None, balanced: bool = False) -> float:
    """Seconds to keep free after tuning for the final stage: ``factor`` (train+val over train
    items) times the refit seconds of the trials the final stage would refit, plus
    :data:`FINAL_MEMBER_S` per member when the members are known. No safety margin: a refit stops
    at its deadline within a batch, so a slow one costs its member's refit, not the budget, while a
    margin would leave time idle.

    With ``y_val``, those are the trials that member selection (the final stage's own rule,
    :func:`~autotransfer.final.ensemble.scaled_selection` over the :func:`kept_trials` and the linear
    heads' val probabilities ``heads``, at most ``members`` members) picks from the trials so far:
    it often picks trials other than the best by val accuracy, and longer ones. Without it, the
    ``members`` best trials. ``affordable_s`` (cross-validation, where a trial is a member only once
    cross-fitted): trials whose ``factor`` x refit seconds exceed it are left out of that selection,
    since the final stage will skip them; reserving for them stopped tuning with time left unused."""
    best = sorted(summaries.values(), key=lambda s: s.key, reverse=True)
    if y_val is None or members <= 1 or not best:  # one member: the best trial (choose_members' rule)
        return factor * sum(s.refit_seconds for s in best[:members])
    kept = [s for s in kept_trials(summaries, keep) if s.val_probs is not None
            and (affordable_s is None or factor * s.refit_seconds <= affordable_s)]
    choice, _ = scaled_selection(selection_pool(kept, heads or {}), y_val, max_members=members, seed=seed,
                                 balanced=balanced)
    by_name = {f"trial {s.trial_id}": s for s in kept}
    trials = [by_name[n] for n in choice.weights if n in by_name]
    return factor * sum(s.refit_seconds for s in trials) + FINAL_MEMBER_S * len(choice.weights)


__all__ = ["final_reserve", "refit_reserve"]

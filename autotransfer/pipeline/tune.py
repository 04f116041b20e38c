"""Tune stage: fine-tune the probe's best candidates with KerasTuner or Optuna until the deadline
leaves the final model its time."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from autotransfer.config import DEFAULT_MAX_TRIALS, RunConfig
from autotransfer.errors import UserInputError
from autotransfer.pipeline.context import RunContext
from autotransfer.pipeline.final import linear_heads
from autotransfer.progress import log
from autotransfer.tune.tune import KEEP_MODELS

NAME = "tune"


def top_candidates(ctx: RunContext) -> list:
    """The probe's best ``top_k`` in rank order, at most one per network while others are left
    (the tuner tries them in this order).

    Layer and size variants of one network make correlated trials, and the final ensemble gains
    most from different networks; with fewer networks than ``top_k`` the next best variants fill up.
    Candidates fitted on the run's texts (TF-IDF) have nothing to fine-tune: they are never tuned,
    and take part as linear heads (member candidates of the final model) only.
    """
    specs = ctx.specs
    ranked = [n for n in ctx.probed.top(len(ctx.probed.leaderboard)) if not specs[n].is_fitted]
    if not ranked:
        fitted = [n for n, s in specs.items() if s.is_fitted]
        raise UserInputError(f"search space {ctx.space.name!r}: no probed candidate can be fine-tuned (fitted "
                             f"candidates {fitted} have no blocks to train). Add a module candidate (a handle).")
    out: list[str] = []
    for name in ranked:
        if (specs[name].base or name) not in {specs[n].base or n for n in out}:
            out.append(name)
    out += [n for n in ranked if n not in out]
    top = [specs[n] for n in out[:ctx.config.top_k]]
    log(f"probe: top-{len(top)} {[s.name for s in top]} ({ctx.timings.get('probe', 0.0):.1f} s)")
    return top


def load(ctx: RunContext) -> None:
    """The linear heads, and an earlier run's finished search."""
    from autotransfer.tune import load_tuned

    ctx.heads = linear_heads(ctx)
    ctx.tuned = load_tuned(top_candidates(ctx), ctx.data.num_classes, space=ctx.space.tuning, out_dir=ctx.run_dir)


def run(ctx: RunContext) -> None:
    """Fit the linear heads (member candidates the refit reserve counts), then search until the
    deadline (or the trial cap); trials and the kept models go to the run dir."""
    from autotransfer.tune import tune

    ctx.heads = linear_heads(ctx)
    top = top_candidates(ctx)
    deadline = ctx.deadline()
    remaining = None if deadline is None else max(deadline - time.time(), 1.0)
    c = ctx.config
    ctx.tuned = tune(top, ctx.data, ctx.splits, space=ctx.space.tuning, backend=c.tuner, max_trials=max_trials(c),
                     time_budget_s=remaining, features=ctx.probed.features, out_dir=ctx.run_dir, seed=c.seed,
                     progress=ctx.progress, reserve=_reserve(ctx), keep_models=max(KEEP_MODELS, c.ensemble),
                     expected_trials=ctx.expected_trials, resume=c.resume, shared=shared_study(ctx, top, deadline),
                     prefix_cache=ctx.prefix_cache(), objective=ctx.objective())


def _reserve(ctx: RunContext) -> Any:
    """What the final stage will need after tuning: the refit of the members it would pick now
    (among the kept trials and the linear heads, on val), and their cross-fits first."""
    from autotransfer.final.reserve import final_reserve

    y_val = np.asarray(ctx.data.labels, dtype=np.int64)[ctx.splits.val]
    heads = {name: _val_rows(ctx, p) for name, (_, p) in ctx.heads.items()}
    return final_reserve(ctx.config.ensemble if ctx.config.refit else 0, ctx.splits, y_val, heads, seed=ctx.config.seed,
                         balanced=ctx.objective().balanced)


def max_trials(config: RunConfig) -> int | None:
    """The trial cap: the user's; else none with a budget (tuning runs until the deadline), else the default."""
    if config.max_trials is not None or config.time_budget_s is not None:
        return config.max_trials
    return DEFAULT_MAX_TRIALS


def _val_rows(ctx: RunContext, probs: np.ndarray) -> np.ndarray:
    """A linear head's probabilities on the val split: its out-of-fold rows of val under
    cross-validation (``Splits.labelled`` ends with val), else all of them."""
    return probs[-len(ctx.splits.val):] if ctx.splits.folds is not None else probs


def shared_study(ctx: RunContext, candidates: list, deadline: float | None) -> Any:
    """The chief's side of ``--storage``: what its workers read from the study (None without it)."""
    from autotransfer.tune.tune import SharedStudy

    c = ctx.config
    if c.storage is None:
        return None
    if ctx.data_path is None:
        raise UserInputError("--storage: workers load the data from a path; pass an image folder or CSV, not arrays "
                             "or a DataFrame.")
    task = {"data": ctx.data_path, "fingerprint": ctx.data.fingerprint(), "splits": ctx.splits.to_dict(),
            "candidates": [s.to_dict() for s in candidates], "tuning": ctx.space.tuning.to_dict(), "seed": c.seed,
            "max_trials": max_trials(c), "deadline": deadline, "run_dir": str(ctx.run_dir.resolve()),
            "max_pixels": c.max_pixels, "columns": c.columns(), "prefix_cache": ctx.prefix_cache().to_dict(),
            "objective": ctx.objective().to_dict()}
    return SharedStudy(c.storage, c.study or ctx.run_dir.name, "chief", task)

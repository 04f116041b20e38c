"""Plan stage: time the candidates and say up front what fits the budget (``plan.json``).

Measuring costs about one module load per candidate, so the stage only runs with a time budget.
"""
from __future__ import annotations

import json
import math
import time

from autotransfer.errors import UserInputError
from autotransfer.pipeline.context import RunContext
from autotransfer.progress import log

NAME = "plan"


def skip(ctx: RunContext) -> bool:
    """Without a time budget there is nothing to plan."""
    return ctx.config.time_budget_s is None


def load(ctx: RunContext) -> None:
    """The candidates and expected trials of an earlier run's plan."""
    old = json.loads((ctx.run_dir / "plan.json").read_text())
    keep = old.get("recommended_candidates") if not old.get("fits", True) else None
    ctx.candidates = [c for c in ctx.candidates if not keep or c.name in keep]
    ctx.expected_trials = old.get("trials_fit")


def run(ctx: RunContext) -> None:
    """Measure first-batch costs, write the plan, refuse a budget too short for one model, and
    narrow the candidates only when a probe of all of them cannot fit."""
    from autotransfer.plan import ESTIMATE_MARGIN, make_plan, measure_costs
    from autotransfer.space import trial_input_size

    t0 = time.monotonic()
    tuning, budget, candidates = ctx.space.tuning, ctx.budget, ctx.candidates
    hi = tuning.unfreeze_blocks[1]
    costs = measure_costs(candidates, ctx.data, ctx.splits, batch_size=min(tuning.batch_size),
                          feature_batch_size=ctx.config.feature_batch_size,
                          unfreeze=10**6 if hi == "all" else int(hi), head_epochs=tuning.head_epochs,
                          head_warmup=tuning.head_warmup, measure_train="first")
    sizes = ctx.splits.sizes()
    trial_sizes = {c.name: [trial_input_size(v, c.input_size) for v in tuning.input_size] for c in candidates}
    plan = make_plan(costs, n_items=sum(sizes.values()), n_train=sizes["train"], n_val=sizes["val"],
                     n_test=sizes["test"], budget_s=budget.seconds, top_k=ctx.config.top_k,
                     max_trials=ctx.config.max_trials, max_epochs=tuning.max_epochs, spent_s=budget.spent(),
                     reserve_s=budget.finish_reserve(), min_reserve_s=budget.finish_reserve(1),
                     margin=ESTIMATE_MARGIN, trial_sizes=trial_sizes)
    ctx.write_json("plan.json", plan.to_dict())
    for line in plan.lines:
        log(f"plan: {line}")
    ctx.timed(NAME, t0)  # before the refusal below: a refused run's timings.json still holds its plan
    if plan.min_budget_s > budget.seconds:
        # Not even one model fits: refuse now rather than overrun the wall (plan.json keeps the estimate).
        need = math.ceil(plan.min_budget_s)
        raise UserInputError(f"--time-budget {budget.seconds:g}s is too short for this run: the cheapest "
                             f"candidate's probe, one trial and the export need about {need} s (estimate in "
                             f"{ctx.run_dir / 'plan.json'}). Give --time-budget {need}s or more, or smaller data.")
    # The trial estimate assumes every trial runs max_epochs; early stopping usually ends trials
    # sooner, and the deadline stops tuning anyway, so the trial count is left to the deadline.
    # Only a probe that cannot fit at all narrows the field.
    if not plan.fits and plan.recommended_candidates:
        ctx.candidates = [c for c in candidates if c.name in plan.recommended_candidates]
    ctx.expected_trials = plan.trials_fit

"""The stages in order, with resume, timings and interrupt checks in one place."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from autotransfer import interrupts
from autotransfer.pipeline import evaluate, export, final, plan, probe, tune
from autotransfer.pipeline.context import RunContext
from autotransfer.progress import RichProgress

#: Every stage module has ``NAME`` and ``run(ctx)``; ``load(ctx)`` where a resumed run may skip
#: it (its results are on disk: :data:`autotransfer.resume.SKIPPABLE`), ``skip(ctx)`` where it
#: applies only to some runs.
STAGES = (plan, probe, tune, final, evaluate, export)


def run_stages(ctx: RunContext, *, progress: bool = True) -> Path:
    """Run every stage on ``ctx`` (skipping what ``ctx.done`` holds), then render the report;
    returns the report's path. ``timings.json`` gets each stage's seconds (``<stage>_resumed``
    for a stage read back) and the total."""
    from autotransfer.report import render_report

    with RichProgress(progress) as prog:
        ctx.progress = prog
        for stage in STAGES:
            if getattr(stage, "skip", lambda _: False)(ctx):
                continue
            t0 = time.monotonic()
            resumed = stage.NAME in ctx.done and hasattr(stage, "load")
            (stage.load if resumed else stage.run)(ctx)
            ctx.timed(f"{stage.NAME}_resumed" if resumed else stage.NAME, t0)
            interrupts.check()  # a Ctrl-C whose exception was lost stops at the next stage boundary
        ctx.timings["total"] = ctx.budget.spent()
        ctx.write_json("timings.json", ctx.timings)
        return Path(render_report(ctx.run_dir))


def best_summary(ctx: RunContext) -> dict[str, Any]:
    """What ``Result.best`` says: the heaviest member speaks for an ensemble."""
    final = ctx.final
    lead = max(final.members, key=lambda m: m.weight)
    return {"backbone": lead.spec.name, "input_size": max(m.spec.input_size for m in final.members),
            "params": {"backbone": lead.spec.name, **lead.params}, "val_accuracy": final.choice.val_accuracy,
            "members": [m.to_dict() for m in final.members]}

"""Probe stage: score every candidate on frozen, cached features."""
from __future__ import annotations


import numpy as np

from autotransfer.pipeline.context import RunContext
from autotransfer.progress import log

NAME = "probe"


def run(ctx: RunContext) -> None:
    """Probe the candidates (``probe/``)."""
    from autotransfer.probe import probe

    c = ctx.config
    ctx.probed = probe(ctx.candidates, ctx.data, ctx.splits, scorer=c.scorer, batch_size=c.feature_batch_size,
                       seed=c.seed, progress=ctx.progress, halving=c.halving, top_k=c.top_k,
                       multi_source=c.multi_source)
    ctx.probed.save(ctx.run_dir)
    _after(ctx)


def load(ctx: RunContext) -> None:
    """An earlier run's probe (its features and scores)."""
    from autotransfer.probe import ProbeResult

    ctx.probed = ProbeResult.load(ctx.run_dir)
    log(f"probe: resumed from {ctx.run_dir / 'probe'} (features and scores of the earlier run)")
    _after(ctx)


def _after(ctx: RunContext) -> None:
    ctx.candidates = ctx.candidates + list(ctx.probed.specs.values())  # multi-source rows are candidates too
    ctx.specs = {c.name: c for c in ctx.candidates}


def features_of(probed: object, parts: tuple[str, ...]) -> dict[tuple[str, int], np.ndarray]:
    """``{(candidate, probed input size): its features of the splits in parts, concatenated}``."""
    sizes = dict(zip(probed.leaderboard["name"], probed.leaderboard["input_size"]))
    return {(n, int(sizes[n])): np.concatenate([f[p] for p in parts]) for n, f in probed.features.items() if n in sizes}

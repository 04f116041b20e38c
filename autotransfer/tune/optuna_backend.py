"""Optuna backend: seeded TPE sampling with median pruning on per-epoch val accuracy.

Why MedianPruner rather than HyperbandPruner: our budgets are a handful of trials (default 8),
too few to fill Hyperband's brackets, and each trial is already short (early stopping); the
median rule only needs a couple of finished trials to start cutting clearly bad configurations
(e.g. a weak backbone after its head warm-up).
"""
from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from autotransfer.tune.base import Objective, Reporter, TrialRecord, TunerBackend, register_backend, run_objective
from autotransfer.tune.space import ParamSpec, render_optuna


class _TrialFailed(Exception):
    """Raised inside Optuna's objective so the trial is marked FAIL and the study goes on."""


class OptunaBackend(TunerBackend):
    """Optuna study in memory.

    Args:
        sampler: an ``optuna.samplers.BaseSampler`` (default: TPE seeded with the search seed).
        pruner: an ``optuna.pruners.BasePruner`` (default: ``MedianPruner``).
        n_warmup_steps: epochs reported before the default pruner may prune (tune() passes
            ``head_epochs - 1`` so that the earliest cut is after the head warm-up).
    """

    name = "optuna"

    def __init__(self, *, sampler: Any = None, pruner: Any = None, n_warmup_steps: int = 0) -> None:
        self.sampler = sampler
        self.pruner = pruner
        self.n_warmup_steps = n_warmup_steps
        self.study: Any = None  # the last study, for inspection

    def search(
        self,
        objective: Objective,
        params: list[ParamSpec],
        *,
        max_trials: int,
        deadline: float | None,
        seed: int,
        work_dir: Path,
        first: Sequence[dict[str, Any]] = (),
    ) -> list[TrialRecord]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar shows trials
        # TPE's default 10 random start-up trials would be the whole of a small budget.
        sampler = self.sampler or optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, max_trials // 2)))
        pruner = self.pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=self.n_warmup_steps)
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        self.study = study
        for values in first:
            study.enqueue_trial(dict(values))  # partial: the other parameters are sampled
        records: list[TrialRecord] = []

        def optuna_objective(trial: Any) -> float:
            values = render_optuna(params, trial)

            def should_stop(epoch: int, val_accuracy: float) -> bool:
                trial.report(val_accuracy, epoch)
                return trial.should_prune()

            record = run_objective(objective, values, Reporter(trial.number, should_stop))
            records.append(record)
            if record.status.startswith("failed"):
                raise _TrialFailed(record.status)
            if record.status == "pruned":
                raise optuna.TrialPruned()
            return record.val_accuracy

        timeout = None if deadline is None else deadline - time.time()
        if timeout is not None and timeout <= 0:
            # The first trial always starts (it stops itself at the deadline); Optuna would run none.
            max_trials, timeout = 1, None
        study.optimize(optuna_objective, n_trials=max_trials, timeout=timeout, catch=(_TrialFailed,))
        return records


register_backend(OptunaBackend.name, OptunaBackend)

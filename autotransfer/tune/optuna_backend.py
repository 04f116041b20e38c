"""Optuna backend: seeded TPE sampling with median pruning on per-epoch val accuracy.

Why MedianPruner rather than HyperbandPruner: our budgets are a handful of trials (default 8),
too few to fill Hyperband's brackets, and each trial is already short (early stopping); the
median rule only needs a couple of finished trials to start cutting clearly bad configurations
(e.g. a weak backbone after its head warm-up).
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any

from autotransfer.tune.base import Objective, Reporter, TrialRecord, TunerBackend, register_backend, run_objective
from autotransfer.tune.budget import Deadline, as_deadline
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
        expected_trials: trials the budget is expected to allow when there is no ``max_trials``
            cap (sizes TPE's random start-up).
    """

    name = "optuna"

    def __init__(self, *, sampler: Any = None, pruner: Any = None, n_warmup_steps: int = 0,
                 expected_trials: int = 10) -> None:
        self.sampler = sampler
        self.expected_trials = expected_trials
        self.pruner = pruner
        self.n_warmup_steps = n_warmup_steps
        self.study: Any = None  # the last study, for inspection

    def search(
        self,
        objective: Objective,
        params: list[ParamSpec],
        *,
        max_trials: int | None,
        deadline: Deadline | float | None,
        seed: int,
        work_dir: Path,
        first: Sequence[dict[str, Any]] = (),
    ) -> list[TrialRecord]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar shows trials
        # TPE's default 10 random start-up trials would be the whole of a small budget.
        startup = min(10, max(2, (max_trials or self.expected_trials) // 2))
        sampler = self.sampler or optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
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

        deadline = as_deadline(deadline)

        def stop_at_deadline(study: Any, trial: Any) -> None:
            # The first trial always runs (it stops itself at the deadline); none starts after it.
            if deadline.passed():
                study.stop()

        study.optimize(optuna_objective, n_trials=max_trials, callbacks=[stop_at_deadline], catch=(_TrialFailed,))
        return records


register_backend(OptunaBackend.name, OptunaBackend)

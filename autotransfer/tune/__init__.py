"""Tune stage: search backbone + fine-tuning hyperparameters with KerasTuner or Optuna.

One trial is trained by ``autotransfer.train``; ``HEAD_LAYER``, ``build_task_model``, ``TrialOutcome``
and ``train_trial`` are re-exported from there.
"""
from autotransfer.tune.base import (
    ObjectiveResult,
    Reporter,
    ReportFn,
    TrialRecord,
    TunerBackend,
    get_backend,
    register_backend,
)
from autotransfer.space import ParamSpec, TuneSpace, render_keras_tuner, render_optuna
from autotransfer.train.task import HEAD_LAYER, build_task_model
from autotransfer.train.trainer import TrialOutcome, train_trial
from autotransfer.tune.store import TrialStore
from autotransfer.tune.tune import TRIAL_COLUMNS, SharedStudy, TuneResult, load_tuned, trials_frame, tune

__all__ = [
    "HEAD_LAYER",
    "ObjectiveResult",
    "ParamSpec",
    "ReportFn",
    "Reporter",
    "TRIAL_COLUMNS",
    "TrialOutcome",
    "TrialRecord",
    "TrialStore",
    "SharedStudy",
    "TuneResult",
    "TuneSpace",
    "TunerBackend",
    "build_task_model",
    "get_backend",
    "load_tuned",
    "register_backend",
    "render_keras_tuner",
    "render_optuna",
    "train_trial",
    "trials_frame",
    "tune",
]

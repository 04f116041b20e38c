"""Tune stage: search backbone + fine-tuning hyperparameters with KerasTuner or Optuna."""
from autotransfer.tune.base import (
    ObjectiveResult,
    Reporter,
    ReportFn,
    TrialRecord,
    TunerBackend,
    get_backend,
    register_backend,
)
from autotransfer.tune.space import ParamSpec, TuneSpace, render_keras_tuner, render_optuna
from autotransfer.tune.task import HEAD_LAYER, build_task_model
from autotransfer.tune.trainer import TrialOutcome, train_trial
from autotransfer.tune.tune import TRIAL_COLUMNS, TuneResult, trials_frame, tune

__all__ = [
    "HEAD_LAYER",
    "ObjectiveResult",
    "ParamSpec",
    "ReportFn",
    "Reporter",
    "TRIAL_COLUMNS",
    "TrialOutcome",
    "TrialRecord",
    "TuneResult",
    "TuneSpace",
    "TunerBackend",
    "build_task_model",
    "get_backend",
    "register_backend",
    "render_keras_tuner",
    "render_optuna",
    "train_trial",
    "trials_frame",
    "tune",
]

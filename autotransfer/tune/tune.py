"""The tune stage: search backbone + fine-tuning hyperparameters, keep the best trained model."""
from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import pandas as pd

from autotransfer.backbones import METADATA_FILE, BackboneSpec, HubBackbone, resolve_handle
from autotransfer.errors import AutotransferError, UserInputError, check_param
from autotransfer.tune.base import ObjectiveResult, ReportFn, TrialRecord, TunerBackend, get_backend
from autotransfer.tune.space import TuneSpace
from autotransfer.tune.trainer import train_trial

TRIAL_COLUMNS = [
    "trial_id", "backbone", "unfreeze_blocks", "learning_rate", "patience", "dropout",
    "val_accuracy", "epochs", "seconds", "status",
]
ProgressFn = Callable[[str, int, int, str], None]


@dataclass
class TuneResult:
    """The search outcome. ``best_model`` is the best trial's own trained model (kept in memory)."""

    best_params: dict[str, Any]
    best_backbone: str
    best_val_accuracy: float
    best_model: keras.Model
    trials: pd.DataFrame
    best_trial_id: int = -1


def _num_blocks(spec: BackboneSpec) -> int:
    meta = resolve_handle(spec.handle) / METADATA_FILE
    if meta.exists():
        blocks = json.loads(meta.read_text()).get("blocks")
        if blocks:
            return len(blocks)
    bb = HubBackbone.from_spec(spec)
    n = bb.num_blocks
    del bb
    return n


def _free_memory() -> None:
    # Trials build a new backbone each; without this, graph/name state piles up over a search.
    # Safe for the kept best model: it runs eagerly and keeps its own variables.
    keras.backend.clear_session(free_memory=False)
    gc.collect()


def tune(
    candidates: list[BackboneSpec],
    data: Any,
    splits: Any,
    *,
    space: TuneSpace,
    backend: str | TunerBackend = "keras-tuner",
    max_trials: int = 8,
    time_budget_s: float | None = None,
    features: dict | None = None,
    out_dir: Path,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> TuneResult:
    """Search over ``candidates`` (the probe's top-k) and the fine-tuning space with ``backend``.

    Each trial warms up a head then fine-tunes (see :func:`train_trial`) on a fresh backbone.
    The best trial's model is kept in memory as trials finish (no retraining); pruned trials
    only count when no trial finished. Writes ``trials.csv`` and ``best.json`` into ``out_dir``
    and KerasTuner's project files under ``out_dir/tuner``.

    Args:
        features: ``{name: {"train", "val", "test"} arrays}`` cached by the probe (optional).
        time_budget_s: no trial starts after it has elapsed and a running one stops at it.
        progress: ``progress("tune", done, total, message)`` after every trial.

    Raises:
        AutotransferError: when every trial failed.
    """
    if not candidates:
        raise UserInputError("tune: no candidate backbones. The probe stage must pass at least one.")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise UserInputError(f"tune: candidate names must be unique. Got {names}.")
    check_param("max_trials", max_trials, "tune()", "an int >= 1", isinstance(max_trials, int) and max_trials >= 1)
    check_param("time_budget_s", time_budget_s, "tune()", "None or a number > 0",
                time_budget_s is None or time_budget_s > 0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if time_budget_s is None else time.time() + float(time_budget_s)
    by_name = {c.name: c for c in candidates}
    blocks = {c.name: _num_blocks(c) for c in candidates}
    params = space.params(names, max(blocks.values()))
    if isinstance(backend, str):
        hints = {"keras-tuner": {"max_epochs": space.max_epochs},
                 # The earliest cut is after the head warm-up (one step when it is the probe's fit).
                 "optuna": {"n_warmup_steps": 0 if space.head_warmup == "probe" else max(0, space.head_epochs - 1)}}
        backend = get_backend(backend, **hints.get(backend, {}))

    # (not pruned, val accuracy): a finished trial beats any pruned one.
    best: dict[str, Any] = {"key": (False, -math.inf), "model": None, "params": None, "trial_id": None}
    done = [0]
    if progress:
        progress("tune", 0, max_trials, f"{backend.name}: starting")

    finished: list[TrialRecord] = []  # rewritten to trials.csv after every trial: a kill loses no finished trial

    def objective(p: dict[str, Any], report: ReportFn) -> ObjectiveResult:
        spec = by_name[p["backbone"]]
        started = time.monotonic()
        record = TrialRecord(int(report.trial_id), dict(p), math.nan, 0, 0.0, "failed: interrupted")
        try:
            out = train_trial(spec, p, data, splits, space=space, num_classes=data.num_classes,
                              features=features, deadline=deadline, report=report, seed=seed + int(report.trial_id))
            key = (not out.pruned, out.val_accuracy)
            if key > best["key"]:
                best.update(key=key, model=out.model, params=out.params, trial_id=int(report.trial_id))
            result = ObjectiveResult(out.val_accuracy, out.epochs, "timeout" if out.timed_out else "ok", out.params)
            record = TrialRecord(record.trial_id, dict(out.params), out.val_accuracy, out.epochs, 0.0,
                                 "pruned" if out.pruned else result.status)
            message = f"trial {report.trial_id}: {spec.name} val_accuracy={out.val_accuracy:.3f}"
            del out
            return result
        except Exception as exc:
            message = f"trial {report.trial_id}: {spec.name} failed ({type(exc).__name__})"
            record.status = f"failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            record.seconds = time.monotonic() - started
            finished.append(record)
            trials_frame(finished).to_csv(out_dir / "trials.csv", index=False)
            _free_memory()
            done[0] += 1
            if progress:
                progress("tune", min(done[0], max_trials), max_trials, message)

    # Every candidate gets a trial before the sampler may settle on one (probe order: under a cap
    # smaller than the candidate count, the probe's best are the ones tried).
    first = [{"backbone": n} for n in names] if len(names) > 1 else []
    records = backend.search(objective, params, max_trials=max_trials, deadline=deadline, seed=seed,
                             work_dir=out_dir / "tuner", first=first)
    trials = trials_frame(records)
    trials.to_csv(out_dir / "trials.csv", index=False)
    if best["model"] is None:
        first = next((r.status for r in records if r.status.startswith("failed")), "no trial ran")
        raise AutotransferError(f"tune: no trial finished ({len(records)} run; first problem: {first}).")
    best_params = dict(best["params"])
    backbone_name = best_params.pop("backbone")
    config = {**best_params, "head_warmup": space.head_warmup, "head_learning_rate": space.head_learning_rate,
              "head_epochs": space.head_epochs,
              "batch_size": space.batch_size}
    (out_dir / "best.json").write_text(json.dumps(
        {"backbone": backbone_name, "config": config, "val_accuracy": best["key"][1], "trial_id": best["trial_id"]},
        indent=2,
    ))
    return TuneResult(
        best_params={"backbone": backbone_name, **config},
        best_backbone=backbone_name,
        best_val_accuracy=float(best["key"][1]),
        best_model=best["model"],
        trials=trials,
        best_trial_id=best["trial_id"],
    )


def trials_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """One row per trial with the ``trials.csv`` columns first, then any extra parameters."""
    rows = []
    for r in records:
        row = {"trial_id": r.trial_id, **r.params, "val_accuracy": r.val_accuracy, "epochs": r.epochs,
               "seconds": round(r.seconds, 3), "status": r.status}
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in TRIAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype="object")
    return df[TRIAL_COLUMNS + [c for c in df.columns if c not in TRIAL_COLUMNS]]

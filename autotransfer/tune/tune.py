"""The tune stage: search backbone + fine-tuning hyperparameters, keep the best trained model."""
from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd

from autotransfer.backbones import METADATA_FILE, BackboneSpec, HubBackbone, resolve_handle
from autotransfer.errors import AutotransferError, UserInputError, check_param
from autotransfer.tune.base import ObjectiveResult, ReportFn, TrialRecord, TunerBackend, get_backend
from autotransfer.tune.budget import Deadline
from autotransfer.tune.space import TuneSpace
from autotransfer.tune.trainer import at_trial_size, probe_head_weights, train_trial

TRIAL_COLUMNS = [
    "trial_id", "backbone", "unfreeze_blocks", "learning_rate", "patience", "dropout",
    "val_accuracy", "val_loss", "epochs", "finetune_epochs", "seconds", "status",
]
ProgressFn = Callable[[str, int, int, str], None]
#: Trained models kept in memory for the ensemble and the export (the best by validation).
KEEP_MODELS = 6


@dataclass
class TrialSummary:
    """What the stages after tuning need of a finished trial (the model itself only for kept ones)."""

    trial_id: int
    backbone: str
    params: dict[str, Any]        # effective parameters (defaults filled in, unfreeze clipped)
    val_accuracy: float
    val_loss: float
    val_probs: np.ndarray          # [n_val, K] of the kept weights
    finetune_epochs: int           # what a refit replays (0: the warmed-up head alone)
    seconds: float
    pruned: bool = False

    @property
    def key(self) -> tuple[bool, float, float]:
        """Sort key, larger is better: finished beats pruned, then val accuracy, then val loss
        (which still separates trials that tie on a small validation split)."""
        return (not self.pruned, self.val_accuracy, -self.val_loss)


@dataclass
class TuneResult:
    """The search outcome. ``best_model`` is the best trial's own trained model (kept in memory)."""

    best_params: dict[str, Any]
    best_backbone: str
    best_val_accuracy: float
    best_model: keras.Model
    trials: pd.DataFrame
    best_trial_id: int = -1
    #: every finished trial, by trial id
    summaries: dict[int, TrialSummary] = field(default_factory=dict)
    #: the trained models of the best few trials (at most KEEP_MODELS), by trial id
    models: dict[int, keras.Model] = field(default_factory=dict)


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
    # Safe for the kept models: they run eagerly and keep their own variables.
    keras.backend.clear_session(free_memory=False)
    gc.collect()


class _Kept:
    """The trained models of the best ``size`` trials so far (by :attr:`TrialSummary.key`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.models: dict[int, keras.Model] = {}

    def offer(self, summary: TrialSummary, model: keras.Model, summaries: dict[int, TrialSummary]) -> None:
        self.models[summary.trial_id] = model
        if len(self.models) > self.size:
            worst = min(self.models, key=lambda t: summaries[t].key)
            del self.models[worst]


def refit_reserve(summaries: dict[int, TrialSummary], *, members: int, factor: float) -> float:
    """Seconds to keep free after tuning for refitting the likely ensemble members: ``factor``
    (train+val over train items) times the trial seconds of the ``members`` best trials."""
    best = sorted(summaries.values(), key=lambda s: s.key, reverse=True)[:members]
    return factor * sum(s.seconds for s in best)


def tune(
    candidates: list[BackboneSpec],
    data: Any,
    splits: Any,
    *,
    space: TuneSpace,
    backend: str | TunerBackend = "keras-tuner",
    max_trials: int | None = 8,
    time_budget_s: float | None = None,
    features: dict | None = None,
    out_dir: Path,
    seed: int = 0,
    progress: ProgressFn | None = None,
    refit_members: int = 0,
    expected_trials: int | None = None,
) -> TuneResult:
    """Search over ``candidates`` (the probe's top-k, best first) and the fine-tuning space with ``backend``.

    Each trial warms up a head then fine-tunes (see :func:`train_trial`) on a fresh backbone.
    The best few trials' models are kept in memory as trials finish (no retraining); pruned
    trials only count when no trial finished. Writes ``trials.csv`` and ``best.json`` into
    ``out_dir`` and KerasTuner's project files under ``out_dir/tuner``.

    Args:
        max_trials: the most trials; None runs until the time budget is spent (then
            ``time_budget_s`` is required).
        features: ``{name: {"train", "val", "test"} arrays}`` cached by the probe (optional).
        time_budget_s: no trial starts after it has elapsed and a running one stops at it.
        progress: ``progress("tune", done, total, message)`` after every trial.
        refit_members: how many trials the caller will refit on train+val afterwards: tuning stops
            early enough to leave their time (:func:`refit_reserve`) inside the budget.
        expected_trials: trials the budget is expected to allow (sizes the samplers' start-up when
            ``max_trials`` is None).

    Raises:
        AutotransferError: when every trial failed.
    """
    if not candidates:
        raise UserInputError("tune: no candidate backbones. The probe stage must pass at least one.")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise UserInputError(f"tune: candidate names must be unique. Got {names}.")
    check_param("max_trials", max_trials, "tune()", "None or an int >= 1",
                max_trials is None or (isinstance(max_trials, int) and max_trials >= 1))
    check_param("time_budget_s", time_budget_s, "tune()", "None or a number > 0",
                time_budget_s is None or time_budget_s > 0)
    if max_trials is None and time_budget_s is None:
        raise UserInputError("tune: give max_trials, a time budget, or both (without either it would never stop).")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = Deadline.after(time_budget_s)
    by_name = {c.name: c for c in candidates}
    blocks = {c.name: _num_blocks(c) for c in candidates}
    params = space.params(names, max(blocks.values()))
    if isinstance(backend, str):
        expect = {"expected_trials": expected_trials or 10}
        hints = {"keras-tuner": {"max_epochs": space.max_epochs, **expect},
                 # The earliest cut is a third into fine-tuning: its first epochs often dip below the
                 # warmed-up head before they pass it (a cut at the dip kills the good trials).
                 "optuna": {"n_warmup_steps": (1 if space.head_warmup == "probe" else space.head_epochs)
                            + max(1, space.max_epochs // 3) - 1, **expect}}
        backend = get_backend(backend, **hints.get(backend, {}))

    total = max_trials or expected_trials or 0
    summaries: dict[int, TrialSummary] = {}
    kept = _Kept(max(KEEP_MODELS, refit_members))
    heads: dict[tuple[str, int], list[np.ndarray]] = {}  # LP-FT heads: one fit per backbone and size
    sized_features: dict[tuple[str, int], dict] = {}  # features at trial sizes other than the probed one
    factor = (len(splits.train) + len(splits.val)) / max(1, len(splits.train))
    if progress:
        progress("tune", 0, total, f"{backend.name}: starting")

    finished: list[TrialRecord] = []  # rewritten to trials.csv after every trial: a kill loses no finished trial

    def objective(p: dict[str, Any], report: ReportFn) -> ObjectiveResult:
        spec = by_name[p["backbone"]]
        started = time.monotonic()
        record = TrialRecord(int(report.trial_id), dict(p), math.nan, 0, 0.0, "failed: interrupted")
        message = f"trial {report.trial_id}: {spec.name} interrupted"
        try:
            spec = at_trial_size(spec, p)
            feats = _trial_features(sized_features, spec, features, by_name[spec.name].input_size, data, splits)
            head = _lpft_head(heads, spec, feats, data, splits, space, seed)
            out = train_trial(spec, p, data, splits, space=space, num_classes=data.num_classes, features=feats,
                              deadline=deadline, report=report, seed=seed + int(report.trial_id), head=head)
            summary = TrialSummary(int(report.trial_id), spec.name, dict(out.params), out.val_accuracy, out.val_loss,
                                   out.val_probs, out.finetune_epochs, out.seconds, out.pruned)
            summaries[summary.trial_id] = summary
            kept.offer(summary, out.model, summaries)
            if refit_members:
                deadline.reserve_s = refit_reserve(summaries, members=refit_members, factor=factor)
            result = ObjectiveResult(out.val_accuracy, out.epochs, "timeout" if out.timed_out else "ok", out.params)
            record = TrialRecord(record.trial_id, {**out.params, "val_loss": out.val_loss,
                                                   "finetune_epochs": out.finetune_epochs},
                                 out.val_accuracy, out.epochs, 0.0, "pruned" if out.pruned else result.status)
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
            if progress:
                progress("tune", len(finished), max(total, len(finished)), message)

    # Every candidate gets a trial before the sampler may settle on one (probe order: under a cap
    # smaller than the candidate count, the probe's best are the ones tried).
    first = [{"backbone": n} for n in names] if len(names) > 1 else []
    records = backend.search(objective, params, max_trials=max_trials, deadline=deadline, seed=seed,
                             work_dir=out_dir / "tuner", first=first)
    # The objective's own records carry val_loss and the kept epochs; the backend's carry the status.
    extra = {r.trial_id: r.params for r in finished}
    for r in records:
        r.params = {**extra.get(r.trial_id, {}), **r.params}
    trials = trials_frame(records)
    trials.to_csv(out_dir / "trials.csv", index=False)
    if not kept.models:
        first_problem = next((r.status for r in records if r.status.startswith("failed")), "no trial ran")
        raise AutotransferError(f"tune: no trial finished ({len(records)} run; first problem: {first_problem}).")
    best = max((summaries[t] for t in kept.models), key=lambda s: s.key)
    best_params = {k: v for k, v in best.params.items() if k != "backbone"}
    config = {**best_params, "head_warmup": space.head_warmup, "head_learning_rate": space.head_learning_rate,
              "head_epochs": space.head_epochs, "batch_size": space.batch_size}
    (out_dir / "best.json").write_text(json.dumps(
        {"backbone": best.backbone, "config": config, "val_accuracy": best.val_accuracy, "val_loss": best.val_loss,
         "trial_id": best.trial_id}, indent=2))
    return TuneResult(
        best_params={"backbone": best.backbone, **config},
        best_backbone=best.backbone,
        best_val_accuracy=float(best.val_accuracy),
        best_model=kept.models[best.trial_id],
        trials=trials,
        best_trial_id=best.trial_id,
        summaries=summaries,
        models=dict(kept.models),
    )


def _trial_features(memo: dict[tuple[str, int], dict], spec: BackboneSpec, features: dict | None, probed_size: int,
                    data: Any, splits: Any) -> dict | None:
    """``{name: {"train", "val"}}`` features of ``spec`` at its (trial) input size: the probe's at
    the probed size, else extracted once per backbone and size and shared by later trials."""
    if spec.input_size == probed_size:
        return features
    key = (spec.name, spec.input_size)
    if key not in memo:
        from autotransfer.data import image_dataset
        from autotransfer.probe.featurize import extract_features

        bb = HubBackbone.from_spec(spec)
        memo[key] = {s: extract_features(bb, image_dataset(data, getattr(splits, s), image_size=spec.input_size,
                                                           batch_size=64, with_labels=False))
                     for s in ("train", "val")}
        del bb
    return {spec.name: memo[key]}


def _lpft_head(heads: dict[tuple[str, int], list[np.ndarray]], spec: BackboneSpec, features: dict | None, data: Any,
               splits: Any, space: TuneSpace, seed: int) -> list[np.ndarray] | None:
    """The LP-FT head of ``spec`` on the train split, fitted once per backbone and size and reused
    by its trials (same features, same labels: the same fit); None when the head warms up with
    Adam or the features are not at hand (the trainer then fits it itself)."""
    if space.head_warmup != "probe":
        return None
    key = (spec.name, spec.input_size)
    if key not in heads:
        f = (features or {}).get(spec.name)
        if not f or "train" not in f or len(f["train"]) != len(splits.train):
            return None
        y = np.asarray(data.labels, dtype=np.int64)[splits.train]
        heads[key] = probe_head_weights(np.asarray(f["train"], np.float32), y, data.num_classes, seed=seed)
    return heads[key]


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

"""The tune stage: search backbone + fine-tuning hyperparameters, keep the best trained model."""
from __future__ import annotations

import gc
import logging
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd

from autotransfer import interrupts
from autotransfer.backbones import METADATA_FILE, BackboneSpec, HubBackbone, resolve_handle
from autotransfer.errors import AutotransferError, UserInputError, check_param
from autotransfer.tune.base import STATUSES, ObjectiveResult, ReportFn, TrialRecord, TunerBackend, get_backend, worker_id
from autotransfer.budget import Deadline, cross_fit_factor
from autotransfer.config import DEFAULT_MAX_TRIALS
from autotransfer.objective import Objective
from autotransfer.train.prefix import DEFAULT_SETTINGS, PrefixCacheSettings
from autotransfer.space import TuneSpace
from autotransfer.tune.store import INTERRUPTED, TrialStore
from autotransfer.train.trainer import at_trial_size, load_trial_model, probe_head_weights, train_trial

log = logging.getLogger(__name__)
TRIAL_COLUMNS = [
    "trial_id", "backbone", "unfreeze_blocks", "learning_rate", "patience", "dropout",
    "val_accuracy", "val_loss", "epochs", "finetune_epochs", "seconds", "status",
]
ProgressFn = Callable[[str, int, int, str], None]
#: Least share of a trial's seconds a refit is reserved: the model load, the head and the input
#: pipeline cost that much even when no fine-tuning epoch is replayed.
REFIT_MIN_SHARE = 0.1
#: Trained models checkpointed for the ensemble and the export (the best by validation).
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
    finetune_epochs_run: int | None = None  # fine-tuning epochs the trial trained (None: not recorded)
    val_score: float | None = None  # the run's metric on val (None: val accuracy, the metric before there was a choice)

    @property
    def refit_seconds(self) -> float:
        """About what a refit of this trial costs: it replays the kept fine-tuning epochs only, so a
        trial whose fine-tuning was reverted to its head refits in a fraction of its time. Unknown
        epochs, or none run (a head-only trial): the whole trial's seconds."""
        if not self.finetune_epochs_run:
            return self.seconds
        share = self.finetune_epochs / self.finetune_epochs_run
        return self.seconds * max(share, REFIT_MIN_SHARE)

    @property
    def key(self) -> tuple[bool, float, float]:
        """Sort key, larger is better: finished beats pruned, then the run's metric on val
        (:attr:`score`), then val loss (which still separates trials that tie on a small validation split)."""
        return (not self.pruned, self.score, -self.val_loss)

    @property
    def score(self) -> float:
        """The run's metric on val, larger is better (the tuner's objective)."""
        return self.val_accuracy if self.val_score is None else self.val_score


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


def kept_trials(summaries: dict[int, TrialSummary], size: int) -> list[TrialSummary]:
    """The ``size`` best trials (by :attr:`TrialSummary.key`, the earliest first among equals) whose
    val predictions differ: trials whose fine-tuning was reverted to the same warmed-up head are one
    model (Fashion-MNIST: up to 8 trials of one backbone and size), and a copy adds nothing to an
    ensemble but takes the place of a model that might."""
    out: list[TrialSummary] = []
    for s in sorted(summaries.values(), key=lambda s: s.key, reverse=True):
        if len(out) == size:
            break
        if not any(_same_predictions(s.val_probs, k.val_probs) for k in out):
            out.append(s)
    return out


#: Status of a trial not run because it repeats a reverted one (:func:`reverted_twin`).
REPEAT = "repeat"
#: Learning rates within this factor of a reverted trial's count as its configuration.
REPEAT_LR_FACTOR = 2.0


def reverted_twin(spec: BackboneSpec, p: dict[str, Any], summaries: dict[int, TrialSummary]) -> TrialSummary | None:
    """A finished trial whose fine-tuning was reverted to its warmed-up head (it never beat the
    head on val) and whose configuration ``p`` repeats: same backbone, input size, augmentation
    and unfrozen blocks (and trial type; contrastive steps), learning rate within :data:`REPEAT_LR_FACTOR`. Running it again would
    spend a trial's time to rebuild the same head (small data: eight copies of one head in a run)."""
    size = at_trial_size(spec, p).input_size
    for s in summaries.values():
        q = s.params
        if s.finetune_epochs or s.pruned or q.get("backbone") != p.get("backbone"):
            continue
        # A contrastive trial repeats only a contrastive one of as many steps.
        keys = ("augment", "unfreeze_blocks", "trial_type",
                *(("contrastive_steps",) if p.get("trial_type") == "contrastive" else ()))
        same = (at_trial_size(spec, q).input_size == size
                and all(str(q.get(k)) == str(p.get(k)) for k in keys if k in p))
        lr_p, lr_q = p.get("learning_rate"), q.get("learning_rate")
        close = lr_p is None or lr_q is None or max(lr_p, lr_q) <= REPEAT_LR_FACTOR * min(lr_p, lr_q)
        if same and close:
            return s
    return None


def _same_predictions(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and np.shape(a) == np.shape(b) and np.allclose(a, b, atol=1e-5)


class _Kept:
    """The trained models of the :func:`kept_trials` (the best ``size`` distinct ones), checkpointed
    in the trial store; the ones this process trained stay in memory too."""

    def __init__(self, size: int, store: TrialStore) -> None:
        self.size = size
        self.store = store
        self.models: dict[int, keras.Model] = {}

    def offer(self, summary: TrialSummary, model: keras.Model, summaries: dict[int, TrialSummary]) -> None:
        keep = {s.trial_id for s in kept_trials(summaries, self.size)}
        if summary.trial_id in keep:
            self.store.save_weights(summary.trial_id, model)
            self.models[summary.trial_id] = model
        for t in set(self.store.kept_ids()) - keep:  # other workers' too: outside the best, never back in
            self.store.drop_weights(t)
            self.models.pop(t, None)


#: ``reserve(summaries, affordable_s) -> seconds``: what the stages after tuning will need, given
#: the trials finished so far (tuning stops that much before its deadline). ``affordable_s``: under
#: cross-validation the seconds left, which bound the trials the final stage can still cross-fit;
#: None otherwise. The final stage supplies it (:func:`autotransfer.final.reserve.final_reserve`).
ReserveFn = Callable[[dict[int, "TrialSummary"], "float | None"], float]


def crossfit_start_s(summaries: dict[int, TrialSummary], factor: float) -> float:
    """Under cross-validation, the seconds a new trial needs before the deadline to be of any use:
    a trial becomes a member only once cross-fitted, so after a typical trial (the median of the
    finished ones) there must be time to cross-fit and refit (``factor`` x refit seconds) a typical
    trial or the best so far, whichever costs more. A trial started with less would end past the
    time its cross-fit needs, and would take the time of the best trial's cross-fit with it.
    0 before any trial has finished."""
    done = [s for s in summaries.values() if not s.pruned] or list(summaries.values())
    if not done:
        return 0.0
    best = max(done, key=lambda s: s.key)
    refit = max(float(np.median([s.refit_seconds for s in done])), best.refit_seconds)
    return float(np.median([s.seconds for s in done])) + factor * refit


@dataclass
class SharedStudy:
    """An Optuna study on a storage other processes reach (``role``: "chief" creates it and
    writes ``task``, what a worker needs to run trials; "worker" joins it)."""

    storage: str
    name: str
    role: str = "chief"
    task: dict[str, Any] | None = None


def _first_trials(names: list[str], space: TuneSpace) -> list[dict[str, Any]]:
    """The fixed values of the first trials: one per candidate in probe order (under a cap smaller
    than the candidate count, the probe's best are the ones tried), before the sampler may settle on
    one. They skip augmentation where the space allows it: those trials fine-tune on cached prefix
    activations (2-3x faster epochs), and augmentation did not pay on its own on digits or
    Fashion-MNIST (benchmarks/README.md), so the first round is the cheapest informative one."""
    cheap = {"augment": "none"} if "none" in space.augment and len(space.augment) > 1 else {}
    if len(names) > 1:
        return [{"backbone": n, **cheap} for n in names]
    return [cheap] if cheap else []


def _check_tune_args(candidates: list[BackboneSpec], max_trials: int | None, time_budget_s: float | None) -> None:
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


def _make_backend(backend: str | TunerBackend, space: TuneSpace, expected_trials: int | None,
                  shared: SharedStudy | None) -> TunerBackend:
    if not isinstance(backend, str):
        return backend
    expect = {"expected_trials": expected_trials or 10}
    study = {} if shared is None else {"storage": shared.storage, "study_name": shared.name, "role": shared.role,
                                       "task": shared.task}
    if shared is not None and backend != "optuna":
        raise UserInputError("--storage: distributed tuning uses optuna. Add --tuner optuna (or drop --storage).")
    hints = {"keras-tuner": {"max_epochs": space.max_epochs, **expect},
             # The earliest cut is a third into fine-tuning: its first epochs often dip below the
             # warmed-up head before they pass it (a cut at the dip kills the good trials).
             "optuna": {"n_warmup_steps": (1 if space.head_warmup == "probe" else space.head_epochs)
                        + max(1, space.max_epochs // 3) - 1, **expect, **study}}
    return get_backend(backend, **hints.get(backend, {}))


class _TrialRunner:
    """The backend-neutral objective: trains one trial, records it in the store whatever happens
    (finished, failed, interrupted) and keeps the best few models."""

    def __init__(self, *, candidates: list[BackboneSpec], data: Any, splits: Any, space: TuneSpace, features: dict | None,
                 store: TrialStore, deadline: Deadline, seed: int, reserve: ReserveFn | None, progress: ProgressFn | None,
                 total: int, keep: int, prefix_cache: PrefixCacheSettings = DEFAULT_SETTINGS,
                 objective: Objective = Objective()) -> None:
        self.by_name = {c.name: c for c in candidates}
        self.objective = objective
        self.y_val = np.asarray(data.labels, dtype=np.int64)[splits.val]
        self.prefix_cache = prefix_cache
        self.data, self.splits, self.space, self.features = data, splits, space, features
        self.store, self.deadline, self.seed = store, deadline, seed
        self.reserve, self.progress, self.total = reserve, progress, total
        self.kept = _Kept(keep, store)
        self.heads: dict[tuple[str, int], list[np.ndarray]] = {}  # LP-FT heads: one fit per backbone and size
        self.sized_features: dict[tuple[str, int], dict] = {}  # features at trial sizes other than the probed one
        # A trial's cross-fit and refit (final.crossfit.cross_fit_trials), in multiples of its refit seconds.
        self.factor = cross_fit_factor(splits)
        self.worker = worker_id()

    def summaries(self) -> dict[int, TrialSummary]:
        return _summaries(self.store)

    def __call__(self, p: dict[str, Any], report: ReportFn) -> ObjectiveResult:
        trial_id, started = int(report.trial_id), time.monotonic()
        spec = self.by_name[p["backbone"]]
        record: dict[str, Any] = {"trial_id": trial_id, "params": dict(p), "val_accuracy": math.nan, "epochs": 0,
                                  "status": INTERRUPTED, "worker": self.worker}
        message = f"trial {trial_id}: {spec.name} interrupted"
        try:
            twin = reverted_twin(spec, p, self.summaries())
            if twin is not None:
                record.update(status=REPEAT, val_accuracy=twin.val_accuracy, val_score=twin.score,
                              repeat_of=twin.trial_id, seconds=0.0)
                self.store.save(record)
                message = (f"trial {trial_id}: skipped, it repeats trial {twin.trial_id}, whose fine-tuning did not "
                           "beat its head")
                return ObjectiveResult(twin.score, 0, "ok", dict(twin.params))
            name, out = self._train(spec, p, report)
            ran = len(out.history.get("finetune", {}).get("loss", []))
            score = self.objective.score(out.val_probs, self.y_val)
            summary = TrialSummary(trial_id, name, dict(out.params), out.val_accuracy, out.val_loss,
                                   out.val_probs, out.finetune_epochs, out.seconds, out.pruned, ran, score)
            status = "pruned" if out.pruned else "timeout" if out.timed_out else "ok"
            record.update(params={**out.params, "val_loss": out.val_loss, "finetune_epochs": out.finetune_epochs},
                          val_accuracy=out.val_accuracy, val_score=score, epochs=out.epochs, status=status,
                          finetune_epochs=out.finetune_epochs, finetune_epochs_run=ran, trial_seconds=out.seconds,
                          pruned=out.pruned)
            record["seconds"] = round(time.monotonic() - started, 3)
            self.store.save(record, out.val_probs)
            summaries = self.summaries()
            self.kept.offer(summary, out.model, summaries)
            cross_fit = self.splits.folds is not None and self.deadline.end is not None
            if self.reserve is not None:
                self.deadline.reserve_s = self.reserve(summaries, self.deadline.end - time.time() if cross_fit else None)
            self.deadline.start_s = crossfit_start_s(summaries, self.factor) if cross_fit else 0.0
            message = f"trial {trial_id}: {spec.name} val_accuracy={out.val_accuracy:.3f}"
            interrupts.check()  # a Ctrl-C whose exception was lost mid-trial: no next trial
            return ObjectiveResult(score, out.epochs, "timeout" if out.timed_out else "ok", out.params)
        except Exception as exc:
            if interrupts.requested():  # a Ctrl-C that TensorFlow reported as another error
                raise KeyboardInterrupt from exc
            message = f"trial {trial_id}: {spec.name} failed ({type(exc).__name__})"
            record["status"] = f"failed: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            raise
        finally:
            record["seconds"] = round(time.monotonic() - started, 3)
            if record["status"] == INTERRUPTED or record["status"].startswith("failed"):
                self.store.save(record)
            done = len(write_trials_csv(self.store, self.store.root.parent))  # a kill loses no finished trial
            _free_memory()
            if self.progress:
                self.progress("tune", done, max(self.total, done), message)

    def finished(self, trial_id: int) -> tuple[str, float] | None:
        """(status, val accuracy) of a trial the store holds as finished, else None (a backend asks
        after a kill that came between the trial's end and the tuner's record of it)."""
        r = self.store.record(trial_id)
        done = r is not None and (r["status"] in STATUSES or r["status"] == REPEAT)
        return (r["status"], float(r.get("val_score", r["val_accuracy"]))) if done else None

    def load_model(self, trial_id: int) -> keras.Model:
        """A checkpointed trial's model (KerasTuner's ``load_model`` asks for it)."""
        s = self.summaries()[trial_id]
        return load_trial_model(self.by_name[s.backbone], s.params, self.space, self.data.num_classes,
                                self.store.weights_path(trial_id))

    def _train(self, spec: BackboneSpec, p: dict[str, Any], report: ReportFn) -> tuple[str, Any]:
        spec = at_trial_size(spec, p)
        feats = _trial_features(self.sized_features, spec, self.features, self.by_name[spec.name].input_size,
                                self.data, self.splits)
        if self.objective.balanced:  # a trial parameter, so that its refits and cross-fits weigh classes alike
            p = {**p, "class_weight": "balanced"}
        head = _lpft_head(self.heads, spec, feats, self.data, self.splits, self.space, self.seed,
                          self.objective.balanced)
        out = train_trial(spec, p, self.data, self.splits, space=self.space, num_classes=self.data.num_classes,
                          features=feats, deadline=self.deadline, report=report,
                          seed=self.seed + int(report.trial_id), head=head, prefix_cache=self.prefix_cache)
        return spec.name, out


def _summaries(store: TrialStore) -> dict[int, TrialSummary]:
    """Every finished (not failed, not interrupted) trial in ``store``, by trial id."""
    out = {}
    for r in store.records():
        if r["status"] not in STATUSES:
            continue
        probs = store.val_probs(r["trial_id"])
        params = {k: v for k, v in r["params"].items() if k not in ("val_loss", "finetune_epochs")}
        out[r["trial_id"]] = TrialSummary(r["trial_id"], params["backbone"], params, float(r["val_accuracy"]),
                                          float(r["params"].get("val_loss", math.nan)), probs,
                                          int(r.get("finetune_epochs", 0)), float(r.get("trial_seconds", r.get("seconds", 0.0))),
                                          bool(r.get("pruned", False)), r.get("finetune_epochs_run"),
                                          r.get("val_score"))
    return out


def _open_store(out_dir: Path, *, resume: bool, shared: SharedStudy | None) -> TrialStore:
    """The trial store under ``out_dir`` (created), emptied unless resuming or joining as a worker."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = TrialStore(out_dir / "trials")
    if not resume and (shared is None or shared.role == "chief"):
        store.clear()
    return store


def tune(candidates: list[BackboneSpec], data: Any, splits: Any, *, space: TuneSpace,
         backend: str | TunerBackend = "keras-tuner", max_trials: int | None = DEFAULT_MAX_TRIALS, time_budget_s: float | None = None,
         features: dict | None = None, out_dir: Path, seed: int = 0, progress: ProgressFn | None = None,
         reserve: ReserveFn | None = None, keep_models: int = KEEP_MODELS, expected_trials: int | None = None,
         resume: bool = False, shared: SharedStudy | None = None,
         prefix_cache: PrefixCacheSettings = DEFAULT_SETTINGS, objective: Objective = Objective()) -> TuneResult:
    """Search over ``candidates`` (the probe's top-k, best first) and the fine-tuning space with ``backend``.

    Each trial warms up a head then fine-tunes a fresh backbone (:func:`train_trial`). Finished
    trials go to the trial store (``out_dir/trials``), which checkpoints the best few trials'
    weights as they finish (no retraining); pruned trials count only when none finished. The
    tuner's own state is under ``out_dir/tuner`` (KerasTuner's project, or Optuna's SQLite study
    unless ``shared`` names another storage). Writes ``trials.csv`` and ``best.json`` into ``out_dir``.

    Args:
        max_trials: the most trials; None runs until ``time_budget_s`` (then required) is spent.
        time_budget_s: no trial starts after it has elapsed and a running one stops at it.
        features: ``{name: {"train", "val", "test"} arrays}`` cached by the probe (optional).
        progress: ``progress("tune", done, total, message)`` after every trial.
        reserve: the seconds the stages after tuning will need (:data:`ReserveFn`); None: none.
        keep_models: the best trials whose models are kept (checkpointed) for the stages after.
        expected_trials: trials the budget is expected to allow (sizes the samplers' start-up when
            ``max_trials`` is None).
        resume: continue the search in ``out_dir`` (finished trials are not repeated; an
            interrupted one runs again); else any earlier search there is discarded.
        shared: run as the chief (or a worker) of a study other processes share (optuna only); a
            worker returns None, the chief assembles the result.
        prefix_cache: the trials' frozen-prefix cache settings (:class:`~autotransfer.train.prefix.PrefixCacheSettings`).
        objective: the metric trials are ranked by (the tuner's objective) and whether their classes
            weigh the same (:class:`~autotransfer.objective.Objective`; default: accuracy, unweighted).

    Raises:
        AutotransferError: when every trial failed.
        KeyboardInterrupt: on Ctrl-C, after the running trial is recorded as interrupted.
    """
    _check_tune_args(candidates, max_trials, time_budget_s)
    out_dir = Path(out_dir)
    store = _open_store(out_dir, resume=resume, shared=shared)
    deadline = Deadline.after(time_budget_s)
    names = [c.name for c in candidates]
    blocks = {c.name: _num_blocks(c) for c in candidates}
    params = space.params(names, max(blocks.values()))
    backend = _make_backend(backend, space, expected_trials, shared)
    total = max_trials or expected_trials or 0
    runner = _TrialRunner(candidates=candidates, data=data, splits=splits, space=space, features=features, store=store,
                          deadline=deadline, seed=seed, reserve=reserve, progress=progress, total=total, keep=keep_models,
                          prefix_cache=prefix_cache, objective=objective)
    if progress:
        progress("tune", len(store.records()), total, f"{backend.name}: {'resuming' if resume else 'starting'}")
    backend.search(runner, params, max_trials=max_trials, deadline=deadline, seed=seed, work_dir=out_dir / "tuner",
                   first=_first_trials(names, space), resume=resume)
    if shared is not None and shared.role == "worker":
        return None  # type: ignore[return-value]  # the chief assembles the result
    if shared is not None:
        _replay_best_elsewhere(backend, store, runner)
    return _tune_result(store, {c.name: c for c in candidates}, space, data.num_classes, out_dir, runner.kept.models)


def _replay_best_elsewhere(backend: TunerBackend, store: TrialStore, runner: _TrialRunner) -> None:
    """Retrain the study's best trial here when a worker ran it on a machine whose trial store the
    chief does not see (same parameters, same seed: the same model)."""
    from autotransfer.tune.base import Reporter

    study = getattr(backend, "study", None)
    completed = [t for t in study.trials if t.value is not None] if study is not None else []
    if not completed:
        return
    best = max(completed, key=lambda t: t.value)
    if best.number not in store.kept_ids():
        log.info("the best trial %s ran on %s: retraining it here", best.number, best.user_attrs.get("worker"))
        runner(dict(best.params), Reporter(best.number))


def load_tuned(candidates: list[BackboneSpec], num_classes: int, *, space: TuneSpace, out_dir: Path) -> TuneResult:
    """The result of a finished tune stage, read back from ``out_dir`` (a resumed run skips tuning)."""
    return _tune_result(TrialStore(Path(out_dir) / "trials"), {c.name: c for c in candidates}, space, num_classes,
                        Path(out_dir), {})


def _tune_result(store: TrialStore, specs: dict[str, BackboneSpec], space: TuneSpace, num_classes: int,
                 out_dir: Path, in_memory: dict[int, keras.Model]) -> TuneResult:
    """trials.csv (from the store), best.json, and the kept models (from memory or their checkpoints)."""
    records = store.records()
    trials = write_trials_csv(store, out_dir)
    summaries = _summaries(store)
    kept = [t for t in store.kept_ids() if t in summaries]
    if not kept:
        first_problem = next((r["status"] for r in records if r["status"].startswith("failed")), "no trial ran")
        raise AutotransferError(f"tune: no trial finished ({len(records)} run; first problem: {first_problem}).")
    models = {t: in_memory.get(t) or load_trial_model(specs[summaries[t].backbone], summaries[t].params, space,
                                                       num_classes, store.weights_path(t)) for t in kept}
    best = max((summaries[t] for t in kept), key=lambda s: s.key)
    best_params = {k: v for k, v in best.params.items() if k != "backbone"}
    config = {**space.fixed_defaults(), **best_params, "head_warmup": space.head_warmup,
              "head_epochs": space.head_epochs}
    (out_dir / "best.json").write_text(json.dumps(
        {"backbone": best.backbone, "config": config, "val_accuracy": best.val_accuracy, "val_loss": best.val_loss,
         "trial_id": best.trial_id, "weights": str(store.weights_path(best.trial_id))}, indent=2))
    return TuneResult(best_params={"backbone": best.backbone, **config}, best_backbone=best.backbone,
                      best_val_accuracy=float(best.val_accuracy), best_model=models[best.trial_id], trials=trials,
                      best_trial_id=best.trial_id, summaries=summaries, models=models)


def _trial_features(memo: dict[tuple[str, int], dict], spec: BackboneSpec, features: dict | None, probed_size: int,
                    data: Any, splits: Any) -> dict | None:
    """``{name: {"train", "val"}}`` features of ``spec`` at its (trial) input size: the probe's at
    the probed size, else extracted once per backbone and size and shared by later trials."""
    if spec.input_size == probed_size:
        return features
    key = (spec.name, spec.input_size)
    if key not in memo:
        from autotransfer.probe.featurize import extract_features, feature_dataset

        bb = HubBackbone.from_spec(spec)
        memo[key] = {s: extract_features(bb, feature_dataset(data, getattr(splits, s), spec.input_size, 64))
                     for s in ("train", "val")}
        del bb
    return {spec.name: memo[key]}


def _lpft_head(heads: dict[tuple[str, int], list[np.ndarray]], spec: BackboneSpec, features: dict | None, data: Any,
               splits: Any, space: TuneSpace, seed: int, balanced: bool = False) -> list[np.ndarray] | None:
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
        heads[key] = probe_head_weights(np.asarray(f["train"], np.float32), y, data.num_classes, seed=seed,
                                        balanced=balanced)
    return heads[key]


def write_trials_csv(store: TrialStore, out_dir: Path) -> pd.DataFrame:
    """``trials.csv``: one row per trial of the store (its mirror of the study), by trial id."""
    trials = trials_frame([TrialRecord(r["trial_id"], {**r["params"], "worker": r.get("worker", "")},
                                       r["val_accuracy"], r["epochs"], r.get("seconds", 0.0), r["status"])
                           for r in store.records()])
    tmp = Path(out_dir) / f".trials.csv.{os.getpid()}.tmp"
    trials.to_csv(tmp, index=False)
    os.replace(tmp, Path(out_dir) / "trials.csv")
    return trials


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

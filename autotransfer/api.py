"""``run``: one call from a labelled dataset to an exported, reported model.

data -> backbones -> probe -> tune -> final model (ensemble, refit) -> evaluate -> export -> report;
every stage leaves its results in the run directory as plain files before the next starts, so an
interrupted run loses nothing.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from autotransfer import interrupts
from autotransfer.config import DEFAULT_MAX_TRIALS, RunConfig, load_search_space, parse_duration
from autotransfer.params import BY_NAME, params_doc
from autotransfer.params import DEFAULTS as D
from autotransfer.errors import RunInterrupted, UserInputError
from autotransfer.progress import RichProgress, log
from autotransfer.result import Result

# Evaluate, export and report need seconds after the final model is trained, more with every model
# served (each is traced, verified and evaluated; the per-model figure is the zoo's at 240 px on 2
# cores, benchmarks/README.md); keep them out of the tuner's and the refit's share.
#: The built-in search space for data of each modality when --search-space is not given.
DEFAULT_SPACES = {"image": "offline", "text": "text-offline"}
_EXPORT_RESERVE_S = 20.0
_EXPORT_RESERVE_PER_MEMBER_S = 17.5
_EXPORT_REFERENCE_PX = 240
#: Refit members whose tuned twins the default export reserve counts: the ensembles measured had 1-3
#: fine-tuned members, most weight on 1-2 (the tuner's refit reserve counts the members it would pick).
_REFIT_MEMBERS = 2


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _run_dir(out: str | Path | None, name: str | None, data_source: str) -> Path:
    if out is not None:
        run_dir = Path(out)
    else:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(data_source.split()[-1] if data_source else "run").name).strip("-") or "run"
        run_dir = Path("reports") / (name or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}")
    return run_dir  # created and locked by RunDirLock.claim


def _finish_reserve(config: RunConfig, models: int | None = None, *, sizes: list[int] | None = None) -> float:
    """Seconds kept after the final model for exporting ``models`` served models (default: the most
    the ensemble may have, with the tuned twins of the refit members the tuner keeps time for) at
    the full share each; or, when their input ``sizes`` are known, each scaled by its pixels (the
    tracing, warm-up and test predictions run at that size; a text model, size 0, takes the full
    share). The plan and the tuning deadline keep the default."""
    if sizes is not None:
        return _EXPORT_RESERVE_S + sum(_export_seconds(s) for s in sizes)
    if models is None:
        twins = min(config.ensemble, _REFIT_MEMBERS) if config.refit and config.keep_tuned else 0
        models = config.ensemble + twins
    return _EXPORT_RESERVE_S + _EXPORT_RESERVE_PER_MEMBER_S * models


def _export_seconds(size: int) -> float:
    """Export reserve of one served model of input ``size`` (0: not an image), at least a quarter share."""
    if size <= 0:
        return _EXPORT_RESERVE_PER_MEMBER_S
    return _EXPORT_RESERVE_PER_MEMBER_S * max(0.25, (size / _EXPORT_REFERENCE_PX) ** 2)


@dataclass
class _Run:
    """What the stages of one run share: inputs, the run directory, the clock."""

    config: RunConfig
    space: Any
    data: Any
    splits: Any
    run_dir: Path
    start: float
    timings: dict[str, float]
    #: stages an earlier run into this directory finished (``--resume`` skips them), with their seconds
    done: dict[str, float] = field(default_factory=dict)
    #: the data as a path, when it was given as one (what a shared study's workers load)
    data_path: str | None = None

    def deadline(self, sizes: list[int] | None = None) -> float | None:
        """``time.time()`` by which the final model serving models of input ``sizes`` (default: the
        most the ensemble may have) must be trained, leaving the export reserve after it."""
        if self.config.time_budget_s is None:
            return None
        reserve = _finish_reserve(self.config, sizes=sizes)
        return time.time() + (self.start + self.config.time_budget_s - time.monotonic()) - reserve

    def timed(self, stage: str, t0: float) -> None:
        self.timings[stage] = time.monotonic() - t0
        _write_json(self.run_dir / "timings.json", self.timings)


def _check_modality(space: Any, data: Any) -> None:
    """The search space's candidates must take what the data holds."""
    if space.modality != data.modality:
        raise UserInputError(
            f"{data.source} holds {data.modality} ({len(data)} items loaded), but search space {space.name!r} "
            f"({space.path}) is for {space.modality}: pass --search-space {DEFAULT_SPACES[data.modality]} (or drop "
            f"--search-space for the {data.modality} default), or a YAML with 'modality: {data.modality}'.")


def _with_data(space: Any, data: Any) -> Any:
    """The search space with what depends on the data resolved (``input_size: auto``)."""
    from autotransfer.data import typical_image_side

    tuning = space.tuning
    if "auto" in tuning.input_size:
        tuning = tuning.with_data(typical_image_side(data))
        log(f"tuning.input_size auto -> {', '.join(tuning.input_size)} (cap in px; the data's images are "
            f"~{typical_image_side(data) or 0:.0f} px)")
    return replace(space, tuning=tuning)


def _plan(run: _Run, candidates: list) -> tuple[list, int | None]:
    """Measure first-batch costs and say up front what fits the budget (plan.json).

    Returns the candidates to probe and how many trials the plan expects. Measuring costs about one
    module load per candidate, so it only runs when a budget is set.
    """
    from autotransfer.plan import ESTIMATE_MARGIN, make_plan, measure_costs
    from autotransfer.tune.space import trial_input_size

    if "plan" in run.done:
        old = json.loads((run.run_dir / "plan.json").read_text())
        keep = old.get("recommended_candidates") if not old.get("fits", True) else None
        return [c for c in candidates if not keep or c.name in keep], old.get("trials_fit")
    t0 = time.monotonic()
    tuning = run.space.tuning
    hi = tuning.unfreeze_blocks[1]
    costs = measure_costs(candidates, run.data, run.splits, batch_size=min(tuning.batch_size),
                          feature_batch_size=run.config.feature_batch_size,
                          unfreeze=10**6 if hi == "all" else int(hi), head_epochs=tuning.head_epochs,
                          head_warmup=tuning.head_warmup, measure_train="first")
    sizes = run.splits.sizes()
    trial_sizes = {c.name: [trial_input_size(v, c.input_size) for v in tuning.input_size] for c in candidates}
    plan = make_plan(costs, n_items=sum(sizes.values()), n_train=sizes["train"], n_val=sizes["val"],
                     n_test=sizes["test"], budget_s=run.config.time_budget_s, top_k=run.config.top_k,
                     max_trials=run.config.max_trials, max_epochs=tuning.max_epochs,
                     spent_s=time.monotonic() - run.start, reserve_s=_finish_reserve(run.config),
                     min_reserve_s=_finish_reserve(run.config, 1), margin=ESTIMATE_MARGIN, trial_sizes=trial_sizes)
    _write_json(run.run_dir / "plan.json", plan.to_dict())
    for line in plan.lines:
        log(f"plan: {line}")
    run.timed("plan", t0)
    if plan.min_budget_s > run.config.time_budget_s:
        # Not even one model fits: refuse now rather than overrun the wall (plan.json keeps the estimate).
        need = math.ceil(plan.min_budget_s)
        raise UserInputError(f"--time-budget {run.config.time_budget_s:g}s is too short for this run: the cheapest "
                             f"candidate's probe, one trial and the export need about {need} s (estimate in "
                             f"{run.run_dir / 'plan.json'}). Give --time-budget {need}s or more, or smaller data.")
    # The trial estimate assumes every trial runs max_epochs; early stopping usually ends trials
    # sooner, and the deadline stops tuning anyway, so the trial count is left to the deadline.
    # Only a probe that cannot fit at all narrows the field.
    if not plan.fits and plan.recommended_candidates:
        candidates = [c for c in candidates if c.name in plan.recommended_candidates]
    return candidates, plan.trials_fit


def _max_trials(config: RunConfig) -> int | None:
    """The trial cap: the user's; else none with a budget (tuning runs until the deadline), else the default."""
    if config.max_trials is not None or config.time_budget_s is not None:
        return config.max_trials
    return DEFAULT_MAX_TRIALS


def _probe_stage(run: _Run, candidates: list, prog: Any) -> tuple[Any, list]:
    from autotransfer.probe import ProbeResult, probe

    t0 = time.monotonic()
    if "probe" in run.done:
        probed = ProbeResult.load(run.run_dir)
        run.timed("probe_resumed", t0)
        log(f"probe: resumed from {run.run_dir / 'probe'} (features and scores of the earlier run)")
        return probed, candidates + list(probed.specs.values())
    c = run.config
    probed = probe(candidates, run.data, run.splits, scorer=c.scorer, batch_size=c.feature_batch_size, seed=c.seed,
                   progress=prog, halving=c.halving, top_k=c.top_k, multi_source=c.multi_source)
    probed.save(run.run_dir)
    run.timed("probe", t0)
    return probed, candidates + list(probed.specs.values())  # multi-source rows are candidates too


def _tuning_candidates(probed: Any, specs: dict, k: int) -> list[str]:
    """The probe's best ``k`` in rank order, at most one per network while others are left.

    Layer and size variants of one network make correlated trials, and the final ensemble gains
    most from different networks; with fewer networks than ``k`` the next best variants fill up.
    """
    ranked = probed.top(len(probed.leaderboard))
    out: list[str] = []
    for name in ranked:
        if (specs[name].base or name) not in {specs[n].base or n for n in out}:
            out.append(name)
    out += [n for n in ranked if n not in out]
    return out[:k]


def _linear_heads(run: _Run, probed: Any, specs: dict) -> dict:
    """``{"probe:<candidate>": (head weights, val probabilities)}``: each probed candidate's linear
    head on its cached train features, a member candidate of the final model (none when the
    ensemble is one model). The tune stage's refit reserve selects from them too."""
    from autotransfer.tune.crossfit import oof_heads
    from autotransfer.tune.final import probe_heads

    c = run.config
    y = np.asarray(run.data.labels, dtype=np.int64)
    if run.splits.folds is not None:  # cross-validation: out-of-fold probabilities over every labelled row
        return oof_heads(probed.features, specs, run.splits, y, run.data.num_classes, seed=c.seed)
    if c.ensemble <= 1:
        return {}
    return probe_heads(probed.features, specs, y[run.splits.train], run.data.num_classes, seed=c.seed)


def _val_rows(run: _Run, probs: np.ndarray) -> np.ndarray:
    """A linear head's probabilities on the val split: its out-of-fold rows of val under
    cross-validation (``Splits.labelled`` ends with val), else all of them."""
    return probs[-len(run.splits.val):] if run.splits.folds is not None else probs


def _tune_stage(run: _Run, probed: Any, specs: dict, expected: int | None, prog: Any, heads: dict) -> Any:
    from autotransfer.tune import load_tuned, tune

    top = _tuning_candidates(probed, specs, run.config.top_k)  # the tuner tries them in this order
    log(f"probe: top-{len(top)} {top} ({run.timings.get('probe', 0.0):.1f} s)")
    if "tune" in run.done:
        return load_tuned([specs[n] for n in top], run.data.num_classes, space=run.space.tuning, out_dir=run.run_dir)
    t0 = time.monotonic()
    deadline = run.deadline()
    remaining = None if deadline is None else max(deadline - time.time(), 1.0)
    c = run.config
    tuned = tune([specs[n] for n in top], run.data, run.splits, space=run.space.tuning, backend=c.tuner,
                 max_trials=_max_trials(c), time_budget_s=remaining, features=probed.features, out_dir=run.run_dir,
                 seed=c.seed, progress=prog, refit_members=c.ensemble if c.refit else 0,
                 expected_trials=expected, resume=c.resume, shared=_shared_study(run, [specs[n] for n in top], deadline),
                 heads={name: _val_rows(run, p) for name, (_, p) in heads.items()})
    run.timed("tune", t0)
    return tuned


def _shared_study(run: _Run, candidates: list, deadline: float | None) -> Any:
    """The chief's side of ``--storage``: what its workers read from the study (None without it)."""
    from autotransfer.errors import UserInputError
    from autotransfer.tune.tune import SharedStudy

    c = run.config
    if c.storage is None:
        return None
    if run.data_path is None:
        raise UserInputError("--storage: workers load the data from a path; pass an image folder or CSV, not arrays "
                             "or a DataFrame.")
    task = {"data": run.data_path, "fingerprint": run.data.fingerprint(), "splits": run.splits.to_dict(),
            "candidates": [s.to_dict() for s in candidates], "tuning": run.space.tuning.to_dict(), "seed": c.seed,
            "max_trials": _max_trials(c), "deadline": deadline, "run_dir": str(run.run_dir.resolve()),
            "max_pixels": c.max_pixels, "columns": c.columns()}
    return SharedStudy(c.storage, c.study or run.run_dir.name, "chief", task)


def _final_stage(run: _Run, probed: Any, tuned: Any, specs: dict, heads: dict) -> Any:
    """Members and weights on val, flip averaging, refit on train+val (``final_model.json``)."""
    from autotransfer.tune.budget import Deadline
    from autotransfer.tune.final import choose_flip, choose_members, refit_members

    t0 = time.monotonic()
    data, splits, c = run.data, run.splits, run.config
    y = np.asarray(data.labels, dtype=np.int64)
    if splits.folds is not None:
        final = _choose_cv(run, probed, tuned, specs, heads)
    else:
        final = choose_members(tuned, heads, specs, y[splits.val], num_classes=data.num_classes,
                               max_members=c.ensemble, keep_tuned=c.refit and c.keep_tuned, seed=c.seed)
    if c.tta and data.modality == "image":  # flip averaging: a mirrored text is no text
        choose_flip(final, _val_batches(run, final), y[splits.val])
    if c.refit:
        idx = (splits.train, splits.val)  # the parts: a prefix-path refit reuses each split's activations
        refit_members(final, data, idx, features=_features_of(probed, ("train", "val")), space=run.space.tuning,
                      deadline=Deadline(run.deadline(final.served_sizes())),
                      factor=sum(map(len, idx)) / max(1, len(splits.train)), seed=c.seed)
    final.save_members(run.run_dir)
    _write_json(run.run_dir / "final_model.json", final.to_dict())
    run.timed("final", t0)
    return final


def _choose_cv(run: _Run, probed: Any, tuned: Any, specs: dict, heads: dict) -> Any:
    """Cross-validation: the best kept trials cross-fitted while the time allows, then members,
    weights and temperatures chosen on out-of-fold predictions over every labelled row, and the
    chosen model's cross-validated estimate (``final/oof.npz`` keeps the predictions)."""
    from autotransfer.evaluate import cv_estimate, predict_proba
    from autotransfer.tune.budget import Deadline
    from autotransfer.tune.crossfit import cross_fit_trials, nested_selection_probs
    from autotransfer.tune.final import choose_members

    data, splits, c = run.data, run.splits, run.config
    y = np.asarray(data.labels, dtype=np.int64)[splits.labelled]
    sizes = {str(n): int(s) for n, s in zip(probed.leaderboard["name"], probed.leaderboard["input_size"])}
    trial_probs = cross_fit_trials(tuned, specs, data, splits, space=run.space.tuning, deadline=Deadline(run.deadline()),
                                   features=_features_of(probed, ("train", "val")), predict=predict_proba,
                                   max_trials=c.ensemble, probed_sizes=sizes, seed=c.seed, log=log)
    final = choose_members(tuned, heads, specs, y, num_classes=data.num_classes, max_members=c.ensemble,
                           keep_tuned=c.refit and c.keep_tuned, seed=c.seed, trial_probs=trial_probs)
    fold_ids = splits.fold_ids()
    nested = nested_selection_probs(final.pool, y, fold_ids, max_members=c.ensemble, seed=c.seed)
    final.estimate = cv_estimate(nested, y, list(data.class_names), folds=len(splits.folds), seed=c.seed)
    (run.run_dir / "final").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run.run_dir / "final" / "oof.npz", labels=y, rows=splits.labelled, folds=fold_ids,
                        **{n.replace(" ", "_"): p for n, p in final.pool.items()})
    est = final.estimate
    log(f"cross-validated estimate: accuracy {est['accuracy']:.3f} (95% interval {est['accuracy_ci95'][0]:.3f}-"
        f"{est['accuracy_ci95'][1]:.3f}) over {est['num_labelled']} items, {est['folds']} folds")
    return final


def _features_of(probed: Any, parts: tuple[str, ...]) -> dict[tuple[str, int], np.ndarray]:
    """``{(candidate, probed input size): its features of the splits in parts, concatenated}``."""
    sizes = dict(zip(probed.leaderboard["name"], probed.leaderboard["input_size"]))
    return {(n, int(sizes[n])): np.concatenate([f[p] for p in parts]) for n, f in probed.features.items() if n in sizes}


def _val_batches(run: _Run, final: Any) -> dict[int, list]:
    from autotransfer.data import image_dataset

    return {m.spec.input_size: [x for x, _ in image_dataset(run.data, run.splits.val, image_size=m.spec.input_size,
                                                             batch_size=64)]
            for m in final.members}


def _evaluate_stage(run: _Run, probed: Any, tuned: Any, final: Any) -> dict[str, Any]:
    """Test metrics of the refit model (what is exported) and of the tuned one, plus the verdict.

    Under cross-validation without a test split, the scores are the cross-validated estimate
    (``split: cv``) and the baseline is the best linear head's out-of-fold score. Without a test
    split otherwise, the tuned model and the probes are scored on val instead (``split: val`` and
    ``note`` say so): the refit model trained on val, so it has no score then.
    """
    from autotransfer.baselines import baselines_for
    from autotransfer.evaluate import CV_NOTE, NO_TEST_NOTE, error_examples, evaluation_split, verdict

    t0 = time.monotonic()
    data, splits, c = run.data, run.splits, run.config
    idx, split = evaluation_split(splits)
    if split != "test" and final.estimate is not None:
        split, idx, probs = "cv", splits.labelled, final.selected_probs()
        metrics = tuned_metrics = dict(final.estimate)
        note = CV_NOTE.format(n=len(idx), k=len(splits.folds))
    else:
        tuned_metrics, metrics, probs = _score_final(final, data, idx, refit=split == "test")
        note = None if split == "test" else NO_TEST_NOTE
    base = _probe_baseline(probed, final, split)
    ok = tuned.trials[tuned.trials["status"] == "ok"] if "status" in tuned.trials else tuned.trials
    beats, why = verdict(
        metrics["accuracy"], base["probe_test_accuracy"], num_test=metrics["num_test"],
        train_per_class=len(splits.train) / len(data.class_names),
        unfreeze_blocks=max(int(m.params.get("unfreeze_blocks", 0)) for m in final.members),
        trials_ok=len(ok), budget_hit=run.deadline() is not None and time.time() >= run.deadline(),
        val_accuracy=final.choice.val_accuracy if split == "test" else None, split=split,
    )
    if note:
        log(f"[yellow]evaluate: {note}[/]")
    metrics.update(
        split=split, note=note, **base,
        finetune_beats_probe=beats, verdict=why,
        model="cross-validated" if split == "cv" else "refit" if metrics is not tuned_metrics else "tuned",
        tuned={k: tuned_metrics[k] for k in ("accuracy", "macro_f1")},
        refit={k: metrics[k] for k in ("accuracy", "macro_f1")} if metrics is not tuned_metrics else None,
        ensemble=[m.name for m in final.members], cv_estimate=final.estimate,
        baselines=baselines_for(data, splits, seed=c.seed),
    )
    _write_json(run.run_dir / "test_metrics.json", metrics)
    # The report shows the items the exported model got wrong, as the modality shows an item.
    _write_json(run.run_dir / "test_examples.json", {"split": split, "model": metrics["model"],
                                                      "examples": error_examples(probs, data, idx)})
    run.timed("evaluate", t0)
    return metrics


def _probe_baseline(probed: Any, final: Any, split: str) -> dict[str, Any]:
    """The best frozen probe on ``split`` (the claim the verdict makes is "better than a logistic
    head on the best backbone", not only than the probe's top-ranked pick), and that pick. Under
    cross-validation (``split == "cv"``): the linear heads' out-of-fold scores."""
    from autotransfer.evaluate import metrics_from_probs
    from autotransfer.tune.final import PROBE_PREFIX

    ok_rows = probed.leaderboard[probed.leaderboard["status"] == "ok"]
    pick = str(ok_rows.iloc[0]["name"])
    if split == "cv":
        scores = {n[len(PROBE_PREFIX):]: metrics_from_probs(p, final.labels, final.estimate["class_names"])
                  for n, p in final.pool.items() if n.startswith(PROBE_PREFIX)}
        if scores:
            best = max(scores, key=lambda n: scores[n]["accuracy"])
            return {"probe_test_accuracy": scores[best]["accuracy"], "probe_backbone": best,
                    "probe_test_macro_f1": scores[best]["macro_f1"], "probe_pick": pick,
                    "probe_pick_test_accuracy": scores.get(pick, scores[best])["accuracy"]}
        split = "val"
    col = f"{split}_accuracy"
    acc = ok_rows[col].astype(float)
    row = ok_rows.loc[acc.idxmax()] if acc.notna().any() else ok_rows.iloc[0]
    return {"probe_test_accuracy": float(row[col]), "probe_backbone": str(row["name"]),
            "probe_test_macro_f1": float(row["test_macro_f1"]) if split == "test" and "test_macro_f1" in row else None,
            "probe_pick": pick, "probe_pick_test_accuracy": float(ok_rows.iloc[0][col])}


def _score_final(final: Any, data: Any, idx: np.ndarray, *, refit: bool) -> tuple[dict, dict, np.ndarray]:
    """``(tuned metrics, metrics of the model exported, its probabilities)`` on ``idx``; the two
    metrics are one dict when no member was refit (or ``refit`` is False: no held-out split)."""
    from autotransfer.evaluate import metrics_from_probs, predict_proba

    y_eval, names = np.asarray(data.labels)[idx], list(data.class_names)
    model, sizes = final.model(refit=False)
    probs = predict_proba(model, data, idx, input_size=sizes, batch_size=16)
    tuned_metrics = metrics = metrics_from_probs(probs, y_eval, names)
    if refit and (final.refit or any(m.refit_model is not None for m in final.members)):
        model, sizes = final.model(refit=True)
        probs = predict_proba(model, data, idx, input_size=sizes, batch_size=16)
        metrics = metrics_from_probs(probs, y_eval, names)
    return tuned_metrics, metrics, probs


def _export_stage(run: _Run, final: Any, probed: Any) -> Path:
    from autotransfer import modalities
    from autotransfer.export import export_model

    t0 = time.monotonic()
    data, splits = run.data, run.splits
    if run.config.refit_with_test:
        _refit_with_test(run, final, probed)
    model, sizes = final.model(refit=True)
    # TF Serving warm-up with real validation items rather than zeros: same decode path, real shapes.
    modality = modalities.for_data(data)
    warm = next(iter(modality.dataset(data, splits.val[:8], size=sizes[-1], batch_size=8, with_labels=False))).numpy()
    path = export_model(model, class_names=data.class_names, input_size=sizes, export_dir=run.run_dir / "export",
                        model_name=re.sub(r"[^A-Za-z0-9_-]+", "_", run.run_dir.name), warmup_examples=warm,
                        modality=modality.name, max_pixels=run.config.max_pixels)
    run.timed("export", t0)
    return Path(path)


def _refit_with_test(run: _Run, final: Any, probed: Any) -> None:
    """Retrain the members once more on every labelled item, test included (its score is recorded)."""
    from autotransfer.tune.budget import Deadline
    from autotransfer.tune.final import refit_members

    idx = (run.splits.train, run.splits.val, run.splits.test)
    refit_members(final, run.data, idx, features=_features_of(probed, ("train", "val", "test")), space=run.space.tuning,
                  deadline=Deadline(run.deadline(final.served_sizes())),
                  factor=sum(map(len, idx)) / max(1, len(run.splits.train)), seed=run.config.seed)
    notes = [f"{m.name}: {m.refit_note} (train+val+test)" for m in final.members]
    final.save_members(run.run_dir)
    _write_json(run.run_dir / "final_model.json", {**final.to_dict(), "refit_with_test": notes})


#: Parameters ``run`` resolves before they reach :class:`RunConfig` (a modality's space, a path,
#: the tuner a storage implies, a duration in seconds).
_RESOLVED = ("search_space", "out", "tuner", "time_budget")


def run(
    data: Any,
    *,
    labels: Any = None,
    search_space: str | Path | None = D.search_space,
    out: str | Path | None = D.out,
    name: str | None = D.name,
    tuner: str | None = D.tuner,
    time_budget: str | float | None = D.time_budget,
    max_trials: int | None = D.max_trials,
    top_k: int = D.top_k,
    scorer: str = D.scorer,
    halving: bool = D.halving,
    multi_source: int = D.multi_source,
    seed: int = D.seed,
    batch_size: int | None = D.batch_size,
    feature_batch_size: int | None = D.feature_batch_size,
    refit: bool = D.refit,
    refit_with_test: bool = D.refit_with_test,
    keep_tuned: bool = D.keep_tuned,
    ensemble: int = D.ensemble,
    tta: bool = D.tta,
    cv: str = D.cv,
    resume: bool = D.resume,
    overwrite: bool = D.overwrite,
    storage: str | None = D.storage,
    study: str | None = D.study,
    strict: bool = D.strict,
    max_pixels: int = D.max_pixels,
    path_column: str = D.path_column,
    label_column: str = D.label_column,
    split_column: str = D.split_column,
    text_column: str | None = D.text_column,
    progress: bool = True,
) -> Result:
    """Select, fine-tune and export the best backbone (or ensemble) of ``search_space`` for ``data``.

    ``data``: an image folder (one sub-folder per class), a CSV (``path,label[,split]``), a pandas
    DataFrame, arrays (``data=x, labels=y`` or ``(x, y)``), texts in a CSV or DataFrame. Unusable
    items are skipped and listed in ``data.json``. ``progress``: show rich progress bars. Every
    other keyword is a run parameter, listed below from :data:`autotransfer.params.PARAMS` (the
    command line's options, with ``-`` for ``_``).

    Raises:
        RunInterrupted: on Ctrl-C (a KeyboardInterrupt), once the running trial is saved as interrupted.
        UserInputError: bad inputs; also ``out`` in use by another run (its lock), or holding an
            earlier run without ``resume`` or ``overwrite``.
    """
    from autotransfer.rundir import RunDirLock

    start = time.monotonic()
    given = {k: v for k, v in locals().items() if k in BY_NAME and k not in _RESOLVED}
    config = RunConfig(**given, search_space=str(search_space or DEFAULT_SPACES["image"]),
                       out=None if out is None else str(out), tuner=tuner or ("optuna" if storage else "keras-tuner"),
                       time_budget_s=parse_duration(time_budget)).validate()
    space = load_search_space(search_space) if search_space is not None else None  # a bad one fails first
    # Claimed before the data is loaded: a busy or occupied --out fails at once, and two runs never mix files.
    claim = (RunDirLock.claim(_run_dir(out, name, ""), resume=resume, overwrite=overwrite)
             if out is not None or name is not None else None)
    try:
        config, space, dataset = _load(data, labels, config, space)
        if claim is None:  # a generated name needs the data's
            claim = RunDirLock.claim(_run_dir(None, None, dataset.source), resume=resume, overwrite=overwrite)
        r = _open_run(config, space, dataset, claim.run_dir, start, data)
        candidates = space.expanded()
        _announce(r, len(candidates))
        try:
            metrics, export_path, report_path, best, probed, tuned = _stages(r, candidates, progress)
        except KeyboardInterrupt:
            raise RunInterrupted(r.run_dir) from None
        except Exception as exc:
            if interrupts.requested():  # a Ctrl-C that TensorFlow reported as another error
                raise RunInterrupted(r.run_dir) from exc
            raise
        log(f"{metrics.get('split', 'test')} accuracy {metrics['accuracy']:.3f} (best linear probe {metrics['probe_test_accuracy']:.3f}); "
            f"export {export_path}; report {report_path}")
        return Result(run_dir=r.run_dir, leaderboard=probed.leaderboard, best=best, test_metrics=metrics,
                      export_path=export_path, report_path=Path(report_path), trials=tuned.trials, timings=r.timings)
    finally:
        if claim is not None:
            claim.release()


run.__doc__ = (run.__doc__ or "").replace("\n    Raises:", params_doc() + "\n    Raises:", 1)

def _load(data: Any, labels: Any, config: RunConfig, space: Any) -> tuple[RunConfig, Any, Any]:
    """The data, and the search space fitted to it: the modality's default space when none was
    given, the --batch-size override, the data's own sizes (:func:`_with_data`)."""
    from autotransfer.data import load_data

    dataset = load_data(data, labels=labels, strict=config.strict, max_pixels=config.max_pixels, **config.columns())
    if space is None:
        config = replace(config, search_space=DEFAULT_SPACES[dataset.modality])
        space = load_search_space(config.search_space)
    _check_modality(space, dataset)
    if config.batch_size is not None:
        space = replace(space, tuning=replace(space.tuning, batch_size=config.batch_size))
    return config, _with_data(space, dataset), dataset


def _open_run(config: RunConfig, space: Any, dataset: Any, run_dir: Path, start: float, data: Any) -> _Run:
    """The run's splits and its first files (config, data, splits); on --resume, what is finished."""
    from autotransfer.resume import check_resumable

    splits = _make_run_splits(config, dataset)
    resolved = json.loads(json.dumps(space.to_dict(), default=str))
    done = check_resumable(run_dir, tuner=config.tuner, data_fingerprint=dataset.fingerprint(),
                           splits=splits.to_dict(), space=resolved) if config.resume else {}
    _write_json(run_dir / "config.json", {**config.to_dict(), "run_dir": str(run_dir), "search_space_resolved": resolved})
    _write_json(run_dir / "data.json", {**dataset.summary(), "split_sizes": splits.sizes(),
                                        "fingerprint": dataset.fingerprint()})
    _write_json(run_dir / "splits.json", splits.to_dict())
    return _Run(config, space, dataset, splits, run_dir, start - _spent_before(run_dir, done), dict(done), done,
                str(Path(data).resolve()) if isinstance(data, (str, Path)) else None)


def _announce(r: _Run, num_candidates: int) -> None:
    """One line on what this run is about to do, and the data items it skipped."""
    from autotransfer.data.checks import skip_summary

    dataset, splits = r.data, r.splits
    log(f"[bold]autotransfer[/] {dataset.source}: {len(dataset)} items, {len(dataset.class_names)} classes, "
        f"splits {splits.sizes()}; {num_candidates} candidates; run dir {r.run_dir}"
        + (f"; small data: {len(splits.folds)}-fold cross-validation, every label trains the model (--cv off for a "
           "fixed split)" if splits.folds else "")
        + (f"; resuming after {', '.join(r.done) or 'no finished stage'}" if r.config.resume else ""))
    if skip_summary(dataset.skipped):
        log(f"[yellow]{skip_summary(dataset.skipped)}[/]")


def _make_run_splits(config: RunConfig, data: Any) -> Any:
    """Cross-validation folds for small data (``config.cv``: auto up to ``CV_MAX_ITEMS`` labelled
    items, on, off), else the fixed train/val/test split."""
    from autotransfer.data import cv_folds, make_cv_splits, make_splits
    from autotransfer.defaults import CV_MAX_FOLDS, CV_MAX_ITEMS

    y = np.asarray(data.labels, dtype=np.int64)
    labelled = y if data.split is None else y[np.asarray(data.split).astype(str) != "test"]
    k = cv_folds(labelled, CV_MAX_FOLDS)
    want = config.cv == "on" or (config.cv == "auto" and len(labelled) <= CV_MAX_ITEMS)
    if want and k == 0:
        if config.cv == "on":
            raise UserInputError("--cv on: a class has a single labelled item, too few to cross-validate. Add items "
                                 "to it, or pass --cv off.")
        log("[yellow]cross-validation off: a class has a single labelled item[/]")
    if want and k:
        return make_cv_splits(data, folds=k, seed=config.seed)
    return make_splits(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed)


def _spent_before(run_dir: Path, done: dict[str, float]) -> float:
    """Seconds a resumed run already spent: its finished stages and, when tuning was cut short,
    its finished trials (the time budget covers both runs together)."""
    from autotransfer.tune.store import TrialStore

    trials = 0.0 if "tune" in done else sum(r.get("seconds", 0.0) for r in TrialStore(run_dir / "trials").records())
    return sum(done.values()) + trials


def _stages(r: _Run, candidates: list, progress: bool) -> tuple:
    """plan -> probe -> tune -> final -> evaluate -> export -> report, skipping what ``r.done`` holds."""
    from autotransfer.report import render_report

    expected = None
    if r.config.time_budget_s is not None:
        candidates, expected = _plan(r, candidates)
    with RichProgress(progress) as prog:
        probed, candidates = _probe_stage(r, candidates, prog)
        specs = {c.name: c for c in candidates}
        interrupts.check()  # a Ctrl-C whose exception was lost stops at the next stage boundary
        heads = _linear_heads(r, probed, specs)
        tuned = _tune_stage(r, probed, specs, expected, prog, heads)
        interrupts.check()
        final = _final_stage(r, probed, tuned, specs, heads)
        interrupts.check()
        metrics = _evaluate_stage(r, probed, tuned, final)
        interrupts.check()
        export_path = _export_stage(r, final, probed)
        r.timings["total"] = time.monotonic() - r.start
        _write_json(r.run_dir / "timings.json", r.timings)
        lead = max(final.members, key=lambda m: m.weight)  # the heaviest member speaks for an ensemble
        best = {"backbone": lead.spec.name, "input_size": max(m.spec.input_size for m in final.members),
                "params": {"backbone": lead.spec.name, **lead.params}, "val_accuracy": final.choice.val_accuracy,
                "members": [m.to_dict() for m in final.members]}
        report_path = render_report(r.run_dir)
    return metrics, export_path, report_path, best, probed, tuned


__all__ = ["run"]

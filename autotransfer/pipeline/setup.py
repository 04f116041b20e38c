"""Before the stages: the run directory's name, the data and the search space fitted to it, the
splits, and the run's first files (config, data, splits)."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from autotransfer.budget import Budget
from autotransfer.config import RunConfig, load_search_space
from autotransfer.errors import UserInputError
from autotransfer.pipeline.context import RunContext, write_json
from autotransfer.progress import log

#: The built-in search space for data of each modality when --search-space is not given.
DEFAULT_SPACES = {"image": "offline", "text": "text-offline"}


def run_dir_for(out: str | Path | None, name: str | None, data_source: str) -> Path:
    """``out``, else ``reports/<name>``, else ``reports/<data's name>-<time>`` (created and locked
    by :meth:`~autotransfer.rundir.RunDirLock.claim`)."""
    if out is not None:
        return Path(out)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(data_source.split()[-1] if data_source else "run").name).strip("-")
    return Path("reports") / (name or f"{stem or 'run'}-{datetime.now():%Y%m%d-%H%M%S}")


def claim_run_dir(config: RunConfig, data_source: str) -> Any:
    """Lock the run directory of ``config`` (:func:`run_dir_for`), refusing one in use or, without
    --resume or --overwrite, one holding an earlier run (:class:`~autotransfer.rundir.RunDirLock`)."""
    from autotransfer.rundir import RunDirLock

    return RunDirLock.claim(run_dir_for(config.out, config.name, data_source), resume=config.resume,
                            overwrite=config.overwrite)


def load_inputs(data: Any, labels: Any, config: RunConfig, space: Any) -> tuple[RunConfig, Any, Any]:
    """The data, and the search space fitted to it: the modality's default space when none was
    given, the --batch-size override, the data's own sizes (``input_size: auto``)."""
    from autotransfer.data import load_data

    dataset = load_data(data, labels=labels, strict=config.strict, max_pixels=config.max_pixels, **config.columns())
    if space is None:
        config = replace(config, search_space=DEFAULT_SPACES[dataset.modality])
        space = load_search_space(config.search_space)
    _check_modality(space, dataset)
    if config.batch_size is not None:
        space = replace(space, tuning=replace(space.tuning, batch_size=config.batch_size))
    return config, _with_data(space, dataset), dataset


def _check_modality(space: Any, data: Any) -> None:
    """The search space's candidates must take what the data holds."""
    if space.modality != data.modality:
        raise UserInputError(
            f"{data.source} holds {data.modality} ({len(data)} items loaded), but search space {space.name!r} "
            f"({space.path}) is for {space.modality}: pass --search-space {DEFAULT_SPACES[data.modality]} (or drop "
            f"--search-space for the {data.modality} default), or a YAML with 'modality: {data.modality}'.")


def _with_data(space: Any, data: Any) -> Any:
    """The search space with what depends on the data resolved (``input_size: auto``)."""
    from autotransfer import modalities

    tuning = space.tuning
    if "auto" in tuning.input_size:
        typical = modalities.for_data(data).typical_size(data)
        tuning = tuning.with_data(typical)
        log(f"tuning.input_size auto -> {', '.join(tuning.input_size)} (cap in px; the data's images are "
            f"~{typical or 0:.0f} px)")
    return replace(space, tuning=tuning)


def open_run(config: RunConfig, space: Any, dataset: Any, run_dir: Path, start: float, data: Any) -> RunContext:
    """The run's splits and its first files (config, data, splits); on --resume, what is finished."""
    from autotransfer.resume import check_resumable

    splits = make_run_splits(config, dataset)
    resolved = json.loads(json.dumps(space.to_dict(), default=str))
    done = check_resumable(run_dir, tuner=config.tuner, data_fingerprint=dataset.fingerprint(),
                           splits=splits.to_dict(), space=resolved) if config.resume else {}
    write_json(run_dir / "config.json", {**config.to_dict(), "run_dir": str(run_dir), "search_space_resolved": resolved})
    write_json(run_dir / "data.json", {**dataset.summary(), "split_sizes": splits.sizes(),
                                       "fingerprint": dataset.fingerprint()})
    write_json(run_dir / "splits.json", splits.to_dict())
    return RunContext(config, space, dataset, splits, run_dir, Budget.for_run(config, start - _spent_before(run_dir, done)),
                      fit_candidates(space.expanded(), dataset, splits, run_dir, resume=config.resume), done=done,
                      timings=dict(done), data_path=str(Path(data).resolve()) if isinstance(data, (str, Path)) else None)


def fit_candidates(candidates: list, dataset: Any, splits: Any, run_dir: Path, *, resume: bool) -> list:
    """The candidates, those fitted on the run's texts (TF-IDF: ``fit`` in the search space) fitted
    and loaded from ``<run_dir>/fitted/<name>/``. They see the labelled rows' texts only (train and
    val; never the test split) and never their labels. The search space keeps their YAML form
    (``config.json``'s ``search_space_resolved``, what --resume compares)."""
    if not any(c.is_fitted for c in candidates):
        return candidates
    from autotransfer.backbones.tfidf import fit_candidates as fit

    texts = [dataset.items[int(i)] for i in splits.labelled]
    return fit(candidates, texts, run_dir / "fitted", reuse=resume, say=log)


def announce(ctx: RunContext) -> None:
    """One line on what this run is about to do, and the data items it skipped."""
    from autotransfer.data.checks import skip_summary

    dataset, splits = ctx.data, ctx.splits
    log(f"[bold]autotransfer[/] {dataset.source}: {len(dataset)} items, {len(dataset.class_names)} classes, "
        f"splits {splits.sizes()}; {len(ctx.candidates)} candidates; run dir {ctx.run_dir}"
        + (f"; small data: {len(splits.folds)}-fold cross-validation, every label trains the model (--cv off for a "
           "fixed split)" if splits.folds else "")
        + (f"; resuming after {', '.join(ctx.done) or 'no finished stage'}" if ctx.config.resume else "")
        + _objective_note(ctx))
    if skip_summary(dataset.skipped):
        log(f"[yellow]{skip_summary(dataset.skipped)}[/]")


def _objective_note(ctx: RunContext) -> str:
    """What the run optimises, where the run's labels chose it (``--metric auto``) or it is not the default."""
    objective = ctx.objective()
    if objective.metric == "accuracy" and not objective.balanced:
        return ""
    how = " (imbalanced labels: --metric auto)" if ctx.config.metric == "auto" else ""
    return f"; optimising {objective.metric}{' with balanced class weights' if objective.balanced else ''}{how}"


def make_run_splits(config: RunConfig, data: Any) -> Any:
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

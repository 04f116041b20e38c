"""``run``: one call from a labelled dataset to an exported, reported model.

data -> backbones -> probe -> tune -> evaluate -> export -> report; every stage leaves its results in
the run directory as plain files before the next starts, so an interrupted run loses nothing.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any


from autotransfer.config import RunConfig, load_search_space, parse_duration
from autotransfer.progress import RichProgress, log
from autotransfer.result import Result

# Export and report need a few seconds after tuning; keep them out of the tuner's share of the budget.
_EXPORT_RESERVE_S = 30.0


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
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _plan(candidates: list, dataset: Any, splits: Any, space: Any, config: RunConfig, run_dir: Path,
          timings: dict[str, float], start: float) -> list:
    """Measure first-batch costs and say up front what fits the budget (plan.json).

    Measuring costs about one module load per candidate, so it only runs when a budget is set.
    """
    from autotransfer.plan import make_plan, measure_costs

    t0 = time.monotonic()
    hi = space.tuning.unfreeze_blocks[1]
    costs = measure_costs(candidates, dataset, splits, batch_size=config.batch_size,
                          feature_batch_size=config.feature_batch_size,
                          unfreeze=10**6 if hi == "all" else int(hi), head_epochs=space.tuning.head_epochs,
                          head_warmup=space.tuning.head_warmup, measure_train="first")
    sizes = splits.sizes()
    # Estimates ran 15-20% low against measured runs (benchmarks/selection.py --plan): margin 1.25.
    plan = make_plan(costs, n_items=sum(sizes.values()), n_train=sizes["train"], n_val=sizes["val"],
                     n_test=sizes["test"], budget_s=config.time_budget_s, top_k=config.top_k,
                     max_trials=config.max_trials, max_epochs=space.tuning.max_epochs,
                     spent_s=time.monotonic() - start, reserve_s=_EXPORT_RESERVE_S, margin=1.25)
    _write_json(run_dir / "plan.json", plan.to_dict())
    for line in plan.lines:
        log(f"plan: {line}")
    timings["plan"] = time.monotonic() - t0
    # The trial estimate assumes every trial runs max_epochs; early stopping usually ends trials
    # sooner (demo: 75-91 s measured vs 233 s estimated), and the deadline stops tuning anyway, so
    # the trial count is left to the deadline. Only a probe that cannot fit at all narrows the field.
    if not plan.fits and plan.recommended_candidates:
        candidates = [c for c in candidates if c.name in plan.recommended_candidates]
    return candidates


def run(
    data: Any,
    *,
    labels: Any = None,
    search_space: str | Path = "offline",
    out: str | Path | None = None,
    name: str | None = None,
    tuner: str = "keras-tuner",
    time_budget: str | float | None = None,
    max_trials: int = 6,
    top_k: int = 2,
    scorer: str = "linear_ll",
    halving: bool = False,
    multi_source: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    feature_batch_size: int | None = None,
    progress: bool = True,
) -> Result:
    """Select, fine-tune and export the best backbone of ``search_space`` for ``data``.

    ``data``: an image folder (one sub-folder per class), a CSV (``path,label[,split]``), a pandas
    DataFrame, arrays (``data=x, labels=y`` or ``(x, y)``). ``time_budget``: seconds or '20m' for the
    whole run. ``halving``: successive halving over growing subsamples before the full probe.
    ``multi_source``: also probe the concatenated features of the top N backbones. Results go to
    ``out`` (default ``reports/<name>``). ``batch_size``: training batch size; ``feature_batch_size``:
    the probe's featurization batch (None: chosen per input size, big for small images).
    """
    from autotransfer.data import image_dataset, load_data, make_splits
    from autotransfer.evaluate import evaluate_model, verdict
    from autotransfer.export import export_model
    from autotransfer.probe import probe
    from autotransfer.report import render_report
    from autotransfer.tune import tune

    start = time.monotonic()
    config = RunConfig(
        search_space=str(search_space), out=None if out is None else str(out), name=name, tuner=tuner,
        time_budget_s=parse_duration(time_budget), max_trials=max_trials, top_k=top_k, scorer=scorer,
        halving=halving, multi_source=multi_source, seed=seed, batch_size=batch_size,
        feature_batch_size=feature_batch_size,
    ).validate()
    deadline = None if config.time_budget_s is None else start + config.time_budget_s
    space = load_search_space(search_space)
    dataset = load_data(data, labels=labels)
    run_dir = _run_dir(out, name, dataset.source)
    splits = make_splits(dataset, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=seed)
    sizes = splits.sizes()
    _write_json(run_dir / "config.json", {**config.to_dict(), "run_dir": str(run_dir), "search_space_resolved": space.to_dict()})
    _write_json(run_dir / "data.json", {**dataset.summary(), "split_sizes": sizes})
    _write_json(run_dir / "splits.json", splits.to_dict())
    timings: dict[str, float] = {}
    candidates = space.expanded()
    log(f"[bold]autotransfer[/] {dataset.source}: {len(dataset)} items, {len(dataset.class_names)} classes, "
        f"splits {sizes}; {len(candidates)} candidates; run dir {run_dir}")
    if config.time_budget_s is not None:
        candidates = _plan(candidates, dataset, splits, space, config, run_dir, timings, start)
    with RichProgress(progress) as prog:
        t0 = time.monotonic()
        probed = probe(candidates, dataset, splits, scorer=config.scorer, batch_size=config.feature_batch_size,
                       seed=seed, progress=prog, halving=config.halving, top_k=config.top_k,
                       multi_source=config.multi_source)
        candidates = candidates + list(probed.specs.values())  # multi-source rows are candidates too
        probed.save(run_dir)
        timings["probe"] = time.monotonic() - t0
        _write_json(run_dir / "timings.json", timings)
        top = probed.top(config.top_k)
        log(f"probe: top-{len(top)} {top} ({timings['probe']:.1f} s)")

        t0 = time.monotonic()
        remaining = None if deadline is None else max(deadline - time.monotonic() - _EXPORT_RESERVE_S, 1.0)
        tuned = tune(
            [c for c in candidates if c.name in top], dataset, splits, space=space.tuning,
            backend=config.tuner, max_trials=config.max_trials, time_budget_s=remaining,
            features=probed.features, out_dir=run_dir, seed=seed, progress=prog,
        )
        timings["tune"] = time.monotonic() - t0
        _write_json(run_dir / "timings.json", timings)

        t0 = time.monotonic()
        spec = next(c for c in candidates if c.name == tuned.best_backbone)
        metrics = evaluate_model(tuned.best_model, dataset, splits.test, input_size=spec.input_size,
                                 batch_size=config.batch_size)
        lb = probed.leaderboard
        probe_row = lb[lb["name"] == top[0]].iloc[0]
        train_per_class = len(splits.train) / len(dataset.class_names)
        ok = tuned.trials[tuned.trials["status"] == "ok"] if "status" in tuned.trials else tuned.trials
        beats, why = verdict(
            metrics["accuracy"], float(probe_row["test_accuracy"]), num_test=metrics["num_test"],
            train_per_class=train_per_class,
            unfreeze_blocks=int(tuned.best_params.get("unfreeze_blocks", 0)),
            trials_ok=len(ok), budget_hit=deadline is not None and time.monotonic() >= deadline - _EXPORT_RESERVE_S,
            val_accuracy=tuned.best_val_accuracy,
        )
        metrics.update(probe_test_accuracy=float(probe_row["test_accuracy"]), probe_backbone=str(probe_row["name"]),
                       finetune_beats_probe=beats, verdict=why)
        _write_json(run_dir / "test_metrics.json", metrics)
        timings["evaluate"] = time.monotonic() - t0

        t0 = time.monotonic()
        # TF Serving warm-up with real validation images rather than zeros: same decode path, real shapes.
        warm = next(iter(image_dataset(dataset, splits.val[:8], image_size=spec.input_size, batch_size=8,
                                       with_labels=False))).numpy()
        export_path = export_model(
            tuned.best_model, class_names=dataset.class_names, input_size=spec.input_size,
            export_dir=run_dir / "export", model_name=re.sub(r"[^A-Za-z0-9_-]+", "_", run_dir.name), warmup_images=warm,
        )
        timings["export"] = time.monotonic() - t0
        timings["total"] = time.monotonic() - start
        _write_json(run_dir / "timings.json", timings)
        best = {"backbone": tuned.best_backbone, "input_size": spec.input_size, "params": tuned.best_params,
                "val_accuracy": tuned.best_val_accuracy}
        report_path = render_report(run_dir)

    log(f"test accuracy {metrics['accuracy']:.3f} (best linear probe {metrics['probe_test_accuracy']:.3f}); "
        f"export {export_path}; report {report_path}")
    return Result(run_dir=run_dir, leaderboard=lb, best=best, test_metrics=metrics, export_path=Path(export_path),
                  report_path=Path(report_path), trials=tuned.trials, timings=timings)


__all__ = ["run"]

"""``run``: one call from a labelled dataset to an exported, reported model.

data -> backbones -> plan -> probe -> tune -> final model (ensemble, refit) -> evaluate -> export
-> report (:mod:`autotransfer.pipeline`); every stage leaves its results in the run directory as
plain files before the next starts, so an interrupted run loses nothing.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from autotransfer import interrupts
from autotransfer.config import RunConfig, load_search_space, parse_duration
from autotransfer.errors import RunInterrupted
from autotransfer.params import BY_NAME, params_doc
from autotransfer.params import DEFAULTS as D
from autotransfer.pipeline.setup import DEFAULT_SPACES
from autotransfer.progress import log
from autotransfer.result import Result

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
    metric: str = D.metric,
    class_weight: str = D.class_weight,
    halving: bool = D.halving,
    multi_source: int = D.multi_source,
    seed: int = D.seed,
    batch_size: int | None = D.batch_size,
    feature_batch_size: int | None = D.feature_batch_size,
    prefix_cache: bool = D.prefix_cache,
    prefix_cache_mb: int = D.prefix_cache_mb,
    prefix_dtype: str = D.prefix_dtype,
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

    ``data``: an image folder, a CSV (``path,label[,split]``), a DataFrame, arrays (``data=x,
    labels=y``) or texts; unusable items are skipped (``data.json``). ``progress``: progress bars.
    The other keywords are the run parameters below (:data:`autotransfer.params.PARAMS`).

    Raises:
        RunInterrupted: on Ctrl-C, once the running trial is saved as interrupted.
        UserInputError: bad inputs; ``out`` in use, or holding an earlier run without ``resume``/``overwrite``.
    """
    start = time.monotonic()
    config = _config({k: v for k, v in locals().items() if k in BY_NAME})
    space = load_search_space(search_space) if search_space is not None else None  # a bad one fails first
    return _claimed_run(data, labels, config, space, start, progress)


run.__doc__ = (run.__doc__ or "").replace("\n    Raises:", params_doc() + "\n    Raises:", 1)


def _claimed_run(data: Any, labels: Any, config: RunConfig, space: Any, start: float, progress: bool) -> Result:
    """The run in its claimed directory: load the data, open the run, run the stages; the claim is
    released however that ends."""
    from autotransfer.pipeline import setup

    # Claimed before the data is loaded: a busy or occupied --out fails at once, and two runs never mix files.
    claim = setup.claim_run_dir(config, "") if config.out is not None or config.name is not None else None
    try:
        config, space, dataset = setup.load_inputs(data, labels, config, space)
        claim = claim or setup.claim_run_dir(config, dataset.source)  # a generated name needs the data's
        ctx = setup.open_run(config, space, dataset, claim.run_dir, start, data)
        setup.announce(ctx)
        return _run_stages(ctx, progress)
    finally:
        if claim is not None:
            claim.release()


def _config(given: dict[str, Any]) -> RunConfig:
    """The validated :class:`RunConfig` of ``run``'s keyword arguments, those in :data:`_RESOLVED`
    resolved: the image space by default, the tuner a storage implies, the budget in seconds."""
    search_space, out, tuner, time_budget = (given.pop(k) for k in _RESOLVED)
    return RunConfig(**given, search_space=str(search_space or DEFAULT_SPACES["image"]),
                     out=None if out is None else str(out),
                     tuner=tuner or ("optuna" if given["storage"] else "keras-tuner"),
                     time_budget_s=parse_duration(time_budget)).validate()


def _run_stages(ctx: Any, progress: bool) -> Result:
    """The stages (:func:`~autotransfer.pipeline.run_stages`); a Ctrl-C becomes :class:`RunInterrupted`."""
    from autotransfer.pipeline.loop import best_summary, run_stages

    try:
        report_path = run_stages(ctx, progress=progress)
    except KeyboardInterrupt:
        raise RunInterrupted(ctx.run_dir) from None
    except Exception as exc:
        if interrupts.requested():  # a Ctrl-C that TensorFlow reported as another error
            raise RunInterrupted(ctx.run_dir) from exc
        raise
    metrics = ctx.metrics
    log(f"{metrics.get('split', 'test')} accuracy {metrics['accuracy']:.3f} (best linear probe "
        f"{metrics['probe_test_accuracy']:.3f}); export {ctx.export_path}; report {report_path}")
    return Result(run_dir=ctx.run_dir, leaderboard=ctx.probed.leaderboard, best=best_summary(ctx), test_metrics=metrics,
                  export_path=Path(ctx.export_path), report_path=report_path, trials=ctx.tuned.trials,
                  timings=ctx.timings)


__all__ = ["DEFAULT_SPACES", "run"]

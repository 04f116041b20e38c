"""Final stage: members and weights (on out-of-fold predictions under cross-validation, else on
val), flip averaging, and the refit on every labelled row (``final_model.json``)."""
from __future__ import annotations

import numpy as np

from autotransfer.pipeline.context import RunContext
from autotransfer.pipeline.probe import features_of
from autotransfer.progress import log

NAME = "final"


def run(ctx: RunContext) -> None:
    """Choose the members, decide flip averaging, refit them, save them."""
    from autotransfer import modalities
    from autotransfer.final.members import choose_flip, choose_members

    data, splits, c = ctx.data, ctx.splits, ctx.config
    y = np.asarray(data.labels, dtype=np.int64)
    if splits.folds is not None:
        final = _choose_cv(ctx)
    else:
        final = choose_members(ctx.tuned, ctx.heads, ctx.specs, y[splits.val], num_classes=data.num_classes,
                               max_members=c.ensemble, keep_tuned=c.refit and c.keep_tuned, seed=c.seed,
                               balanced=ctx.objective().balanced)
    modality = modalities.for_data(data)
    if c.tta and modality.test_time_flip:
        choose_flip(final, _val_batches(ctx, final, modality), y[splits.val])
    if c.refit:
        _refit(ctx, final, ("train", "val"))
    final.save_members(ctx.run_dir)
    ctx.write_json("final_model.json", final.to_dict())
    ctx.final = final


def linear_heads(ctx: RunContext) -> dict:
    """``{"probe:<candidate>": (head weights, probabilities)}``: each probed candidate's linear head,
    a member candidate of the final model (none when the ensemble is one model); the probabilities
    are out of fold over every labelled row under cross-validation, else on val. The tune stage fits
    them first: its refit reserve selects from them too."""
    from autotransfer.final.crossfit import oof_heads
    from autotransfer.final.members import probe_heads

    c, splits = ctx.config, ctx.splits
    y = np.asarray(ctx.data.labels, dtype=np.int64)
    if splits.folds is not None:
        return oof_heads(ctx.probed.features, ctx.specs, splits, y, ctx.data.num_classes, seed=c.seed,
                         balanced=ctx.objective().balanced)
    if c.ensemble <= 1:
        return {}
    return probe_heads(ctx.probed.features, ctx.specs, y[splits.train], ctx.data.num_classes, seed=c.seed,
                       balanced=ctx.objective().balanced)


def _choose_cv(ctx: RunContext) -> object:
    """Cross-validation: the best kept trials cross-fitted while the time allows, then members,
    weights and temperatures chosen on out-of-fold predictions over every labelled row, and the
    chosen model's cross-validated estimate (``final/oof.npz`` keeps the predictions)."""
    from autotransfer.budget import Deadline
    from autotransfer.evaluate import cv_estimate, predict_proba
    from autotransfer.final.crossfit import cross_fit_trials, nested_selection_probs
    from autotransfer.final.members import choose_members

    data, splits, c, probed = ctx.data, ctx.splits, ctx.config, ctx.probed
    y = np.asarray(data.labels, dtype=np.int64)[splits.labelled]
    sizes = {str(n): int(s) for n, s in zip(probed.leaderboard["name"], probed.leaderboard["input_size"])}
    trial_probs = cross_fit_trials(ctx.tuned, ctx.specs, data, splits, space=ctx.space.tuning,
                                   deadline=Deadline(ctx.deadline()), features=features_of(probed, ("train", "val")),
                                   predict=predict_proba, max_trials=c.ensemble, probed_sizes=sizes, seed=c.seed,
                                   log=log, prefix_cache=ctx.prefix_cache())
    final = choose_members(ctx.tuned, ctx.heads, ctx.specs, y, num_classes=data.num_classes, max_members=c.ensemble,
                           keep_tuned=c.refit and c.keep_tuned, seed=c.seed, trial_probs=trial_probs,
                           balanced=ctx.objective().balanced)
    fold_ids = splits.fold_ids()
    nested = nested_selection_probs(final.pool, y, fold_ids, max_members=c.ensemble, seed=c.seed,
                                    balanced=ctx.objective().balanced)
    final.estimate = cv_estimate(nested, y, list(data.class_names), folds=len(splits.folds), seed=c.seed)
    (ctx.run_dir / "final").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(ctx.run_dir / "final" / "oof.npz", labels=y, rows=splits.labelled, folds=fold_ids,
                        **{n.replace(" ", "_"): p for n, p in final.pool.items()})
    est = final.estimate
    log(f"cross-validated estimate: accuracy {est['accuracy']:.3f} (95% interval {est['accuracy_ci95'][0]:.3f}-"
        f"{est['accuracy_ci95'][1]:.3f}) over {est['num_labelled']} items, {est['folds']} folds")
    return final


def _val_batches(ctx: RunContext, final: object, modality: object) -> dict[int, list]:
    """The val items as model inputs, one list of batches per member input size."""
    return {m.spec.input_size: list(modality.dataset(ctx.data, ctx.splits.val, size=m.spec.input_size, batch_size=64,
                                                     with_labels=False))
            for m in final.members}


def _refit(ctx: RunContext, final: object, parts: tuple[str, ...]) -> None:
    """Retrain ``final``'s members on the splits named ``parts`` (kept as parts: a prefix-path refit
    reuses each split's activations), within the time its served models leave."""
    from autotransfer.budget import Deadline
    from autotransfer.final.members import refit_members

    idx = tuple(getattr(ctx.splits, p) for p in parts)
    refit_members(final, ctx.data, idx, features=features_of(ctx.probed, parts), space=ctx.space.tuning,
                  deadline=Deadline(ctx.deadline(final.served_sizes())),
                  factor=sum(map(len, idx)) / max(1, len(ctx.splits.train)), seed=ctx.config.seed,
                  prefix_cache=ctx.prefix_cache(), balanced=ctx.objective().balanced)


def refit_with_test(ctx: RunContext) -> None:
    """Retrain the members once more on every labelled item, test included (its score is recorded)."""
    final = ctx.final
    _refit(ctx, final, ("train", "val", "test"))
    notes = [f"{m.name}: {m.refit_note} (train+val+test)" for m in final.members]
    final.save_members(ctx.run_dir)
    ctx.write_json("final_model.json", {**final.to_dict(), "refit_with_test": notes})

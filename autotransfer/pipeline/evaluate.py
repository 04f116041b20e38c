"""Evaluate stage: the exported model's scores on the user's test split (or the cross-validated
estimate), the baselines beside them and the verdict (``test_metrics.json``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from autotransfer.pipeline.context import RunContext
from autotransfer.progress import log

NAME = "evaluate"


def run(ctx: RunContext) -> None:
    """Test metrics of the refit model (what is exported) and of the tuned one, plus the verdict.

    Under cross-validation without a test split, the scores are the cross-validated estimate
    (``split: cv``) and the baseline is the best linear head's out-of-fold score. Without a test
    split otherwise, the tuned model and the probes are scored on val instead (``split: val`` and
    ``note`` say so): the refit model trained on val, so it has no score then.
    """
    from autotransfer.evaluate import CV_NOTE, NO_TEST_NOTE, error_examples, evaluation_split
    from autotransfer.evaluate.baselines import baselines_for

    data, splits, final = ctx.data, ctx.splits, ctx.final
    idx, split = evaluation_split(splits)
    if split != "test" and final.estimate is not None:
        split, idx, probs = "cv", splits.labelled, final.selected_probs()
        metrics = tuned_metrics = dict(final.estimate)
        note = CV_NOTE.format(n=len(idx), k=len(splits.folds))
    else:
        tuned_metrics, metrics, probs = _score_final(final, data, idx, refit=split == "test")
        note = None if split == "test" else NO_TEST_NOTE
    base = _probe_baseline(ctx.probed, final, split)
    beats, why = _verdict(ctx, metrics, base, split)
    if note:
        log(f"[yellow]evaluate: {note}[/]")
    metrics.update(
        split=split, note=note, **base,
        finetune_beats_probe=beats, verdict=why,
        model="cross-validated" if split == "cv" else "refit" if metrics is not tuned_metrics else "tuned",
        tuned={k: tuned_metrics[k] for k in ("accuracy", "macro_f1")},
        refit={k: metrics[k] for k in ("accuracy", "macro_f1")} if metrics is not tuned_metrics else None,
        ensemble=[m.name for m in final.members], cv_estimate=final.estimate,
        baselines=baselines_for(data, splits, seed=ctx.config.seed), objective=ctx.objective().to_dict(),
    )
    ctx.write_json("test_metrics.json", metrics)
    # The report shows the items the exported model got wrong, as the modality shows an item.
    ctx.write_json("test_examples.json", {"split": split, "model": metrics["model"],
                                          "examples": error_examples(probs, data, idx)})
    ctx.metrics = metrics


def _verdict(ctx: RunContext, metrics: dict, base: dict, split: str) -> tuple[bool, str]:
    """Whether fine-tuning beat the best frozen probe, and why (:func:`~autotransfer.evaluate.verdicts.verdict`)."""
    from autotransfer.evaluate import verdict

    tuned, final = ctx.tuned, ctx.final
    ok = tuned.trials[tuned.trials["status"] == "ok"] if "status" in tuned.trials else tuned.trials
    return verdict(
        metrics["accuracy"], base["probe_test_accuracy"], num_test=metrics["num_test"],
        train_per_class=len(ctx.splits.train) / len(ctx.data.class_names),
        unfreeze_blocks=max(int(m.params.get("unfreeze_blocks", 0)) for m in final.members),
        trials_ok=len(ok), budget_hit=ctx.budget.hit(),
        val_accuracy=final.choice.val_accuracy if split == "test" else None, split=split,
    )


def _probe_baseline(probed: Any, final: Any, split: str) -> dict[str, Any]:
    """The best frozen probe on ``split`` (the claim the verdict makes is "better than a logistic
    head on the best backbone", not only than the probe's top-ranked pick), and that pick. Under
    cross-validation (``split == "cv"``): the linear heads' out-of-fold scores."""
    from autotransfer.evaluate import metrics_from_probs
    from autotransfer.final.members import PROBE_PREFIX

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

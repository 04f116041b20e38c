"""Whether fine-tuning beat the best linear probe, and why not: one set of reasons and thresholds
for the run (``test_metrics.json``) and for the report of a run directory that lacks a verdict.

Pure Python (no TensorFlow), so the report can use it without loading the training stack.
"""
from __future__ import annotations

# Below this many training images per class, frozen features are usually near what the data supports.
SMALL_TRAIN_PER_CLASS = 50
# Fewer finished trials than this cannot tune both learning rate and unfreeze depth.
MIN_TRIALS = 3
# A best trial whose val accuracy exceeds its test accuracy by more than this was a lucky pick.
VAL_OVERSTATES = 0.10


def _two_images_pp(num_test: int) -> float:
    """Two test images in percentage points: gaps within it are noise."""
    return 200 / max(num_test, 1)


def loss_reasons(
    *,
    diff_pp: float | None,
    num_test: int | None,
    train_per_class: float | None = None,
    unfreeze_blocks: int | None = None,
    trials_ok: int | None = None,
    budget_hit: bool = False,
    val_accuracy: float | None = None,
    test_accuracy: float | None = None,
) -> list[str]:
    """Likely causes when fine-tuning did not beat the probe; facts that are unknown (``None``) are
    skipped. Never empty: falls back to the generic cause."""
    reasons: list[str] = []
    if unfreeze_blocks == 0:
        reasons.append("the best trial unfroze no backbone block, so it is itself a probe with a trained head")
    if train_per_class is not None and train_per_class < SMALL_TRAIN_PER_CLASS:
        reasons.append(f"with ~{train_per_class:.0f} training images per class, frozen features are already near "
                       "what this data can support and fine-tuning risks over-fitting")
    if budget_hit:
        reasons.append("the time budget stopped tuning early")
    if trials_ok is not None and trials_ok < MIN_TRIALS:
        reasons.append(f"only {trials_ok} trial(s) finished, too few to tune the learning rate and depth")
    if val_accuracy is not None and test_accuracy is not None and val_accuracy - test_accuracy > VAL_OVERSTATES:
        reasons.append(f"the best trial's validation accuracy ({val_accuracy:.1%}) overstated its test accuracy "
                       f"({test_accuracy:.1%}): the small validation split favoured a lucky trial")
    if diff_pp is not None and num_test:
        two_images = _two_images_pp(num_test)
        if abs(diff_pp) <= two_images:
            reasons.append(f"the gap ({diff_pp:.1f} pp) is within two evaluated items ({two_images:.1f} pp) and is noise")
    if not reasons:
        reasons.append("the selected configuration over-fitted the validation split; more data or a wider search "
                       "would help")
    return reasons


def _on(split: str) -> str:
    """Where the comparison was made, as the verdict says it."""
    return "out of fold over every labelled item (cross-validation)" if split == "cv" else f"on the {split} split"


def verdict(
    accuracy: float,
    probe_accuracy: float,
    *,
    num_test: int,
    train_per_class: float,
    unfreeze_blocks: int,
    trials_ok: int,
    budget_hit: bool,
    val_accuracy: float | None = None,
    split: str = "test",
) -> tuple[bool, str]:
    """Whether fine-tuning beat the best linear probe on the test split (or ``split``, when the data
    has no test split), and a one-paragraph why."""
    diff_pp = 100 * (accuracy - probe_accuracy)
    if accuracy > probe_accuracy:
        if unfreeze_blocks == 0:
            # Not a fine-tuning win: heads on frozen features (cross-validated regularisation,
            # perhaps averaged) beat the leaderboard's probe (C = 1). Say so rather than claim one.
            text = (f"The export beat the best linear probe by {diff_pp:.1f} pp {_on(split)} without "
                    "fine-tuning: no member unfroze a backbone block (its linear heads choose their regularisation "
                    "by cross-validation, the leaderboard's probes use C = 1)")
        else:
            text = f"Fine-tuning beat the best linear probe by {diff_pp:.1f} pp {_on(split)}"
        two_images = _two_images_pp(num_test)
        if diff_pp <= two_images:
            text += f" (within two {'labelled' if split == 'cv' else split} items, {two_images:.1f} pp: treat as a tie)"
        return True, text + "."
    reasons = loss_reasons(diff_pp=diff_pp, num_test=num_test, train_per_class=train_per_class,
                           unfreeze_blocks=unfreeze_blocks, trials_ok=trials_ok, budget_hit=budget_hit,
                           val_accuracy=val_accuracy, test_accuracy=accuracy)
    return False, (
        f"Fine-tuning did not beat the best linear probe ({100 * accuracy:.1f}% vs {100 * probe_accuracy:.1f}%): "
        + "; ".join(reasons) + "."
    )

"""The fine-tune-vs-probe verdict: one set of rules for the run and for the report."""
from __future__ import annotations

from autotransfer.evaluate.verdicts import loss_reasons, verdict


def test_win_within_two_test_images_is_called_a_tie() -> None:
    beats, text = verdict(0.90, 0.88, num_test=50, train_per_class=80, unfreeze_blocks=2, trials_ok=6,
                          budget_hit=False)
    assert beats and "treat as a tie" in text  # 2 pp < two images of 50 (4 pp)
    beats, text = verdict(0.90, 0.88, num_test=1000, train_per_class=80, unfreeze_blocks=2, trials_ok=6,
                          budget_hit=False)
    assert beats and "tie" not in text


def test_a_win_without_a_fine_tuned_member_is_not_called_fine_tuning() -> None:
    beats, text = verdict(0.70, 0.60, num_test=378, train_per_class=170, unfreeze_blocks=0, trials_ok=1,
                          budget_hit=False)
    assert beats and text.startswith("The export beat the best linear probe by 10.0 pp")
    assert "Fine-tuning" not in text and "no member unfroze a backbone block" in text
    _, tuned = verdict(0.70, 0.60, num_test=378, train_per_class=170, unfreeze_blocks=1, trials_ok=1,
                       budget_hit=False)
    assert tuned.startswith("Fine-tuning beat the best linear probe by 10.0 pp")


def test_loss_lists_each_cause_it_can_see() -> None:
    beats, text = verdict(0.80, 0.85, num_test=1000, train_per_class=20, unfreeze_blocks=0, trials_ok=2,
                          budget_hit=True, val_accuracy=0.97)
    assert not beats
    for cause in ("unfroze no backbone block", "~20 training images per class", "time budget",
                  "only 2 trial(s)", "overstated its test accuracy (80.0%)"):
        assert cause in text
    assert "within two evaluated items" not in text  # 5 pp at 1,000 test images is not noise
    _, close = verdict(0.80, 0.805, num_test=100, train_per_class=20, unfreeze_blocks=0, trials_ok=2, budget_hit=False)
    assert "within two evaluated items (2.0 pp) and is noise" in close


def test_unknown_facts_are_skipped_and_the_list_is_never_empty() -> None:
    assert loss_reasons(diff_pp=None, num_test=None) == [
        "the selected configuration over-fitted the validation split; more data or a wider search would help"]

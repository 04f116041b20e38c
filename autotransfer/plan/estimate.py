"""Per-candidate arithmetic: the seconds of one candidate's probe and of one tuning trial, from its costs."""
from __future__ import annotations

from autotransfer.plan.costs import CandidateCost

# Seconds to score one candidate's cached features (linear CV + kNN + LogME on a few hundred items).
# Assumed rather than timed per run: the upper end of what scoring takes on small data.
SCORE_S_PER_CANDIDATE = 1.0


def probe_seconds(c: CandidateCost, n_items: int, *, score_s: float = SCORE_S_PER_CANDIDATE) -> float:
    """One candidate in the probe: load + warm-up + a forward pass over every item + scoring."""
    return c.load_s + c.first_batch_s + n_items * c.featurize_s_per_item + score_s


def trial_seconds(c: CandidateCost, *, n_train: int, n_val: int, epochs: int, features_cached: bool = True,
                  pixel_scale: float = 1.0) -> float:
    """One tuning trial of ``train_trial`` with ``epochs`` fine-tuning epochs (the worst case: no early stop).

    Fixed overhead (head warm-up fit, clean-up); load a fresh backbone; phase 1: features of
    train+val unless the probe's are reused, the head's val accuracy through the backbone; phase 2
    (epochs > 0): compile/trace, then per epoch a training pass (``train_s_per_item``) over train
    and a validation forward over val, and a final val pass. ``pixel_scale``: the trial's pixels over
    the measured (native) size's, for trials at another ``input_size``: per-item costs of a conv net
    scale with its pixel count; loading and set-up do not.
    """
    fwd = c.featurize_s_per_item
    s = c.trial_overhead_s + c.load_s + c.first_batch_s + n_val * fwd * pixel_scale
    if not features_cached:
        s += (n_train + n_val) * fwd * pixel_scale
    if epochs > 0:
        s += c.train_setup_s + pixel_scale * (epochs * (n_train * c.train_s_per_item + n_val * fwd) + n_val * fwd)
    return s

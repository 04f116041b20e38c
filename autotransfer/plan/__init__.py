"""The run planner: measure what one item costs per candidate, then say up front what fits a budget.

``measure_costs`` times a few batches per candidate before anything else runs:

* ``featurize_s_per_item``: steady-state frozen forward (the probe's traced ``tf.function`` over its
  own input, ``probe.featurize.feature_dataset``, so decoding is included); the first batch is the
  warm-up and is timed separately (``first_batch_s``, tracing) together with the module load (``load_s``).
* ``train_s_per_item``: one fine-tuning step (``train_on_batch`` of the task model with the last
  ``unfreeze`` blocks trainable: forward + backward + Adam update) per item, after a first step that
  traces (``train_setup_s``). Tracing a training step costs seconds, so by default it is measured
  on the first candidate of each backbone (``base``) only; that candidate's
  ``backward_factor = train_s_per_item / featurize_s_per_item`` then scales the forward cost of the
  backbone's other sizes/layers (``train_measured`` says which numbers were measured).

``make_plan`` is pure arithmetic over those costs and the split sizes, modelled on the trainer
(see :func:`trial_seconds`): it returns a :class:`Plan` with the estimated probe and per-trial
seconds, how many trials fit, whether the whole run fits, recommended ``max_trials``/``top_k`` and
human-readable lines that carry the numbers they came from. ``Plan.to_dict()`` is ``plan.json``.

Modules: ``costs`` (measuring), ``estimate`` (one candidate's probe and trial seconds), ``plan``
(the whole run against the budget).
"""
from autotransfer.plan.costs import CandidateCost, measure_costs
from autotransfer.plan.estimate import SCORE_S_PER_CANDIDATE, probe_seconds, trial_seconds
from autotransfer.plan.plan import ESTIMATE_MARGIN, Plan, make_plan

__all__ = ["CandidateCost", "ESTIMATE_MARGIN", "Plan", "SCORE_S_PER_CANDIDATE", "make_plan",
           "measure_costs", "probe_seconds", "trial_seconds"]

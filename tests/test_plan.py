"""The run planner: cost arithmetic (pure), budget recommendations, and measuring on tiny modules."""
from __future__ import annotations

import json
import math

import pytest

from autotransfer.budget import EXPORT_RESERVE_S
from autotransfer.plan import CandidateCost, Plan, make_plan, measure_costs, probe_seconds, trial_seconds


def cost(name: str, fwd: float = 0.01, train: float = 0.03, load: float = 1.0, first: float = 0.5,
         setup: float = 2.0) -> CandidateCost:
    return CandidateCost(name=name, input_size=96, load_s=load, first_batch_s=first, featurize_s_per_item=fwd,
                         train_s_per_item=train, train_setup_s=setup, unfreeze=3, backward_factor=train / fwd,
                         train_measured=True, batch_size=16, batches_timed=2)


SIZES = dict(n_items=400, n_train=280, n_val=60, n_test=60)


def test_probe_and_trial_arithmetic():
    c = cost("a")
    assert probe_seconds(c, 400, score_s=1.0) == pytest.approx(1.0 + 0.5 + 400 * 0.01 + 1.0)
    # load + warm-up + head val pass + setup + epochs x (train + val) + final val pass
    expected = 1.0 + 0.5 + 60 * 0.01 + 2.0 + 4 * (280 * 0.03 + 60 * 0.01) + 60 * 0.01
    assert trial_seconds(c, n_train=280, n_val=60, epochs=4) == pytest.approx(expected)
    # without the probe's features the head warm-up needs its own forward pass over train + val
    assert trial_seconds(c, n_train=280, n_val=60, epochs=4, features_cached=False) == pytest.approx(
        expected + 340 * 0.01)
    # no fine-tuning epochs: no training step is ever traced
    assert trial_seconds(c, n_train=280, n_val=60, epochs=0) == pytest.approx(1.0 + 0.5 + 0.6)
    # the measured fixed overhead (head warm-up fit, clean-up) is added once per trial
    c.trial_overhead_s = 3.0
    assert trial_seconds(c, n_train=280, n_val=60, epochs=4) == pytest.approx(expected + 3.0)


def test_plan_totals_and_fits():
    costs = {"a": cost("a"), "b": cost("b", fwd=0.02, train=0.06)}
    plan = make_plan(costs, **SIZES, budget_s=10_000, top_k=2, max_trials=4, max_epochs=4, score_s=1.0)
    probe = sum(probe_seconds(c, 400, score_s=1.0) for c in costs.values())
    t_b = trial_seconds(costs["b"], n_train=280, n_val=60, epochs=4)
    assert plan.probe_s == pytest.approx(probe)
    assert plan.trial_s_max == pytest.approx(t_b)
    assert plan.tune_s == pytest.approx(4 * t_b)
    assert plan.finish_s == pytest.approx(EXPORT_RESERVE_S + 60 * 0.02)  # the default reserve: the run's
    assert plan.total_s == pytest.approx(probe + 4 * t_b + plan.finish_s)
    assert plan.fits and plan.recommended_max_trials == 4 and plan.recommended_top_k == 2
    assert plan.trials_fit == int((10_000 - probe - plan.finish_s) // t_b)
    assert any("fits" in line for line in plan.lines)
    padded = make_plan(costs, **SIZES, budget_s=10_000, top_k=2, max_trials=4, max_epochs=4, score_s=1.0, margin=1.25)
    assert padded.probe_s == pytest.approx(1.25 * probe) and padded.trial_s_max == pytest.approx(1.25 * t_b)
    assert "x1.25 safety margin" in padded.lines[0]
    d = json.loads(json.dumps(plan.to_dict()))  # plan.json is plain JSON
    assert d["costs"]["b"]["train_s_per_item"] == 0.06 and d["recommended_max_trials"] == 4


def test_no_budget_only_estimates():
    plan = make_plan({"a": cost("a")}, **SIZES, budget_s=None, top_k=2, max_trials=6, max_epochs=4)
    assert plan.fits and plan.trials_fit is None and plan.recommended_max_trials == 6
    assert "budget" not in plan.lines[-1]


def test_small_budget_recommends_fewer_trials():
    costs = {"a": cost("a"), "b": cost("b", fwd=0.02, train=0.06)}
    full = make_plan(costs, **SIZES, budget_s=None, top_k=2, max_trials=8, max_epochs=4)
    budget = full.probe_s + full.finish_s + 2.5 * full.trial_s_max  # room for 2 trials, not 8
    plan = make_plan(costs, **SIZES, budget_s=budget, top_k=2, max_trials=8, max_epochs=4)
    assert not plan.fits
    assert plan.trials_fit == 2 and plan.recommended_max_trials == 2 and plan.recommended_top_k == 2
    text = str(plan)
    assert "does NOT fit" in text and "max_trials=2" in text
    # spent time counts against the budget: one trial less
    spent = make_plan(costs, **SIZES, budget_s=budget, top_k=2, max_trials=8, max_epochs=4, spent_s=full.trial_s_max)
    assert spent.recommended_max_trials == 1 and spent.recommended_top_k == 1 and "top_k=1" in str(spent)


def test_budget_below_probe_recommends_cheapest_candidates():
    costs = {"cheap": cost("cheap", fwd=0.001, train=0.003), "dear": cost("dear", fwd=0.5, train=1.5)}
    cheap_need = (probe_seconds(costs["cheap"], 400) + 30 + 60 * 0.5
                  + trial_seconds(costs["cheap"], n_train=280, n_val=60, epochs=4))
    plan = make_plan(costs, **SIZES, budget_s=cheap_need + 1, top_k=2, max_trials=4, max_epochs=4)
    assert not plan.fits and plan.trials_fit == 0
    assert plan.recommended_candidates == ["cheap"] and plan.recommended_max_trials == 1
    assert "probing only 1 candidate(s) (cheap" in str(plan)
    hopeless = make_plan(costs, **SIZES, budget_s=5, top_k=2, max_trials=4, max_epochs=4)
    assert hopeless.recommended_candidates == [] and "raise the budget" in str(hopeless)


def test_make_plan_needs_costs():
    with pytest.raises(ValueError):
        make_plan({}, **SIZES, budget_s=1, top_k=1, max_trials=1, max_epochs=1)


@pytest.mark.slow
def test_measure_costs_on_tiny_modules(tiny_modules):
    from autotransfer.backbones import BackboneSpec
    from autotransfer.data import load_data, make_splits
    from autotransfer.testing import pattern_images

    x, y = pattern_images(12, seed=0)
    data = load_data(x, labels=y)
    splits = make_splits(data, seed=0)
    specs = [BackboneSpec("good", tiny_modules["good"], 16, base="good"),
             BackboneSpec("good@24", tiny_modules["good"], 24, base="good"),
             BackboneSpec("bad", tiny_modules["bad"], 16, base="bad")]
    costs = measure_costs(specs, data, splits, batch_size=8, probe_batches=2, unfreeze=2)
    assert list(costs) == ["good", "good@24", "bad"]
    # forward timed at the probe's own batch (by input size), training at the trainer's
    assert [(c.feature_batch_size, c.batch_size) for c in costs.values()] == [(256, 8)] * 3
    for c in costs.values():
        for v in (c.load_s, c.featurize_s_per_item, c.train_s_per_item, c.backward_factor):
            assert math.isfinite(v) and v > 0
        assert c.first_batch_s >= 0 and c.train_setup_s >= 0 and c.unfreeze == 2 and c.trial_overhead_s > 0
    # per_backbone: measured once per base, the other size derives from its forward cost
    assert costs["good"].train_measured and costs["bad"].train_measured and not costs["good@24"].train_measured
    g24 = costs["good@24"]
    assert g24.train_s_per_item == pytest.approx(g24.featurize_s_per_item * costs["good"].backward_factor)
    first = measure_costs(specs, data, splits, batch_size=8, feature_batch_size=4, measure_train="first", unfreeze=2)
    assert {c.feature_batch_size for c in first.values()} == {4}
    assert [c.train_measured for c in first.values()] == [True, False, False]
    assert first["bad"].backward_factor == first["good"].backward_factor
    plan = make_plan(costs, n_items=len(data), n_train=len(splits.train), n_val=len(splits.val),
                     n_test=len(splits.test), budget_s=600, top_k=2, max_trials=2, max_epochs=2)
    assert isinstance(plan, Plan) and plan.probe_s > 0 and plan.trial_s_max >= plan.trial_s_mean > 0


def test_until_the_deadline_the_plan_says_how_many_trials_it_expects():
    costs = {"a": cost("a"), "b": cost("b", fwd=0.02, train=0.06)}
    full = make_plan(costs, **SIZES, budget_s=None, top_k=2, max_trials=1, max_epochs=4)
    budget = full.probe_s + full.finish_s + 5.5 * full.trial_s_mean
    plan = make_plan(costs, **SIZES, budget_s=budget, top_k=2, max_trials=None, max_epochs=4)
    assert plan.fits and plan.trials_fit == 5 and plan.max_trials == 5
    assert plan.tune_s == pytest.approx(budget - full.probe_s - full.finish_s)
    assert "until the deadline" in str(plan) and "about 5 trial(s) expected" in str(plan)
    with pytest.raises(ValueError, match="needs a budget"):
        make_plan(costs, **SIZES, budget_s=None, top_k=2, max_trials=None, max_epochs=4)


def test_trials_at_a_smaller_input_size_cost_their_pixels():
    c = cost("a")
    fixed = 1.0 + 0.5 + 2.0  # load, warm-up and set-up do not shrink with the image
    full = trial_seconds(c, n_train=280, n_val=60, epochs=4)
    assert trial_seconds(c, n_train=280, n_val=60, epochs=4, pixel_scale=0.25) == pytest.approx(
        fixed + 0.25 * (full - fixed))
    costs = {"a": c, "b": cost("b", fwd=0.02, train=0.06)}
    native = make_plan(costs, **SIZES, budget_s=600, top_k=2, max_trials=None, max_epochs=4)
    half = make_plan(costs, **SIZES, budget_s=600, top_k=2, max_trials=None, max_epochs=4,
                     trial_sizes={"a": [48], "b": [48, 96]})  # cost measured at 96 px
    assert half.assumptions["trial_pixel_scale"] == {"a": 0.25, "b": pytest.approx(0.625)}
    assert half.trial_s_mean < native.trial_s_mean and half.trials_fit > native.trials_fit
    assert "px" in str(half) and "px" not in native.lines[2]


def test_layer_variants_reuse_their_modules_measurement(tiny_modules):
    from autotransfer.backbones import BackboneSpec
    from autotransfer.data import load_data, make_splits
    from autotransfer.testing import pattern_images

    x, y = pattern_images(12, seed=0)
    data = load_data(x, labels=y)
    specs = [BackboneSpec("good", tiny_modules["good"], 16, base="good"),
             BackboneSpec("good@block_01", tiny_modules["good"], 16, layer="block_01", base="good")]
    costs = measure_costs(specs, data, make_splits(data, seed=0), batch_size=8, unfreeze=1, measure_train="first")
    assert costs["good@block_01"].load_s == costs["good"].load_s  # the same measurement, not a second load
    assert costs["good@block_01"].name == "good@block_01"


def test_the_least_budget_counts_one_model_not_the_whole_ensemble():
    costs = {"a": cost("a"), "b": cost("b", fwd=0.05)}
    full = make_plan(costs, **SIZES, budget_s=None, top_k=2, max_trials=1, max_epochs=4, reserve_s=80.0)
    least = make_plan(costs, **SIZES, budget_s=None, top_k=2, max_trials=1, max_epochs=4, reserve_s=80.0,
                      min_reserve_s=35.0)
    assert full.min_budget_s - least.min_budget_s == pytest.approx(45.0)
    assert least.finish_s == full.finish_s  # the plan still reserves the whole ensemble's export


def test_the_export_reserve_counts_the_served_models_and_their_pixels():
    from autotransfer import budget as b
    from autotransfer.config import RunConfig

    fixed, share = b.EXPORT_RESERVE_S, b.EXPORT_RESERVE_PER_MODEL_S

    def reserve(config: RunConfig, **kwargs):
        return b.Budget.for_run(config, 0.0).finish_reserve(**kwargs)

    # Before the members are known: the most the ensemble may serve, tuned twins of the refit members included.
    assert reserve(RunConfig()) == fixed + share * (4 + 2)
    assert reserve(RunConfig(keep_tuned=False)) == fixed + share * 4
    assert reserve(RunConfig(refit=False)) == fixed + share * 4
    # Known members: scaled by pixels, at least a quarter share; text (size 0) the full share.
    assert reserve(RunConfig(), sizes=[240, 240]) == pytest.approx(fixed + 2 * share)
    assert reserve(RunConfig(), sizes=[120]) == pytest.approx(fixed + share / 4)
    assert reserve(RunConfig(), sizes=[32]) == pytest.approx(fixed + share / 4)
    assert reserve(RunConfig(), sizes=[0]) == pytest.approx(fixed + share)
    assert reserve(RunConfig(), sizes=[480]) == pytest.approx(fixed + 4 * share)
    from autotransfer.backbones import BackboneSpec
    from autotransfer.final.members import FinalModel, Member

    members = [Member("trial 1", BackboneSpec("a", "a", 128), 0.5, None, {}),
               Member("probe:b", BackboneSpec("b", "b", 224), 0.5, None, {})]
    assert FinalModel(members, None, keep_tuned=True).served_sizes() == [128, 128, 224]  # the trial's tuned twin too
    assert FinalModel(members, None, keep_tuned=False).served_sizes() == [128, 224]

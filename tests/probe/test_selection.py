"""LEEP / N-LEEP / combined scores, successive halving and the multi-source candidate."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autotransfer.backbones import BackboneSpec
from autotransfer.probe.halving import select_rung
from autotransfer.testing.conformance import check_scorer
from autotransfer.probe import (
    CombinedScore,
    FeatureCache,
    LEEPScorer,
    NLEEPScorer,
    get_scorer,
    probe,
    successive_halving,
)


@pytest.mark.parametrize("name", ["leep", "nleep"])
def test_new_scorers_pass_conformance(name):
    check_scorer(get_scorer(name))


def test_leep_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 40)
    logits = rng.normal(size=(40, 5))
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    joint = np.zeros((3, 5))
    for i in range(40):
        joint[y[i]] += theta[i] / 40
    cond = joint / joint.sum(0)
    expected = np.mean([np.log(theta[i] @ cond[y[i]]) for i in range(40)])
    got = LEEPScorer().score(np.zeros((40, 2)), y, source_logits=logits).score
    assert got == pytest.approx(expected, rel=1e-12)
    assert got <= 0


def test_nleep_is_deterministic_and_reports_pca_dims():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20))
    y = np.repeat(np.arange(3), 20)
    a, b = NLEEPScorer().score(x, y, seed=4), NLEEPScorer().score(x, y, seed=4)
    assert a.score == b.score and 1 <= a.details["pca_dims"] <= 20 and a.details["components"] == 3


@pytest.fixture(scope="module")
def cls_modules(tiny_classifier_module, tmp_path_factory):
    from autotransfer.testing import write_tiny_module

    bad = write_tiny_module(tmp_path_factory.mktemp("cls_bad") / "bad_cls", grid=1, seed=2, num_source_classes=10)
    return {"good": tiny_classifier_module, "bad": str(bad)}


@pytest.mark.slow
def test_leep_and_nleep_prefer_the_good_module(pattern_data, tiny_modules, cls_modules, tmp_path):
    data, splits = pattern_data
    specs = [BackboneSpec("bad", tiny_modules["bad"], 16, classifier_handle=cls_modules["bad"]),
             BackboneSpec("good", tiny_modules["good"], 16, classifier_handle=cls_modules["good"])]
    for scorer in ("leep", "nleep"):
        result = probe(specs, data, splits, scorer=scorer, cache=FeatureCache(tmp_path))
        board = result.leaderboard
        assert board["name"].tolist() == ["good", "bad"], scorer
        assert (board["scorer"] == scorer).all()
        assert board[f"score_{scorer}"].tolist() == board["score"].tolist()
    # All scorers are columns of the default leaderboard; LEEP is there because of classifier_handle.
    board = probe(specs, data, splits, cache=FeatureCache(tmp_path)).leaderboard.set_index("name")
    for col in ("score_linear", "score_knn", "score_logme", "score_leep", "score_nleep", "score_combined"):
        assert board.loc["good", col] > board.loc["bad", col], col


def test_leep_column_is_nan_without_classifier_and_ranking_fails(pattern_data, specs):
    data, splits = pattern_data
    board = probe(specs, data, splits, cache=False).leaderboard
    assert board["score_leep"].isna().all() and board["score_nleep"].notna().all()
    with pytest.raises(Exception, match="source logits"):
        probe(specs, data, splits, scorer="leep", cache=False)


def test_combined_score_is_cross_candidate():
    board = pd.DataFrame({"score_linear": [0.9, 0.5, 0.1], "score_logme": [-1.0, -2.0, -3.0],
                          "score_leep": [math.nan, -1.0, -2.0], "score_knn": [0.7, 0.7, 0.7]})
    combo = CombinedScore(("linear", "logme", "leep", "knn"))
    assert combo.used(board) == ["score_linear", "score_logme"]  # leep has a NaN, knn is constant
    score, std = combo(board)
    assert score.is_monotonic_decreasing and score.sum() == pytest.approx(0.0)
    ranks, _ = CombinedScore(("linear", "logme"), method="rank")(board)
    assert ranks.tolist() == [1.0, 0.5, 0.0]
    # Cross-candidate: the same candidate's combined score depends on who else is there.
    assert combo(board.iloc[:2])[0].iloc[0] != score.iloc[0]


def test_combined_ranking_in_probe(pattern_data, specs):
    data, splits = pattern_data
    result = probe(specs, data, splits, scorer="combined", cache=False)
    board = result.leaderboard
    assert board["name"].tolist() == ["good", "medium", "bad"]
    assert (board["scorer"] == "combined").all() and result.scorer == "combined"
    np.testing.assert_allclose(board["score"], board["score_combined"])
    assert board["score"].is_monotonic_decreasing and abs(board["score"].sum()) < 1e-9  # z-scores
    assert {"score_logme", "score_nleep"} <= set(board.columns)  # the default components


# ---------------------------------------------------------------------------------- halving


@pytest.fixture(scope="module")
def halving_setup(tiny_modules, tmp_path_factory):
    from autotransfer.data import load_data, make_splits
    from autotransfer.testing import pattern_images, write_tiny_module

    root = tmp_path_factory.mktemp("more_modules")
    more = {"bad2": write_tiny_module(root / "bad2", grid=1, seed=5),
            "medium2": write_tiny_module(root / "medium2", grid=2, seed=7),
            "bad3": write_tiny_module(root / "bad3", grid=1, seed=9)}
    paths = {**tiny_modules, **{k: str(v) for k, v in more.items()}}
    order = ["bad", "medium", "bad2", "good", "bad3", "medium2"]
    specs = [BackboneSpec(n, paths[n], 16) for n in order]
    data = load_data(pattern_images(30, num_classes=4, size=16, seed=3))
    return specs, data, make_splits(data, seed=0)


@pytest.mark.slow
def test_halving_picks_the_full_top_k_with_fewer_items(halving_setup, tmp_path):
    specs, data, splits = halving_setup
    # The keep-within band is in the scorer's CV standard errors: a CV scorer, not the combined default.
    full = probe(specs, data, splits, scorer="linear_ll", cache=False)
    half = probe(specs, data, splits, scorer="linear_ll", cache=FeatureCache(tmp_path), halving=True, eta=2, min_per_class=3, top_k=2)
    assert half.top(2) == full.top(2)
    board = half.leaderboard.set_index("name")
    n_all = len(np.unique(np.concatenate([splits.train, splits.val, splits.test])))
    assert board["featurized_items"].sum() < n_all * len(specs)
    assert len(half.rungs) >= 2 and half.rungs[0]["candidates"] == [s.name for s in specs]
    for r in half.rungs:  # the best fraction, plus any within two standard errors of the cut-off
        assert len(r["kept"]) >= r["keep_n"] == max(2, math.ceil(len(r["candidates"]) / 2))
        assert r["kept"][:r["keep_n"]] == sorted(r["candidates"], key=lambda n: -r["scores"][n])[:r["keep_n"]]
    top = half.top(2)
    # Survivors: the full rung, full-data scores equal to the full probe's, val/test present.
    fb = full.leaderboard.set_index("name")
    for n in top:
        assert board.loc[n, "rung"] == len(half.rungs)
        assert board.loc[n, "score"] == pytest.approx(fb.loc[n, "score"])
        assert board.loc[n, "val_accuracy"] == pytest.approx(fb.loc[n, "val_accuracy"])
        for split in ("train", "val", "test"):
            np.testing.assert_allclose(half.features[n][split], full.features[n][split], rtol=1e-6, atol=1e-6)
    # Eliminated: rung scores only, NaN full-data columns, no features.
    gone = [n for n in board.index if board.loc[n, "rung"] < len(half.rungs)]
    assert gone and not set(gone) & set(top)
    assert board.loc[gone, ["score", "val_accuracy", "test_accuracy"]].isna().all().all()
    assert all(n not in half.features for n in gone)
    assert board.loc[gone, "score_rung0"].notna().all() and (board["halving_seconds"] > 0).all()
    assert half.leaderboard["name"].tolist()[:2] == top


@pytest.mark.slow
def test_halving_then_warm_default_run_reuses_the_assembled_cache(halving_setup, tmp_path):
    specs, data, splits = halving_setup
    cache = FeatureCache(tmp_path)
    half = probe(specs, data, splits, scorer="linear_ll", cache=cache, halving=True, eta=2, min_per_class=3, top_k=2)
    again = probe([s for s in specs if s.name in half.top(2)], data, splits, cache=cache)
    assert again.leaderboard["cached"].all()
    warm_half = probe(specs, data, splits, scorer="linear_ll", cache=cache, halving=True, eta=2, min_per_class=3, top_k=2)
    assert warm_half.top(2) == half.top(2) and (warm_half.leaderboard["featurized_items"].fillna(0) == 0).all()


def test_successive_halving_schedule():
    labels = np.repeat(np.arange(2), 50)
    seen = []

    def score(names, idx, r):
        seen.append((list(names), len(idx)))
        return {n: float(-int(n[1:])) for n in names}  # c0 best

    res = successive_halving([f"c{i}" for i in range(9)], np.arange(100), labels, score, eta=3, min_per_class=2, top_k=2,
                             keep_within=0)
    assert res.survivors == ["c0", "c1"]
    assert seen == [([f"c{i}" for i in range(9)], 4), (["c0", "c1", "c2"], 12)]
    assert res.eliminated_order()[0] == "c2"


def test_a_rung_keeps_candidates_within_noise_of_the_cut_off():
    scores = {"a": (0.90, 0.01), "b": (0.80, 0.02), "c": (0.78, 0.01), "d": (0.70, 0.01), "e": (0.79, 0.0), "f": math.nan}
    order = list(scores)
    # keep_n=2: cut-off b=0.80; c is 0.02 below, within 2 * hypot(0.01, 0.02) = 0.045; d is not; e's
    # is 2 * 0.02 = 0.04 -> kept. Failed f is dropped.
    kept, cut = select_rung(scores, order, keep_n=2, keep_within=2.0)
    assert kept == ["a", "b", "e", "c"] and cut == 0.80
    assert select_rung(scores, order, keep_n=2, keep_within=0.0)[0] == ["a", "b"]
    # The band keeps at most keep_n more, nearest the cut-off first: e (0.79) before c (0.78).
    assert select_rung(scores, order, keep_n=1, keep_within=100.0)[0] == ["a", "b"]
    assert select_rung({**scores, "d": (0.70, 1.0)}, order, keep_n=2, keep_within=2.0)[0] == ["a", "b", "e", "c"]
    # Plain floats (no standard error) are the classic rule.
    assert select_rung({"a": 0.9, "b": 0.8, "c": 0.79}, ["a", "b", "c"], keep_n=2)[0] == ["a", "b"]


def test_halving_keeps_a_near_tie_that_the_classic_rule_drops():
    labels = np.repeat(np.arange(2), 50)

    def score(names, idx, r):
        # c1 and c2 are tied within noise on small rungs; c2 is better only on large ones.
        return {n: ({"c0": 0.9, "c1": 0.71, "c2": 0.70 if len(idx) < 50 else 0.75, "c3": 0.3}[n], 0.02) for n in names}

    classic = successive_halving(["c0", "c1", "c2", "c3"], np.arange(100), labels, score, eta=2, min_per_class=5,
                                 top_k=2, keep_within=0)
    robust = successive_halving(["c0", "c1", "c2", "c3"], np.arange(100), labels, score, eta=2, min_per_class=5,
                                top_k=2)
    assert classic.survivors == ["c0", "c1"]
    assert set(robust.survivors) == {"c0", "c1", "c2"} and "c3" not in robust.survivors


# ------------------------------------------------------------------------------ multi-source


@pytest.mark.slow
def test_multi_source_row(pattern_data, specs):
    data, splits = pattern_data
    result = probe(specs, data, splits, cache=False, multi_source=2)
    board = result.leaderboard.set_index("name")
    name = "concat(good+medium)"
    assert name in board.index and board.loc[name, "status"] == "ok"
    assert board.loc[name, "feature_dim"] == board.loc["good", "feature_dim"] + board.loc["medium", "feature_dim"]
    assert result.features[name]["train"].shape[1] == 32
    spec = result.specs[name]
    assert spec.extra["sources"] == ["good", "medium"] and spec.input_size == 16
    assert [d["name"] for d in spec.extra["source_specs"]] == ["good", "medium"]
    assert np.isfinite(board.loc[name, "score"]) and np.isfinite(board.loc[name, "val_accuracy"])
    # Default: no extra row.
    assert len(probe(specs, data, splits, cache=False).leaderboard) == 3


def test_combined_is_a_ranking_criterion_not_an_extra_scorer(pattern_data, specs):
    from autotransfer.errors import UserInputError
    from autotransfer.probe import available_scorers, ranking_scorers

    assert {"leep", "nleep"} <= set(available_scorers()) and "combined" not in available_scorers()
    assert "combined" in ranking_scorers()
    data, splits = pattern_data
    with pytest.raises(UserInputError, match="across candidates"):
        probe(specs, data, splits, extra_scorers=("combined",), cache=False)

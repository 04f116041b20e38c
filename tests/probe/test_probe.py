from __future__ import annotations

import importlib
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from autotransfer.backbones import BackboneSpec, HubBackbone
from autotransfer.data import image_dataset, load_data, make_splits
from autotransfer.defaults import DEFAULT_SCORER
from autotransfer.errors import BackboneError
from autotransfer.probe import LEADERBOARD_COLUMNS, FeatureCache, extract_features, probe
from autotransfer.probe import featurize as featurize_mod
from autotransfer.probe.featurize import feature_dataset, images_dtype
from autotransfer.testing import pattern_images

# The package re-exports the function probe(), which shadows the submodule attribute.
probe_mod = importlib.import_module("autotransfer.probe.probe")


@pytest.fixture(scope="module")
def cold(pattern_data, specs, tmp_path_factory):
    data, splits = pattern_data
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    calls: list[tuple] = []
    result = probe(specs, data, splits, scorer="linear_ll", cache=cache, progress=lambda *a: calls.append(a))
    return result, cache, calls


def test_linear_probe_ranks_good_medium_bad(cold):
    result, _, _ = cold
    board = result.leaderboard
    assert board["name"].tolist() == ["good", "medium", "bad"]
    assert board["rank"].tolist() == [1, 2, 3]
    assert list(board.columns[: len(LEADERBOARD_COLUMNS)]) == LEADERBOARD_COLUMNS
    assert {"score_linear", "score_linear_ll", "score_knn", "score_logme", "status"} <= set(board.columns)
    assert (board["status"] == "ok").all() and (board["scorer"] == "linear_ll").all()
    assert (board["score"] < 0).all() and board["score"].is_monotonic_decreasing  # log-likelihoods


def test_without_a_scorer_the_default_one_ranks(pattern_data, specs, tmp_path):
    data, splits = pattern_data
    result = probe(specs, data, splits, cache=FeatureCache(tmp_path))
    board = result.leaderboard
    assert result.scorer == DEFAULT_SCORER and (board["scorer"] == DEFAULT_SCORER).all()
    assert board["score"].tolist() == board[f"score_{DEFAULT_SCORER}"].tolist()
    assert board["score"].is_monotonic_decreasing and board["name"].tolist()[-1] == "bad"
    assert board["score_linear"].iloc[0] > 0.9 and board["score_linear"].iloc[-1] < 0.5
    assert result.top(2) == ["good", "medium"]
    assert (board["feature_dim"] == 16).all() and (board["params"] > 0).all()


def test_extra_scorers_agree_on_the_order(cold):
    board = cold[0].leaderboard.set_index("name")
    for col in ("score_linear", "score_knn", "score_logme", "val_accuracy"):
        assert board.loc["good", col] > board.loc["medium", col] > board.loc["bad", col], col


def test_features_per_split_and_progress(cold, pattern_data):
    result, _, calls = cold
    _, splits = pattern_data
    for name in ("good", "medium", "bad"):
        for split in ("train", "val", "test"):
            assert result.features[name][split].shape == (len(getattr(splits, split)), 16)
    assert calls[-1][:3] == ("probe", 3, 3) and all(c[0] == "probe" for c in calls)


def test_test_macro_f1_is_the_probe_heads_on_test(cold, pattern_data):
    from sklearn.metrics import f1_score

    from autotransfer.probe.scorers import fit_linear_probe

    result, _, _ = cold
    data, _ = pattern_data
    k = len(data.class_names)
    for _, row in result.leaderboard.iterrows():
        f, y = result.features[row["name"]], result.labels
        pred = fit_linear_probe(f["train"], y["train"], seed=0).predict(f["test"].astype(np.float64))
        want = f1_score(y["test"], pred, average="macro", labels=list(range(k)), zero_division=0)
        assert row["test_macro_f1"] == pytest.approx(want)
    assert result.leaderboard["test_macro_f1"].iloc[-1] < result.leaderboard["test_macro_f1"].iloc[0]


def test_features_match_a_direct_forward_pass(cold, pattern_data, tiny_modules):
    result, _, _ = cold
    data, splits = pattern_data
    bb = HubBackbone(tiny_modules["good"])
    x = image_dataset(data, splits.val, image_size=16, batch_size=64, with_labels=False)
    direct = np.concatenate([bb(batch).numpy() for batch in x])
    np.testing.assert_allclose(result.features["good"]["val"], direct, rtol=1e-5, atol=1e-6)


def test_warm_run_hits_the_cache_without_loading_modules(cold, pattern_data, specs, monkeypatch):
    result, cache, _ = cold
    data, splits = pattern_data

    def no_load(*a, **k):
        raise AssertionError("a module was loaded on a warm run")

    monkeypatch.setattr(probe_mod, "HubBackbone", no_load)
    warm = probe(specs, data, splits, scorer="linear_ll", cache=cache)
    assert warm.leaderboard["cached"].all() and not result.leaderboard["cached"].any()
    for name in result.features:
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(warm.features[name][split], result.features[name][split])
    cols = ["name", "score", "std", "score_knn", "score_logme", "val_accuracy", "test_accuracy", "params"]
    pd.testing.assert_frame_equal(warm.leaderboard[cols], result.leaderboard[cols])
    assert len(list((cache.root / "records").glob("scores-*.json"))) == 3  # scores were cached too


def test_warm_scores_are_recomputed_for_another_scorer_setting(cold, pattern_data, specs):
    from autotransfer.probe import LinearProbeScorer

    result, cache, _ = cold
    data, splits = pattern_data
    other = probe(specs, data, splits, cache=cache, scorer=LinearProbeScorer(C=0.01))
    assert other.leaderboard["cached"].all()
    assert other.leaderboard["name"].tolist()[0] == "good"
    assert len(list((cache.root / "records").glob("scores-*.json"))) == 6


def test_other_seed_splits_reuse_the_full_dataset_entry(cold, pattern_data, specs, monkeypatch):
    _, cache, _ = cold
    data, _ = pattern_data
    monkeypatch.setattr(probe_mod, "HubBackbone", None)
    warm = probe(specs, data, make_splits(data, seed=7), scorer="linear_ll", cache=cache, extra_scorers=())
    assert warm.leaderboard["cached"].all()
    assert "score_knn" not in warm.leaderboard.columns


def test_cache_key_changes_with_data_and_inputs(tiny_modules):
    x, y = pattern_images(4)
    d1 = load_data((x, y))
    x2 = x.copy()
    x2[0, 0, 0, 0] ^= 1
    d2 = load_data((x2, y))
    assert d1.fingerprint() != d2.fingerprint()
    k = FeatureCache.key
    base = k("m", d1.fingerprint(), None, 16)
    assert base != k("m", d2.fingerprint(), None, 16)
    assert base != k("m2", d1.fingerprint(), None, 16)
    assert base != k("m", d1.fingerprint(), None, 32)
    assert base != k("m", d1.fingerprint(), None, 16, layer="block_01")
    assert base != k("m", d1.fingerprint(), np.array([0, 2]), 16, num_items=16)
    assert base == k("m", d1.fingerprint(), np.arange(16), 16, num_items=16)


def test_changed_data_misses_the_cache(pattern_data, specs, tmp_path):
    data, splits = pattern_data
    cache = FeatureCache(tmp_path)
    probe(specs[:1], data, splits, cache=cache, extra_scorers=())
    x = np.array(data.items)
    x[0] = 255 - x[0]
    changed = load_data((x, data.labels))
    again = probe(specs[:1], changed, splits, cache=cache, extra_scorers=())
    assert not again.leaderboard["cached"].any()
    assert len(list(tmp_path.glob("*-final"))) == 2


def test_cache_entries_are_atomic_and_multi_array(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 5), np.float32)
    cache.save("k-final", {"features": a, "block_01": b}, {"seconds": 1.5})
    got = cache.load("k-final")
    np.testing.assert_array_equal(got["features"], a)
    np.testing.assert_array_equal(got["block_01"], b)
    meta = cache.meta("k-final")
    assert meta["seconds"] == 1.5 and meta["arrays"]["block_01"]["shape"] == [2, 5] and "created" in meta
    assert cache.load("missing") is None

    # A run killed mid-write leaves no entry behind.
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.save("k2-final", {"features": a})
    assert "k2-final" not in cache and cache.load("k2-final") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k-final"]


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTRANSFER_CACHE_DIR", str(tmp_path / "c"))
    assert FeatureCache().root == tmp_path / "c"


def test_failed_candidate_becomes_a_failed_row(pattern_data, specs, tmp_path):
    data, splits = pattern_data
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a graph")
    cands = [specs[2], BackboneSpec("missing", str(tmp_path / "nope"), 16), BackboneSpec("broken", str(broken), 16)]
    result = probe(cands, data, splits, cache=False, extra_scorers=())
    board = result.leaderboard
    assert board["name"].tolist() == ["good", "missing", "broken"]
    assert board["rank"].tolist() == [1, 2, 3]
    assert board.loc[1, "status"].startswith("failed: BackboneError") and math.isnan(board.loc[1, "score"])
    assert board.loc[2, "status"].startswith("failed:")
    assert result.top(5) == ["good"]
    with pytest.raises(BackboneError, match="every candidate failed"):
        probe(cands[1:], data, splits, cache=False)


def test_save_writes_leaderboard_csv(cold, tmp_path):
    path = cold[0].save(tmp_path / "run")
    back = pd.read_csv(path)
    assert back["name"].tolist() == ["good", "medium", "bad"] and "score_logme" in back.columns


def test_extract_features_traces_once_and_handles_partial_batches(tiny_modules, pattern_data):
    data, splits = pattern_data
    bb = HubBackbone(tiny_modules["good"])
    ds = image_dataset(data, splits.train, image_size=16, batch_size=5)  # (images, labels), ragged tail
    traces = []
    orig = featurize_mod.forward_fn

    def counting(backbone, dtype=tf.float32):
        fn = orig(backbone, dtype)
        traces.append(fn)
        return fn

    featurize_mod.forward_fn = counting
    try:
        pre = extract_features(bb, ds, num_items=len(splits.train))
        cat = extract_features(bb, ds)
    finally:
        featurize_mod.forward_fn = orig
    np.testing.assert_array_equal(pre, cat)
    assert pre.shape == (len(splits.train), 16) and pre.dtype == np.float32
    assert len(traces) == 2  # one concrete function per call, reused for every batch size
    with pytest.raises(ValueError, match=r"expects inputs of shape \[None, 16, 16, 3\]"):
        extract_features(bb, image_dataset(data, splits.train, image_size=8, batch_size=5))


def test_uint8_featurization_equals_float(tiny_modules, pattern_data):
    """The probe feeds uint8 pixels and scales them inside the traced forward: same features,
    bit for bit, as the float pipeline; items needing a resize stay float."""
    data, splits = pattern_data
    bb = HubBackbone(tiny_modules["good"])
    raw = feature_dataset(data, splits.train, 16, batch_size=8)
    assert images_dtype(raw) == tf.uint8
    floats = image_dataset(data, splits.train, image_size=16, batch_size=8, with_labels=False)
    assert images_dtype(floats) == tf.float32
    np.testing.assert_array_equal(extract_features(bb, raw), extract_features(bb, floats))
    assert images_dtype(feature_dataset(data, splits.train, 8)) == tf.float32  # resized: float


def test_feature_dataset_runs_without_the_tf_data_autotuner(pattern_data):
    # Measured: beside the forward pass on 2 cores the autotuner sometimes cost ~20% of a pass.
    data, splits = pattern_data
    for size in (16, 8):  # uint8 without a map, float with the decode/resize map
        ds = feature_dataset(data, splits.train, size, batch_size=8)
        assert ds.options().autotune.enabled is False
        assert sum(int(b.shape[0]) for b in ds) == len(splits.train)


def test_source_logits_reach_scorers(pattern_data, tiny_modules, tiny_classifier_module, tmp_path):
    from autotransfer.probe import Scorer, ScoreResult

    seen = {}

    class Leepish(Scorer):
        name = "leepish"
        needs_source_logits = True

        def score(self, features, labels, *, source_logits=None, seed=0):
            seen["shape"] = None if source_logits is None else source_logits.shape
            return ScoreResult(0.0)

    data, splits = pattern_data
    spec = BackboneSpec("good", tiny_modules["good"], 16, classifier_handle=tiny_classifier_module)
    result = probe([spec], data, splits, extra_scorers=[Leepish()], cache=FeatureCache(tmp_path))
    assert seen["shape"] == (len(splits.train), 10)
    assert result.leaderboard.loc[0, "score_leepish"] == 0.0
    assert len(list(tmp_path.glob("*-source_logits"))) == 1


def test_featurization_batch_follows_image_area_and_leaves_features_alone(pattern_data, specs):
    from autotransfer.probe.featurize import auto_batch_size, feature_batch

    # ~1M pixels per batch, a power of two in [8, 256]
    assert [auto_batch_size(s) for s in (16, 32, 64, 128, 224, 260, 1024)] == [256, 256, 256, 64, 16, 16, 8]
    assert feature_batch(None, 32) == 256 and feature_batch(5, 32) == 5
    data, splits = pattern_data
    auto = probe(specs[:1], data, splits, cache=False, extra_scorers=())
    small = probe(specs[:1], data, splits, cache=False, extra_scorers=(), batch_size=3)
    name = specs[0].name
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(auto.features[name][split], small.features[name][split], atol=1e-5)
    assert auto.leaderboard["score"].iloc[0] == pytest.approx(small.leaderboard["score"].iloc[0], abs=1e-6)

"""Layer candidates of one module share a single load and forward pass (all_features)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from autotransfer.backbones import BackboneSpec, HubBackbone
from autotransfer.data import image_dataset, load_data, make_splits
from autotransfer.probe import FeatureCache, extract_features, probe
from autotransfer.testing import pattern_images


def _three_layer_candidates(tiny_modules, *, per_class: int):
    """Pattern images and one search-space entry with three layers of the tiny "good" module."""
    x, y = pattern_images(per_class, seed=2)
    data = load_data(x, labels=y)
    entry = BackboneSpec.from_dict({"name": "g", "handle": tiny_modules["good"], "input_size": 16,
                                    "layers": ["final", "block_00", "block_01"]}, "test")
    return data, make_splits(data, seed=0), entry


@pytest.fixture
def loads(monkeypatch) -> list:
    """The ``layer`` of every HubBackbone the probe constructs (one entry per module load)."""
    probe_module = importlib.import_module("autotransfer.probe.probe")
    seen: list = []

    class Counting(HubBackbone):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("layer"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(probe_module, "HubBackbone", Counting)
    return seen


def test_layers_share_one_pass_and_match_direct_features(tiny_modules, tmp_path, loads):
    data, splits, entry = _three_layer_candidates(tiny_modules, per_class=10)
    res = probe(entry.expand(), data, splits, extra_scorers=(), cache=FeatureCache(tmp_path))
    assert len(loads) == 1  # one module load for three candidates
    assert not res.leaderboard["cached"].any()
    idx = np.sort(np.concatenate([splits.train, splits.val, splits.test]))
    for spec in entry.expand():
        ds = image_dataset(data, idx, image_size=16, batch_size=16, with_labels=False)
        direct = extract_features(HubBackbone.from_spec(spec), ds, num_items=len(idx))
        got = np.concatenate([res.features[spec.name][s] for s in ("train", "val", "test")])
        order = np.concatenate([np.searchsorted(idx, getattr(splits, s)) for s in ("train", "val", "test")])
        np.testing.assert_allclose(got, direct[order], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_halving_rungs_load_a_module_once_for_all_its_layer_candidates(tiny_modules, tmp_path, loads):
    data, splits, entry = _three_layer_candidates(tiny_modules, per_class=24)
    res = probe(entry.expand(), data, splits, extra_scorers=(), cache=FeatureCache(tmp_path), halving=True, eta=2,
                min_per_class=3, top_k=1, keep_within=0)
    assert len(res.rungs) >= 1
    assert len(loads) == 1  # one load serves every rung and the survivor's full-data pass
    full = probe(entry.expand(), data, splits, extra_scorers=(), cache=False)
    top = res.top(1)[0]
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(res.features[top][split], full.features[top][split], rtol=1e-5, atol=1e-5)
    # Items a rung featurized are not run again for the full pass: per candidate, at most all items.
    n_all = len(np.unique(np.concatenate([splits.train, splits.val, splits.test])))
    assert (res.leaderboard["featurized_items"] <= n_all).all()

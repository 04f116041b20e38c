"""The frozen-prefix cache: same training on cached activations as on images, and when it applies."""
from __future__ import annotations

import numpy as np
import pytest

from autotransfer.backbones import BackboneSpec, HubBackbone
from autotransfer.probe.cache import ENV_VAR
from autotransfer.space import TuneSpace
from autotransfer.train import train_trial
from autotransfer.train.prefix import PrefixCacheSettings, prefix_cut

SPACE = TuneSpace(unfreeze_blocks=(1, 2), learning_rate=(1e-2, 1e-2), head_epochs=2, max_epochs=3,
                  batch_size=8, head_warmup="adam")


@pytest.fixture()
def spec(tiny_modules, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))  # a cold cache of this test's own
    return BackboneSpec("good", tiny_modules["good"], 16)


@pytest.mark.parametrize("blocks, layer", [(1, None), (2, None), (1, "block_01")])
def test_prefix_path_trains_the_same_model(spec, data_splits, blocks, layer):
    data, splits = data_splits
    spec = BackboneSpec(spec.name, spec.handle, spec.input_size, layer=layer)
    params = {"unfreeze_blocks": blocks, "learning_rate": 1e-2, "patience": 3, "dropout": 0.1, "augment": "none"}
    runs = [train_trial(spec, params, data, splits, space=SPACE, num_classes=data.num_classes, seed=3,
                        prefix_cache=PrefixCacheSettings(enabled=cached)) for cached in (True, False)]
    cached, full = runs
    want_cut = "block_01" if layer else ["block_01", "head"][2 - blocks]
    assert cached.params["prefix_cut"] == want_cut and full.params["prefix_cut"] == ""
    assert cached.history["finetune"]["loss"] and len(cached.history["finetune"]["loss"]) == len(
        full.history["finetune"]["loss"])
    np.testing.assert_allclose(cached.history["finetune"]["loss"], full.history["finetune"]["loss"], rtol=1e-3)
    # Val outputs of the exported (whole) network, from the same start and seed, on both paths.
    np.testing.assert_allclose(cached.val_probs, full.val_probs, atol=1e-4)
    assert cached.model.get_layer("backbone").count_params() == full.model.get_layer("backbone").count_params()


def test_prefix_cut_only_where_the_prefix_is_fixed(spec, tiny_classifier_module):
    bb = HubBackbone.from_spec(spec)
    base = {"unfreeze_blocks": 1, "augment": "none"}
    assert prefix_cut(bb, base) == "head" and prefix_cut(bb, {**base, "unfreeze_blocks": 2}) == "block_01"
    assert prefix_cut(bb, {**base, "unfreeze_blocks": 3}) is None  # everything trains: no fixed prefix
    assert prefix_cut(bb, {**base, "augment": "flip"}) is None  # augmented images: the prefix changes
    bb.bn_training = True
    assert prefix_cut(bb, base) is None  # BatchNorm statistics would train
    other = HubBackbone(tiny_classifier_module, input_size=16)  # a module without cut points: full path
    assert prefix_cut(other, base) is None


def test_a_layer_candidate_is_cut_through_its_own_suffix(spec):
    bb = HubBackbone.from_spec(BackboneSpec(spec.name, spec.handle, spec.input_size, layer="block_01"))
    assert bb.blocks == ["block_00", "block_01"]
    assert prefix_cut(bb, {"unfreeze_blocks": 1, "augment": "none"}) == "block_01"
    assert prefix_cut(bb, {"unfreeze_blocks": 2, "augment": "none"}) is None  # no cut before block_00
    x = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype("float32")
    # The layer's pooled features, not the head's: from_block_to, not from_block.
    np.testing.assert_allclose(bb.suffix("block_01", bb.prefix("block_01", x)), bb(x), atol=1e-6)
    assert bb.suffix("block_01", bb.prefix("block_01", x)).shape[1] == bb.output_dim


def test_switch_off_takes_the_full_path(spec, monkeypatch):
    monkeypatch.setenv("AUTOTRANSFER_PREFIX_CACHE", "0")  # no longer read: the settings are run parameters
    bb, params = HubBackbone.from_spec(spec), {"unfreeze_blocks": 1, "augment": "none"}
    assert prefix_cut(bb, params) == "head"
    assert prefix_cut(bb, params, PrefixCacheSettings(enabled=False)) is None


def test_a_refit_takes_the_prefix_path_and_trains_the_same_model(spec, data_splits, monkeypatch):
    from autotransfer.train import trainer

    data, splits = data_splits
    idx = np.concatenate([splits.train, splits.val])
    params = {"unfreeze_blocks": 1, "learning_rate": 1e-2, "patience": 3, "dropout": 0.1, "augment": "none"}
    streams = []
    real = trainer._train_stream
    monkeypatch.setattr(trainer, "_train_stream", lambda *a, **kw: streams.append(kw) or real(*a, **kw))

    def refit(rows, settings=PrefixCacheSettings()):
        model, timed_out = trainer.refit_trial(spec, params, data, rows, space=SPACE, num_classes=data.num_classes,
                                               finetune_epochs=2, seed=3, prefix_cache=settings)
        assert not timed_out
        from autotransfer.data import image_dataset

        return trainer.predict_probs(model, image_dataset(data, splits.test, image_size=16, with_labels=False))

    cached = refit((splits.train, splits.val))  # the rows as the final stage passes them: the splits
    assert streams == []  # no image stream: the cached activations of the train+val rows
    full = refit(idx, PrefixCacheSettings(enabled=False))
    assert len(streams) == 1
    np.testing.assert_allclose(cached, full, atol=1e-4)


def test_activations_of_split_parts_reuse_each_splits_entry(spec, data_splits, monkeypatch):
    from autotransfer.train import prefix as px

    data, splits = data_splits
    bb = HubBackbone.from_spec(spec)
    train = px.prefix_activations(bb, "head", data, splits.train, size=16)  # what a trial caches
    val = px.prefix_activations(bb, "head", data, splits.val, size=16)
    items = []
    real = bb.prefix
    monkeypatch.setattr(bb, "prefix", lambda cut, x: items.append(int(x.shape[0])) or real(cut, x))
    both = px.prefix_activations(bb, "head", data, (splits.train, splits.val), size=16)
    np.testing.assert_array_equal(both, np.concatenate([train, val]))
    assert items == []  # every part cached: nothing through the prefix, not even the size bound's dummy input
    mixed = px.prefix_activations(bb, "head", data, (splits.val, splits.test), size=16)
    assert sum(items) == len(splits.test)  # a part not cached yet is computed, and only it
    np.testing.assert_array_equal(mixed[:len(splits.val)], val)


def test_the_entry_bound_and_dtype_are_settings(spec, data_splits):
    from autotransfer.train import prefix as px

    data, splits = data_splits
    bb = HubBackbone.from_spec(spec)
    assert px.prefix_activations(bb, "head", data, splits.train, size=16,
                                 settings=PrefixCacheSettings(limit_mb=0)) is None  # over the bound: full path
    half = px.prefix_activations(bb, "head", data, splits.train, size=16, settings=PrefixCacheSettings(dtype="float16"))
    full = px.prefix_activations(bb, "head", data, splits.train, size=16)
    assert half.dtype == np.float16 and full.dtype == np.float32
    np.testing.assert_allclose(half, full, rtol=1e-2, atol=1e-2)


def test_the_run_parameters_reach_each_trial(spec, data_splits, tmp_path, monkeypatch):
    import importlib

    from autotransfer.config import RunConfig
    from autotransfer.pipeline.context import RunContext
    from autotransfer.tune import tune

    config = RunConfig(prefix_cache=False, prefix_cache_mb=64, prefix_dtype="float16").validate()
    settings = RunContext(config, None, None, None, tmp_path, None, []).prefix_cache()
    assert settings == PrefixCacheSettings(enabled=False, limit_mb=64, dtype="float16")
    assert PrefixCacheSettings.from_dict(settings.to_dict()) == settings  # a shared study's workers read it back
    tune_module = importlib.import_module("autotransfer.tune.tune")
    seen, real = [], tune_module.train_trial
    monkeypatch.setattr(tune_module, "train_trial", lambda *a, **kw: seen.append(kw["prefix_cache"]) or real(*a, **kw))
    data, splits = data_splits
    tune([spec], data, splits, space=SPACE, max_trials=1, out_dir=tmp_path / "tune", prefix_cache=settings)
    assert seen == [settings]

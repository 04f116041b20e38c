"""Multi-source candidates: probe's concat(a+b) spec -> a task model with one branch per source."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from autotransfer.backbones import BackboneSpec, HubBackbone
from autotransfer.data import image_dataset
from autotransfer.probe import probe
from autotransfer.space import TuneSpace
from autotransfer.train import build_task_model, train_trial
from autotransfer.train.task import MultiSourceBackbone, source_specs

FAST = TuneSpace(unfreeze_blocks=(0, 1), learning_rate=(1e-3, 1e-2), head_learning_rate=5e-2,
                 patience=(1, 2), dropout=(0.0, 0.2), head_epochs=4, max_epochs=1, batch_size=16)


@pytest.fixture(scope="module")
def probed(tiny_modules, data_splits):
    data, splits = data_splits
    # Different input sizes: the 8px source is resized inside the model from the 16px input.
    specs = [BackboneSpec("good", tiny_modules["good"], 16), BackboneSpec("medium", tiny_modules["medium"], 8),
             BackboneSpec("bad", tiny_modules["bad"], 16)]
    return probe(specs, data, splits, cache=False, extra_scorers=(), multi_source=2)


def test_probe_spec_round_trips_to_source_specs(probed, tiny_modules):
    spec = probed.specs["concat(good+medium)"]
    srcs = source_specs(spec)
    assert [(s.name, s.handle, s.input_size) for s in srcs] == [("good", tiny_modules["good"], 16),
                                                               ("medium", tiny_modules["medium"], 8)]
    assert source_specs(BackboneSpec("x", tiny_modules["good"], 16)) is None


def test_task_model_concatenates_resized_branches(probed, data_splits):
    data, splits = data_splits
    spec = probed.specs["concat(good+medium)"]
    model, backbone = build_task_model(spec, 4, dropout=0.0)
    assert isinstance(backbone, MultiSourceBackbone)
    assert model.input_shape == (None, 16, 16, 3) and model.output_shape == (None, 4)
    assert backbone.output_dim == 32 and backbone.num_blocks == 3
    images = next(iter(image_dataset(data, splits.val, image_size=16, batch_size=64, with_labels=False)))
    small = next(iter(image_dataset(data, splits.val, image_size=8, batch_size=64, with_labels=False)))
    got = np.asarray(backbone(images))
    ref = np.concatenate([HubBackbone(source_specs(spec)[0].handle, input_size=16)(images).numpy(),
                          HubBackbone(source_specs(spec)[1].handle, input_size=8)(small).numpy()], axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # ...and equal to the probe's cached concat features (same preprocessing in model and pipeline).
    np.testing.assert_allclose(got, probed.features[spec.name]["val"], rtol=1e-4, atol=1e-5)


def test_unfreezing_applies_to_every_source(probed):
    _, backbone = build_task_model(probed.specs["concat(good+medium)"], 4, dropout=0.0)
    assert not backbone.trainable_weights
    backbone.set_unfrozen_blocks(1)
    for b in backbone.backbones:
        names = {w.name for w in b.trainable_weights}
        assert names == {"head__kernel", "head__bias"}, names
    with pytest.raises(ValueError):
        backbone.set_unfrozen_blocks(4)


def test_train_trial_on_multi_source_uses_probe_features(probed, data_splits, caplog):
    data, splits = data_splits
    spec = probed.specs["concat(good+medium)"]
    params = {"unfreeze_blocks": 1, "learning_rate": 1e-3, "patience": 1, "dropout": 0.0}
    with caplog.at_level(logging.WARNING):
        out = train_trial(spec, params, data, splits, space=FAST, num_classes=4, seed=0, features=probed.features)
    assert "stale" not in caplog.text and "do not match" not in caplog.text
    assert out.val_accuracy >= 0.5 and out.params["unfreeze_blocks"] == 1

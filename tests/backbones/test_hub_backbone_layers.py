"""Transfer from earlier layers with the tiny modules: features_at, truncated blocks, fine-tuning."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from autotransfer.backbones import BackboneSpec, HubBackbone
from autotransfer.errors import BackboneError
from autotransfer.testing import changed_after_one_epoch, pattern_images


def test_metadata_and_features_at(tiny_modules):
    path = Path(tiny_modules["good"])
    meta = json.loads((path / "autotransfer_module.json").read_text())
    assert meta["feature_layers"] == ["block_00", "block_01", "head"]
    assert meta["feature_dims"] == {"block_00": 32, "block_01": 32, "head": 16}
    module = tf.saved_model.load(str(path))
    assert sorted(module.features_at.keys()) == meta["feature_layers"]
    x = tf.random.uniform([5, 16, 16, 3], seed=0)
    every = module.all_features(x)
    for layer, dim in meta["feature_dims"].items():
        out = module.features_at[layer](x, training=False)
        assert out.shape == (5, dim)
        np.testing.assert_allclose(out.numpy(), every[layer].numpy(), atol=1e-6)
        np.testing.assert_allclose(module.features_at[layer](x).numpy(), out.numpy(), atol=0)
    np.testing.assert_allclose(every["head"].numpy(), module(x, training=False).numpy(), atol=1e-6)
    # block_00 is relu(x W + b) of the 4x4-pooled image: check one layer against numpy.
    var = {v.name.split(":")[0]: v.numpy() for v in module.variables}
    pooled = tf.nn.avg_pool2d(tf.image.resize(x, [8, 8], method="area"), 2, 2, "VALID").numpy()
    want = np.maximum(pooled.reshape(5, -1) * 4.0 @ var["block_00/kernel"] + var["block_00/bias"], 0)
    np.testing.assert_allclose(every["block_00"].numpy(), want, atol=1e-5)


def test_classifier_module_head_layer_is_the_feature_vector(tiny_classifier_module):
    module = tf.saved_model.load(tiny_classifier_module)
    x = tf.random.uniform([3, 16, 16, 3], seed=1)
    assert module(x).shape == (3, 10)
    assert module.features_at["head"](x).shape == (3, 16)


@pytest.mark.parametrize("layer, blocks, dim", [("block_00", ["block_00"], 32),
                                                ("block_01", ["block_00", "block_01"], 32),
                                                ("head", ["block_00", "block_01", "head"], 16)])
def test_hub_backbone_at_layer(tiny_modules, layer, blocks, dim):
    bb = HubBackbone(tiny_modules["good"], layer=layer)
    assert bb.blocks == blocks and bb.num_blocks == len(blocks) and bb.output_dim == dim
    x = tf.random.uniform([2, 16, 16, 3], seed=2)
    assert tuple(bb(x).shape) == (2, dim)
    np.testing.assert_allclose(bb(x).numpy(), bb._module.all_features(x)[layer].numpy(), atol=1e-6)
    bb.set_unfrozen_blocks(len(blocks))
    later = {n for n, blk in zip(bb.variable_names, bb._var_block) if blk is None}
    assert all(not w.trainable for w, n in zip(bb._wrapped, bb.variable_names) if n in later)
    spec = BackboneSpec.from_dict({"name": "g", "handle": tiny_modules["good"], "input_size": 16,
                                   "layers": ["final", layer]}, "s")
    assert HubBackbone.from_spec(spec.expand()[1]).output_dim == dim


def test_finetune_last_block_at_layer_changes_only_that_block(tiny_modules):
    bb = HubBackbone(tiny_modules["good"], layer="block_01")
    bb.set_unfrozen_blocks(1)
    x, y = pattern_images(8)
    assert changed_after_one_epoch(bb, x.astype("float32") / 255, y) == {"block_01/kernel", "block_01/bias"}


def test_unknown_layer_lists_available(tiny_modules):
    with pytest.raises(BackboneError, match=r"block_07.*available: block_00, block_01, head"):
        HubBackbone(tiny_modules["good"], layer="block_07")

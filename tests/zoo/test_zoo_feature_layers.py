"""Earlier-layer features of the lite0 zoo modules: features_at / all_features against the Keras
model's intermediates, truncated graphs, and HubBackbone(layer=...) fine-tuning one block."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the built zoo

LAYERS = ["block_00", "block_02", "block_04", "block_07", "block_10", "block_14", "block_15", "head"]
DIMS = [16, 24, 40, 80, 112, 192, 320, 1280]


@pytest.fixture(scope="module")
def fv_path(lite0_zoo):
    return lite0_zoo[0] / "efficientnet_lite0" / "feature_vector"


@pytest.fixture(scope="module")
def keras_layers():
    """{layer: pooled output} of the Keras 3 model holding the same ImageNet weights, and the images."""
    import keras

    from autotransfer.zoo.build import _source
    from autotransfer.zoo.convert import load_torch_weights
    from autotransfer.zoo.efficientnet_lite import SPECS, build_keras_model, keras_layer_of
    from autotransfer.zoo.pth import read_state_dict

    spec = SPECS["efficientnet_lite0"]
    pth = _source(spec.name)[0]
    model = build_keras_model(spec, include_top=False)
    load_torch_weights(model, spec, read_state_dict(pth), str(pth), include_top=False)
    inner = keras.Model(model.input, [model.get_layer(keras_layer_of(name, spec)).output for name in LAYERS])
    images = np.random.default_rng(1).uniform(size=(3, 128, 160, 3)).astype("float32")
    outs = inner(images, training=False)
    return {name: np.asarray(o).mean(axis=(1, 2)) for name, o in zip(LAYERS, outs)}, images


def test_metadata_lists_stage_ends(lite0_zoo):
    for output in ("feature_vector", "classification"):
        meta = json.loads((lite0_zoo[0] / "efficientnet_lite0" / output / "autotransfer_module.json").read_text())
        assert meta["feature_layers"] == LAYERS
        assert meta["feature_dims"] == dict(zip(LAYERS, DIMS))
        assert all(layer in meta["blocks"] for layer in LAYERS)


@pytest.mark.parametrize("output", ["feature_vector", "classification"])
def test_features_at_match_keras_intermediates(lite0_zoo, keras_layers, output):
    import tensorflow as tf

    want, images = keras_layers
    module = tf.saved_model.load(str(lite0_zoo[0] / "efficientnet_lite0" / output))
    assert sorted(module.features_at.keys()) == sorted(LAYERS)
    every = module.all_features(tf.constant(images))
    assert sorted(every) == sorted(LAYERS)
    for layer, dim in zip(LAYERS, DIMS):
        got = module.features_at[layer](tf.constant(images), training=False).numpy()
        assert got.shape == (3, dim)
        np.testing.assert_allclose(got, want[layer], atol=1e-4, err_msg=layer)
        np.testing.assert_allclose(every[layer].numpy(), want[layer], atol=1e-4, err_msg=layer)
    if output == "feature_vector":
        np.testing.assert_allclose(module(tf.constant(images)).numpy(), want["head"], atol=1e-4)


def test_features_at_graphs_are_truncated(fv_path):
    """Each layer's function captures only the variables of the blocks up to it."""
    import tensorflow as tf

    module = tf.saved_model.load(str(fv_path))
    meta = json.loads((fv_path / "autotransfer_module.json").read_text())
    blocks = meta["blocks"]
    by_handle = {id(v.handle): v.name.split("/")[0] for v in module.variables}
    x = tf.TensorSpec([None, None, None, 3], tf.float32)
    for layer in LAYERS:
        fn = module.features_at[layer].get_concrete_function(x, training=False)
        used = {by_handle[id(t)] for t in fn.captured_inputs if id(t) in by_handle}
        assert used, layer
        assert max(blocks.index(b) for b in used) == blocks.index(layer), layer


def test_hub_backbone_layer_finetunes_only_its_last_block(fv_path):
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    from autotransfer.backbones import HubBackbone

    bb = HubBackbone(str(fv_path), layer="block_10")
    assert bb.blocks == ["stem"] + [f"block_{i:02d}" for i in range(11)]
    assert bb.output_dim == 112
    assert tuple(bb(tf.random.uniform([2, 96, 96, 3])).shape) == (2, 112)
    bb.set_unfrozen_blocks(1)
    inputs = keras.Input((96, 96, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(bb(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {n: w.numpy().copy() for n, w in zip(bb.variable_names, bb._wrapped)}
    x = np.random.default_rng(0).uniform(size=(4, 96, 96, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    changed = {n for n, w in zip(bb.variable_names, bb._wrapped) if not np.array_equal(before[n], w.numpy())}
    assert changed and all(n.startswith("block_10/") for n in changed), sorted(changed)
    trainable = {n for n, w in zip(bb.variable_names, bb._wrapped) if w.trainable}
    assert trainable and all(n.startswith("block_10/") for n in trainable)


def test_unknown_layer_lists_available(fv_path):
    from autotransfer.backbones import HubBackbone
    from autotransfer.errors import BackboneError

    with pytest.raises(BackboneError, match=r"block_03.*available: block_00, block_02, .*head"):
        HubBackbone(str(fv_path), layer="block_03")


def test_offline_layers_search_space_names_stage_ends():
    """search_spaces/offline-layers.yaml: 3 backbones x 3 layers, each layer a real feature layer."""
    from pathlib import Path

    from autotransfer.config import load_search_space
    from autotransfer.zoo.efficientnet_lite import SPECS, feature_layers

    path = Path(__file__).resolve().parents[2] / "search_spaces" / "offline-layers.yaml"
    cands = [c for s in load_search_space(path).candidates for c in s.expand()]
    assert len(cands) >= 9 and len({c.base for c in cands}) == 3
    for c in cands:
        assert c.layer is None or c.layer in feature_layers(SPECS[c.base]), c.name


def test_hub_backbone_layer_refuses_batchnorm_training(fv_path):
    """features_at has no training=True trace: asking BatchNorm to train through it fails up front."""
    from autotransfer.backbones import HubBackbone
    from autotransfer.errors import BackboneError

    with pytest.raises(BackboneError, match="inference only"):
        HubBackbone(str(fv_path), layer="block_10", bn_training=True)
    assert HubBackbone(str(fv_path), bn_training=True).bn_training  # the full module keeps both traces

from __future__ import annotations

import numpy as np
import pytest

from autotransfer.backbones import BackboneSpec, HubBackbone, infer_blocks, resolve_handle
from autotransfer.errors import BackboneError, UserInputError
from autotransfer.testing import changed_after_one_epoch, pattern_images


def test_blocks_and_freezing_flags(tiny_modules):
    bb = HubBackbone(tiny_modules["good"])
    assert bb.blocks == ["block_00", "block_01", "head"]
    assert bb.output_dim == 16 and bb.input_size == 16
    assert not any(w.trainable for w in bb._wrapped)
    bb.set_unfrozen_blocks(3)
    names = {w.name for w in bb._wrapped if w.trainable}
    assert "head__moving_mean" not in names  # statistics stay frozen
    assert len(names) == 6
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        bb.set_unfrozen_blocks(4)


def test_last_block_finetune_leaves_earlier_blocks_bit_identical(tiny_modules):
    bb = HubBackbone(tiny_modules["good"])
    bb.set_unfrozen_blocks(1)
    x, y = pattern_images(8)
    # moving_mean sits in the last block but is a statistic: it must stay untouched too
    assert changed_after_one_epoch(bb, x.astype("float32") / 255, y) == {"head/kernel", "head/bias"}
    # wrapping shares storage with the loaded module
    assert np.array_equal(bb._module.variables[0].numpy(), bb._wrapped[0].numpy())


def test_infer_blocks_strips_common_root():
    names = ["Net/Conv/w", "Net/Conv/b", "Net/block_1/w", "Net/block_2/w", "Net/Logits/w"]
    assert infer_blocks(names) == ["Net/Conv", "Net/block_1", "Net/block_2", "Net/Logits"]


def test_bad_handles_give_clear_errors(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        resolve_handle(str(tmp_path / "nope"))
    with pytest.raises(BackboneError, match="no saved_model.pb"):
        resolve_handle(str(tmp_path))
    with pytest.raises(BackboneError, match="unknown scheme"):
        resolve_handle("ftp://x/y")


def test_spec_validation_names_the_field():
    with pytest.raises(UserInputError, match="input_size"):
        BackboneSpec.from_dict({"name": "a", "handle": "/x"}, "space.yaml")
    with pytest.raises(UserInputError, match="integer"):
        BackboneSpec.from_dict({"name": "a", "handle": "/x", "input_size": "224"}, "space.yaml")
    spec = BackboneSpec.from_dict({"name": "a", "handle": "/x", "input_size": 32, "note": 1}, "s")
    assert spec.extra == {"note": 1} and BackboneSpec.from_dict(spec.to_dict(), "s") == spec


def test_a_module_whose_call_has_no_training_argument_loads_and_runs(tmp_path):
    # TF-Hub text modules converted from TF1 (nnlm, universal-sentence-encoder) may have no
    # `training` argument; calling them with one fails, so the layer leaves it out for them.
    import tensorflow as tf

    obj = tf.__internal__.tracking.AutoTrackable()
    v = tf.Variable(np.arange(3, dtype="float32"), name="embeddings/e")
    obj.variables = obj.trainable_variables = [v]
    obj.regularization_losses = []
    obj.__call__ = tf.function(lambda texts: tf.cast(tf.strings.length(texts), tf.float32)[:, None] * v,
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(obj, str(tmp_path / "m"))
    bb = HubBackbone(str(tmp_path / "m"))
    assert bb.modality == "text" and bb.output_dim == 3
    for training in (False, True):
        np.testing.assert_allclose(bb(tf.constant(["a", "bc"]), training=training).numpy(), [[0, 1, 2], [0, 2, 4]])

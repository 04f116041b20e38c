"""The fine-tuning optimizer: layer-wise LR decay scales each block's step, cosine decays the LR."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from autotransfer.backbones import BackboneSpec
from autotransfer.testing import pattern_images
from autotransfer.train import build_task_model
from autotransfer.train.optimizer import LayerDecayAdam, fine_tune_optimizer, layer_multipliers


def _one_step(tiny_modules, optimizer_fn):
    model, bb = build_task_model(BackboneSpec("good", tiny_modules["good"], 16), 4, dropout=0.0)
    bb.set_unfrozen_blocks(2)  # block_01 and head of the tiny module
    before = {n: w.numpy().copy() for n, w in zip(bb.variable_names, bb._wrapped)}
    opt = optimizer_fn(bb)
    model.compile(opt, "sparse_categorical_crossentropy")
    x, y = pattern_images(4, seed=0)
    model.train_on_batch(x.astype("float32") / 255, y)
    steps = {n: float(np.max(np.abs(w.numpy() - before[n]))) for n, w in zip(bb.variable_names, bb._wrapped)}
    return bb, opt, steps


def test_layer_decay_scales_each_blocks_step(tiny_modules):
    lr, decay = 1e-2, 0.5
    bb, opt, steps = _one_step(tiny_modules, lambda bb: fine_tune_optimizer(lr, schedule="constant", decay_steps=10,
                                                                               backbone=bb, layer_decay=decay))
    assert isinstance(opt, LayerDecayAdam)
    mult = layer_multipliers(bb, decay)
    by_name = {n: mult.get(id(w)) for n, w in zip(bb.variable_names, bb._wrapped)}
    # last block: decay**1, the one before: decay**2; frozen blocks and statistics: untouched
    assert by_name["head/kernel"] == pytest.approx(decay) and by_name["block_01/kernel"] == pytest.approx(decay ** 2)
    assert by_name["block_00/kernel"] is None and steps["block_00/kernel"] == 0.0
    assert steps["head/moving_mean"] == 0.0
    # Adam's first step moves each weight by ~lr x its multiplier
    assert steps["head/kernel"] == pytest.approx(lr * decay, rel=0.05)
    assert steps["block_01/kernel"] == pytest.approx(lr * decay ** 2, rel=0.05)


def test_no_decay_is_plain_adam_and_cosine_reaches_zero(tiny_modules):
    _, opt, steps = _one_step(tiny_modules, lambda bb: fine_tune_optimizer(1e-2, schedule="constant", decay_steps=10,
                                                                           backbone=bb, layer_decay=1.0))
    assert type(opt) is keras.optimizers.Adam and steps["head/kernel"] == pytest.approx(1e-2, rel=0.05)
    model, bb = build_task_model(BackboneSpec("good", tiny_modules["good"], 16), 4, dropout=0.0)
    cos = fine_tune_optimizer(1e-2, schedule="cosine", decay_steps=10, backbone=bb)
    sched = cos.learning_rate if callable(cos.learning_rate) else cos._learning_rate
    assert float(sched(0)) == pytest.approx(1e-2) and float(sched(10)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="lr_schedule"):
        fine_tune_optimizer(1e-2, schedule="step", decay_steps=10, backbone=bb)

"""Acceptance 3: in a Keras 3 model, fine-tuning only the last block(s) of a zoo module leaves
every variable of earlier blocks bit-identical after a training step and changes the last ones."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the built zoo


@pytest.mark.parametrize("unfrozen", [1, 2])
def test_only_last_blocks_change(lite0_zoo, unfrozen):
    keras = pytest.importorskip("keras")
    from autotransfer.backbones import HubBackbone

    dest = lite0_zoo[0]
    backbone = HubBackbone(str(dest / "efficientnet_lite0" / "feature_vector"))
    assert backbone.blocks[0] == "stem" and backbone.blocks[-1] == "head" and backbone.num_blocks == 18
    backbone.set_unfrozen_blocks(unfrozen)
    inputs = keras.Input((96, 96, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(backbone(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    before = {b: [np.array(v.numpy()) for v in backbone.block_variables(b)] for b in backbone.blocks}
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 96, 96, 3)).astype("float32")
    y = np.array([0, 1, 2, 0])
    model.train_on_batch(x, y)

    open_blocks = backbone.blocks[-unfrozen:]
    for block in backbone.blocks:
        after = [v.numpy() for v in backbone.block_variables(block)]
        same = [np.array_equal(a, b) for a, b in zip(before[block], after)]
        if block in open_blocks:
            trainable = [v.trainable for v in backbone.block_variables(block)]
            assert not all(s for s, t in zip(same, trainable) if t), f"{block} did not change"
        else:
            assert all(same), f"{block} changed although frozen"

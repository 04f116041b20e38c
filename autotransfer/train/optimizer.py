"""The fine-tuning optimizer: Adam, an optional cosine schedule and layer-wise learning-rate decay.

Layer-wise decay (LLRD, as in BEiT / ULMFiT's discriminative rates): the head trains at the
learning rate, the backbone's last block at ``decay`` times it, the one before at ``decay**2`` and
so on, so that early, generic blocks move least. Adam is invariant to gradient scale, so the
decay has to scale the step itself: :class:`LayerDecayAdam` multiplies the learning rate per
variable inside ``update_step``.
"""
from __future__ import annotations

from typing import Any

import keras


class LayerDecayAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied per variable by ``multipliers[id(variable)]`` (default 1)."""

    def __init__(self, learning_rate: Any, multipliers: dict[int, float], **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._by_id = dict(multipliers)
        self._scale: list[float] = []

    def build(self, var_list: list) -> None:
        super().build(var_list)
        # Same order as the optimizer's own variable index (_get_variable_index).
        self._scale = [float(self._by_id.get(id(v), 1.0)) for v in var_list]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        scale = self._scale[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * scale if scale != 1.0 else learning_rate)


def layer_multipliers(backbone: Any, decay: float) -> dict[int, float]:
    """``{id(variable): decay**k}`` for the backbone's trainable variables, k = 1 for its last block.

    Multi-source backbones (``.backbones``) decay within each source.
    """
    if decay >= 1.0:
        return {}
    out: dict[int, float] = {}
    for bb in getattr(backbone, "backbones", [backbone]):
        depth = {block: len(bb.blocks) - i for i, block in enumerate(bb.blocks)}
        for w, block in bb.variables_by_block():
            if w.trainable and block is not None:
                out[id(w)] = float(decay ** depth[block])
    return out


def fine_tune_optimizer(learning_rate: float, *, schedule: str, decay_steps: int, backbone: Any,
                        layer_decay: float = 1.0) -> keras.optimizers.Optimizer:
    """Adam at ``learning_rate``, constant or cosine-decayed to 0 over ``decay_steps``, with
    layer-wise decay ``layer_decay`` (1 = off)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine'. Got {schedule!r}.")
    lr: Any = learning_rate
    if schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, int(decay_steps)))
    multipliers = layer_multipliers(backbone, layer_decay)
    if multipliers:
        return LayerDecayAdam(lr, multipliers)
    return keras.optimizers.Adam(lr)


__all__ = ["LayerDecayAdam", "fine_tune_optimizer", "layer_multipliers"]

"""The task model: image -> HubBackbone -> Dropout -> Dense softmax head."""
from __future__ import annotations

import keras

from autotransfer.backbones import BackboneSpec, HubBackbone

BACKBONE_LAYER = "backbone"
DROPOUT_LAYER = "head_dropout"
HEAD_LAYER = "head_dense"


def build_head(inputs: keras.KerasTensor, num_classes: int, *, dropout: float) -> keras.KerasTensor:
    """Dropout -> Dense softmax, with the layer names the trainer and exporter look up."""
    x = keras.layers.Dropout(dropout, name=DROPOUT_LAYER)(inputs)
    return keras.layers.Dense(num_classes, activation="softmax", name=HEAD_LAYER)(x)


def build_task_model(spec: BackboneSpec, num_classes: int, *, dropout: float) -> tuple[keras.Model, HubBackbone]:
    """A fresh classifier on ``spec``'s backbone (frozen) for float32 ``[None, S, S, 3]`` images in [0, 1].

    Always loads a new :class:`HubBackbone`: fine-tuning mutates the loaded module's variables.
    """
    backbone = HubBackbone.from_spec(spec, name=BACKBONE_LAYER)
    inputs = keras.Input((spec.input_size, spec.input_size, 3), dtype="float32", name="image")
    outputs = build_head(backbone(inputs), num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=f"autotransfer_{_safe(spec.name)}"), backbone


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)

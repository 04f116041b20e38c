"""The task model: image -> HubBackbone -> Dropout -> Dense softmax head.

A multi-source candidate (``spec.extra["source_specs"]``, made by ``probe(..., multi_source=n)``)
gets a :class:`MultiSourceBackbone` instead: the model input is the largest source's input size,
each branch resizes inside the model (``keras.layers.Resizing``, bilinear + antialias like the
data pipeline; skipped where the size already matches) to its backbone's input size, and the
branches' features are concatenated before the head.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import keras

from autotransfer import modalities
from autotransfer.backbones import BackboneSpec, HubBackbone

BACKBONE_LAYER = "backbone"
DROPOUT_LAYER = "head_dropout"
HEAD_LAYER = "head_dense"


def build_head(inputs: keras.KerasTensor, num_classes: int, *, dropout: float) -> keras.KerasTensor:
    """Dropout -> Dense softmax, with the layer names the trainer and exporter look up."""
    x = keras.layers.Dropout(dropout, name=DROPOUT_LAYER)(inputs)
    return keras.layers.Dense(num_classes, activation="softmax", name=HEAD_LAYER)(x)


def source_specs(spec: BackboneSpec) -> list[BackboneSpec] | None:
    """The source backbones of a multi-source spec (``extra["source_specs"]``), else None."""
    raw = spec.extra.get("source_specs")
    if not raw:
        return None
    return [BackboneSpec.from_dict(d, f"multi-source candidate {spec.name!r}") for d in raw]


class MultiSourceBackbone(keras.layers.Layer):
    """Several HubBackbones side by side on one image input: resize per branch, concatenate.

    Quacks like a :class:`HubBackbone` for the trainer: ``output_dim`` (sum), ``num_blocks`` (the
    largest source's), ``set_unfrozen_blocks(n)`` (unfreezes the last ``min(n, num_blocks)`` blocks
    of EACH backbone: n counts blocks per source, not in total), ``num_params``, ``fingerprint()``.
    """

    def __init__(self, specs: list[BackboneSpec], input_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_size = int(input_size)
        self.backbones = [HubBackbone.from_spec(s, name=f"source_{i}") for i, s in enumerate(specs)]
        self.resizers = [
            None if s.input_size == self.input_size
            else keras.layers.Resizing(s.input_size, s.input_size, interpolation="bilinear", antialias=True,
                                       name=f"resize_{i}")
            for i, s in enumerate(specs)
        ]
        self.output_dim = int(sum(b.output_dim for b in self.backbones))
        self.num_params = int(sum(b.num_params for b in self.backbones))
        self.handle = "+".join(b.handle for b in self.backbones)

    @property
    def num_blocks(self) -> int:
        return max(b.num_blocks for b in self.backbones)

    @property
    def unfrozen_blocks(self) -> int:
        return max(b.unfrozen_blocks for b in self.backbones)

    def set_unfrozen_blocks(self, n: int) -> None:
        if not 0 <= n <= self.num_blocks:
            raise ValueError(f"n must be in [0, {self.num_blocks}] for {self.handle!r}. Got {n}.")
        for b in self.backbones:
            b.set_unfrozen_blocks(min(n, b.num_blocks))

    def fingerprint(self) -> str:
        return "+".join(b.fingerprint() for b in self.backbones)

    def call(self, images, training=None):
        outs = []
        for resize, backbone in zip(self.resizers, self.backbones):
            x = images if resize is None else keras.ops.clip(resize(images), 0.0, 1.0)
            outs.append(backbone(x, training=training))
        return keras.ops.concatenate(outs, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.output_dim)


def build_task_model(
    spec: BackboneSpec, num_classes: int, *, dropout: float
) -> tuple[keras.Model, HubBackbone | MultiSourceBackbone]:
    """A fresh classifier on ``spec``'s backbone (frozen), taking its modality's model inputs at
    the backbone's input size (images: float32, [0, 1]).

    Always loads a new :class:`HubBackbone` (one per source for a multi-source spec, whose input
    size is the largest source's): fine-tuning mutates the loaded module's variables.
    """
    sources = source_specs(spec)
    if sources:
        size = max(s.input_size for s in sources)
        backbone: HubBackbone | MultiSourceBackbone = MultiSourceBackbone(sources, size, name=BACKBONE_LAYER)
    else:
        size = spec.input_size
        backbone = HubBackbone.from_spec(spec, name=BACKBONE_LAYER)
    inputs = modalities.for_backbone(backbone).keras_input(size)
    outputs = build_head(backbone(inputs), num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=f"autotransfer_{_safe(spec.name)}"), backbone


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


class EnsembleMember(keras.layers.Layer):
    """``weight`` x one trained task model's probabilities, temperature-scaled (``temperature`` 1:
    as they are) and optionally averaged with those of the left-right flipped images (test-time
    flip averaging). Wrapping keeps member models, which may share a name (two trials of one
    backbone), out of the ensemble's own layer namespace."""

    def __init__(self, model: keras.Model, weight: float, *, flip: bool = False, temperature: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.member = model
        self.weight = float(weight)
        self.flip = bool(flip)
        self.mirror = modalities.for_model(model).mirror
        self.temperature = float(temperature)
        self.num_classes = int(model.outputs[0].shape[-1])

    def _probs(self, images):
        probs = self.member(images, training=False)
        if self.temperature == 1.0:
            return probs
        return keras.ops.softmax(keras.ops.log(keras.ops.maximum(probs, 1e-7)) / self.temperature, axis=-1)

    def call(self, images):
        probs = self._probs(images)
        if self.flip:
            probs = 0.5 * (probs + self._probs(self.mirror(images)))
        return self.weight * probs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.num_classes)


class Part(NamedTuple):
    """One model an ensemble averages (see :class:`EnsembleMember`)."""

    model: keras.Model
    size: int
    weight: float
    flip: bool = False
    temperature: float = 1.0


def _input_like(model: keras.Model, size: int) -> Any:
    """A new ``keras.Input`` taking what ``model`` takes, at input ``size``."""
    modality = modalities.for_model(model)
    return modality.named_input(size, f"{modality.name}_{size}")


def build_ensemble(members: list[tuple]) -> tuple[keras.Model, list[int]]:
    """One model averaging ``members`` (:class:`Part` s, or tuples in its field order); returns it
    and its input sizes (ascending; one input per size, in that order). A single member of weight 1,
    unflipped and unscaled, is returned as it is."""
    if not members:
        raise ValueError("build_ensemble: no members.")
    members = [Part(*m) for m in members]
    one = members[0]
    if len(members) == 1 and not one.flip and one.temperature == 1.0 and abs(one.weight - 1.0) < 1e-12:
        return one.model, [int(one.size)]
    sizes = sorted({int(m.size) for m in members})
    first = {}
    for m in members:
        first.setdefault(int(m.size), m.model)
    inputs = {s: _input_like(first[s], s) for s in sizes}
    outs = [EnsembleMember(m.model, m.weight, flip=m.flip, temperature=m.temperature, name=f"member_{i}")(
        inputs[int(m.size)]) for i, m in enumerate(members)]
    out = outs[0] if len(outs) == 1 else keras.layers.Add(name="average")(outs)
    ins = [inputs[s] for s in sizes]
    return keras.Model(ins if len(ins) > 1 else ins[0], out, name="autotransfer_ensemble"), sizes

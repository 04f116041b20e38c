"""EfficientNet-Lite architecture: block configuration and the Keras 3 model.

Mirrors ``efficientnet-lite-pytorch`` (itself a port of the TF reference
``efficientnet/lite/efficientnet_lite_builder.py``): no squeeze-excite, ReLU6, stem (32) and
head (1280) not scaled, first/last stage repeats not scaled, BN epsilon 1e-3.  The reference
pads "SAME"-style for its native size, which is exactly TF's ``padding="same"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LiteSpec", "BlockConfig", "SPECS", "block_configs", "build_keras_model", "feature_layers",
           "keras_layer_of", "prefix_cuts", "layer_prefix_cuts", "MAX_PREFIX_CUT",
           "count_params", "count_macs", "BN_EPSILON", "BN_MOMENTUM", "NUM_CLASSES",
           "STEM_FILTERS", "HEAD_FILTERS", "INPUT_SCALE", "INPUT_OFFSET"]

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # TF convention (torch momentum 0.01)
NUM_CLASSES = 1000
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# (x*255 - 127) / 128 == x*255/128 - 127/128; both constants are exact in float32.
INPUT_SCALE = 255.0 / 128.0
INPUT_OFFSET = -127.0 / 128.0

# (repeats, kernel, stride, expand_ratio, in_filters, out_filters) of the 7 stages.
_BASE_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


@dataclass(frozen=True)
class LiteSpec:
    """Scaling coefficients of one EfficientNet-Lite variant."""

    name: str
    width: float
    depth: float
    input_size: int
    dropout: float


SPECS: dict[str, LiteSpec] = {
    "efficientnet_lite0": LiteSpec("efficientnet_lite0", 1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteSpec("efficientnet_lite1", 1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteSpec("efficientnet_lite2", 1.1, 1.2, 260, 0.3),
}


@dataclass(frozen=True)
class BlockConfig:
    """One MBConv block; ``name`` is its variable-path prefix (``block_00`` ...)."""

    name: str
    in_filters: int
    out_filters: int
    expand_ratio: int
    kernel: int
    stride: int
    stage: int = 0  # index into the 7 stages; the last block of a stage ends it

    @property
    def expanded(self) -> int:
        return self.in_filters * self.expand_ratio

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_filters == self.out_filters


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if not width:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += divisor
    return int(new)


def block_configs(spec: LiteSpec) -> list[BlockConfig]:
    """The MBConv blocks of ``spec`` in order, as the reference builds them."""
    blocks: list[BlockConfig] = []
    last = len(_BASE_STAGES) - 1
    for i, (reps, k, s, e, fin, fout) in enumerate(_BASE_STAGES):
        fin, fout = _round_filters(fin, spec.width), _round_filters(fout, spec.width)
        if i == 0:
            fin = STEM_FILTERS  # stem is fixed, so the first block sees 32 channels
        if i not in (0, last):  # lite fixes the repeats of the first and last stages
            reps = int(math.ceil(spec.depth * reps))
        for r in range(reps):
            blocks.append(BlockConfig(f"block_{len(blocks):02d}", fin if r == 0 else fout,
                                      fout, e, k, s if r == 0 else 1, i))
    return blocks


def feature_layers(spec: LiteSpec) -> dict[str, int]:
    """Transferable layers of ``spec``, earliest first, with their channel counts.

    The last block of each stage (its output is where the resolution or width changes next)
    plus ``head`` (the 1280-d feature vector).  Derived from the stage configuration.
    """
    blocks = block_configs(spec)
    out = {b.name: b.out_filters for b, nxt in zip(blocks, blocks[1:] + [None])
           if nxt is None or nxt.stage != b.stage}
    out["head"] = HEAD_FILTERS
    return out


#: Trailing blocks (head conv included) a trial may fine-tune on cached prefix activations.
MAX_PREFIX_CUT = 8


def prefix_cuts(spec: LiteSpec) -> dict[str, int]:
    """The blocks a prefix cut may enter (the last MAX_PREFIX_CUT, ``head`` last) and the channels
    of the activation entering each."""
    blocks = block_configs(spec)
    entering = {b.name: b.in_filters for b in blocks}
    entering["head"] = blocks[-1].out_filters
    names = [b.name for b in blocks] + ["head"]
    return {n: entering[n] for n in names[-MAX_PREFIX_CUT:]}


def layer_prefix_cuts(spec: LiteSpec) -> dict[str, dict[str, int]]:
    """Cut points for fine-tuning up to the last block's pooled output (the deepest feature layer
    before ``head``, a layer candidate of the search spaces): {layer: {block: channels entering it}}
    over the last MAX_PREFIX_CUT blocks up to and including that layer."""
    blocks = block_configs(spec)
    return {blocks[-1].name: {b.name: b.in_filters for b in blocks[-MAX_PREFIX_CUT:]}}


def keras_layer_of(layer: str, spec: LiteSpec) -> str:
    """Name of the Keras layer of :func:`build_keras_model` whose output is ``layer``'s output
    (before pooling): the residual add when the block has one, else its project BN."""
    if layer == "head":
        return "head_relu"
    b = next(b for b in block_configs(spec) if b.name == layer)
    return f"{b.name}_add" if b.residual else f"{b.name}_project_bn"


def count_params(spec: LiteSpec, include_top: bool = True) -> int:
    """Trainable parameters (BN gamma/beta counted, moving statistics not)."""
    n = 3 * 3 * 3 * STEM_FILTERS + 2 * STEM_FILTERS
    for b in block_configs(spec):
        if b.expand_ratio != 1:
            n += b.in_filters * b.expanded + 2 * b.expanded
        n += b.kernel * b.kernel * b.expanded + 2 * b.expanded
        n += b.expanded * b.out_filters + 2 * b.out_filters
    n += block_configs(spec)[-1].out_filters * HEAD_FILTERS + 2 * HEAD_FILTERS
    if include_top:
        n += HEAD_FILTERS * NUM_CLASSES + NUM_CLASSES
    return n


def count_macs(spec: LiteSpec, include_top: bool = True, size: int | None = None) -> int:
    """Multiply-accumulates of convolutions and the dense layer for one image."""
    hw = math.ceil((size or spec.input_size) / 2)
    macs = hw * hw * 3 * 3 * 3 * STEM_FILTERS
    for b in block_configs(spec):
        if b.expand_ratio != 1:
            macs += hw * hw * b.in_filters * b.expanded
        hw = math.ceil(hw / b.stride)
        macs += hw * hw * b.kernel * b.kernel * b.expanded
        macs += hw * hw * b.expanded * b.out_filters
    macs += hw * hw * block_configs(spec)[-1].out_filters * HEAD_FILTERS
    if include_top:
        macs += HEAD_FILTERS * NUM_CLASSES
    return macs


def build_keras_model(spec: LiteSpec, include_top: bool = True):
    """Keras 3 functional EfficientNet-Lite taking float32 RGB images in [0, 1].

    Layer names are ``<block>_<part>`` (Keras forbids '/' in names); ``convert`` maps them
    to the ``<block>/<part>/<weight>`` variable paths of the exported module.
    """
    import keras
    from keras import layers

    def bn(name: str):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)

    inputs = keras.Input((None, None, 3), dtype="float32", name="images")
    x = layers.Rescaling(INPUT_SCALE, INPUT_OFFSET, name="stem_normalize")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(6.0, name="stem_relu")(bn("stem_bn")(x))
    for b in block_configs(spec):
        shortcut = x
        if b.expand_ratio != 1:
            x = layers.Conv2D(b.expanded, 1, padding="same", use_bias=False, name=f"{b.name}_expand_conv")(x)
            x = layers.ReLU(6.0, name=f"{b.name}_expand_relu")(bn(f"{b.name}_expand_bn")(x))
        x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                                   name=f"{b.name}_depthwise_conv")(x)
        x = layers.ReLU(6.0, name=f"{b.name}_depthwise_relu")(bn(f"{b.name}_depthwise_bn")(x))
        x = layers.Conv2D(b.out_filters, 1, padding="same", use_bias=False, name=f"{b.name}_project_conv")(x)
        x = bn(f"{b.name}_project_bn")(x)
        if b.residual:
            x = layers.Add(name=f"{b.name}_add")([x, shortcut])
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = layers.ReLU(6.0, name="head_relu")(bn("head_bn")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dropout(spec.dropout, name="dropout")(x)
        x = layers.Dense(NUM_CLASSES, name="classifier")(x)
    return keras.Model(inputs, x, name=spec.name)

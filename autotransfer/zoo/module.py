"""Export converted weights as a TF2 "reusable SavedModel" (the TF-Hub image-module contract).

The saved object has ``__call__(images, training=False)`` traced for float32
``[None, None, None, 3]`` images in [0, 1] with ``training`` False and True, plus ``variables``,
``trainable_variables`` and ``regularization_losses``.  For transfer from earlier layers it also
has ``features_at``: {layer: tf.function(images, training=False) -> [B, C_layer]}, the global
average-pooled output of each stage-ending block and of ``head`` (the feature vector), each
traced only up to its block and for inference only (BatchNorm on its moving statistics, as the
trainer keeps it: a ``training=True`` trace per layer doubled the saved functions and the load
time, 1.1 -> 2.2 s for lite0); and ``all_features(images)`` -> {layer: [B, C_layer]} of every
such layer from one inference-mode forward pass.  The feature-vector module also has, for the
last :data:`~autotransfer.zoo.efficientnet_lite.MAX_PREFIX_CUT` blocks, ``prefix_to[block](images)``
(the activation map entering ``block``) and ``from_block[block](activations)`` (from there to the
feature vector), both in inference mode: ``from_block[b](prefix_to[b](x)) == obj(x)``; and for the
layer candidate at the last block, ``from_block_to[layer][block](activations)`` (to that layer's
pooled output): ``from_block_to[l][b](prefix_to[b](x)) == features_at[l](x)``.  The forward pass is written with
``tf.nn`` ops over plain ``tf.Variable``s named ``<block>/<part>/<weight>``: a Keras 3 model
can't be saved inside a ``tf.Module`` with those names, so the Keras model only supplies the
weights and ``build`` checks the exported graph reproduces it.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import numpy as np

from autotransfer.zoo.efficientnet_lite import (BN_EPSILON, BN_MOMENTUM, INPUT_OFFSET, INPUT_SCALE,
                                                LiteSpec, block_configs, feature_layers, layer_prefix_cuts,
                                                prefix_cuts)

__all__ = ["make_module", "save_module"]


def make_module(spec: LiteSpec, weights: Mapping[str, tuple[np.ndarray, bool]], include_top: bool):
    """Return an AutoTrackable holding the variables and the traced forward function."""
    import tensorflow as tf

    v: OrderedDict[str, tf.Variable] = OrderedDict(
        (path, tf.Variable(value, name=path, trainable=trainable, dtype=tf.float32))
        for path, (value, trainable) in weights.items()
    )
    blocks = block_configs(spec)

    def bn(x, prefix: str, training: bool):
        gamma, beta = v[f"{prefix}/gamma"], v[f"{prefix}/beta"]
        mean_v, var_v = v[f"{prefix}/moving_mean"], v[f"{prefix}/moving_variance"]
        if not training:  # inference: moving statistics, as Keras BN with training=False
            return tf.nn.batch_normalization(x, mean_v, var_v, beta, gamma, BN_EPSILON)
        mean, var = tf.nn.moments(x, axes=[0, 1, 2])
        mean_v.assign(mean_v * BN_MOMENTUM + mean * (1.0 - BN_MOMENTUM))
        var_v.assign(var_v * BN_MOMENTUM + var * (1.0 - BN_MOMENTUM))
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)

    def conv(x, prefix: str, stride: int = 1):
        return tf.nn.conv2d(x, v[f"{prefix}/kernel"], strides=stride, padding="SAME")

    layer_names = list(feature_layers(spec))

    def block(x, b, training: bool):
        shortcut = x
        if b.expand_ratio != 1:
            x = tf.nn.relu6(bn(conv(x, f"{b.name}/expand_conv"), f"{b.name}/expand_bn", training))
        x = tf.nn.depthwise_conv2d(x, v[f"{b.name}/depthwise_conv/depthwise_kernel"],
                                   strides=[1, b.stride, b.stride, 1], padding="SAME")
        x = tf.nn.relu6(bn(x, f"{b.name}/depthwise_bn", training))
        x = bn(conv(x, f"{b.name}/project_conv"), f"{b.name}/project_bn", training)
        return x + shortcut if b.residual else x  # no drop-connect: fine-tuning here is short and data-poor

    def head(x, training: bool):
        return tf.reduce_mean(tf.nn.relu6(bn(conv(x, "head/conv"), "head/bn", training)), axis=[1, 2])

    def trunk(images, training: bool, stop: str | None = None, collect: bool = False):
        """Pooled output of block ``stop`` (ops after it are never built), or the head's
        pooled features; with ``collect``, {layer: pooled} of every feature layer instead."""
        pooled: dict = {}
        x = images * INPUT_SCALE + INPUT_OFFSET
        x = tf.nn.relu6(bn(conv(x, "stem/conv", 2), "stem/bn", training))
        for b in blocks:
            x = block(x, b, training)
            if b.name == stop:
                return tf.reduce_mean(x, axis=[1, 2])
            if collect and b.name in layer_names:
                pooled[b.name] = tf.reduce_mean(x, axis=[1, 2])
        x = head(x, training)
        if collect:
            pooled["head"] = x
            return pooled
        return x

    def prefix(images, cut: str):
        """The activation map entering block ``cut`` (``head``: the head conv), inference mode."""
        x = images * INPUT_SCALE + INPUT_OFFSET
        x = tf.nn.relu6(bn(conv(x, "stem/conv", 2), "stem/bn", False))
        for b in blocks:
            if b.name == cut:
                return x
            x = block(x, b, False)
        return x

    def suffix(x, cut: str, stop: str | None = None):
        """From the activation entering ``cut`` to the pooled features (of block ``stop`` when
        given, else the head's), inference mode."""
        started = False
        for b in blocks:
            started = started or b.name == cut
            if started:
                x = block(x, b, False)
            if b.name == stop:
                return tf.reduce_mean(x, axis=[1, 2])
        return head(x, False)

    def forward(images, training: bool):
        x = trunk(images, training)
        if include_top:
            if training:
                x = tf.nn.dropout(x, rate=spec.dropout)
            x = tf.matmul(x, v["classifier/kernel"]) + v["classifier/bias"]
        return x

    obj = tf.__internal__.tracking.AutoTrackable()
    obj.variables = list(v.values())
    obj.trainable_variables = [var for var in v.values() if var.trainable]
    obj.regularization_losses = []

    @tf.function
    def call(images, training=False):
        return forward(tf.convert_to_tensor(images, tf.float32), bool(training))

    image_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    for training in (False, True):
        call.get_concrete_function(image_spec, training=training)
    call.get_concrete_function(image_spec)  # obj(images) with the default training=False
    obj.__call__ = call

    def features_fn(layer: str):
        stop = None if layer == "head" else layer

        @tf.function(autograph=False)  # plain Python control flow: skip the conversion
        def features(images, training=False):
            return trunk(tf.convert_to_tensor(images, tf.float32), bool(training), stop)

        features.get_concrete_function(image_spec, training=False)
        return features

    # The feature vector module's head features are its __call__: share the traced graphs.
    obj.features_at = {layer: call if layer == "head" and not include_top else features_fn(layer)
                       for layer in layer_names}
    obj.all_features = tf.function(lambda images: trunk(images, False, collect=True),
                                   input_signature=[image_spec], autograph=False)
    obj.all_features.get_concrete_function()

    if not include_top:
        # Cut points for trials that fine-tune only the last blocks (BatchNorm in inference mode):
        # prefix_to[cut](images) is fixed, so a trial computes it once; from_block[cut](x) is what trains.
        # from_block_to[layer][cut] does the same for a layer candidate (pooled output of ``layer``).
        def suffix_fn(cut: str, channels: int, stop: str | None = None):
            fn = tf.function(lambda x: suffix(x, cut, stop), autograph=False, input_signature=[
                tf.TensorSpec([None, None, None, channels], tf.float32, name="activations")])
            fn.get_concrete_function()
            return fn

        cuts, layer_cuts = prefix_cuts(spec), layer_prefix_cuts(spec)
        entering = {**cuts, **{c: ch for by_cut in layer_cuts.values() for c, ch in by_cut.items()}}
        obj.prefix_to = {}
        for cut in entering:
            obj.prefix_to[cut] = tf.function(lambda images, c=cut: prefix(images, c), input_signature=[image_spec],
                                             autograph=False)
            obj.prefix_to[cut].get_concrete_function()
        obj.from_block = {cut: suffix_fn(cut, channels) for cut, channels in cuts.items()}
        obj.from_block_to = {layer: {cut: suffix_fn(cut, channels, layer) for cut, channels in by_cut.items()}
                             for layer, by_cut in layer_cuts.items()}

    key = "logits" if include_top else "feature_vector"
    obj.serving_default = tf.function(
        lambda images: {key: forward(images, False)}, input_signature=[image_spec])
    return obj


def save_module(obj, path: str | Path) -> None:
    """Write ``obj`` as a SavedModel with a ``serving_default`` signature (inference mode)."""
    import tensorflow as tf

    tf.saved_model.save(obj, str(path), signatures={"serving_default": obj.serving_default})

"""Frozen-feature extraction: one traced forward function, streamed over a batched tf.data pipeline.

A plain loop calling one ``tf.function`` with a fixed input signature (the modality's
``input_spec``) is traced once per backbone (not per batch shape) and skips ``model.predict``'s per-step callback and
data-adapter machinery (measured ~1.6x faster on CPU). Each batch's output is copied to NumPy as it
arrives, so only the features, never the decoded images, are held in memory.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import tensorflow as tf

from autotransfer.backbones import HubBackbone
from autotransfer.data import LabelledData
from autotransfer.errors import BackboneError

Progress = Callable[[int], None]

#: Pixels per featurization batch that :func:`auto_batch_size` aims at (batch x size^2 ~ 1M).
FEATURE_BATCH_PIXELS = 2**20


#: Featurization batch for modules without an input size (text).
TEXT_FEATURE_BATCH = 32


def auto_batch_size(input_size: int) -> int:
    """Featurization batch size for ``input_size`` px images: ~1M pixels per batch, a power of 2 in [8, 256].

    Small images are dominated by per-op overhead, so they want big batches; large ones are
    compute-bound, where big batches only cost memory. Measured on 2 CPU cores, EfficientNet-Lite0
    ``all_features`` (images/s by batch size; ``benchmarks/featurize.py --only d``):
    32 px: 16 -> 957, 64 -> 2312, 256 -> 3786; 64 px: 16 -> 620, 256 -> 1383;
    128 px: 16 -> 288, 64 -> 344; 224 px: 8 -> 101, 16 -> 109, 32 -> 116.
    This gives 256 / 256 / 64 / 16 for 32 / 64 / 128 / 224 px.
    """
    if int(input_size) <= 0:  # texts: up to 256 tokens each, attention memory ~ batch x heads x tokens^2
        return TEXT_FEATURE_BATCH
    size = int(input_size)
    return int(min(256, max(8, 2 ** round(math.log2(FEATURE_BATCH_PIXELS / size**2)))))


def feature_batch(batch_size: int | None, input_size: int) -> int:
    """``batch_size`` if given, else :func:`auto_batch_size` of ``input_size``."""
    return int(batch_size) if batch_size else auto_batch_size(input_size)


def feature_dataset(data: LabelledData, indices: np.ndarray, input_size: int,
                    batch_size: int | None = None) -> tf.data.Dataset:
    """The probe's featurization input: the items of ``indices`` without labels, batched by
    :func:`feature_batch`, raw where that is exact (the data's modality, ``raw=True``: uint8
    pixels for images).

    uint8 moves a quarter of the bytes through tf.data and needs no per-item map, so the pipeline
    takes less CPU from the forward pass it feeds (measured on 2 cores, EfficientNet-Lite0 at
    224 px: float pipeline 0.95-0.97 of a bare float loop, uint8 1.04-1.08); the forward pass
    scales it (:func:`forward_fn`).
    """
    from autotransfer import modalities

    ds = modalities.for_data(data).dataset(data, indices, size=input_size, with_labels=False, raw=True,
                                           batch_size=feature_batch(batch_size, input_size))
    # tf.data's autotuner off: beside a CPU-bound forward on the same cores it has nothing to win, and
    # it sometimes settles on a slower pipeline for a whole pass (benchmarks/README.md, featurize.py).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def forward_fn(backbone: HubBackbone, dtype: tf.DType = tf.float32) -> Callable[[tf.Tensor], tf.Tensor]:
    """The backbone's inference forward as a ``tf.function`` traced once for its modality's input spec.

    ``dtype``: the inputs' dtype; raw inputs (uint8 pixels) become model inputs inside the traced
    function (``to_model_input``, bit-identical to the pipeline's own scaling).
    """
    from autotransfer import modalities

    modality = modalities.for_backbone(backbone)
    spec = modality.input_spec(backbone.input_size, dtype)
    fn = tf.function(lambda x: backbone(modality.to_model_input(x), training=False), input_signature=[spec],
                     jit_compile=False)
    return fn.get_concrete_function()


def images_dtype(dataset: tf.data.Dataset) -> tf.DType:
    """The dtype of the inputs ``dataset`` yields (alone or as ``(inputs, labels)``)."""
    return _images(dataset.element_spec).dtype


def _images(element):  # datasets may yield images or (images, labels)
    return element[0] if isinstance(element, (tuple, list)) else element


def extract_features(
    backbone: HubBackbone,
    dataset: tf.data.Dataset,
    *,
    num_items: int | None = None,
    on_batch: Progress | None = None,
    forward: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> np.ndarray:
    """Run ``backbone`` over every batch of ``dataset``; returns float32 ``[N, D]`` in dataset order.

    ``dataset`` yields batches of the backbone's modality, as model inputs or raw (or
    ``(inputs, labels)``), e.g. from :func:`feature_dataset`. ``num_items``, when known, preallocates the output (no concatenate
    copy). ``on_batch(items_done)`` is called after every batch. ``forward``: a
    :func:`forward_fn` of this backbone for the dataset's dtype, traced earlier (reused across
    calls, e.g. halving rungs).
    """
    from autotransfer import modalities

    fn = forward if forward is not None else forward_fn(backbone, images_dtype(dataset))
    want = modalities.for_backbone(backbone).input_spec(backbone.input_size).shape
    out: np.ndarray | None = None
    chunks: list[np.ndarray] = []
    done = 0
    for element in dataset:
        images = _images(element)
        if not want.is_compatible_with(images.shape):
            raise ValueError(
                f"Backbone {backbone.handle!r} expects inputs of shape {want.as_list()}; the dataset yields "
                f"{images.shape.as_list()}. Build it for input size {backbone.input_size}."
            )
        feats = fn(images).numpy()
        if feats.ndim != 2:
            raise BackboneError(f"Backbone {backbone.handle!r} returned shape {list(feats.shape)} for a batch; "
                                "a feature-vector module must return [B, D] features.")
        if num_items is not None:
            if out is None:
                out = np.empty((num_items, feats.shape[1]), dtype=np.float32)
            out[done : done + len(feats)] = feats
        else:
            chunks.append(feats.astype(np.float32, copy=False))
        done += len(feats)
        if on_batch is not None:
            on_batch(done)
    if num_items is not None:
        if done != num_items:
            raise ValueError(f"dataset yielded {done} items, expected num_items={num_items}.")
        return out if out is not None else np.zeros((0, backbone.output_dim), np.float32)
    return np.concatenate(chunks) if chunks else np.zeros((0, backbone.output_dim), np.float32)


def extract_source_logits(
    classifier_handle: str,
    dataset: tf.data.Dataset,
    *,
    input_size: int,
    output_key: str | None = None,
    num_items: int | None = None,
    on_batch: Progress | None = None,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Source-task logits ``[N, C]`` of a ``classification`` module (for LEEP-style scorers).

    Loads the classifier module, runs it like :func:`extract_features` and frees it again. When
    ``features`` (the same items' final features from the sibling ``feature_vector`` module) are
    given and the module's last block is a dense ``classifier/kernel`` + ``classifier/bias`` on
    them, the logits are ``features @ kernel + bias`` instead of a second forward pass; that
    shortcut is checked against a real forward pass on the first batch and dropped if it differs.
    """
    import gc

    clf = HubBackbone(classifier_handle, input_size=input_size, output_key=output_key)
    try:
        head = _dense_head(clf, features)
        if head is not None:
            first = _images(next(iter(dataset)))
            expected = forward_fn(clf, first.dtype)(first).numpy()
            shortcut = features[: len(expected)] @ head[0] + head[1]
            if np.allclose(shortcut, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max() or 1.0)):
                if on_batch is not None:
                    on_batch(len(features))
                return (features @ head[0] + head[1]).astype(np.float32)
        return extract_features(clf, dataset, num_items=num_items, on_batch=on_batch)
    finally:
        del clf
        gc.collect()


def _dense_head(clf: HubBackbone, features: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(kernel, bias) of a ``classifier`` dense block matching ``features``' width, if the module has one."""
    if features is None or features.ndim != 2:
        return None
    named = dict(clf.named_variables())
    kernel, bias = named.get("classifier/kernel"), named.get("classifier/bias")
    if kernel is None or bias is None or tuple(kernel.shape) != (features.shape[1], clf.output_dim):
        return None
    return kernel.numpy(), bias.numpy()

"""Training-time augmentation of image batches (never part of the exported model).

One tuned choice, from none to strong: ``none``; ``crop`` (a random shift of up to ``SHIFT`` of
the side, reflected at the border: the usual pad-and-crop; safe where mirror images mean another
class, as for digits); ``flip`` (random left-right flip); ``flip+crop``; ``mixup`` (flip+crop, then
mixup: each batch mixed with itself in reverse order at a Beta(``MIXUP_ALPHA``) ratio, labels mixed
alike, Zhang et al., ICLR 2018). Labels are one-hot, so mixed labels are plain convex combinations.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from autotransfer.space import AUGMENTATIONS

SHIFT = 0.1
MIXUP_ALPHA = 0.2

Batch = tuple[tf.Tensor, tf.Tensor]


def _beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One Beta(alpha, alpha) draw from two stateless gammas."""
    a = tf.random.stateless_gamma([], alpha=alpha, seed=seed)
    b = tf.random.stateless_gamma([], alpha=alpha, seed=seed + 1)
    return a / (a + b)


def augmenter(kind: str, seed: int = 0) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], Batch] | None:
    """``fn(images, one_hot_labels, step_seed) -> (images, labels)`` for ``kind``, or None for ``none``.

    ``step_seed`` is a ``[2]`` int tensor that differs per batch (see :func:`augment_dataset`), so
    every epoch sees new draws while a run stays reproducible for ``seed``.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}. Got {kind!r}.")
    if kind == "none":
        return None

    def fn(images: tf.Tensor, labels: tf.Tensor, step_seed: tf.Tensor) -> Batch:
        n = tf.shape(images)[0]
        if kind != "crop":
            flip = tf.random.stateless_uniform([n, 1, 1, 1], seed=step_seed) < 0.5
            images = tf.where(flip, tf.image.flip_left_right(images), images)
        if kind in ("crop", "flip+crop", "mixup"):
            images = _shift(images, tf.random.stateless_uniform([n, 2], seed=step_seed + 2, minval=-SHIFT, maxval=SHIFT))
        if kind == "mixup":
            lam = _beta(MIXUP_ALPHA, step_seed + 4)
            images = lam * images + (1.0 - lam) * tf.reverse(images, axis=[0])
            labels = lam * labels + (1.0 - lam) * tf.reverse(labels, axis=[0])
        return images, labels

    return fn


def _shift(images: tf.Tensor, fractions: tf.Tensor) -> tf.Tensor:
    """Shift each image by ``fractions`` ([n, 2]: dy, dx of the side), reflecting at the border."""
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    offsets = tf.cast(tf.round(fractions * size), tf.int32)
    pad = tf.cast(tf.math.ceil(SHIFT * size), tf.int32)
    padded = tf.pad(images, [[0, 0], [pad[0], pad[0]], [pad[1], pad[1]], [0, 0]], mode="REFLECT")
    h, w = tf.shape(images)[1], tf.shape(images)[2]

    def crop(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, off = args
        return tf.slice(image, [pad[0] + off[0], pad[1] + off[1], 0], [h, w, -1])

    return tf.map_fn(crop, (padded, offsets), fn_output_signature=images.dtype)


__all__ = ["MIXUP_ALPHA", "SHIFT", "augmenter"]

"""Training-time augmentation: one epoch of batches -> an endless stream of augmented batches with
one-hot labels (never part of the exported model). What an augmentation does to an item is the
modality's (:meth:`autotransfer.modalities.base.Modality.augmenter`; images:
:mod:`autotransfer.modalities.image_augment`).
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from autotransfer import modalities
from autotransfer.space import AUGMENTATIONS


def augment_dataset(dataset: tf.data.Dataset, kind: str, *, num_classes: int, seed: int = 0,
                    modality: Any = None) -> tf.data.Dataset:
    """One epoch of ``(inputs, int labels)`` batches -> an endless stream of ``(inputs, one-hot
    labels)`` batches, augmented with ``kind`` as ``modality`` (default: images) does it; train on
    it with ``steps_per_epoch`` set.

    Endless so that the batch counter, the per-batch seed, runs on across epochs: each batch of
    each epoch gets its own draws (an epoch-local counter would repeat the same ones every epoch).
    """
    fn = (modality or modalities.get("image")).augmenter(kind, seed)
    dataset = dataset.map(lambda x, y: (x, tf.one_hot(y, num_classes))).repeat()
    if fn is None:
        return dataset
    zipped = tf.data.Dataset.zip((dataset, tf.data.Dataset.counter()))
    return zipped.map(lambda xy, i: fn(xy[0], xy[1], tf.stack([tf.constant(seed, tf.int64), i])),
                      num_parallel_calls=tf.data.AUTOTUNE)


__all__ = ["AUGMENTATIONS", "augment_dataset"]

"""Images: float32 ``[B, S, S, 3]`` in [0, 1], decoded and resized by :mod:`autotransfer.data.images`."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from autotransfer.data.images import image_dataset, unit_pixels
from autotransfer.modalities.base import Modality

CHANNELS = 3


class ImageModality(Modality):
    """RGB images at the backbone's square input size."""

    name = "image"

    def dataset(self, data: Any, indices: np.ndarray, *, size: int, batch_size: int = 32, shuffle: bool = False,
                seed: int = 0, with_labels: bool = True, cache: bool = False, raw: bool = False) -> tf.data.Dataset:
        """``image_dataset``; ``raw`` yields uint8 pixels where exact (``raw_uint8``)."""
        return image_dataset(data, indices, image_size=size, batch_size=batch_size, shuffle=shuffle, seed=seed,
                             with_labels=with_labels, cache=cache, raw_uint8=raw)

    def input_spec(self, size: int, dtype: Any = None) -> tf.TensorSpec:
        return tf.TensorSpec([None, size, size, CHANNELS], dtype or tf.float32)

    def dummy_input(self, size: int, batch: int = 1) -> tf.Tensor:
        return tf.zeros([batch, size, size, CHANNELS])

    def keras_input(self, size: int) -> Any:
        return keras.Input((size, size, CHANNELS), dtype="float32", name="image")

    def to_model_input(self, batch: tf.Tensor) -> tf.Tensor:
        """uint8 pixels scaled to [0, 1] (bit-identical to the pipeline's own scaling); float as is."""
        return unit_pixels(batch)


__all__ = ["ImageModality"]

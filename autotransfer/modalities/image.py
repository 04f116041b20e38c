"""Images: float32 ``[B, S, S, 3]`` in [0, 1], decoded and resized by :mod:`autotransfer.data.images`."""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from autotransfer.data.images import image_dataset, unit_pixels
from autotransfer.modalities.base import Modality

CHANNELS = 3
#: Side of the report's thumbnails (pixels): enough to see what was confused, small in the HTML.
THUMBNAIL = 64


class ImageModality(Modality):
    """RGB images at the backbone's square input size."""

    name = "image"
    test_time_flip = True
    has_size = True

    def typical_size(self, data: Any) -> float | None:
        """The data's typical image side (:func:`~autotransfer.data.typical_image_side`)."""
        from autotransfer.data import typical_image_side

        return typical_image_side(data)

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

    def augmenter(self, kind: str, seed: int = 0) -> Callable | None:
        """Crop, flip, flip+crop or mixup (:mod:`autotransfer.modalities.image_augment`)."""
        from autotransfer.modalities.image_augment import augmenter

        return augmenter(kind, seed)

    def mirror(self, batch: Any) -> Any:
        """Left-right flipped images (``[B, H, W, C]``: the width axis)."""
        return keras.ops.flip(batch, axis=2)

    def to_model_input(self, batch: tf.Tensor) -> tf.Tensor:
        """uint8 pixels scaled to [0, 1] (bit-identical to the pipeline's own scaling); float as is."""
        return unit_pixels(batch)

    # -- serving ------------------------------------------------------------------------------------
    def model_call(self, model: Any, sizes: list[int]) -> Callable[[tf.Tensor], tf.Tensor]:
        """``fn(images at max(sizes)) -> probabilities``: a model with one input per size (an ensemble
        whose members take different sizes) gets the other sizes resized from the largest."""
        from autotransfer.data import resize_images

        def call(images: tf.Tensor) -> tf.Tensor:
            if len(sizes) == 1:
                return model(images, training=False)
            return model([resize_images(images, s) for s in sizes], training=False)

        return call

    def serving_endpoints(self, model: Any, sizes: list[int], outputs: Callable[[tf.Tensor], dict],
                          max_pixels: int | None = None) -> dict[str, tuple[Callable, tf.TensorSpec]]:
        """``serving_default`` (float32 pixels at the largest size, shape checked in the graph) and
        ``serving_bytes`` (encoded images, decoded once per member size with the training pipeline's
        own ops after a header check of the pixel count, ``max_pixels``)."""
        from autotransfer.data import decode_image_sizes
        from autotransfer.modalities.image_serving import check_image_batch, check_pixel_limit

        largest = sizes[-1]
        call = self.model_call(model, sizes)

        def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return outputs(call(check_image_batch(images, largest)))

        def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
            # Per image: encoded sizes differ, so decoding cannot be batched.
            specs = tuple(tf.TensorSpec([s, s, CHANNELS], tf.float32) for s in sizes)
            limit = {} if max_pixels is None else {"max_pixels": max_pixels}
            decoded = tf.map_fn(lambda b: decode_image_sizes(check_pixel_limit(b, **limit), sizes), image_bytes,
                                fn_output_signature=specs)
            return outputs(model(decoded[0] if len(sizes) == 1 else list(decoded), training=False))

        inputs = self.signature_inputs(sizes)
        return {name: (fn, tf.TensorSpec(*_shape_dtype(inputs[name]), name=inputs[name][0]))
                for name, fn in (("serving_default", serve_images), ("serving_bytes", serve_bytes))}

    def signature_inputs(self, sizes: list[int]) -> dict[str, tuple[str, Any, dict]]:
        s = sizes[-1]
        return {
            "serving_default": ("images", tf.float32, {"dtype": "float32", "shape": [None, s, s, CHANNELS],
                                                       "range": [0.0, 1.0]}),
            "serving_bytes": ("image_bytes", tf.string, {"dtype": "string", "shape": [None],
                                                         "format": "encoded JPEG/PNG/GIF/BMP/WebP"}),
        }

    def warmup_batches(self, examples: Any, sizes: list[int]) -> dict[str, Any]:
        """Float32 ``[n, S, S, 3]`` in [0, 1] (``examples`` uint8 or float ``[N, H, W, 3]``, resized to
        the largest size; zeros when None) and the PNG bytes of the same images."""
        from autotransfer.errors import UserInputError

        size = sizes[-1]
        if examples is None:
            x = np.zeros((2, size, size, CHANNELS), np.float32)
        else:
            x = np.asarray(examples)
            x = x[None] if x.ndim == 3 else x
            if x.ndim != 4 or x.shape[-1] != CHANNELS or len(x) == 0:
                raise UserInputError(
                    f"export_model: image warmup_examples must be [N, H, W, 3] with N >= 1. Got shape {x.shape}.")
            x = x[:MAX_WARMUP]
            # Same convention as the data stage: uint8 or float > 1.5 means 0..255.
            scale = 1.0 / 255.0 if x.dtype == np.uint8 or float(np.max(x)) > 1.5 else 1.0
            x = np.clip(x.astype(np.float32) * scale, 0.0, 1.0)
            if x.shape[1:3] != (size, size):
                x = np.clip(tf.image.resize(x, [size, size], method="bilinear", antialias=True).numpy(), 0.0, 1.0)
        pngs = [tf.io.encode_png(tf.cast(tf.round(img * 255.0), tf.uint8)).numpy() for img in x]
        return {"serving_default": x.astype(np.float32), "serving_bytes": pngs}

    def rest_example(self, sizes: list[int]) -> dict:
        return {"signature_name": "serving_bytes", "instances": [{"b64": "<base64 JPEG/PNG bytes>"}]}

    # -- the report ---------------------------------------------------------------------------------
    def show(self, data: Any, indices: np.ndarray) -> list[dict[str, str]]:
        """PNG thumbnails (``THUMBNAIL`` px, decoded by the training pipeline) as data URIs."""
        import base64

        out: list[dict[str, str]] = []
        ds = self.dataset(data, np.asarray(indices, dtype=np.int64), size=THUMBNAIL, batch_size=16, with_labels=False)
        for batch in ds:
            for img in tf.image.convert_image_dtype(batch, tf.uint8, saturate=True):
                png = tf.io.encode_png(img).numpy()
                out.append({"kind": "image", "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii")})
        return out


def _shape_dtype(entry: tuple[str, Any, dict]) -> tuple[list, Any]:
    return entry[2]["shape"], entry[1]


#: Warm-up and check examples per signature (TF Serving replays each request at load).
MAX_WARMUP = 8


__all__ = ["ImageModality"]

"""The graph-side checks of an image export's signatures: the batch shape of ``serving_default``
and the pixel limit ``serving_bytes`` reads from each encoded image's header before decoding."""
from __future__ import annotations

import tensorflow as tf

from autotransfer.defaults import MAX_PIXELS

#: Most pixels (height x width) ``serving_bytes`` decodes per image (the data stage's limit too):
#: larger headers are refused before decoding.
MAX_SERVING_PIXELS = MAX_PIXELS
_HEAD = 32  # header bytes read: enough for every format's width and height


def encoded_image_shape(contents: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` (int64) of encoded image bytes, read from the header without decoding.

    JPEG via ``tf.image.extract_jpeg_shape`` (its markers only); PNG from IHDR (bytes 16-24);
    GIF from the logical screen; BMP and WebP (VP8, VP8L, VP8X) from their headers. ``[0, 0]`` when
    the format is unknown or the header is cut short: decoding then fails with its own error.
    Pure TF, for serving signatures.
    """
    head = tf.strings.substr(contents, 0, _HEAD) + b"\0" * _HEAD
    b = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 0, _HEAD), tf.uint8), tf.int64)

    def be(i: int, n: int) -> tf.Tensor:  # big-endian unsigned int of bytes i..i+n-1
        return sum(b[i + k] * (256 ** (n - 1 - k)) for k in range(n))

    def le(i: int, n: int) -> tf.Tensor:
        return sum(b[i + k] * (256 ** k) for k in range(n))

    def magic(i: int, value: bytes) -> tf.Tensor:
        return tf.strings.substr(head, i, len(value)) == value

    def bmp() -> tf.Tensor:
        core = le(14, 4) == 12  # BITMAPCOREHEADER: 16-bit sizes
        w = tf.where(core, le(18, 2), le(18, 4))
        h = tf.where(core, le(20, 2), le(22, 4))
        h = tf.where(h >= 2**31, 2**32 - h, h)  # negative height: a top-down bitmap
        return tf.stack([h, w])

    def webp() -> tf.Tensor:
        vp8l = le(21, 4)
        return tf.case([
            (magic(12, b"VP8X"), lambda: tf.stack([le(27, 3) + 1, le(24, 3) + 1])),
            (magic(12, b"VP8L"), lambda: tf.stack([(vp8l // 2**14) % 2**14 + 1, vp8l % 2**14 + 1])),
            (magic(12, b"VP8 "), lambda: tf.stack([le(28, 2) % 2**14, le(26, 2) % 2**14])),
        ], default=lambda: tf.zeros([2], tf.int64))

    return tf.case([
        (magic(0, b"\xff\xd8\xff"), lambda: tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64)),
        (magic(0, b"\x89PNG\r\n\x1a\n"), lambda: tf.stack([be(20, 4), be(16, 4)])),
        (magic(0, b"GIF8"), lambda: tf.stack([le(8, 2), le(6, 2)])),
        (magic(0, b"BM"), bmp),
        (tf.logical_and(magic(0, b"RIFF"), magic(8, b"WEBP")), webp),
    ], default=lambda: tf.zeros([2], tf.int64))


def check_pixel_limit(contents: tf.Tensor, max_pixels: int = MAX_SERVING_PIXELS) -> tf.Tensor:
    """``contents`` once its header says at most ``max_pixels`` pixels; else InvalidArgumentError
    naming the size and the limit (checked before any decoding). Pure TF, for serving signatures."""
    hw = encoded_image_shape(contents)
    ok = hw[0] * hw[1] <= max_pixels
    check = tf.debugging.Assert(ok, [
        "serving_bytes: image of", hw[0], "x", hw[1], f"pixels (height x width) is over the limit of {max_pixels} "
        "pixels; resize it before sending (the model sees it resized anyway)."], summarize=4)
    with tf.control_dependencies([check]):
        return tf.identity(contents)


def check_image_batch(images: tf.Tensor, size: int) -> tf.Tensor:
    """``images`` once they are ``[N, size, size, 3]``; else InvalidArgumentError with the shape
    (TF Serving does not check a signature's static shape). Pure TF, for serving signatures."""
    shape = tf.shape(images)
    ok = tf.logical_and(tf.equal(tf.size(shape), 4),
                        tf.reduce_all(tf.equal(tf.pad(shape, [[0, 4]])[1:4], [size, size, 3])))
    check = tf.debugging.Assert(ok, [
        f"serving_default: images must be float32 [N, {size}, {size}, 3] in [0, 1]; got shape", shape,
        f". Resize to {size}x{size} px, or send encoded images to serving_bytes."], summarize=8)
    with tf.control_dependencies([check]):
        return tf.identity(images)


__all__ = ["MAX_SERVING_PIXELS", "check_image_batch", "check_pixel_limit", "encoded_image_shape"]

"""Image decoding and the tf.data input pipeline (image-specific; other modalities get their own).

Training and serving must preprocess identically, so every file goes through
:func:`decode_image_bytes`, the same pure-TF function the export stage puts inside the
``serving_bytes`` signature. Arrays go through the same uint8->float and resize ops.

Conventions: output images are float32 ``[H, W, 3]`` in ``[0, 1]``. Greyscale becomes RGB by
repeating the channel; RGBA drops alpha (no compositing), which is exactly what
``tf.io.decode_image(channels=3)`` does for PNG/GIF/WebP, so files and arrays agree. 16-bit PNGs
are reduced to 8 bits by the decoder. Animated GIFs use their first frame.

Corrupt files: :func:`autotransfer.data.load_data` screens every file (``data/checks.py``) and
skips the unusable ones, so its datasets reach the pipeline clean. A ``LabelledData`` built by
hand is validated by :func:`image_dataset` once per dataset (and fingerprint) with Pillow
(header + ``verify()``), raising :class:`UserInputError` that names the files. Anything that
slips through fails in the pipeline with a TensorFlow error; a wrong file type fails there with
a message naming the file. ``validate_images(data, thorough=True)`` decodes every file with
TensorFlow itself and finds everything, at the cost of a full extra decode.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from autotransfer.data.checks import PILLOW_FORMATS, pillow_size_check_off
from autotransfer.data.dataset import LabelledData
from autotransfer.errors import UserInputError, check_param

_MAX_LISTED = 5


def _as_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)  # type: ignore[union-attr]
    check_param(
        "image_size", image_size, "image_dataset", "a positive int or a (height, width) pair",
        len(size) == 2 and min(size) > 0,
    )
    return size  # type: ignore[return-value]


def unit_pixels(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels (any shape) -> float32 in [0, 1]; float input is returned unchanged.

    The same ops, in the same order, as the pipeline's own uint8 -> float step, so images that
    :func:`image_dataset` passed as ``raw_uint8`` and are converted here (e.g. inside a traced
    forward pass) are bit-identical to the float images it would have yielded.
    """
    if images.dtype != tf.uint8:
        return images
    return tf.clip_by_value(tf.cast(images, tf.float32) * (1.0 / 255.0), 0.0, 1.0)


def _unit_and_resize(image: tf.Tensor, size: tuple[int, int], scale: float) -> tf.Tensor:
    """[h, w, 3] pixels * scale -> float32 [H, W, 3] in [0, 1]; shared by files, arrays, serving."""
    image = tf.cast(image, tf.float32) * scale

    def resize() -> tf.Tensor:
        resized = tf.image.resize(image, size, method="bilinear", antialias=True)
        # Antialiased resize can overshoot by float rounding; models expect the documented range.
        return tf.clip_by_value(resized, 0.0, 1.0)

    # An antialiased resize to the image's own size is the identity (bit-exact, checked) but costs
    # a full kernel pass per image; skip it. Static shapes (arrays) decide at trace time, dynamic
    # ones (decoded files, serving bytes) with a tf.cond. The clip is kept in both branches so
    # results stay identical to always resizing.
    h, w = image.shape[0], image.shape[1]
    if h is not None and w is not None:
        image = tf.clip_by_value(image, 0.0, 1.0) if (h, w) == tuple(size) else resize()
    else:
        shape = tf.shape(image)
        same = tf.logical_and(tf.equal(shape[0], size[0]), tf.equal(shape[1], size[1]))
        image = tf.cond(same, lambda: tf.clip_by_value(image, 0.0, 1.0), resize)
    return tf.ensure_shape(image, [size[0], size[1], 3])


def decode_image_bytes(contents: tf.Tensor, image_size: int | tuple[int, int]) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes (scalar string tensor) -> float32 [H, W, 3] in [0, 1].

    Pure TF (usable in ``tf.function``/``tf.map_fn`` and SavedModel signatures); the training
    pipeline uses it for files so that training and serving preprocess identically.
    """
    size = _as_size(image_size)
    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
    return _unit_and_resize(image, size, 1.0 / 255.0)


def decode_image_sizes(contents: tf.Tensor, sizes: list[int] | tuple[int, ...]) -> tuple[tf.Tensor, ...]:
    """Encoded image bytes -> one float32 [S, S, 3] image per size in ``sizes``, decoded once.

    Each is exactly ``decode_image_bytes(contents, S)`` (same ops on the same decoded pixels), for
    models whose members take different input sizes.
    """
    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
    return tuple(_unit_and_resize(image, _as_size(s), 1.0 / 255.0) for s in sizes)


def resize_images(images: tf.Tensor, size: int) -> tf.Tensor:
    """float32 ``[N, H, W, 3]`` in [0, 1] -> ``[N, size, size, 3]`` with the pipeline's resize
    (antialiased bilinear, clipped); the identity when the size matches."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return tf.clip_by_value(tf.image.resize(images, [size, size], method="bilinear", antialias=True), 0.0, 1.0)


def _check_magic(contents: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    """Fail with the file name when the bytes are no supported image (decode errors omit it)."""
    head = tf.strings.substr(contents, 0, 12) + b"\0" * 12  # padded: substr past the end errors
    ok = tf.reduce_any(
        tf.stack([
            tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff",
            tf.strings.substr(head, 0, 8) == b"\x89PNG\r\n\x1a\n",
            tf.strings.substr(head, 0, 4) == b"GIF8",
            tf.strings.substr(head, 0, 2) == b"BM",
            tf.logical_and(
                tf.strings.substr(head, 0, 4) == b"RIFF", tf.strings.substr(head, 8, 4) == b"WEBP"
            ),
        ])
    )
    check = tf.debugging.Assert(
        ok, ["autotransfer: not a JPEG/PNG/GIF/BMP/WebP image; fix or delete the file:", path]
    )
    with tf.control_dependencies([check]):
        return tf.identity(contents)


def _load_file(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    contents = _check_magic(tf.io.read_file(path), path)
    return decode_image_bytes(contents, size)


def _array_scale(x: np.ndarray) -> float:
    """uint8 -> 1/255; float is taken as [0, 1] unless its max exceeds 1.5 (then 0..255)."""
    if x.dtype == np.uint8:
        return 1.0 / 255.0
    return 1.0 / 255.0 if x.size and float(np.max(x)) > 1.5 else 1.0


def _rgb(image: tf.Tensor) -> tf.Tensor:
    """[h, w] / [h, w, 1] / [h, w, 3] / [h, w, 4] array pixels -> [h, w, 3], dtype kept."""
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    channels = image.shape[-1]
    if channels == 1:
        image = tf.tile(image, [1, 1, 3])
    elif channels == 4:
        image = image[..., :3]
    return image


def _array_image(image: tf.Tensor, size: tuple[int, int], scale: float) -> tf.Tensor:
    return _unit_and_resize(_rgb(image), size, scale)


def yields_raw_uint8(data: LabelledData, image_size: int | tuple[int, int]) -> bool:
    """Whether ``image_dataset(data, ..., image_size, raw_uint8=True)`` yields uint8 pixels:
    uint8 arrays already at ``image_size`` (no resize, so deferring the scaling is exact)."""
    items = data.items
    return (not data.is_paths and items.dtype == np.uint8 and items.ndim >= 3
            and tuple(items.shape[1:3]) == _as_size(image_size))


def image_dataset(
    data: LabelledData,
    indices: np.ndarray,
    *,
    image_size: int | tuple[int, int],
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    with_labels: bool = True,
    cache: bool = False,
    validate: bool = True,
    raw_uint8: bool = False,
) -> tf.data.Dataset:
    """Batched ``tf.data.Dataset`` of the items at ``indices``.

    Yields float32 images ``[b, H, W, 3]`` in ``[0, 1]`` (and int64 labels ``[b]`` when
    ``with_labels``), resized with antialiased bilinear interpolation. Arrays: uint8 is divided
    by 255; float is assumed in [0, 1], but if the whole array's max exceeds 1.5 it is treated as
    0..255. ``shuffle`` reshuffles every epoch, deterministically for ``seed``. ``cache`` keeps
    decoded images in memory (decode once, for multi-epoch training on small data).
    ``validate`` checks the files with Pillow once per dataset (again when its fingerprint changes) and
    raises :class:`UserInputError` naming corrupt files (see the module docstring); data from
    ``load_data`` was screened there already.
    ``raw_uint8``: where that is exact (:func:`yields_raw_uint8`: uint8 arrays already at
    ``image_size``), yield the uint8 pixels as stored and leave the scaling to the consumer
    (:func:`unit_pixels`, e.g. inside its traced forward pass): a quarter of the bytes through
    the pipeline and no per-item map. Otherwise it yields float32 as usual; check the dtype.
    """
    size = _as_size(image_size)
    check_param("batch_size", batch_size, "image_dataset", "a positive int", int(batch_size) > 0)
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(data.labels, dtype=np.int64)[indices]
    source, item_fn = _item_source(data, indices, size, validate=validate, raw_uint8=raw_uint8)
    # Without labels the source holds the items alone: no per-item map just to drop them.
    if with_labels:
        ds = tf.data.Dataset.from_tensor_slices((source, labels))
        fn = None if item_fn is None else (lambda x, y: (item_fn(x), y))
    else:
        ds = tf.data.Dataset.from_tensor_slices(source)
        fn = item_fn
    return _shuffled_batches(ds, fn, len(indices), batch_size=int(batch_size), shuffle=shuffle, seed=seed,
                             cache=cache)


def _item_source(data: LabelledData, indices: np.ndarray, size: tuple[int, int], *, validate: bool,
                 raw_uint8: bool) -> tuple[tf.Tensor | np.ndarray, Callable[[tf.Tensor], tf.Tensor] | None]:
    """``(source, item_fn)``: what the dataset slices for the items at ``indices`` (file paths or
    array pixels) and the per-item map to images of ``size`` (None: the items are already those;
    see :func:`image_dataset` for ``validate`` and ``raw_uint8``)."""
    if data.is_paths:
        if validate and not data.screened:
            _validate_once(data)
        source = tf.constant([data.items[i] for i in indices.tolist()], dtype=tf.string)
        return source, lambda p: _load_file(p, size)
    if raw_uint8 and yields_raw_uint8(data, size):
        return data.items[indices], None if data.items.ndim == 4 and data.items.shape[-1] == 3 else _rgb
    scale = _array_scale(data.items)
    return data.items[indices], lambda a: _array_image(a, size, scale)


def _shuffled_batches(ds: tf.data.Dataset, fn: Callable | None, n_items: int, *, batch_size: int, shuffle: bool,
                      seed: int, cache: bool) -> tf.data.Dataset:
    """``ds`` mapped by ``fn`` (unless None), optionally cached and reshuffled every epoch, batched
    and prefetched."""
    buffer = max(1, n_items)
    if shuffle and not cache:
        # Shuffling paths before decoding costs nothing and needs no image buffer.
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if fn is not None:
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def typical_image_side(data: LabelledData, *, sample: int = 100, seed: int = 0) -> float | None:
    """The median ``sqrt(height * width)`` of up to ``sample`` items, in pixels (None if unknown).

    Files are measured from their headers (Pillow opens lazily: no decoding).
    """
    if not data.is_paths:
        items = np.asarray(data.items)
        return float(np.sqrt(items.shape[1] * items.shape[2])) if items.ndim >= 3 else None
    from PIL import Image

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(data), size=min(sample, len(data)), replace=False)
    sides = []
    with pillow_size_check_off():  # headers only; load_data applied the pixel limit
        for i in idx:
            try:
                with Image.open(data.items[int(i)]) as im:
                    sides.append(float(np.sqrt(im.size[0] * im.size[1])))
            except Exception:  # noqa: BLE001 - unreadable files are reported by validation, not here
                continue
    return float(np.median(sides)) if sides else None


# ------------------------------------------------------------------------------------ validation


def validate_images(
    data: LabelledData, indices: np.ndarray | None = None, *, thorough: bool = False
) -> list[tuple[str, str]]:
    """Return ``[(path, reason), ...]`` for files that cannot be used; ``[]`` for arrays.

    Default: Pillow identifies the format and ``verify()``s the file (no full decode; catches
    non-images, unsupported formats, most corrupt PNG/GIF). ``thorough=True`` decodes each file
    with TensorFlow exactly as training does, which also catches truncated JPEGs.
    """
    if not data.is_paths:
        return []
    idx = range(len(data)) if indices is None else np.asarray(indices).tolist()
    bad: list[tuple[str, str]] = []
    for i in idx:
        path = data.items[i]
        reason = _tf_problem(path) if thorough else _pillow_problem(path)
        if reason:
            bad.append((path, reason))
    return bad


def _pillow_problem(path: str) -> str | None:
    from PIL import Image  # local: only validation needs Pillow

    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in PILLOW_FORMATS:
                return f"{fmt} images are not supported (use JPEG/PNG/GIF/BMP/WebP)"
            im.verify()
    except Image.UnidentifiedImageError:
        return "not a recognised image file"
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        return f"{type(e).__name__}: {str(e).strip() or 'unreadable'}"
    return None


def _tf_problem(path: str) -> str | None:
    try:
        contents = tf.io.read_file(path)
        tf.io.decode_image(contents, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        return (getattr(e, "message", None) or str(e)).strip().splitlines()[0]
    return None


def check_images(
    data: LabelledData, indices: np.ndarray | None = None, *, thorough: bool = False
) -> None:
    """Raise one :class:`UserInputError` listing unusable image files (see validate_images)."""
    bad = validate_images(data, indices, thorough=thorough)
    if bad:
        listed = "; ".join(f"'{p}' ({r})" for p, r in bad[:_MAX_LISTED])
        more = f"; and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise UserInputError(
            f"{data.source or 'data'}: {len(bad)} image file(s) cannot be read: {listed}{more}. "
            "Fix or delete these files."
        )


def _validate_once(data: LabelledData) -> None:
    """Check ``data``'s files unless they passed already with the same fingerprint (remembered on
    ``data``: every pipeline over one dataset checks it once)."""
    key = data.fingerprint()
    if data.checked_fingerprint != key:
        check_images(data)
        data.checked_fingerprint = key

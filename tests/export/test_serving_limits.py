"""Serving checks its inputs in the graph: the image shape (serving_default) and a pixel limit read
from the header before decoding (serving_bytes), through the reloaded SavedModel."""
from __future__ import annotations

import io
import struct
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from autotransfer.backbones import HubBackbone
from autotransfer.export import export_model, make_predict_request, run_predict_request
from autotransfer import modalities
from autotransfer.export.saved_model import _build_archive
from autotransfer.modalities.image_serving import MAX_SERVING_PIXELS, encoded_image_shape

SIZE = 16


def _encode(fmt: str, w: int, h: int, mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), (200, 30, 40, 255)[: len(mode)]).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header(w: int, h: int) -> bytes:
    """A PNG signature and IHDR claiming ``w`` x ``h`` (decoding it would need w*h*3 bytes)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat
            + struct.pack(">I", zlib.crc32(b"IDAT" + idat)))


@pytest.fixture(scope="module")
def model(tiny_modules) -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(HubBackbone(tiny_modules["good"])(inp)))


@pytest.fixture(scope="module")
def loaded(model, tmp_path_factory):
    path = export_model(model, class_names=["a", "b", "c"], input_size=SIZE,
                        export_dir=tmp_path_factory.mktemp("serving"), model_name="m")
    return tf.saved_model.load(str(path))


@pytest.mark.parametrize("fmt, mode, kw", [("PNG", "RGB", {}), ("JPEG", "RGB", {}), ("GIF", "RGB", {}),
                                           ("BMP", "RGB", {}), ("WEBP", "RGB", {}), ("WEBP", "RGB", {"lossless": True}),
                                           ("WEBP", "RGBA", {})])
def test_header_shape_of_every_format(fmt, mode, kw):
    assert encoded_image_shape(tf.constant(_encode(fmt, 37, 21, mode, **kw))).numpy().tolist() == [21, 37]


def test_header_shape_of_unknown_or_short_bytes_is_zero():
    for contents in (b"", b"\x89PN", b"hello world, not an image"):
        assert encoded_image_shape(tf.constant(contents)).numpy().tolist() == [0, 0]


def test_serving_bytes_refuses_a_huge_image_before_decoding(loaded):
    fn = loaded.signatures["serving_bytes"]
    ok = fn(image_bytes=tf.constant([_encode("PNG", 40, 30), _encode("JPEG", 24, 24)]))
    assert ok["probabilities"].shape == (2, 3)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(image_bytes=tf.constant([_encode("PNG", 40, 30), _png_header(10_000, 10_000)]))
    msg = str(info.value)
    assert "serving_bytes: image of" in msg and "[10000] [x] [10000]" in msg
    assert f"over the limit of {MAX_SERVING_PIXELS} pixels" in msg


def test_pixel_limit_applies_to_real_images(model, tmp_path):
    _build_archive(model, ["a", "b", "c"], [SIZE], modalities.get("image"), max_pixels=1000).write_out(str(tmp_path / "v"), verbose=False)
    fn = tf.saved_model.load(str(tmp_path / "v")).signatures["serving_bytes"]
    assert fn(image_bytes=tf.constant([_encode("JPEG", 40, 25)]))["label"].shape == (1,)  # 1000 px: at the limit
    with pytest.raises(tf.errors.InvalidArgumentError, match="over the limit of 1000 pixels"):
        fn(image_bytes=tf.constant([_encode("JPEG", 40, 26)]))


def test_serving_default_checks_the_image_shape(loaded):
    fn = loaded.signatures["serving_default"]
    assert fn(images=tf.zeros([2, SIZE, SIZE, 3]))["probabilities"].shape == (2, 3)
    for shape in ([1, 32, 32, 3], [1, SIZE, 32, 3]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"must be float32 \[N, {SIZE}, {SIZE}, 3\]"):
            fn(images=tf.zeros(shape))
    # The Predict-API path (as TF Serving answers) refuses it before the graph, by the signature's shape.
    with pytest.raises(Exception, match="shape"):
        run_predict_request(loaded, make_predict_request(np.zeros((1, 32, 32, 3), np.float32), model_name="m"))

"""tf.data image pipeline: shapes/dtype/range, grey/RGBA handling, train/serve parity, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from autotransfer.data import (
    LabelledData,
    decode_image_bytes,
    image_dataset,
    load_data,
    unit_pixels,
    validate_images,
)
from autotransfer.data.images import check_images
from autotransfer.errors import UserInputError
from autotransfer.testing import write_image_folder


def _collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_pipeline_shapes_dtype_range(image_folder: Path) -> None:
    d = load_data(image_folder)
    idx = np.arange(len(d))
    ds = image_dataset(d, idx, image_size=(16, 20), batch_size=4)
    assert ds.element_spec[0].shape.as_list() == [None, 16, 20, 3]
    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int64
    batches = [b for b in ds]
    assert [len(b[0]) for b in batches] == [4, 4, 1]
    x, y = _collect(ds)
    assert x.shape == (9, 16, 20, 3) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.5
    assert y.tolist() == d.labels.tolist()


def test_grey_and_rgba_files(tmp_path: Path, make_image) -> None:
    root = tmp_path / "f"
    make_image(root / "a" / "grey.png", "L", seed=1)
    make_image(root / "a" / "rgba.png", "RGBA", seed=2)
    make_image(root / "b" / "rgb.png", "RGB", seed=2)  # same seed: RGBA's colour channels
    make_image(root / "b" / "pal.png", "P", seed=3)
    d = load_data(root)
    names = [Path(p).name for p in d.items]
    x, _ = _collect(image_dataset(d, np.arange(len(d)), image_size=(10, 12)))
    grey = x[names.index("grey.png")]
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])
    # Alpha is dropped, not composited: RGBA == the RGB image with the same colours.
    np.testing.assert_allclose(x[names.index("rgba.png")], x[names.index("rgb.png")], atol=1e-6)
    # Same size in and out: pixels survive exactly (up to /255).
    raw = np.asarray(Image.open(root / "b" / "rgb.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(x[names.index("rgb.png")], raw, atol=1e-6)


def test_decode_image_bytes_matches_file_pipeline(image_folder: Path) -> None:
    d = load_data(image_folder)
    x, _ = _collect(image_dataset(d, np.arange(len(d)), image_size=24, batch_size=3))
    for i, path in enumerate(d.items):
        one = decode_image_bytes(tf.constant(Path(path).read_bytes()), 24).numpy()
        assert one.shape == (24, 24, 3) and one.dtype == np.float32
        assert np.max(np.abs(one - x[i])) < 1e-6, path


def test_decode_image_bytes_in_serving_graph(image_folder: Path) -> None:
    d = load_data(image_folder)
    blobs = tf.constant([Path(p).read_bytes() for p in d.items[:3]])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(b):
        return tf.map_fn(lambda s: decode_image_bytes(s, (8, 8)), b,
                         fn_output_signature=tf.TensorSpec([8, 8, 3], tf.float32))

    out = serve(blobs).numpy()
    assert out.shape == (3, 8, 8, 3)
    expected = np.stack([decode_image_bytes(blobs[i], 8).numpy() for i in range(3)])
    assert np.max(np.abs(out - expected)) < 1e-6


def test_arrays_grey_rgba_float_uint8_agree() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    y = [0, 1, 0, 1]
    ref, _ = _collect(image_dataset(load_data(rgb, labels=y), np.arange(4), image_size=5))
    assert ref.shape == (4, 5, 5, 3) and ref.dtype == np.float32
    rgba = np.concatenate([rgb, rng.integers(0, 256, (4, 9, 7, 1), dtype=np.uint8)], axis=-1)
    out, _ = _collect(image_dataset(load_data(rgba, labels=y), np.arange(4), image_size=5))
    assert np.max(np.abs(out - ref)) < 1e-6
    f01, _ = _collect(image_dataset(load_data(rgb / 255.0, labels=y), np.arange(4), image_size=5))
    f255, _ = _collect(image_dataset(load_data(rgb.astype(np.float32), labels=y), np.arange(4),
                                     image_size=5))
    assert np.max(np.abs(f01 - ref)) < 1e-5 and np.max(np.abs(f255 - ref)) < 1e-5
    for grey in (rgb[..., 0], rgb[..., :1]):
        g, _ = _collect(image_dataset(load_data(grey, labels=y), np.arange(4), image_size=5))
        assert g.shape == (4, 5, 5, 3) and np.array_equal(g[..., 0], g[..., 2])


def test_raw_uint8_only_where_exact_and_scales_bit_identically(image_folder: Path) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    y = [0, 1, 0, 1, 0]
    for items in (rgb, rgb[..., 0], rgb[..., :1], np.concatenate([rgb, rgb[..., :1]], axis=-1)):
        data = load_data(items, labels=y)
        ref, ry = _collect(image_dataset(data, np.arange(5), image_size=6, batch_size=2))
        raw, yr = _collect(image_dataset(data, np.arange(5), image_size=6, batch_size=2, raw_uint8=True))
        assert raw.dtype == np.uint8 and raw.shape == (5, 6, 6, 3) and yr.tolist() == ry.tolist()
        np.testing.assert_array_equal(unit_pixels(tf.constant(raw)).numpy(), ref)
        alone = np.concatenate(list(image_dataset(data, np.arange(5), image_size=6, with_labels=False,
                                                  raw_uint8=True).as_numpy_iterator()))
        np.testing.assert_array_equal(alone, raw)
    # Needs a resize, float items, or files: the scaling cannot be deferred exactly -> float32.
    for data, size in ((load_data(rgb, labels=y), 4), (load_data(rgb / 255.0, labels=y), 6),
                       (load_data(image_folder), 8)):
        ds = image_dataset(data, np.arange(len(data)), image_size=size, raw_uint8=True)
        assert ds.element_spec[0].dtype == tf.float32
    floats = tf.constant([[0.25, 1.0]])
    assert unit_pixels(floats) is floats


def test_arrays_match_written_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    root = write_image_folder(x, y, ["zero", "one", "two"], tmp_path / "digits")
    folder = load_data(root)
    assert folder.class_counts() == {"one": 2, "two": 2, "zero": 2}
    arrays = load_data(x, labels=np.array(["zero", "one", "two"])[y])
    # Same sorted class names, and file order == array order (zero-padded index names per class).
    order = np.argsort([int(Path(p).stem) for p in folder.items])
    a, ya = _collect(image_dataset(arrays, np.arange(6), image_size=16))
    f, yf = _collect(image_dataset(folder, order, image_size=16))
    assert np.max(np.abs(a - f)) < 1e-6 and ya.tolist() == yf.tolist()


def test_write_image_folder_upscale_rgb(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((4, 8, 8, 3))
    root = write_image_folder(x, [0, 1, 1, 0], ["a", "b"], tmp_path / "out", image_size=32)
    files = sorted(root.rglob("*.png"))
    assert len(files) == 4 and {f.parent.name for f in files} == {"a", "b"}
    with Image.open(files[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    with pytest.raises(UserInputError, match="class name '.hidden'"):
        write_image_folder(x, [0, 1, 1, 0], ["a", ".hidden"], tmp_path / "bad")


def test_shuffle_deterministic_and_no_labels(image_folder: Path) -> None:
    d = load_data(image_folder)
    idx = np.arange(len(d))
    run = lambda seed, cache=False: _collect(  # noqa: E731
        image_dataset(d, idx, image_size=8, shuffle=True, seed=seed, cache=cache))[1].tolist()
    assert run(0) == run(0)
    assert sorted(run(0)) == sorted(d.labels.tolist())
    assert run(0, cache=True) == run(0, cache=True)
    ds = image_dataset(d, idx, image_size=8, with_labels=False, cache=True)
    assert isinstance(ds.element_spec, tf.TensorSpec)
    assert sum(len(b) for b in ds) == 9 and sum(len(b) for b in ds) == 9  # cached second pass


def _folder_with_bad_file(tmp_path: Path, make_image, content: bytes) -> tuple[Path, Path]:
    root = tmp_path / "bad"
    for i in range(2):
        make_image(root / "a" / f"{i}.png", seed=i)
        make_image(root / "b" / f"{i}.png", seed=i + 2)
    bad = root / "b" / "broken.png"
    bad.write_bytes(content)
    return root, bad


def _unscreened(root: Path) -> LabelledData:
    """The folder as a LabelledData built by hand: no load_data screening (which skips bad files)."""
    files = sorted(str(p) for p in root.glob("*/*.png"))
    names = sorted({Path(p).parent.name for p in files})
    return LabelledData(files, np.asarray([names.index(Path(p).parent.name) for p in files]), names)


def test_corrupt_file_raises_user_error(tmp_path: Path, make_image) -> None:
    root, bad = _folder_with_bad_file(tmp_path, make_image, b"this is not a png")
    assert [s.item for s in load_data(root).skipped] == [str(bad)]  # load_data skips it
    d = _unscreened(root)
    assert [p for p, _ in validate_images(d)] == [str(bad)]
    with pytest.raises(UserInputError, match=r"1 image file\(s\) cannot be read: '.*broken\.png'"):
        image_dataset(d, np.arange(len(d)), image_size=8)


def test_wrong_type_named_inside_pipeline(tmp_path: Path, make_image) -> None:
    root, bad = _folder_with_bad_file(tmp_path, make_image, b"GIF? no, plain text")
    d = _unscreened(root)
    ds = image_dataset(d, np.arange(len(d)), image_size=8, validate=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.png"):
        _collect(ds)


def test_truncated_jpeg_found_by_thorough_validation(tmp_path: Path, make_image) -> None:
    jpg = make_image(tmp_path / "x.jpg", "RGB", size=(64, 64))
    root, bad = _folder_with_bad_file(tmp_path, make_image, jpg.read_bytes()[:200])
    d = _unscreened(root)
    assert [p for p, _ in validate_images(d, thorough=True)] == [str(bad)]
    with pytest.raises(UserInputError, match="broken.png"):
        check_images(d, thorough=True)


def test_image_size_validation(image_folder: Path) -> None:
    d = load_data(image_folder)
    with pytest.raises(UserInputError, match="image_size"):
        image_dataset(d, np.arange(3), image_size=0)
    with pytest.raises(UserInputError, match="image_size"):
        image_dataset(d, np.arange(3), image_size=(4, 4, 4))


def test_a_hand_built_dataset_is_checked_once_and_again_when_its_files_change(tmp_path: Path, make_image) -> None:
    root, bad = _folder_with_bad_file(tmp_path, make_image, b"")
    make_image(bad, seed=9)  # a good file after all
    d = _unscreened(root)
    image_dataset(d, np.arange(len(d)), image_size=8)
    assert d.checked_fingerprint == d.fingerprint()  # remembered on the dataset, not in the process
    bad.write_bytes(b"this is not a png")  # edited in place: another fingerprint, checked again
    with pytest.raises(UserInputError, match="broken.png"):
        image_dataset(d, np.arange(len(d)), image_size=8)

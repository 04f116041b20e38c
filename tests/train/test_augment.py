"""Training-time augmentation: what each choice does to a batch, and that draws change every batch."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from autotransfer.train.augment import augment_dataset

N, K = 8, 4


def batches(kind: str, take: int = 4, seed: int = 0):
    rng = np.random.default_rng(0)
    x = rng.random((N, 12, 12, 3)).astype("float32")
    y = np.arange(N) % K
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(N)  # one batch per epoch: the stream repeats it
    out = [(a.numpy(), b.numpy()) for a, b in augment_dataset(ds, kind, num_classes=K, seed=seed).take(take)]
    return x, y, out


def test_none_is_one_hot_and_unchanged():
    x, y, out = batches("none", take=2)
    for images, labels in out:
        np.testing.assert_array_equal(images, x)
        np.testing.assert_array_equal(labels, np.eye(K)[y])


def test_flip_mirrors_some_images_and_keeps_the_rest():
    x, y, out = batches("flip", take=6)
    flipped = 0
    for images, labels in out:
        for img, src in zip(images, x):
            same, mirror = np.array_equal(img, src), np.array_equal(img, src[:, ::-1])
            assert same or mirror
            flipped += mirror and not same
        np.testing.assert_array_equal(labels, np.eye(K)[y])
    assert 0 < flipped < 6 * N


def _is_shift_of(img: np.ndarray, src: np.ndarray, max_shift: int) -> bool:
    padded = np.pad(src, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="reflect")
    h, w = src.shape[:2]
    return any(np.array_equal(img, padded[dy:dy + h, dx:dx + w])
               for dy in range(2 * max_shift + 1) for dx in range(2 * max_shift + 1))


def test_crop_shifts_with_reflection_and_never_flips():
    x, _, out = batches("crop", take=3)
    moved = 0
    for images, _ in out:
        for img, src in zip(images, x):
            assert _is_shift_of(img, src, max_shift=2)  # 10% of 12 px, rounded up
            moved += not np.array_equal(img, src)
    assert moved > 0


def test_mixup_mixes_images_and_labels_with_one_ratio():
    x, y, out = batches("mixup", take=3)
    for images, labels in out:
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
        onehot = np.eye(K)[y]
        # labels = lam * y + (1 - lam) * reversed(y): solve lam from the first row
        mix = labels[0]
        lam = float(mix[y[0]]) if y[0] != y[-1] else 1.0
        np.testing.assert_allclose(labels, lam * onehot + (1 - lam) * onehot[::-1], atol=1e-5)
    assert not np.allclose(out[0][1], out[1][1])  # a new ratio per batch


def test_draws_differ_between_batches_and_repeat_for_a_seed():
    _, _, a = batches("flip+crop", take=4, seed=3)
    _, _, b = batches("flip+crop", take=4, seed=3)
    _, _, c = batches("flip+crop", take=4, seed=4)
    for (ia, _), (ib, _) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
    # every "epoch" (the same source batch) is augmented anew
    assert not all(np.array_equal(a[0][0], a[i][0]) for i in range(1, 4))
    assert not all(np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c))


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="augment must be one of"):
        batches("rotate")

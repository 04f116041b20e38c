"""Every modality's preprocessor keeps one contract (a conformance suite: a new modality adds its
tiny dataset to DATASETS and gets the same checks)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from autotransfer import modalities
from autotransfer.data import load_data
from autotransfer.errors import UserInputError
from autotransfer.modalities.base import Modality
from autotransfer.probe.featurize import images_dtype
from autotransfer.testing import pattern_images

SIZE = 16


def _images():
    x, y = pattern_images(4, num_classes=2, size=SIZE, seed=0)
    return load_data(x, labels=y)


def _texts():
    texts = [f"review {i}: {'great' if i % 2 else 'awful'}, ünïcode ✓" for i in range(8)]
    return load_data(texts, labels=[i % 2 for i in range(8)])


#: modality name -> a small LabelledData of it.
DATASETS = {"image": _images, "text": _texts}


@pytest.fixture(params=sorted(DATASETS))
def case(request) -> tuple[Modality, object]:
    data = DATASETS[request.param]()
    return modalities.for_data(data), data


def test_the_data_names_its_preprocessor(case):
    modality, data = case
    assert isinstance(modality, Modality) and modality.name == data.modality
    assert modalities.get(data.modality) is modality  # one shared instance


def test_batches_match_the_input_spec_and_labels_follow_the_indices(case):
    modality, data = case
    idx = np.array([5, 0, 3])
    x, y = next(iter(modality.dataset(data, idx, size=SIZE, batch_size=3)))
    assert modality.input_spec(SIZE).is_compatible_with(x)
    np.testing.assert_array_equal(y.numpy(), np.asarray(data.labels)[idx])
    unlabelled = next(iter(modality.dataset(data, idx, size=SIZE, batch_size=3, with_labels=False)))
    np.testing.assert_array_equal(unlabelled.numpy(), x.numpy())


def test_raw_batches_become_the_same_model_inputs(case):
    modality, data = case
    idx = np.arange(len(data))
    ds = modality.dataset(data, idx, size=SIZE, batch_size=4, with_labels=False)
    raw = modality.dataset(data, idx, size=SIZE, batch_size=4, with_labels=False, raw=True)
    assert modality.input_spec(SIZE, images_dtype(raw)).is_compatible_with(next(iter(raw)))
    for a, b in zip(ds, raw):
        np.testing.assert_array_equal(a.numpy(), modality.to_model_input(b).numpy())


def test_the_keras_input_and_the_dummy_fit_the_input_spec(case):
    modality, _ = case
    spec, inp = modality.input_spec(SIZE), modality.keras_input(SIZE)
    assert tuple(inp.shape[1:]) == tuple(spec.shape[1:]) and tf.as_dtype(inp.dtype) == spec.dtype
    assert spec.is_compatible_with(tf.convert_to_tensor(modality.dummy_input(SIZE, batch=2)))


def test_shuffled_batches_are_a_seeded_permutation(case):
    modality, data = case
    idx = np.arange(len(data))

    def order(seed: int) -> list:
        ds = modality.dataset(data, idx, size=SIZE, batch_size=len(idx), shuffle=True, seed=seed, cache=True)
        return np.asarray(next(iter(ds))[1]).tolist()

    assert order(3) == order(3) and sorted(order(3)) == sorted(np.asarray(data.labels).tolist())


def test_an_image_model_on_the_keras_input_takes_real_batches():
    import keras

    modality, data = modalities.get("image"), _images()
    inp = modality.keras_input(SIZE)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    batch = next(iter(modality.dataset(data, np.arange(3), size=SIZE, batch_size=3, with_labels=False)))
    assert model(batch).shape == (3, 2) and model(modality.dummy_input(SIZE, batch=2)).shape == (2, 2)


def test_an_unknown_modality_is_one_clear_error():
    with pytest.raises(UserInputError, match=r"Unknown modality 'audio'; known: image, text"):
        modalities.get("audio")


def test_the_report_shows_each_item_as_the_modality_draws_it(case):
    import base64

    modality, data = case
    shown = modality.show(data, np.array([2, 0]))
    assert len(shown) == 2 and {s["kind"] for s in shown} == {modality.name}
    if modality.name == "text":
        assert [s["text"] for s in shown] == [data.items[2], data.items[0]]
        long = load_data(["word " * 200, "short", "a", "b"], labels=[0, 1, 0, 1])
        [snippet] = modality.show(long, np.array([0]))
        assert len(snippet["text"]) <= 240 and snippet["text"].endswith("\u2026")
    else:
        png = base64.b64decode(shown[0]["src"].split(",", 1)[1])
        img = tf.io.decode_png(png).numpy()
        assert img.shape == (64, 64, 3)
        first = tf.io.decode_png(base64.b64decode(shown[1]["src"].split(",", 1)[1])).numpy()
        assert not np.array_equal(img, first)  # the items asked for, in that order


def test_training_augmentation_and_the_mirror_image_are_the_modality_s(case):
    from types import SimpleNamespace

    modality, data = case
    assert modality.augmenter("none") is None  # every modality trains on its items as they are
    batch = next(iter(modality.dataset(data, np.arange(len(data)), size=SIZE, batch_size=4, with_labels=False)))
    inputs = modality.keras_input(SIZE)
    assert modalities.for_model(SimpleNamespace(inputs=[inputs])) is modality  # what a model on it takes
    named = modality.named_input(SIZE, f"{modality.name}_{SIZE}")
    assert named.dtype == modality.keras_input(SIZE).dtype and tuple(named.shape) == tuple(inputs.shape)
    if modality.test_time_flip:
        mirrored = np.asarray(modality.mirror(batch))
        assert mirrored.shape == tuple(batch.shape) and np.array_equal(np.asarray(modality.mirror(mirrored)), batch)
        assert modality.augmenter("flip") is not None
    else:
        with pytest.raises(NotImplementedError):
            modality.mirror(batch)
        with pytest.raises(UserInputError, match="does not apply"):
            modality.augmenter("flip")

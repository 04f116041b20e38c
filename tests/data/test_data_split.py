"""make_splits / Splits / subsample: stratification, determinism, small classes, user splits."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from autotransfer.data import LabelledData, Splits, load_data, make_splits, subsample
from autotransfer.errors import UserInputError


def _data(counts: list[int], split: list[str] | None = None) -> LabelledData:
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.zeros((len(y), 2, 2, 3), np.uint8)
    d = load_data(x, labels=y)
    if split is not None:
        d.split = np.asarray(split)
    return d


def _check_partition(s: Splits, n: int) -> None:
    allidx = np.concatenate([s.train, s.val, s.test])
    assert sorted(allidx.tolist()) == list(range(n))
    for a in (s.train, s.val, s.test):
        assert a.dtype == np.int64 and np.all(np.diff(a) > 0)


def test_stratified_proportions() -> None:
    d = _data([120, 60, 20])
    s = make_splits(d, val_fraction=0.15, test_fraction=0.15, seed=0)
    _check_partition(s, 200)
    assert s.sizes() == {"train": 140, "val": 30, "test": 30}
    for part, n in ((s.val, 30), (s.test, 30)):
        counts = np.bincount(d.labels[part], minlength=3)
        expected = np.array([120, 60, 20]) * n / 200
        assert np.all(np.abs(counts - expected) <= 1), counts


def test_deterministic_for_seed() -> None:
    d = _data([30, 30])
    a, b = make_splits(d, seed=3), make_splits(d, seed=3)
    assert a.to_dict() == b.to_dict()
    assert make_splits(d, seed=4).to_dict() != a.to_dict()


def test_no_test_split() -> None:
    s = make_splits(_data([10, 10]), test_fraction=0.0)
    assert len(s.test) == 0 and len(s.val) == 3 and len(s.train) == 17


def test_small_classes_still_in_train(caplog) -> None:
    d = _data([40, 2, 2, 2])
    with caplog.at_level(logging.WARNING, logger="autotransfer.data.split"):
        for seed in range(10):
            s = make_splits(d, seed=seed)
            _check_partition(s, len(d))
            assert set(d.labels[s.train].tolist()) == {0, 1, 2, 3}
            assert len(s.val) > 0
    assert "Stratified split impossible" in caplog.text


def test_tiny_dataset() -> None:
    d = _data([2, 2])
    for seed in range(10):
        s = make_splits(d, seed=seed)
        _check_partition(s, 4)
        assert set(d.labels[s.train].tolist()) == {0, 1} and len(s.val) >= 1


def test_user_split_used_as_is() -> None:
    split = ["train"] * 6 + ["val", "test"] + ["train"] * 6 + ["val", "test"]
    d = _data([8, 8], split)
    s = make_splits(d)
    assert s.val.tolist() == [6, 14] and s.test.tolist() == [7, 15]
    assert len(s.train) == 12


def test_user_split_without_val_carves_from_train() -> None:
    split = ["train"] * 18 + ["test"] * 2 + ["train"] * 18 + ["test"] * 2
    d = _data([20, 20], split)
    s = make_splits(d, val_fraction=0.2, seed=1)
    _check_partition(s, 40)
    assert s.test.tolist() == [18, 19, 38, 39]
    assert np.bincount(d.labels[s.val]).tolist() == [4, 4]
    assert make_splits(d, val_fraction=0.2, seed=1).to_dict() == s.to_dict()


def test_user_split_errors() -> None:
    with pytest.raises(UserInputError, match="marks no item as 'train'"):
        make_splits(_data([2, 2], ["val", "test", "val", "test"]))
    with pytest.raises(UserInputError, match=r"class '1' has no 'train' items"):
        make_splits(_data([2, 2], ["train", "val", "val", "test"]))
    with pytest.raises(UserInputError, match="split values must be one of"):
        make_splits(_data([2, 2], ["train", "valid", "train", "train"]))


def test_fraction_validation() -> None:
    with pytest.raises(UserInputError, match="val_fraction"):
        make_splits(_data([5, 5]), val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(UserInputError, match="test_fraction"):
        make_splits(_data([5, 5]), test_fraction=-0.1)


def test_json_roundtrip() -> None:
    s = make_splits(_data([10, 10]))
    back = Splits.from_dict(json.loads(json.dumps(s.to_dict())))
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(back, name), getattr(s, name))
        assert getattr(back, name).dtype == np.int64


def test_subsample() -> None:
    labels = np.repeat([0, 1, 2], [50, 10, 3])
    idx = np.arange(len(labels))[::-1]  # order must not matter
    small = subsample(idx, labels, 2, seed=0)
    assert np.bincount(labels[small]).tolist() == [2, 2, 2]
    big = subsample(idx, labels, 5, seed=0)
    assert np.bincount(labels[big]).tolist() == [5, 5, 3]
    assert set(small.tolist()) <= set(big.tolist())  # nested budgets
    assert np.array_equal(subsample(idx, labels, 5, seed=0), big)
    assert not np.array_equal(subsample(idx, labels, 5, seed=1), big)
    frac = subsample(idx, labels, 0.2, seed=0)
    assert np.bincount(labels[frac]).tolist() == [10, 2, 1]
    assert np.array_equal(subsample(idx, labels, 1.0), np.arange(len(labels)))
    part = subsample(np.arange(20, 63), labels, 3)  # indices into the full label array
    assert part.min() >= 20
    for bad in (0, 1.5, 0.0, True):
        with pytest.raises(UserInputError, match="per_class"):
            subsample(idx, labels, bad)

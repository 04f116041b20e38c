"""Train/val/test splits as index arrays, stratified and deterministic for a seed."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from autotransfer.data.dataset import SPLIT_NAMES, LabelledData
from autotransfer.errors import UserInputError, check_param

log = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class Splits:
    """Sorted int64 index arrays into a LabelledData; ``test`` may be empty.

    ``folds`` (cross-validation, :func:`make_cv_splits`): ``k`` sorted, disjoint index arrays whose
    union is train + val, with ``folds[0] == val``; None for a single fixed split.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    folds: list[np.ndarray] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"train": [...], "val": [...], "test": [...]}`` (and ``"folds"``)."""
        d: dict[str, Any] = {name: [int(i) for i in getattr(self, name)] for name in SPLIT_NAMES}
        if self.folds is not None:
            d["folds"] = [[int(i) for i in f] for f in self.folds]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Splits:
        """Inverse of :meth:`to_dict`; a missing key means an empty split."""
        folds = d.get("folds")
        return cls(**{name: np.asarray(d.get(name, []), dtype=np.int64) for name in SPLIT_NAMES},
                   folds=None if folds is None else [np.asarray(f, dtype=np.int64) for f in folds])

    def sizes(self) -> dict[str, int]:
        return {name: int(len(getattr(self, name))) for name in SPLIT_NAMES}

    @property
    def labelled(self) -> np.ndarray:
        """Every row the model may learn from, train then val (the order of ``fold_ids``)."""
        return np.concatenate([self.train, self.val])

    def fold_ids(self) -> np.ndarray:
        """The fold of each row of :attr:`labelled` (all 1 for train, 0 for val without folds)."""
        lab = self.labelled
        ids = np.ones(len(lab), dtype=np.int64)
        for j, f in enumerate(self.folds or [self.val]):
            ids[np.isin(lab, f)] = j
        return ids


def make_splits(
    data: LabelledData,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Splits:
    """Split ``data`` into train/val/test index arrays, deterministically for ``seed``.

    With a user-given ``data.split``, it is used as is: train must be non-empty and contain every
    class; an empty val is carved (stratified) from train as ``val_fraction`` of the train items;
    an empty test stays empty. Otherwise the split is stratified with scikit-learn's
    ``train_test_split``: ``ceil(test_fraction * N)`` test items first, then
    ``ceil(val_fraction * N)`` val items from the rest. When a class is too small to stratify, that step falls back to a random split (logged
    as a warning) and one item of every class missing from train is moved back into train.
    """
    owner = "make_splits"
    check_param("val_fraction", val_fraction, owner, "a float in (0, 1)", 0 < val_fraction < 1)
    check_param("test_fraction", test_fraction, owner, "a float in [0, 1)", 0 <= test_fraction < 1)
    check_param(
        "val_fraction", val_fraction, owner, f"such that val_fraction + test_fraction < 1 "
        f"(test_fraction={test_fraction})", val_fraction + test_fraction < 1,
    )
    y = np.asarray(data.labels, dtype=np.int64)
    if data.split is not None:
        return _user_splits(data, y, val_fraction, seed)

    idx = np.arange(len(y), dtype=np.int64)
    rest, test = _split_off(idx, y, _count(test_fraction, len(y)), seed, data.class_names)
    train, val = _split_off(rest, y, _count(val_fraction, len(y)), seed + 1, data.class_names)
    train, val, test = _cover_train(train, [val, test], y)
    if len(val) == 0:  # possible only for tiny data after _cover_train took val's last item
        train, val = _steal_for_val(train, y)
    return Splits(np.sort(train), np.sort(val), np.sort(test))


def cv_folds(labels: np.ndarray, max_folds: int = 5) -> int:
    """Folds for stratified cross-validation of ``labels``: ``max_folds``, fewer when the smallest
    class has fewer items (every fold should hold each class), 0 when a class has a single item."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    k = min(max_folds, smallest)
    return k if k >= 2 else 0


def make_cv_splits(data: LabelledData, *, folds: int, seed: int = 0) -> Splits:
    """Stratified ``folds``-fold splits of every labelled row for small data.

    A user-given test split (``data.split == "test"``) stays out of every fold; without one there is
    no test split: the estimate comes from cross-validation, and every label trains the model.
    User train and val rows are pooled. ``val`` is fold 0 (what a single trial validates on),
    ``train`` the other folds.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(data.labels, dtype=np.int64)
    idx = np.arange(len(y), dtype=np.int64)
    test = _EMPTY
    if data.split is not None:
        user = _user_splits(data, y, 0.15, seed)  # validates the column
        test, idx = user.test, np.sort(np.concatenate([user.train, user.val]))
    check_param("folds", folds, "make_cv_splits", "an integer >= 2 no larger than the smallest class",
                2 <= folds <= np.bincount(y[idx])[np.unique(y[idx])].min())
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    parts = [np.sort(idx[held]) for _, held in cv.split(idx, y[idx])]
    train = np.sort(np.concatenate(parts[1:]))
    return Splits(train, parts[0], np.sort(test), folds=parts)


def _user_splits(data: LabelledData, y: np.ndarray, val_fraction: float, seed: int) -> Splits:
    split = np.asarray(data.split).astype(str)
    bad = sorted(set(split.tolist()) - set(SPLIT_NAMES))
    if len(split) != len(y) or bad:
        raise UserInputError(
            f"{data.source or 'data'}: split values must be one of train, val, test (one per item); "
            f"got {bad[:5] if bad else f'{len(split)} values for {len(y)} items'}."
        )
    train, val, test = (np.flatnonzero(split == s).astype(np.int64) for s in SPLIT_NAMES)
    if len(train) == 0:
        raise UserInputError(
            f"{data.source or 'data'}: split column marks no item as 'train'. Mark the training "
            "items 'train', or drop the split column to split automatically."
        )
    absent = [data.class_names[c] for c in range(len(data.class_names)) if c not in set(y[train])]
    if absent:
        raise UserInputError(
            f"{data.source or 'data'}: split column: class {', '.join(repr(a) for a in absent[:5])} "
            "has no 'train' items. Mark some of its items 'train'."
        )
    if len(val) == 0:
        train, val = _split_off(train, y, _count(val_fraction, len(train)), seed, data.class_names)
        train, val = _cover_train(train, [val], y)
        if len(val) == 0:
            train, val = _steal_for_val(train, y)
    return Splits(np.sort(train), np.sort(val), np.sort(test))


def _count(fraction: float, n: int) -> int:
    # The epsilon stops float noise (0.15 * 200 = 30.000000000000004) from rounding up.
    return math.ceil(fraction * n - 1e-9) if fraction > 0 else 0


def _split_off(
    idx: np.ndarray, y: np.ndarray, n_take: int, seed: int, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, taken) with ``n_take`` items taken (at most all but one), stratified if possible."""
    n_take = min(n_take, len(idx) - 1)
    if n_take <= 0:
        return idx, _EMPTY
    try:
        kept, taken = train_test_split(idx, test_size=n_take, stratify=y[idx], random_state=seed)
    except ValueError:
        # sklearn refuses to stratify when a class has < 2 members here or n_take < #classes.
        counts = np.bincount(y[idx], minlength=len(class_names))
        small = [class_names[c] for c in np.flatnonzero((counts > 0) & (counts < 2))]
        log.warning(
            "Stratified split impossible (%s); using a random split of %d items and keeping "
            "every class in train.",
            f"classes with a single item: {', '.join(small[:5])}" if small
            else f"{n_take} items cannot hold all {int((counts > 0).sum())} classes",
            n_take,
        )
        kept, taken = train_test_split(idx, test_size=n_take, random_state=seed)
    return np.asarray(kept, dtype=np.int64), np.asarray(taken, dtype=np.int64)


def _cover_train(
    train: np.ndarray, donors: list[np.ndarray], y: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Move one item of each class absent from train out of the first donor that has one."""
    present = set(y[np.concatenate([train, *donors]).astype(np.int64)].tolist())
    train_list = list(train)
    donors = [list(d) for d in donors]
    for c in sorted(present - set(y[train].tolist())):
        for d in donors:
            hit = next((i for i in d if y[i] == c), None)
            if hit is not None:
                d.remove(hit)
                train_list.append(hit)
                break
    return tuple(np.asarray(a, dtype=np.int64) for a in (train_list, *donors))


def _steal_for_val(train: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give val one item of the biggest train class so that validation is never empty."""
    counts = np.bincount(y[train])
    c = int(np.argmax(counts))
    pick = train[y[train] == c][-1]
    return train[train != pick], np.asarray([pick], dtype=np.int64)


def subsample(
    indices: np.ndarray, labels: np.ndarray, per_class: int | float, seed: int = 0
) -> np.ndarray:
    """Stratified subset of ``indices`` (sorted), e.g. for successive-halving budgets.

    ``labels`` is the dataset's full label array (``data.labels``), indexed by ``indices``.
    ``per_class`` is an ``int`` >= 1 (at most that many items per class) or a ``float`` in
    (0, 1] (that fraction of each class, at least 1 item). Subsets for the same ``seed`` are
    nested: a larger budget contains every item of a smaller one.
    """
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels)
    is_int = isinstance(per_class, (int, np.integer)) and not isinstance(per_class, bool)
    is_float = isinstance(per_class, (float, np.floating))
    check_param(
        "per_class", per_class, "subsample", "an int >= 1 or a float in (0, 1]",
        (is_int and per_class >= 1) or (is_float and 0 < per_class <= 1),
    )
    y = labels[indices]
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        members = indices[y == c]
        # One permutation per class independent of per_class makes budgets nested.
        order = rng.permutation(len(members))
        k = int(per_class) if is_int else max(1, int(round(per_class * len(members))))
        picked.append(members[order[: min(k, len(members))]])
    return np.sort(np.concatenate(picked)) if picked else _EMPTY

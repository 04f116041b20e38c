"""Fixtures shared by the tune tests."""
from __future__ import annotations

import pytest

from autotransfer.data import load_data, make_splits
from autotransfer.testing import pattern_images


@pytest.fixture(scope="module")
def data_splits():
    """Pattern images (4 classes x 16) loaded and split with seed 0."""
    x, y = pattern_images(16, seed=1)
    data = load_data(x, labels=y)
    return data, make_splits(data, seed=0)

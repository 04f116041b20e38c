"""Shared fixtures: tiny generated TF-Hub-format modules and pattern data (no network)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three tiny modules whose quality order is good > medium > bad by construction."""
    from autotransfer.testing import write_tiny_module

    root = tmp_path_factory.mktemp("modules")
    return {
        name: str(write_tiny_module(root / name, grid=grid, seed=i))
        for i, (name, grid) in enumerate([("good", 4), ("medium", 2), ("bad", 1)])
    }


@pytest.fixture(scope="session")
def tiny_classifier_module(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny module with a 10-class 'source' head (for LEEP-style scorers)."""
    from autotransfer.testing import write_tiny_module

    return str(write_tiny_module(tmp_path_factory.mktemp("cls") / "good_cls", grid=4, num_source_classes=10))


@pytest.fixture(scope="session")
def pattern_folder(tmp_path_factory: pytest.TempPathFactory):
    """Pattern images (4 classes x 16, 16 px) as a class-per-folder directory."""
    from autotransfer.testing import write_image_folder
    from autotransfer.testing import pattern_images

    x, y = pattern_images(16, num_classes=4, size=16, seed=1)
    return write_image_folder(x, y, ["a", "b", "c", "d"], tmp_path_factory.mktemp("data") / "patterns")


@pytest.fixture(scope="module")
def data_splits():
    """Pattern images (4 classes x 16) loaded and split with seed 0 (the tune and train tests)."""
    from autotransfer.data import load_data, make_splits
    from autotransfer.testing import pattern_images

    x, y = pattern_images(16, seed=1)
    data = load_data(x, labels=y)
    return data, make_splits(data, seed=0)

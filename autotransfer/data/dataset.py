"""The in-memory description of a labelled dataset, independent of how it was loaded."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from autotransfer.data.checks import Skip

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class LabelledData:
    """A labelled dataset: items are image file paths (str, absolute), an in-memory array, or texts.

    ``items`` is either a list of absolute file paths or an array ``[N,H,W,C]`` (C in 1, 3, 4)
    or ``[N,H,W]`` (``modality`` "image"), or a list of strings (``modality`` "text"); ``labels`` is int64 ``[N]`` in ``0..K-1`` indexing ``class_names``;
    ``split`` optionally holds a user-given "train"/"val"/"test" per item.
    Build it with :func:`autotransfer.data.load_data`, which validates everything: ``skipped``
    lists the items it left out (``data/checks.py``), ``screened`` says its files were checked.
    """

    items: list[str] | np.ndarray
    labels: np.ndarray
    class_names: list[str]
    split: np.ndarray | None = None
    source: str = ""
    modality: str = field(default="image")
    skipped: list[Skip] = field(default_factory=list)
    screened: bool = False
    #: The fingerprint whose files last passed ``image_dataset``'s check of a dataset built by hand
    #: ("": none yet); another fingerprint (files edited, items changed) is checked again.
    checked_fingerprint: str = field(default="", repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_paths(self) -> bool:
        """True when items are image file paths (not an in-memory array, nor texts)."""
        return self.modality == "image" and not isinstance(self.items, np.ndarray)

    def fingerprint(self) -> str:
        """Stable 16-hex-char sha256 over items, labels, class names and split; a cache key.

        Paths contribute path + file size + mtime_ns (not the bytes: hashing every image on each
        run would cost as much as decoding it), so editing a file in place changes the key.
        """
        h = hashlib.sha256()
        h.update(f"modality={self.modality}\n".encode())
        if self.modality == "text":
            for t in self.items:
                h.update(t.encode("utf-8") + b"\0")
        elif self.is_paths:
            for p in self.items:
                try:
                    st = os.stat(p)
                    stamp = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:
                    stamp = "missing"
                h.update(f"{p}\0{stamp}\n".encode())
        else:
            arr = np.ascontiguousarray(self.items)
            h.update(f"array {arr.dtype.str} {arr.shape}\n".encode())
            h.update(arr.reshape(-1).view(np.uint8))
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        h.update("\0".join(self.class_names).encode())
        if self.split is not None:
            h.update(("split:" + "\0".join(map(str, self.split))).encode())
        return h.hexdigest()[:16]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.num_classes)
        return {name: int(n) for name, n in zip(self.class_names, counts)}

    def summary(self) -> dict:
        """JSON-able overview for reports and the CLI (``data.json``), skipped items included."""
        from autotransfer.data.checks import skip_counts

        return {
            "source": self.source,
            "num_items": len(self),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "class_counts": self.class_counts(),
            "modality": self.modality,
            "skipped": [s.to_dict() for s in self.skipped],
            "skipped_counts": skip_counts(self.skipped),
        }

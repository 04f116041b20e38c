"""Finished trials on disk: what a resumed run, a second worker and the final stage read back.

One folder per trial under ``<run dir>/trials/<trial id>``: ``record.json`` (parameters, scores,
status, the worker that ran it), ``val_probs.npy`` (its validation probabilities, for ensemble
selection) and, for the best few, ``model.weights.h5``. Every file is written to a temporary name
and renamed, so a kill leaves either the old file or the new one, never half of one; a trial is
finished once its ``record.json`` exists.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

#: A trial stopped by Ctrl-C (or its process killed): it runs again on resume and is never counted.
INTERRUPTED = "interrupted"


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


class TrialStore:
    """The trials of one run (``root`` = ``<run dir>/trials``), safe for several writer processes:
    each trial id is written by the one process that ran it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, trial_id: int) -> Path:
        return self.root / f"{int(trial_id):04d}"

    def save(self, record: dict[str, Any], val_probs: np.ndarray | None = None) -> None:
        """Write one finished trial (``record["trial_id"]`` names it); the record goes last."""
        d = self._dir(record["trial_id"])
        d.mkdir(parents=True, exist_ok=True)
        if val_probs is not None:
            _atomic(d / "val_probs.npy", lambda p: _save_npy(p, val_probs))
        _atomic(d / "record.json", lambda p: p.write_text(json.dumps(record, indent=2, default=_plain)))

    def records(self) -> list[dict[str, Any]]:
        """Every finished trial's record, by trial id."""
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*/record.json"))]

    def record(self, trial_id: int) -> dict[str, Any] | None:
        """One trial's record, or None when it has none (yet)."""
        path = self._dir(trial_id) / "record.json"
        return json.loads(path.read_text()) if path.exists() else None

    def val_probs(self, trial_id: int) -> np.ndarray | None:
        path = self._dir(trial_id) / "val_probs.npy"
        return np.load(path) if path.exists() else None

    def weights_path(self, trial_id: int) -> Path:
        """Where the trial's trained weights are (or would be) checkpointed."""
        return self._dir(trial_id) / "model.weights.h5"

    def save_weights(self, trial_id: int, model: Any) -> Path:
        path = self.weights_path(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Keras insists on the .weights.h5 suffix, so the temporary name keeps it.
        tmp = path.with_name(f".{os.getpid()}.tmp.weights.h5")
        model.save_weights(str(tmp))
        os.replace(tmp, path)
        return path

    def drop_weights(self, trial_id: int) -> None:
        self.weights_path(trial_id).unlink(missing_ok=True)

    def kept_ids(self) -> list[int]:
        """Trials whose weights are on disk."""
        return sorted(int(p.parent.name) for p in self.root.glob("*/model.weights.h5"))

    def clear(self) -> None:
        """Forget every trial (a fresh search into the same run directory)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(array, np.float32))


def _plain(v: Any) -> Any:
    """numpy scalars to Python numbers, for JSON."""
    return v.item() if hasattr(v, "item") else str(v)


__all__ = ["INTERRUPTED", "TrialStore"]

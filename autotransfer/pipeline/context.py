"""What the stages of one run share: inputs, the run directory, the clock and the stages' results."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autotransfer.budget import Budget
from autotransfer.config import RunConfig


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


@dataclass
class RunContext:
    """One run: its inputs (``config``, the search ``space`` fitted to the data, ``data``,
    ``splits``), its directory and :class:`~autotransfer.budget.Budget`, and what each stage hands
    the next (None until that stage ran)."""

    config: RunConfig
    space: Any
    data: Any
    splits: Any
    run_dir: Path
    budget: Budget
    candidates: list
    #: stages an earlier run into this directory finished (``--resume`` skips them), with their seconds
    done: dict[str, float] = field(default_factory=dict)
    #: the data as a path, when it was given as one (what a shared study's workers load)
    data_path: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    progress: Any = None
    expected_trials: int | None = None
    probed: Any = None
    specs: dict = field(default_factory=dict)
    heads: dict = field(default_factory=dict)
    tuned: Any = None
    final: Any = None
    metrics: dict | None = None
    export_path: Path | None = None

    def prefix_cache(self) -> Any:
        """The frozen-prefix cache settings of the run's parameters (what trials and refits use)."""
        from autotransfer.train.prefix import PrefixCacheSettings

        c = self.config
        return PrefixCacheSettings(enabled=c.prefix_cache, limit_mb=c.prefix_cache_mb, dtype=c.prefix_dtype)

    def objective(self) -> Any:
        """The run's :class:`~autotransfer.objective.Objective` (``--metric``, ``--class-weight``) from its
        labelled rows (train and val: what every choice of the run sees)."""
        from autotransfer.objective import resolve

        y = np.asarray(self.data.labels, dtype=np.int64)[self.splits.labelled]
        return resolve(self.config.metric, self.config.class_weight, y)

    def deadline(self, sizes: list[int] | None = None) -> float | None:
        """``time.time()`` by which the final model must be trained (:meth:`Budget.deadline`)."""
        return self.budget.deadline(sizes)

    def timed(self, stage: str, t0: float) -> None:
        """Record ``stage``'s seconds since ``t0`` in ``timings.json``."""
        self.timings[stage] = time.monotonic() - t0
        self.write_json("timings.json", self.timings)

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` to ``name`` in the run directory (:func:`write_json`)."""
        write_json(self.run_dir / name, obj)


__all__ = ["RunContext", "write_json"]

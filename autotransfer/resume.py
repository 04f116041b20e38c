"""``--resume``: which stages of an earlier run into the same directory can be skipped.

A run may resume only what was computed from the same inputs: the data (by fingerprint), the
splits, the search space and the tuner. Anything else changed is an error naming what changed,
never a silent mix of old and new results.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autotransfer.errors import UserInputError

#: Stages a resumed run skips when they finished before, with the file that marks each done.
SKIPPABLE = {"plan": "plan.json", "probe": "probe/probe.json", "tune": "best.json"}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"--resume: cannot read {path} ({type(exc).__name__}). Start afresh without --resume, "
                             "into a new --out.") from exc


def check_resumable(run_dir: Path, *, tuner: str, data_fingerprint: str, splits: dict[str, Any],
                    space: dict[str, Any]) -> dict[str, float]:
    """The timings of the stages an earlier run into ``run_dir`` finished (those to skip).

    Raises:
        UserInputError: when there is no earlier run there, or its data, splits, search space or
            tuner differ from this run's (the message says which and how to go on).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserInputError(f"--resume: {run_dir} holds no earlier run (no config.json). Drop --resume to start "
                             "one there, or pass the --out of the run to continue.")
    old_config = _read(run_dir / "config.json")
    old_data = _read(run_dir / "data.json") if (run_dir / "data.json").is_file() else {}
    old_splits = _read(run_dir / "splits.json") if (run_dir / "splits.json").is_file() else None
    changed = []
    if old_data.get("fingerprint") != data_fingerprint:
        changed.append("the data (its files or labels)")
    if old_splits is not None and old_splits != splits:
        changed.append("the splits (the CSV's split column, --seed or --cv)")
    if old_config.get("search_space_resolved") != space:
        changed.append("the search space (candidates or tuning)")
    if old_config.get("tuner") != tuner:
        changed.append(f"--tuner ({old_config.get('tuner')} before, {tuner} now)")
    if changed:
        raise UserInputError(f"--resume: {run_dir} was run with different inputs: {', '.join(changed)} changed. "
                             "Resume with the same inputs, or start afresh into a new --out.")
    timings = _read(run_dir / "timings.json") if (run_dir / "timings.json").is_file() else {}
    return {stage: float(timings[stage]) for stage, marker in SKIPPABLE.items()
            if stage in timings and (run_dir / marker).exists()}


__all__ = ["SKIPPABLE", "check_resumable"]

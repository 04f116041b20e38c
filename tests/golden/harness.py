"""A fixed-seed run on the tiny modules, reduced to what must not change when the code is
reorganised (issue 30): the leaderboard, the trials, the final model, the test metrics and the
export's predictions. Timings, worker names and paths are left out; they differ run to run.

Record the reference (before a refactor, commit the files): ``python -m tests.golden.harness``.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
TUNERS = ("optuna", "keras-tuner")
#: Columns and keys that measure time or name a process or a path: not behaviour.
VOLATILE = ("seconds", "worker", "weights", "path", "handle", "export", "datetime", "duration", "report")
#: Durations inside messages ("refit on 54 items in 0 s").
DURATION = re.compile(r"\b\d+(\.\d+)? ?(s|ms|min)\b")


def _volatile(key: str) -> bool:
    return any(v in key.lower() for v in VOLATILE)


def _clean(value: Any) -> Any:
    """``value`` with volatile keys dropped and NaN written as the string 'nan' (JSON-comparable)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not _volatile(str(k))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, str):
        return DURATION.sub("<duration>", value)
    return value


def _table(path: Path) -> list[dict]:
    df = pd.read_csv(path)
    df = df[[c for c in df.columns if not _volatile(c)]]
    return _clean(json.loads(df.to_json(orient="records")))


def _plain(a: np.ndarray) -> list:
    """A serving output as JSON: numbers rounded to 8 decimals, byte strings decoded."""
    if a.dtype.kind in "SO":
        return [[v.decode() for v in row] if a.ndim > 1 else row.decode() for row in a]
    return np.round(a.astype(np.float64), 8).tolist()


def snapshot(run_dir: Path) -> dict:
    """The behaviour of the run in ``run_dir``, as plain JSON values."""
    import tensorflow as tf

    from autotransfer.testing import pattern_images

    x, _ = pattern_images(2, num_classes=4, size=16, seed=7)
    export = sorted(p.parent for p in (run_dir / "export").rglob("saved_model.pb"))[0]
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    outputs = serve(tf.constant(x, tf.float32))
    return {
        "leaderboard": _table(run_dir / "leaderboard.csv"),
        "trials": _table(run_dir / "trials.csv"),
        "final_model": _clean(json.loads((run_dir / "final_model.json").read_text())),
        "test_metrics": _clean(json.loads((run_dir / "test_metrics.json").read_text())),
        "export_outputs": {k: _plain(v.numpy()) for k, v in sorted(outputs.items())},
    }


def run_golden(modules: dict[str, str], folder: Path, out: Path, tuner: str) -> Path:
    """The reference run: the three tiny modules, a fixed split, 3 trials, seed 0, through the CLI."""
    import subprocess

    from autotransfer.testing import write_tiny_space

    space = write_tiny_space(out.parent / f"{out.name}-space.yaml", modules,
                             {"unfreeze_blocks": [0, 2], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 4,
                              "max_epochs": 3, "patience": [1, 2], "batch_size": 16})
    cmd = [sys.executable, "-m", "autotransfer.cli", "run", str(folder), "--search-space", str(space),
           "--out", str(out), "--tuner", tuner, "--max-trials", "3", "--top-k", "2", "--seed", "0", "--cv", "off"]
    env = {**os.environ, "AUTOTRANSFER_CACHE_DIR": str(out.parent / f"{out.name}-cache")}  # every run computes
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"golden run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out


def differences(got: Any, want: Any, where: str = "", tol: float = 1e-6) -> list[str]:
    """Where ``got`` and ``want`` differ (numbers by more than ``tol``, absolute or relative)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing" for k in want if k not in got]
        out += [f"{where}.{k}: unexpected" for k in got if k not in want]
        return out + [d for k in want if k in got for d in differences(got[k], want[k], f"{where}.{k}", tol)]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, recorded {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{where}[{i}]", tol)]
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(got, numbers) and not isinstance(want, bool):
        return [] if abs(got - want) <= tol * max(1.0, abs(want)) else [f"{where}: {got!r}, recorded {want!r}"]
    return [] if got == want else [f"{where}: {got!r}, recorded {want!r}"]


def _record(root: Path) -> None:
    from autotransfer.testing import write_image_folder
    from autotransfer.testing import pattern_images, write_tiny_module

    modules = {name: str(write_tiny_module(root / "modules" / name, grid=grid, seed=i))
               for i, (name, grid) in enumerate([("good", 4), ("medium", 2), ("bad", 1)])}
    x, y = pattern_images(16, num_classes=4, size=16, seed=1)
    folder = write_image_folder(x, y, ["a", "b", "c", "d"], root / "data" / "patterns")
    for tuner in TUNERS:
        snap = snapshot(run_golden(modules, folder, root / f"run-{tuner}", tuner))
        (HERE / f"{tuner}.json").write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
        print(f"recorded {HERE / f'{tuner}.json'}")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _record(Path(tmp))

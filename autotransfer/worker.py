"""``autotransfer worker``: join a chief's Optuna study and run its trials.

Everything a worker needs is in the study's ``autotransfer`` attribute, written by the chief
(:func:`autotransfer.pipeline.tune.shared_study`): the data path and its fingerprint, the splits, the
candidates, the tuning space, the seed, the trial cap and the deadline. A worker on the chief's
machine (or one that sees its run directory on a shared filesystem) keeps its trials there, so the
chief can export any worker's model and the probe's cached features are reused; elsewhere it keeps
them under ``--out`` and its trials extract their own features.
"""
from __future__ import annotations

import time
from pathlib import Path

from autotransfer.defaults import MAX_PIXELS
from autotransfer.errors import UserInputError
from autotransfer.progress import log


def work_on(storage: str, study: str, *, out: Path | None = None, wait_s: float = 0.0) -> int:
    """Run trials of ``study`` on ``storage`` until its cap or deadline; returns how many ran here."""
    from autotransfer.backbones import BackboneSpec
    from autotransfer.data import load_data
    from autotransfer.data.split import Splits
    from autotransfer.objective import Objective
    from autotransfer.tune.base import worker_id
    from autotransfer.tune.optuna_backend import read_task
    from autotransfer.train.prefix import PrefixCacheSettings
    from autotransfer.space import TuneSpace
    from autotransfer.tune.store import TrialStore
    from autotransfer.tune.tune import SharedStudy, tune

    task = read_task(storage, study, wait_s=wait_s)
    where = f"study {study!r}"
    # The chief's screening and columns, so that both see the same items.
    data = load_data(task["data"], max_pixels=task.get("max_pixels", MAX_PIXELS), **task.get("columns", {}))
    if data.fingerprint() != task["fingerprint"]:
        raise UserInputError(f"{where}: the data at {task['data']} differs on this machine from the chief's "
                             "(fingerprint). Give every machine the same files.")
    chief_dir = Path(task["run_dir"])
    run_dir = Path(out) if out is not None else chief_dir if chief_dir.is_dir() else Path("reports") / f"worker-{study}"
    remaining = None if task["deadline"] is None else task["deadline"] - time.time()
    if remaining is not None and remaining <= 0:
        log(f"worker: {where} is past its deadline; nothing to do")
        return 0
    tune([BackboneSpec.from_dict(c, f"{where}: candidates") for c in task["candidates"]], data,
         Splits.from_dict(task["splits"]), space=TuneSpace.from_dict(task["tuning"], where), backend="optuna",
         max_trials=task["max_trials"], time_budget_s=remaining, features=_probe_features(chief_dir),
         out_dir=run_dir, seed=int(task["seed"]), shared=SharedStudy(storage, study, "worker"),
         prefix_cache=PrefixCacheSettings.from_dict(task.get("prefix_cache")),  # the chief's settings
         objective=Objective.from_dict(task.get("objective")))  # and its metric and class weights
    return sum(r.get("worker") == worker_id() for r in TrialStore(run_dir / "trials").records())


def _probe_features(chief_dir: Path) -> dict | None:
    """The chief's cached probe features when this machine sees its run directory."""
    from autotransfer.probe import ProbeResult

    if not (chief_dir / "probe" / "probe.json").is_file():
        return None
    return ProbeResult.load(chief_dir).features


__all__ = ["work_on"]

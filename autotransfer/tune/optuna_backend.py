"""Optuna backend: seeded TPE sampling with median pruning on per-epoch val accuracy, in a study on disk.

The study lives in a storage, ``sqlite:///<work_dir>/optuna.db`` by default, so a killed run
resumes where it stopped, or in any SQLAlchemy URL Optuna accepts (PostgreSQL for a chief and
workers on several machines). Trials run in an ask/tell loop rather than ``study.optimize`` for
three things optimize does not give: an exact trial cap with several processes (a trial asked
past the cap is told FAIL with the user attribute ``surplus``: Optuna's ``MaxTrialsCallback``
checks only after a trial ends, so concurrent workers overshoot it), Ctrl-C recorded as an
interruption (user attribute ``interrupted``) rather than a failure, and interrupted or stale
trials enqueued again with their parameters (user attribute ``rerun_of``).

Why MedianPruner rather than HyperbandPruner: our budgets are a handful of trials, too few to
fill Hyperband's brackets, and each trial is already short (early stopping); the median rule only
needs a couple of finished trials to start cutting clearly bad configurations.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotransfer.errors import UserInputError
from autotransfer.interrupts import shielded
from autotransfer.tune.base import Objective, Reporter, TrialRecord, TunerBackend, register_backend, run_objective, worker_id
from autotransfer.budget import Deadline, as_deadline
from autotransfer.space import ParamSpec, render_optuna

log = logging.getLogger(__name__)
#: The study name of a run's own (SQLite) study.
LOCAL_STUDY = "autotransfer"
#: Study attribute holding what a worker needs (data, splits, candidates, tuning space).
TASK_ATTR = "autotransfer"
#: A RUNNING trial whose process has not reported for this long is taken as dead and run again.
STALE_S = 600.0
ROLES = ("local", "chief", "worker")


def _rdb(storage: str, *, create: bool = True) -> Any:
    import optuna

    # Several processes starting at once race on creating the tables (PostgreSQL raises a unique
    # violation): only the chief creates them, workers join tables that exist.
    return optuna.storages.RDBStorage(storage, skip_table_creation=not create,
                                      engine_kwargs={"pool_pre_ping": True})


def read_task(storage: str, name: str, *, wait_s: float = 0.0) -> dict[str, Any]:
    """The task a chief wrote into study ``name`` (waiting up to ``wait_s`` for it to appear)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    end = time.time() + wait_s
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=_rdb(storage, create=False))
            task = study.user_attrs.get(TASK_ATTR)
            if task:
                return task
        except Exception as exc:  # noqa: BLE001 - no tables or no study yet: wait for the chief, then say so
            problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        else:
            problem = "the study has no task yet"
        if time.time() >= end:
            raise UserInputError(f"--study {name!r} on --storage {storage}: no chief has started it ({problem}). "
                                 "Start `autotransfer run ... --storage URL --study NAME` first, or give --wait.")
        time.sleep(2.0)


def _state_names() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING


def _countable(t: Any) -> bool:
    """Trials that count towards the cap: finished ones, failures of the objective, running ones;
    not interruptions, nor the surplus told FAIL at once."""
    complete, pruned, fail, running = _state_names()
    if t.state in (complete, pruned, running):
        return True
    return t.state == fail and not ({"interrupted", "surplus"} & set(t.user_attrs))


def _finished(t: Any) -> bool:
    complete, pruned, fail, _ = _state_names()
    return t.state in (complete, pruned) or (t.state == fail and _countable(t))


class OptunaBackend(TunerBackend):
    """An Optuna study on disk (or on a shared storage) driven by an ask/tell loop.

    Args:
        sampler: an ``optuna.samplers.BaseSampler`` (default: TPE seeded with the search seed;
            workers add their process id to it so that they do not sample the same values).
        pruner: an ``optuna.pruners.BasePruner`` (default: ``MedianPruner``).
        n_warmup_steps: epochs reported before the default pruner may prune.
        expected_trials: trials the budget is expected to allow when there is no ``max_trials``
            cap (sizes TPE's random start-up).
        storage: SQLAlchemy URL of the study (default: SQLite in ``work_dir``).
        study_name: the study (default ``autotransfer``).
        role: "local" (the run's own study), "chief" (creates a shared study, writes ``task``,
            waits for the workers' trials) or "worker" (joins one).
        task: what the chief stores for its workers.
    """

    name = "optuna"

    def __init__(self, *, sampler: Any = None, pruner: Any = None, n_warmup_steps: int = 0,
                 expected_trials: int = 10, storage: str | None = None, study_name: str | None = None,
                 role: str = "local", task: dict[str, Any] | None = None, stale_s: float = STALE_S) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.sampler = sampler
        self.expected_trials = expected_trials
        self.pruner = pruner
        self.n_warmup_steps = n_warmup_steps
        self.storage, self.study_name, self.role, self.task = storage, study_name, role, task
        self.stale_s = stale_s
        self.study: Any = None  # the last study, for inspection

    def _open(self, work_dir: Path, seed: int, max_trials: int | None, resume: bool) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar shows trials
        # TPE's default 10 random start-up trials would be the whole of a small budget.
        startup = min(10, max(2, (max_trials or self.expected_trials) // 2))
        sampler_seed = seed if self.role != "worker" else seed + int(worker_id().rsplit(":", 1)[1])
        sampler = self.sampler or optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=startup)
        pruner = self.pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=self.n_warmup_steps)
        name = self.study_name or LOCAL_STUDY
        if self.role == "worker":
            return optuna.load_study(study_name=name, storage=_rdb(self.storage, create=False), sampler=sampler,
                                     pruner=pruner)
        work_dir.mkdir(parents=True, exist_ok=True)
        storage = _rdb(self.storage or f"sqlite:///{work_dir / 'optuna.db'}")
        exists = name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
        if exists and not resume:
            if self.storage is not None:  # the user's storage: never deleted
                raise UserInputError(f"--study {name!r} already exists on --storage. Add --resume to continue it, "
                                     "or pass a new --study name.")
            optuna.delete_study(study_name=name, storage=storage)
            exists = False
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
        if self.role == "chief" and self.task is not None:
            study.set_user_attr(TASK_ATTR, self.task)
        return study

    def search(
        self,
        objective: Objective,
        params: list[ParamSpec],
        *,
        max_trials: int | None,
        deadline: Deadline | float | None,
        seed: int,
        work_dir: Path,
        first: Sequence[dict[str, Any]] = (),
        resume: bool = False,
    ) -> list[TrialRecord]:
        study = self._open(Path(work_dir), seed, max_trials, resume)
        self.study = study
        if self.role != "worker" and not study.trials:
            for values in first:
                study.enqueue_trial(dict(values))  # partial: the other parameters are sampled
        self._requeue(study, getattr(objective, "finished", None))
        deadline = as_deadline(deadline)
        records: list[TrialRecord] = []
        while not self._done(study, max_trials, deadline, ran=len(records)):
            with shielded():
                trial = study.ask()
                if max_trials is not None and self._rank(study, trial.number) >= max_trials:
                    self._tell_surplus(study, trial)
                    break
            records.append(self._run_one(study, trial, objective, params))
        if self.role == "chief":
            self._wait_for_workers(study)
        return records

    def _done(self, study: Any, max_trials: int | None, deadline: Deadline, *, ran: int) -> bool:
        trials = study.get_trials(deepcopy=False)
        if max_trials is not None and sum(_countable(t) for t in trials) >= max_trials:
            return True
        # The first trial always runs (it stops itself at the deadline); none starts after it.
        return not deadline.can_start() and (ran > 0 or any(_finished(t) for t in trials))

    @staticmethod
    def _rank(study: Any, number: int) -> int:
        """Countable trials numbered before ``number``: its place under the cap."""
        return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and _countable(t))

    @staticmethod
    def _tell_surplus(study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)

    def _run_one(self, study: Any, trial: Any, objective: Objective, params: list[ParamSpec]) -> TrialRecord:
        from optuna.trial import TrialState

        with shielded():
            values = render_optuna(params, trial)
            trial.set_user_attr("worker", worker_id())
            trial.set_user_attr("alive", time.time())

        def should_stop(epoch: int, val_accuracy: float) -> bool:
            with shielded():
                trial.report(val_accuracy, epoch)
                trial.set_user_attr("alive", time.time())  # the heartbeat that tells a live trial from a dead one
                return trial.should_prune()

        try:
            record = run_objective(objective, values, Reporter(trial.number, should_stop))
        except KeyboardInterrupt:
            self._tell_interrupted(study, trial)
            raise
        with shielded():
            if record.status.startswith("failed"):
                trial.set_user_attr("failure", record.status)
                study.tell(trial, state=TrialState.FAIL)
            elif record.status == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, record.val_accuracy)
        return record

    @staticmethod
    def _tell_interrupted(study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        try:
            with shielded():
                trial.set_user_attr("interrupted", True)
                study.tell(trial, state=TrialState.FAIL)
        except Exception as exc:  # noqa: BLE001 - the trial stays RUNNING, and a resume runs it again
            log.warning("could not mark trial %s interrupted (%s); a resume runs it again", trial.number, exc)

    def _requeue(self, study: Any, finished: Any = None) -> None:
        """Enqueue again, once, every interrupted trial and every running one whose process is gone
        (this run's own study: all of them; a shared one: silent for ``stale_s``).

        ``finished(number)``: the objective's own record of a trial (a status and value) when the
        process died after the trial had finished but before the study heard of it; that result is
        told instead of running the trial again.
        """
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        rerun = {t.user_attrs.get("rerun_of") for t in trials}
        for t in trials:
            stale = t.state == TrialState.RUNNING and (
                self.role == "local" or time.time() - _last_alive(t) > self.stale_s)
            done = finished(t.number) if stale and finished is not None else None
            if done is not None:
                status, value = done
                if status == "pruned":
                    # Private: tell() would give a pruned trial its last intermediate value; it has none here.
                    study._storage.set_trial_state_values(t._trial_id, state=TrialState.PRUNED, values=None)
                else:
                    study.tell(t.number, value, state=TrialState.COMPLETE)
                continue
            if stale:
                # Private: Optuna has no public way to set a user attribute on a trial this process did not ask for.
                study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
                study.tell(t.number, state=TrialState.FAIL)
            if (stale or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted"))) and t.number not in rerun:
                study.enqueue_trial(dict(t.params), user_attrs={"rerun_of": t.number})

    def _wait_for_workers(self, study: Any, poll_s: float = 2.0) -> None:
        """Until no trial of another process is running (the chief evaluates a complete study)."""
        from optuna.trial import TrialState

        while True:
            running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if time.time() - _last_alive(t) <= self.stale_s]
            if not running:
                return
            time.sleep(poll_s)


def _last_alive(trial: Any) -> float:
    """When ``trial``'s process last gave a sign of life: its heartbeat, else its start. A trial
    just asked for has no heartbeat yet; taking it for dead then failed it under its worker
    (UpdateFinishedTrialError in the worker's next suggest)."""
    if "alive" in trial.user_attrs:
        return float(trial.user_attrs["alive"])
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else 0.0


register_backend(OptunaBackend.name, OptunaBackend)

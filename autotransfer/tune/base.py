"""The tuner-backend interface: a backend samples parameters, calls an objective and records trials.

The objective is backend-neutral: ``objective(params, report)`` trains one configuration and
returns its validation accuracy (a float, or an :class:`ObjectiveResult` with epochs/status and the
effective parameters). ``report(epoch, val_accuracy)`` is the backend's pruning hook; it returns
True when the trial should stop, and the objective then returns early. ``report.trial_id`` tells
the objective which trial it is running.
"""
from __future__ import annotations

import os
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable, Protocol

from autotransfer.errors import UserInputError
from autotransfer.budget import Deadline
from autotransfer.space import ParamSpec

STATUSES = ("ok", "pruned", "timeout")  # plus "failed: <message>"


def worker_id() -> str:
    """``host:pid`` of this process: who ran a trial, in records and Optuna user attributes."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ReportFn(Protocol):
    trial_id: int

    def __call__(self, epoch: int, val_accuracy: float) -> bool: ...


@dataclass
class ObjectiveResult:
    """A richer objective return value than a bare float."""

    value: float
    epochs: int = 0
    status: str = "ok"  # "ok" | "timeout" (pruning is known to the backend via report)
    params: dict[str, Any] | None = None  # effective parameters, when they differ from the sampled


Objective = Callable[[dict[str, Any], ReportFn], "float | ObjectiveResult"]


@dataclass
class TrialRecord:
    """One finished trial, whatever the backend."""

    trial_id: int
    params: dict[str, Any]
    val_accuracy: float  # the objective's value: the run's metric on val (accuracy unless --metric says otherwise)
    epochs: int
    seconds: float
    status: str  # "ok" | "pruned" | "timeout" | "failed: <message>"


class Reporter:
    """The ``report`` hook given to the objective; records what was reported and asks ``should_stop``."""

    def __init__(self, trial_id: int, should_stop: Callable[[int, float], bool] | None = None) -> None:
        self.trial_id = trial_id
        self._should_stop = should_stop
        self.pruned = False
        self.last_epoch = -1
        self.values: dict[int, float] = {}

    def __call__(self, epoch: int, val_accuracy: float) -> bool:
        self.last_epoch = max(self.last_epoch, epoch)
        self.values[epoch] = val_accuracy
        if self._should_stop is not None and self._should_stop(epoch, val_accuracy):
            self.pruned = True
        return self.pruned


def run_objective(objective: Objective, params: dict[str, Any], reporter: Reporter) -> TrialRecord:
    """Call ``objective`` and turn its result (or exception) into a :class:`TrialRecord`."""
    t0 = time.time()
    try:
        result = objective(dict(params), reporter)
    except Exception as exc:  # noqa: BLE001 - a failing trial is recorded and the search goes on
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        return TrialRecord(reporter.trial_id, dict(params), float("nan"), reporter.last_epoch + 1,
                           time.time() - t0, f"failed: {msg}")
    if not isinstance(result, ObjectiveResult):
        result = ObjectiveResult(float(result), reporter.last_epoch + 1)
    status = "pruned" if reporter.pruned else result.status
    return TrialRecord(reporter.trial_id, dict(result.params or params), float(result.value),
                       int(result.epochs), time.time() - t0, status)


class TunerBackend(ABC):
    """A hyperparameter search algorithm behind one interface."""

    name: str = ""

    @abstractmethod
    def search(
        self,
        objective: Objective,
        params: list[ParamSpec],
        *,
        max_trials: int | None,
        deadline: "Deadline | float | None",
        seed: int,
        work_dir: Path,
        first: Sequence[dict[str, Any]] = (),
        resume: bool = False,
    ) -> list[TrialRecord]:
        """Run up to ``max_trials`` trials (None: no cap, until the deadline), starting none after
        ``deadline`` (a ``time.time()`` value or a :class:`Deadline`) but always the first.

        ``first``: partial parameter values for the first trials, in order (the rest of each is
        sampled as usual), e.g. ``[{"backbone": b} for b in top_k]`` so that every candidate is
        tried before the sampler may concentrate on one.
        ``resume``: continue the search whose state is in ``work_dir`` (finished trials count
        towards ``max_trials`` and are not run again; an interrupted one is); else start afresh.
        Returns one record per trial this call ran, in run order; a trial whose objective raised is
        recorded as ``"failed: ..."`` and the search goes on. KeyboardInterrupt ends the running
        trial as interrupted (its state saved) and propagates.
        """


_BACKENDS: dict[str, Callable[..., TunerBackend]] = {}


def register_backend(name: str, factory: Callable[..., TunerBackend]) -> None:
    """Make ``get_backend(name)`` return ``factory(**kwargs)``."""
    _BACKENDS[name] = factory


def get_backend(name: str, **kwargs: Any) -> TunerBackend:
    """The backend called ``name`` ("keras-tuner" or "optuna"); kwargs go to its constructor."""
    # Importing the modules registers the built-in backends.
    from autotransfer.tune import keras_tuner_backend, optuna_backend  # noqa: F401

    if name not in _BACKENDS:
        raise UserInputError(f"Unknown tuner backend {name!r}. Choose one of: {', '.join(sorted(_BACKENDS))}.")
    return _BACKENDS[name](**kwargs)


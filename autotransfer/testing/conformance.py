"""Conformance checks that every plug-in of a kind must pass (Optuna's ``testing`` package does the
same for samplers and storages): :func:`check_scorer` for transferability scorers and
:func:`check_tuner_backend` for tuner backends. Each raises AssertionError naming the broken
property; a plug-in's own test calls it on a fresh instance."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from autotransfer.probe.scorers import Scorer, ScoreResult
from autotransfer.tune.base import TrialRecord, TunerBackend

# -- scorers -------------------------------------------------------------------------------------
def _separable(rng: np.random.Generator, per_class: int, num_classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(num_classes), per_class)
    centers = rng.normal(0.0, 4.0, size=(num_classes, dim))
    return centers[y] + rng.normal(0.0, 1.0, size=(len(y), dim)), y


def _source_logits(rng: np.random.Generator, y: np.ndarray, informative: bool, num_source: int = 6) -> np.ndarray:
    # Informative logits put the mass on a source class tied to the label (what LEEP rewards).
    logits = rng.normal(0.0, 1.0, size=(len(y), num_source))
    if informative:
        logits[np.arange(len(y)), y % num_source] += 6.0
    return logits


def _run(scorer: Scorer, x: np.ndarray, y: np.ndarray, logits: np.ndarray | None, seed: int) -> ScoreResult:
    result = scorer.score(x, y, source_logits=logits if scorer.needs_source_logits else None, seed=seed)
    assert isinstance(result, ScoreResult), f"{scorer!r}.score must return a ScoreResult, got {type(result)}"
    assert isinstance(result.score, float) and math.isfinite(result.score), f"{scorer!r}: score {result.score!r}"
    assert isinstance(result.std, float) and math.isfinite(result.std) and result.std >= 0, f"{scorer!r}: std {result.std!r}"
    assert isinstance(result.details, dict)
    return result


def check_scorer(scorer: Scorer) -> None:
    """Assert the Scorer contract; raises AssertionError naming the broken property.

    Checks: a finite float score and std; deterministic for a seed; separable features score
    higher than pure noise; 2 classes work; a class with only 2 samples works.
    """
    assert isinstance(scorer, Scorer), f"{scorer!r} is not a Scorer"
    assert isinstance(scorer.name, str) and scorer.name, f"{scorer!r} needs a non-empty name"
    rng = np.random.default_rng(0)
    x, y = _separable(rng, per_class=15, num_classes=4, dim=12)
    noise = rng.normal(0.0, 1.0, size=x.shape)
    good_logits, bad_logits = _source_logits(rng, y, True), _source_logits(rng, y, False)

    first = _run(scorer, x, y, good_logits, seed=3)
    again = _run(scorer, x, y, good_logits, seed=3)
    assert first.score == again.score and first.std == again.std, f"{scorer!r} is not deterministic for a seed"

    bad = _run(scorer, noise, y, bad_logits, seed=3)
    assert first.score > bad.score, f"{scorer!r} scores noise ({bad.score}) >= separable features ({first.score})"

    x2, y2 = _separable(rng, per_class=10, num_classes=2, dim=8)
    _run(scorer, x2, y2, _source_logits(rng, y2, True), seed=0)

    # A class with exactly 2 samples (the minimum the data stage lets through).
    keep = np.concatenate([np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:2]])
    _run(scorer, x[keep], y[keep], good_logits[keep], seed=0)


# -- tuner backends --------------------------------------------------------------------------------
def _params() -> list:
    """The search space the backend check samples from: every kind of parameter, one of them fixed."""
    from autotransfer.space import ParamSpec

    return [ParamSpec("backbone", "choice", choices=("a", "b", "c")),
            ParamSpec("blocks", "int", low=0, high=3),
            ParamSpec("learning_rate", "float", low=1e-5, high=1e-2, log=True),
            ParamSpec("dropout", "float", low=0.0, high=0.5),
            ParamSpec("augment", "choice", choices=("none",))]


def _within(params: dict[str, Any], specs: list) -> bool:
    for s in specs:
        v = params.get(s.name)
        if s.kind == "choice" and v not in s.choices:
            return False
        if s.kind in ("int", "float") and not (s.low <= v <= s.high):
            return False
        if s.kind == "int" and int(v) != v:
            return False
    return True


def _search(make: Callable[[], TunerBackend], work_dir: Path, objective: Callable, **kwargs: Any) -> list[TrialRecord]:
    kwargs = {"max_trials": 4, "deadline": None, "seed": 0, **kwargs}
    return make().search(objective, _params(), work_dir=work_dir, **kwargs)


def _check_trials_and_failures(make: Callable[[], TunerBackend], root: Path) -> None:
    calls: list[dict] = []

    def objective(p: dict, report: Any) -> float:
        calls.append(p)
        if len(calls) == 2:
            raise RuntimeError("boom")
        report(0, 0.5)
        return 0.5 + p["dropout"] / 10

    records = _search(make, root / "cap", objective)
    assert len(records) == 4 == len(calls), f"max_trials=4 ran {len(calls)} trials, returned {len(records)} records"
    assert len({r.trial_id for r in records}) == 4, "trial ids must be distinct"
    assert records[1].status.startswith("failed: RuntimeError"), f"a raising trial is recorded failed: {records[1]}"
    assert all(r.status == "ok" and math.isfinite(r.val_accuracy) for i, r in enumerate(records) if i != 1)
    assert all(_within(r.params, _params()) for r in records), "every sampled value lies in its ParamSpec"


def _check_first_and_seed(make: Callable[[], TunerBackend], root: Path) -> None:
    first = [{"backbone": "c"}, {"backbone": "a"}]
    runs = [_search(make, root / f"seed{i}", lambda p, report: 0.5, first=first) for i in range(2)]
    assert [r.params["backbone"] for r in runs[0][:2]] == ["c", "a"], "the first values come first, in order"
    assert [r.params for r in runs[0]] == [r.params for r in runs[1]], "the same seed samples the same trials"


def _check_deadline(make: Callable[[], TunerBackend], root: Path) -> None:
    from autotransfer.budget import Deadline

    cannot_start = Deadline(time.time() + 600.0, start_s=700.0)
    records = _search(make, root / "start", lambda p, report: 0.5, deadline=cannot_start)
    assert len(records) == 1, f"with no time to start a trial, only the first runs; ran {len(records)}"
    records = _search(make, root / "past", lambda p, report: 0.5, deadline=time.time() - 1.0)
    assert len(records) == 1, f"past the deadline only the first trial runs; ran {len(records)}"


def _check_resume(make: Callable[[], TunerBackend], root: Path) -> None:
    done = _search(make, root / "resume", lambda p, report: 0.5, max_trials=2)
    more = _search(make, root / "resume", lambda p, report: 0.6, max_trials=4, resume=True)
    assert len(done) == 2 and len(more) == 2, f"a resumed search runs only what is left: {len(done)} + {len(more)}"
    assert not {r.trial_id for r in done} & {r.trial_id for r in more}, "a resumed search repeats no finished trial"


def check_tuner_backend(make: Callable[[], TunerBackend], work_dir: str | Path | None = None) -> None:
    """Assert the :class:`~autotransfer.tune.base.TunerBackend` contract on fresh backends from
    ``make()``: ``max_trials`` trials with distinct ids, a raising objective recorded as failed and
    the search going on, sampled values inside their :class:`~autotransfer.space.ParamSpec`,
    ``first`` values first, the same trials for the same seed, no trial started without the
    time it needs (but always the first), and ``resume`` running only the trials left."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work_dir or tmp)
        assert isinstance(make(), TunerBackend), "make() must return a TunerBackend"
        _check_trials_and_failures(make, root)
        _check_first_and_seed(make, root)
        _check_deadline(make, root)
        _check_resume(make, root)


__all__ = ["check_scorer", "check_tuner_backend"]

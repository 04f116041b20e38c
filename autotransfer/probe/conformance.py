"""A reusable conformance check that every transferability scorer must pass."""
from __future__ import annotations

import math

import numpy as np

from autotransfer.probe.scorers import Scorer, ScoreResult


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

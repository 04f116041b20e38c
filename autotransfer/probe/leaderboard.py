"""Scoring probed candidates into the leaderboard: the scorer set, one row per candidate, the
multi-source row, the combined ranking, and the final order and columns (see :func:`probe`)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from autotransfer.backbones import BackboneSpec
from autotransfer.errors import BackboneError
from autotransfer.probe.cache import FeatureCache
from autotransfer.probe.combine import CombinedScore, apply_combined
from autotransfer.probe.scorers import (LinearProbeFits, LinearProbeScorer, Scorer, ScoreResult, fit_linear_probe,
                                        get_scorer)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LEADERBOARD_COLUMNS = [
    "rank", "name", "handle", "input_size", "params", "feature_dim", "score", "std", "scorer",
    "feature_seconds", "score_seconds", "cached", "val_accuracy", "test_accuracy", "test_macro_f1",
]
_SCORE_FIELDS = ("score", "std", "val_accuracy", "test_accuracy", "test_macro_f1")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _split_scores(model: Any, x: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, float]:
    """``(accuracy, macro F1)`` of the fitted probe on one split, from one prediction pass; macro F1
    over all ``num_classes`` (a class never predicted counts as 0), as evaluate.py. NaN when empty."""
    if not len(y):
        return math.nan, math.nan
    pred = model.predict(x.astype(np.float64))
    return float(np.mean(pred == y)), float(f1_score(y, pred, average="macro", labels=list(range(num_classes)),
                                                       zero_division=0))


def _scores_key(feature_keys: list[str | None], splits: dict[str, np.ndarray], seed: int, scorers: list[Scorer]) -> str | None:
    """Key of a candidate's scores: same features, splits, seed and scorer settings -> same scores.

    Scorers are deterministic for a seed (the conformance contract), so a warm re-run can skip
    the scoring as well as the featurization.
    """
    if feature_keys[0] is None:
        return None
    import sklearn

    h = hashlib.sha256()
    h.update(json.dumps([feature_keys, seed, sklearn.__version__, np.__version__]).encode())
    for s in scorers:
        # A linear scorer's fits are a memo of its results, not a setting: not part of the key.
        settings = sorted((k, v) for k, v in vars(s).items() if not isinstance(v, LinearProbeFits))
        h.update(f"{type(s).__module__}.{type(s).__qualname__}:{s.name}:{settings!r}".encode())
    for name in SPLITS:
        h.update(name.encode() + np.ascontiguousarray(splits[name], dtype=np.int64).tobytes())
    return "scores-" + h.hexdigest()[:24]


def _with_se(r: ScoreResult | None) -> tuple[float, float]:
    """``(score, standard error)``: the fold spread over sqrt(folds) for CV scores, else 0."""
    if r is None:
        return math.nan, 0.0
    folds = r.details.get("folds") if isinstance(r.details, dict) else None
    return r.score, (r.std / math.sqrt(folds) if folds else 0.0)


def _score_all(scorers: list[Scorer], x: np.ndarray, y: np.ndarray, logits: np.ndarray | None, seed: int,
               spec_name: str, strict: str | None) -> dict[str, ScoreResult]:
    """``{scorer name: ScoreResult}``; a scorer needing absent logits is skipped (NaN).

    The scorer named ``strict`` (the ranking scorer) lets its errors propagate; others log them.
    """
    out: dict[str, ScoreResult] = {}
    for s in scorers:
        if s.needs_source_logits and logits is None:
            continue
        try:
            out[s.name] = s.score(x, y, source_logits=logits, seed=seed)
        except (ValueError, np.linalg.LinAlgError) as exc:
            if s.name == strict:
                raise
            log.warning("probe: scorer %s failed on %s: %s", s.name, spec_name, exc)
    return out


@dataclass(frozen=True)
class ScorerSet:
    """The probe's scorers. ``main`` ranks alone, or is the first component of ``combined``
    (which then ranks, after every candidate is scored); ``ranking`` scores the halving rungs."""

    main: Scorer
    extras: list[Scorer]
    ranking: list[Scorer]
    combined: CombinedScore | None
    name: str

    @classmethod
    def resolve(cls, scorer: str | Scorer | CombinedScore, extra_scorers: Sequence[str | Scorer]) -> "ScorerSet":
        """The scorers of :func:`probe`'s ``scorer`` and ``extra_scorers`` (each scorer once); the
        linear-probe scorers share one :class:`LinearProbeFits` of their own (one CV, two metrics)."""
        fits = LinearProbeFits()

        def get(name: str | Scorer) -> Scorer:
            s = get_scorer(name)
            return s.sharing(fits) if isinstance(s, LinearProbeScorer) else s

        combined: CombinedScore | None = None
        if isinstance(scorer, CombinedScore):
            combined = scorer
        elif isinstance(scorer, str) and scorer == "combined":
            combined = CombinedScore()
        if combined is not None:
            comps = [get(c) for c in combined.components]
            extras = comps[1:] + [s for s in (get(e) for e in extra_scorers) if s.name not in combined.components]
            return cls(comps[0], extras, comps, combined, combined.name)
        main = get(scorer)  # type: ignore[arg-type]
        extras = [s for s in (get(e) for e in extra_scorers) if s.name != main.name]
        return cls(main, extras, [main], None, main.name)

    @property
    def all(self) -> list[Scorer]:
        return [self.main, *self.extras]

    @property
    def main_ranks(self) -> bool:
        """Whether ``main``'s own score is the ranking ``score`` (no combination)."""
        return self.combined is None

    @property
    def wants_logits(self) -> bool:
        return any(s.needs_source_logits for s in self.all)

    def check_rankable(self, spec: BackboneSpec) -> None:
        """Raise BackboneError when the ranking scorer cannot score ``spec`` (no source logits)."""
        if self.main.needs_source_logits and not spec.classifier_handle and self.main_ranks:
            raise BackboneError(f"scorer {self.main.name!r} needs source logits; "
                                f"give {spec.name!r} a classifier_handle.")

    def score_ranking(self, x: np.ndarray, y: np.ndarray, logits: np.ndarray | None, seed: int,
                      name: str) -> dict[str, ScoreResult]:
        """The ranking scorers' results on one candidate's features (a halving rung)."""
        return _score_all(self.ranking, x, y, logits, seed, name, self.main.name if self.main_ranks else None)

    def rung_scores(self, per: dict[str, dict[str, ScoreResult]]) -> dict[str, tuple[float, float]]:
        """``{name: (score, standard error)}`` of a rung's candidates from their ranking results;
        a combination has no standard error (0)."""
        if self.combined is None:
            return {n: _with_se(per[n].get(self.main.name)) for n in per}
        frame = pd.DataFrame([{f"score_{k}": v.score for k, v in per[n].items()} for n in per], index=list(per))
        return {n: (v, 0.0) for n, v in dict(self.combined(frame)[0]).items()} if len(frame) else {}


def _score_row(row: dict[str, Any], split_feats: dict[str, np.ndarray], y: dict[str, np.ndarray],
               logits: np.ndarray | None, keys: list[str | None], split_idx: dict[str, np.ndarray], seed: int,
               scorers: list[Scorer], main: Scorer, main_ranks: bool, store: FeatureCache | None,
               num_classes: int) -> bool:
    """Fill ``row`` with every scorer's column, ``score``/``std`` (when ``main`` ranks) and the
    linear probe's val/test accuracy and test macro F1; reads/writes the scores record in the cache.
    Returns whether the row came from a cached record."""
    t0 = time.perf_counter()
    cols = [f"score_{s.name}" for s in scorers]
    fields = [*_SCORE_FIELDS, *cols]
    skey = _scores_key(keys, split_idx, seed, scorers) if store is not None else None
    record = store.load_record(skey) if skey is not None else None
    if record is not None and all(k in record for k in fields):
        row.update({k: (math.nan if v is None else v) for k, v in record.items()})
        row["score_seconds"] = time.perf_counter() - t0
        return True
    res = _score_all(scorers, split_feats["train"], y["train"], logits, seed, row["name"],
                     main.name if main_ranks else None)
    for s in scorers:
        if s.name in res:
            row[f"score_{s.name}"] = res[s.name].score
    if main_ranks:
        row.update(score=res[main.name].score, std=res[main.name].std)
    model = fit_linear_probe(split_feats["train"], y["train"], seed=seed)
    val_accuracy, _ = _split_scores(model, split_feats["val"], y["val"], num_classes)
    test_accuracy, test_macro_f1 = _split_scores(model, split_feats["test"], y["test"], num_classes)
    row.update(val_accuracy=val_accuracy, test_accuracy=test_accuracy, test_macro_f1=test_macro_f1,
               score_seconds=time.perf_counter() - t0)
    if skey is not None:
        store.save_record(skey, {k: (None if _isnan(row[k]) else float(row[k])) for k in fields})
    return False


class Leaderboard:
    """One row per candidate (created on first need, failures included) and the features of the
    candidates scored on full data; :meth:`table` is the ranked leaderboard."""

    def __init__(self, scorers: ScorerSet, *, halving: bool, labels: dict[str, np.ndarray],
                 split_idx: dict[str, np.ndarray], seed: int, store: FeatureCache | None, num_classes: int) -> None:
        self.scorers, self.halving = scorers, halving
        self.labels, self.split_idx, self.seed = labels, split_idx, seed
        self.store, self.num_classes = store, num_classes
        self.rows: dict[str, dict[str, Any]] = {}
        self.features: dict[str, dict[str, np.ndarray]] = {}
        self.errors: list[tuple[str, BaseException]] = []

    def new_row(self, spec: BackboneSpec) -> dict[str, Any]:
        """A row of NaN scores with status ok."""
        return {
            "name": spec.name, "handle": spec.handle, "input_size": spec.input_size, "params": math.nan,
            "feature_dim": math.nan, "score": math.nan, "std": math.nan, "scorer": self.scorers.name,
            "feature_seconds": math.nan, "score_seconds": math.nan, "cached": False,
            "val_accuracy": math.nan, "test_accuracy": math.nan, "test_macro_f1": math.nan,
            **{f"score_{s.name}": math.nan for s in self.scorers.all}, "status": "ok",
            **({"rung": 0, "halving_seconds": 0.0, "featurized_items": 0} if self.halving else {}),
        }

    def row(self, spec: BackboneSpec) -> dict[str, Any]:
        """``spec``'s row (new on first call)."""
        return self.rows.setdefault(spec.name, self.new_row(spec))

    def fail(self, row: dict[str, Any], exc: BaseException) -> None:
        """Mark ``row`` failed with ``exc``'s first line (and keep ``exc`` for :meth:`check_any_ok`)."""
        log.warning("probe: candidate %s failed: %s", row["name"], _first_line(exc))
        self.errors.append((row["name"], exc))
        row["status"] = f"failed: {_first_line(exc)}"

    def score(self, row: dict[str, Any], split_feats: dict[str, np.ndarray], logits: np.ndarray | None,
              keys: list[str | None]) -> bool:
        """Score a candidate's full-data features into ``row`` (see :func:`_score_row`) and keep the
        features; returns whether the scores came from the cache. Raises the ranking scorer's or
        the linear probe's ValueError/LinAlgError."""
        cached = _score_row(row, split_feats, self.labels, logits, keys, self.split_idx, self.seed, self.scorers.all,
                            self.scorers.main, self.scorers.main_ranks, self.store, self.num_classes)
        self.features[row["name"]] = split_feats
        return cached

    def check_any_ok(self, num_candidates: int) -> None:
        """Raise BackboneError (from the first error) when every candidate failed."""
        if len(self.errors) == num_candidates:
            reasons = "; ".join(f"{n}: {_first_line(e).rstrip('.')}" for n, e in self.errors)
            raise BackboneError(f"probe: every candidate failed ({reasons}). Fix or replace the search space's "
                                "candidates.") from self.errors[0][1]

    def table(self, candidates: Sequence[BackboneSpec], multi_source: int, full_rung: int,
              eliminated: list[str] | None) -> tuple[pd.DataFrame, dict[str, BackboneSpec]]:
        """The ranked leaderboard (with the multi-source row when asked) and the specs it added.

        ``eliminated``: halving's eliminated candidates, best first (None without halving);
        ``full_rung``: the ``rung`` of candidates scored on full data.
        """
        board = pd.DataFrame([self.rows[c.name] for c in candidates if c.name in self.rows])
        full_ok = (board["status"] == "ok") & board["name"].isin(self.features)  # scored on full data
        board = self._rank_by_combined(board)
        specs_added: dict[str, BackboneSpec] = {}
        if multi_source and multi_source >= 2:
            board, specs_added = self._add_multi_source(board, full_ok, multi_source, candidates, full_rung)
        return self._ordered(board, eliminated), specs_added

    def _rank_by_combined(self, b: pd.DataFrame) -> pd.DataFrame:
        """Add ``score_combined``; with a combined ranking scorer it is also ``score``/``std``.
        Needs every candidate's scores, hence after all are scored."""
        combo = self.scorers.combined or CombinedScore(tuple(s.name for s in self.scorers.all))
        ok = (b["status"] == "ok") & b["name"].isin(self.features)
        b["score_combined"] = apply_combined(b, combo, ok)
        if self.scorers.combined is not None:
            s, sd = combo(b[ok]) if ok.any() else (pd.Series(dtype=float), pd.Series(dtype=float))
            b["score"] = math.nan
            b["std"] = math.nan
            b.loc[ok, "score"] = s
            b.loc[ok, "std"] = sd
        return b

    def _add_multi_source(self, board: pd.DataFrame, full_ok: pd.Series, n: int, candidates: Sequence[BackboneSpec],
                          full_rung: int) -> tuple[pd.DataFrame, dict[str, BackboneSpec]]:
        ranked = board[full_ok].sort_values(["score", "val_accuracy"], ascending=[False, False], kind="mergesort")
        top = [name for name in ranked["name"].tolist() if name in self.features][:n]
        if len(top) < 2:
            log.warning("probe: multi_source=%d needs at least 2 scored candidates; got %d.", n, len(top))
            return board, {}
        by_name = {c.name: c for c in candidates}
        row, spec, split_feats = self._multi_source_row([by_name[name] for name in top], board, full_rung)
        self.features[spec.name] = split_feats
        board = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
        return self._rank_by_combined(board), {spec.name: spec}

    def _multi_source_row(self, srcs: list[BackboneSpec], board: pd.DataFrame,
                          full_rung: int) -> tuple[dict[str, Any], BackboneSpec, dict[str, np.ndarray]]:
        """The ``concat(a+b...)`` candidate: the sources' cached features side by side, scored alike.

        Source logits are not combined (LEEP stays NaN). Its spec keeps the first source's handle
        (for tools that read one handle) and lists the sources in ``extra``; ``input_size`` is the
        largest source's (the task model resizes per branch, see ``train.task``).
        """
        top = [s.name for s in srcs]
        name = f"concat({'+'.join(top)})"
        spec = BackboneSpec(name=name, handle=srcs[0].handle, input_size=max(s.input_size for s in srcs),
                            extra={"sources": list(top), "source_specs": [s.to_dict() for s in srcs]})
        row = self.new_row(spec)
        row["handle"] = "+".join(s.handle for s in srcs)
        split_feats = {s: np.concatenate([self.features[n][s] for n in top], axis=1) for s in SPLITS}
        src_rows = board.set_index("name").loc[top]
        row.update(params=float(src_rows["params"].sum()), feature_dim=int(split_feats["train"].shape[1]),
                   feature_seconds=0.0, cached=bool(src_rows["cached"].all()))
        if self.halving:
            row["rung"] = full_rung
        main = self.scorers.main
        if main.needs_source_logits:
            row["status"] = f"failed: scorer {main.name!r} needs source logits, which a concatenation has not"
        else:
            scorers = [s for s in self.scorers.all if not s.needs_source_logits]
            _score_row(row, split_feats, self.labels, None, [None], {}, self.seed, scorers, main,
                       self.scorers.main_ranks, None, self.num_classes)
        return row, spec, split_feats

    def _ordered(self, board: pd.DataFrame, eliminated: list[str] | None) -> pd.DataFrame:
        """Sort, number and order the columns (``LEADERBOARD_COLUMNS``, the extra ones, ``status``)."""
        # Failed rows last; ties on the score fall back to val accuracy, then to the candidates' order.
        # With halving, eliminated candidates (NaN score) follow, later rung and better rung score first.
        if eliminated is not None:
            elim = {n: k for k, n in enumerate(eliminated)}
            board["_elim"] = board["name"].map(elim).fillna(-1)
            board["_failed"] = board["status"] != "ok"
            board = board.sort_values(["_failed", "score", "val_accuracy", "_elim"],
                                      ascending=[True, False, False, True], na_position="last",
                                      kind="mergesort").drop(columns=["_elim", "_failed"])
        else:
            board = board.sort_values(["score", "val_accuracy"], ascending=[False, False],
                                      na_position="last", kind="mergesort")
        board = board.reset_index(drop=True)
        board.insert(0, "rank", np.arange(1, len(board) + 1))
        extra_cols = [c for c in board.columns if c not in LEADERBOARD_COLUMNS and c != "status"]
        return board[LEADERBOARD_COLUMNS + extra_cols + ["status"]]

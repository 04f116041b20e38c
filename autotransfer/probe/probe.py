"""The probe stage: score every candidate backbone on frozen (cached) features, best first.

Per candidate: features for every item in the splits (one pass, cached on disk), the main scorer
cross-validated on the TRAIN features (the selection criterion), extra scorers as extra columns,
and a linear probe fit on train and evaluated on val and test. The test column exists only for the
report's probe-vs-fine-tune comparison and never takes part in selection.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from autotransfer.backbones import BackboneSpec, HubBackbone, module_fingerprint, resolve_handle
from autotransfer.data import LabelledData, Splits, image_dataset
from autotransfer.errors import BackboneError, UserInputError
from autotransfer.probe.cache import FeatureCache, index_key
from autotransfer.probe.featurize import extract_features, extract_source_logits
from autotransfer.probe.scorers import Scorer, fit_linear_probe, get_scorer

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, str], None]
SPLITS = ("train", "val", "test")
LEADERBOARD_COLUMNS = [
    "rank", "name", "handle", "input_size", "params", "feature_dim", "score", "std", "scorer",
    "feature_seconds", "score_seconds", "cached", "val_accuracy", "test_accuracy",
]
FEATURES_LAYER = "final"
LOGITS_LAYER = "source_logits"


@dataclass
class ProbeResult:
    """The probe leaderboard plus every candidate's cached features per split."""

    leaderboard: pd.DataFrame
    features: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    scorer: str = "linear"

    def top(self, k: int) -> list[str]:
        """Names of the ``k`` best candidates that did not fail."""
        ok = self.leaderboard[self.leaderboard["status"] == "ok"]
        return ok["name"].head(k).tolist()

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``leaderboard.csv`` into ``run_dir``; returns its path."""
        path = Path(run_dir) / "leaderboard.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.leaderboard.to_csv(path, index=False)
        return path


def _resolve_cache(cache: FeatureCache | str | os.PathLike | bool | None, cache_dir: Any) -> FeatureCache | None:
    if cache_dir is not None:
        return FeatureCache(cache_dir)
    if cache is False:
        return None
    if cache is None or cache is True:
        return FeatureCache()
    return cache if isinstance(cache, FeatureCache) else FeatureCache(cache)


def _features_for(
    spec: BackboneSpec,
    handle: str,
    layer: str,
    data: LabelledData,
    data_fp: str,
    idx: np.ndarray,
    ikey: str,
    cache: FeatureCache | None,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
) -> tuple[np.ndarray, dict[str, Any], bool, str | None]:
    """Features (or source logits) of items ``idx``, from the cache when possible.

    Returns ``(array, meta, cached, cache_key)``.
    """
    key = None
    if cache is not None:
        fp = module_fingerprint(resolve_handle(handle))
        # An earlier-block candidate caches under its block's name, the final features under "final".
        key = cache.key(fp, data_fp, ikey, spec.input_size, spec.layer if layer != LOGITS_LAYER and spec.layer else layer)
        hit = cache.load(key, ["features"])
        if hit is not None:
            return hit["features"], cache.meta(key) or {}, True, key
    start = time.perf_counter()
    ds = image_dataset(data, idx, image_size=spec.input_size, batch_size=batch_size, with_labels=False)
    meta: dict[str, Any] = {"handle": handle, "input_size": spec.input_size, "layer": layer, "num_items": len(idx)}
    if layer == LOGITS_LAYER:
        feats = extract_source_logits(handle, ds, input_size=spec.input_size, output_key=spec.output_key,
                                      num_items=len(idx), on_batch=on_batch)
    else:
        backbone = HubBackbone.from_spec(spec)
        try:
            feats = extract_features(backbone, ds, num_items=len(idx), on_batch=on_batch)
            meta.update(params=backbone.num_params, feature_dim=backbone.output_dim)
        finally:
            # Free the module now so memory stays flat across candidates.
            del backbone
            gc.collect()
    meta["seconds"] = time.perf_counter() - start
    if cache is not None and key is not None:
        cache.save(key, {"features": feats}, meta)
    return feats, meta, False, key


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
        h.update(f"{type(s).__module__}.{type(s).__qualname__}:{s.name}:{sorted(vars(s).items())!r}".encode())
    for name in SPLITS:
        h.update(name.encode() + np.ascontiguousarray(splits[name], dtype=np.int64).tobytes())
    return "scores-" + h.hexdigest()[:24]


_SCORE_FIELDS = ("score", "std", "val_accuracy", "test_accuracy")


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x.astype(np.float64)) == y)) if len(y) else math.nan


def probe(
    candidates: Sequence[BackboneSpec],
    data: LabelledData,
    splits: Splits,
    *,
    scorer: str | Scorer = "linear",
    extra_scorers: Sequence[str | Scorer] = ("knn", "logme"),
    cache: FeatureCache | str | os.PathLike | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ProbeResult:
    """Score every candidate on frozen features; returns the leaderboard (best first).

    Args:
        candidates: backbones to score.
        data, splits: the dataset and its index splits; scorers see TRAIN features only.
        scorer: the selection scorer (name or instance); ``score``/``std`` columns.
        extra_scorers: more scorers, one ``score_<name>`` column each (not used for ranking).
        cache: a FeatureCache, a cache directory, None/True for the default directory
            (``$AUTOTRANSFER_CACHE_DIR`` or the user cache dir), or False for no caching.
        cache_dir: shorthand for ``cache=FeatureCache(cache_dir)``.
        batch_size: featurization batch size.
        seed: CV fold seed.
        progress: ``progress(stage, done, total, message)`` callback.

    A candidate that cannot be loaded or run becomes a row with status ``"failed: ..."`` and NaN
    scores; if every candidate fails, the first error is raised.
    """
    if not candidates:
        raise UserInputError("probe: no candidates given. Add at least one backbone to the search space.")
    main = get_scorer(scorer)
    extras = [s for s in (get_scorer(e) for e in extra_scorers) if s.name != main.name]
    store = _resolve_cache(cache, cache_dir)
    labels_all = np.asarray(data.labels, dtype=np.int64)
    split_idx = {s: np.asarray(getattr(splits, s), dtype=np.int64) for s in SPLITS}
    idx = np.unique(np.concatenate(list(split_idx.values())))
    pos = {s: np.searchsorted(idx, split_idx[s]) for s in SPLITS}
    ikey = index_key(idx, len(data))
    y = {s: labels_all[split_idx[s]] for s in SPLITS}
    data_fp = data.fingerprint() if store is not None else ""
    total = len(candidates)

    rows: list[dict[str, Any]] = []
    features: dict[str, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []
    for i, spec in enumerate(candidates):
        def on_batch(done: int, _name: str = spec.name, _i: int = i) -> None:
            if progress is not None:
                progress("probe", _i, total, f"{_name}: featurizing {done}/{len(idx)}")

        if progress is not None:
            progress("probe", i, total, f"{spec.name}: features")
        row: dict[str, Any] = {
            "name": spec.name, "handle": spec.handle, "input_size": spec.input_size, "params": math.nan,
            "feature_dim": math.nan, "score": math.nan, "std": math.nan, "scorer": main.name,
            "feature_seconds": math.nan, "score_seconds": math.nan, "cached": False,
            "val_accuracy": math.nan, "test_accuracy": math.nan,
            **{f"score_{s.name}": math.nan for s in extras}, "status": "ok",
        }
        try:
            if main.needs_source_logits and not spec.classifier_handle:
                raise BackboneError(f"scorer {main.name!r} needs source logits; give {spec.name!r} a classifier_handle.")
            t0 = time.perf_counter()
            feats, meta, cached, fkey = _features_for(spec, spec.handle, FEATURES_LAYER, data, data_fp, idx, ikey,
                                                store, batch_size, on_batch)
            logits, lkey = None, None
            if any(s.needs_source_logits for s in [main, *extras]) and spec.classifier_handle:
                logits_all, _, cached_l, lkey = _features_for(spec, spec.classifier_handle, LOGITS_LAYER, data, data_fp,
                                                        idx, ikey, store, batch_size, on_batch)
                logits = np.asarray(logits_all)[pos["train"]]
                cached = cached and cached_l
            row.update(feature_seconds=time.perf_counter() - t0, cached=cached,
                       params=meta.get("params", math.nan), feature_dim=int(feats.shape[1]))
        except UserInputError:
            raise  # bad data fails every candidate: report it once, now
        except (BackboneError, tf.errors.OpError, ValueError, OSError) as exc:
            log.warning("probe: candidate %s failed: %s", spec.name, exc)
            errors.append(exc)
            row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            rows.append(row)
            continue

        split_feats = {s: np.asarray(feats[pos[s]]) for s in SPLITS}
        features[spec.name] = split_feats
        if progress is not None:
            progress("probe", i, total, f"{spec.name}: scoring")
        t0 = time.perf_counter()
        skey = _scores_key([fkey, lkey], split_idx, seed, [main, *extras]) if store is not None else None
        record = store.load_record(skey) if skey is not None else None
        if record is not None:
            row.update({k: (math.nan if v is None else v) for k, v in record.items()})
            row["score_seconds"] = time.perf_counter() - t0
            rows.append(row)
            if progress is not None:
                progress("probe", i + 1, total, f"{spec.name}: {main.name} {row['score']:.3f} (cached)")
            continue
        result = main.score(split_feats["train"], y["train"], source_logits=logits, seed=seed)
        row.update(score=result.score, std=result.std)
        for extra in extras:
            try:
                if extra.needs_source_logits and logits is None:
                    continue  # no classifier_handle: the column stays NaN
                row[f"score_{extra.name}"] = extra.score(split_feats["train"], y["train"], source_logits=logits,
                                                         seed=seed).score
            except (ValueError, np.linalg.LinAlgError) as exc:
                log.warning("probe: scorer %s failed on %s: %s", extra.name, spec.name, exc)
        model = fit_linear_probe(split_feats["train"], y["train"], seed=seed)
        row.update(val_accuracy=_accuracy(model, split_feats["val"], y["val"]),
                   test_accuracy=_accuracy(model, split_feats["test"], y["test"]),
                   score_seconds=time.perf_counter() - t0)
        if skey is not None:
            fields = [*_SCORE_FIELDS, *(f"score_{e.name}" for e in extras)]
            store.save_record(skey, {k: (None if _isnan(row[k]) else float(row[k])) for k in fields})
        rows.append(row)
        if progress is not None:
            progress("probe", i + 1, total, f"{spec.name}: {main.name} {result.score:.3f}")

    if len(errors) == len(candidates):
        raise BackboneError(f"probe: every candidate failed; first error: {errors[0]}") from errors[0]
    board = pd.DataFrame(rows)
    # Failed rows last; ties on the score fall back to val accuracy, then to the candidates' order.
    board = board.sort_values(["score", "val_accuracy"], ascending=[False, False],
                              na_position="last", kind="mergesort").reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    extra_cols = [c for c in board.columns if c not in LEADERBOARD_COLUMNS and c != "status"]
    board = board[LEADERBOARD_COLUMNS + extra_cols + ["status"]]
    return ProbeResult(leaderboard=board, features=features, labels=y, scorer=main.name)

"""Baselines a practitioner tries before transfer learning, scored on the run's own splits.

Text: TF-IDF (word 1-2-grams, sublinear term frequency) + logistic regression with its C chosen by
cross-validation on train, the usual first model for text classification; scored on val and
(when the splits have one) test, beside the probes and the exported model.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

#: The name the leaderboard, test_metrics.json and the report show.
TFIDF_NAME = "tfidf_logreg"


def tfidf_logreg(data: Any, splits: Any, *, seed: int = 0) -> dict[str, Any]:
    """Fit TF-IDF + ``LogisticRegressionCV`` on the train texts; accuracy and macro-F1 on val and test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    texts = np.asarray(data.items, dtype=object)
    y = np.asarray(data.labels, dtype=np.int64)
    folds = int(min(5, np.bincount(y[splits.train]).min()))
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                          LogisticRegressionCV(Cs=10, cv=max(2, folds), max_iter=2000, random_state=seed,
                                               l1_ratios=(0.0,), use_legacy_attributes=False, scoring="accuracy"))
    model.fit(texts[splits.train], y[splits.train])
    out: dict[str, Any] = {"name": TFIDF_NAME}
    for part in ("val", "test"):
        idx = getattr(splits, part)
        if len(idx) == 0:
            out[f"{part}_accuracy"] = out[f"{part}_macro_f1"] = None
            continue
        pred = model.predict(texts[idx])
        out[f"{part}_accuracy"] = float(accuracy_score(y[idx], pred))
        out[f"{part}_macro_f1"] = float(f1_score(y[idx], pred, average="macro",
                                                labels=np.arange(data.num_classes), zero_division=0))
    if splits.folds is not None:  # cross-validation: scored out of fold, as the run's estimate is
        out.update(_out_of_fold(model, texts, y, splits, data.num_classes))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _out_of_fold(model: Any, texts: np.ndarray, y: np.ndarray, splits: Any, num_classes: int) -> dict[str, float]:
    """``cv_accuracy`` and ``cv_macro_f1`` of ``model`` refit on each fold's complement."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, f1_score

    lab, fold_ids = splits.labelled, splits.fold_ids()
    pred = np.zeros(len(lab), dtype=np.int64)
    for j in range(len(splits.folds)):
        fit = fold_ids != j
        pred[~fit] = clone(model).fit(texts[lab[fit]], y[lab[fit]]).predict(texts[lab[~fit]])
    return {"cv_accuracy": float(accuracy_score(y[lab], pred)),
            "cv_macro_f1": float(f1_score(y[lab], pred, average="macro", labels=np.arange(num_classes),
                                          zero_division=0))}


def baselines_for(data: Any, splits: Any, *, seed: int = 0) -> list[dict[str, Any]]:
    """The baselines that apply to ``data``'s modality (none for images: the probes are theirs)."""
    return [tfidf_logreg(data, splits, seed=seed)] if data.modality == "text" else []


__all__ = ["TFIDF_NAME", "baselines_for", "tfidf_logreg"]

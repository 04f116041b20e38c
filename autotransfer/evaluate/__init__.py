"""Evaluate stage: metrics and the cross-validated estimate (``metrics``), the baselines a
practitioner tries first (``baselines``) and the fine-tune-vs-probe verdict (``verdicts``).

The public names load their module on first use: the report reads verdicts without loading the
training stack that ``metrics`` needs.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    **dict.fromkeys(("CV_NOTE", "NO_TEST_NOTE", "bootstrap_interval", "cv_estimate", "error_examples",
                     "evaluate_model", "evaluation_split", "metrics_from_probs", "model_inputs", "predict_proba"),
                    "metrics"),
    **dict.fromkeys(("verdict", "loss_reasons"), "verdicts"),
    **dict.fromkeys(("TFIDF_NAME", "baselines_for", "tfidf_logreg"), "baselines"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = sorted(_HOME)

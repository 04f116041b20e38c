"""Probe stage: score candidate backbones quickly on frozen, cached features."""
from autotransfer.probe.cache import ENV_VAR as CACHE_ENV_VAR
from autotransfer.probe.cache import FeatureCache, default_cache_dir, index_key
from autotransfer.probe.conformance import check_scorer
from autotransfer.probe.featurize import extract_features, extract_source_logits, forward_fn
from autotransfer.probe.probe import LEADERBOARD_COLUMNS, ProbeResult, probe
from autotransfer.probe.scorers import (
    KNNScorer,
    LinearProbeScorer,
    LogMEScorer,
    Scorer,
    ScoreResult,
    available_scorers,
    cv_folds,
    fit_linear_probe,
    get_scorer,
    linear_probe_model,
    register_scorer,
)

__all__ = [
    "CACHE_ENV_VAR",
    "FeatureCache",
    "KNNScorer",
    "LEADERBOARD_COLUMNS",
    "LinearProbeScorer",
    "LogMEScorer",
    "ProbeResult",
    "ScoreResult",
    "Scorer",
    "available_scorers",
    "check_scorer",
    "cv_folds",
    "default_cache_dir",
    "extract_features",
    "extract_source_logits",
    "fit_linear_probe",
    "forward_fn",
    "get_scorer",
    "index_key",
    "linear_probe_model",
    "probe",
    "register_scorer",
]

"""Probe stage: score candidate backbones quickly on frozen, cached features."""
from autotransfer.probe.cache import ENV_VAR as CACHE_ENV_VAR
from autotransfer.probe.cache import FeatureCache, default_cache_dir, index_key
from autotransfer.probe.combine import CombinedScore
from autotransfer.probe.featurize import extract_features, extract_source_logits, forward_fn
from autotransfer.probe.halving import HalvingResult, successive_halving
from autotransfer.probe.probe import DEFAULT_EXTRA_SCORERS, LEADERBOARD_COLUMNS, ProbeResult, probe
from autotransfer.probe.scorers import (
    KNNScorer,
    LEEPScorer,
    LinearProbeFits,
    LinearProbeLLScorer,
    LinearProbeScorer,
    LogMEScorer,
    NLEEPScorer,
    Scorer,
    ScoreResult,
    available_scorers,
    cv_folds,
    fit_linear_probe,
    get_scorer,
    linear_probe_model,
    ranking_scorers,
    register_scorer,
)

__all__ = [
    "CACHE_ENV_VAR",
    "CombinedScore",
    "DEFAULT_EXTRA_SCORERS",
    "HalvingResult",
    "LEEPScorer",
    "NLEEPScorer",
    "successive_halving",
    "FeatureCache",
    "KNNScorer",
    "LEADERBOARD_COLUMNS",
    "LinearProbeFits",
    "LinearProbeLLScorer",
    "LinearProbeScorer",
    "LogMEScorer",
    "ProbeResult",
    "ScoreResult",
    "Scorer",
    "available_scorers",
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
    "ranking_scorers",
    "register_scorer",
]

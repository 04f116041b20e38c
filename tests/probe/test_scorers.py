from __future__ import annotations

import numpy as np
import pytest

from autotransfer.errors import UserInputError
from autotransfer.testing.conformance import check_scorer
from autotransfer.probe import (
    LinearProbeFits,
    LogMEScorer,
    Scorer,
    ScoreResult,
    available_scorers,
    cv_folds,
    get_scorer,
    register_scorer,
)
from autotransfer.probe import scorers as scorers_mod


@pytest.mark.parametrize("name", ["linear_ll", "linear", "knn", "logme"])
def test_builtin_scorers_pass_conformance(name):
    check_scorer(get_scorer(name))


def test_registry():
    assert {"linear_ll", "linear", "knn", "logme"} <= set(available_scorers())
    with pytest.raises(UserInputError, match="Unknown scorer 'nope'"):
        get_scorer("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("linear", scorers_mod.LinearProbeScorer)


def test_a_broken_scorer_fails_conformance():
    class Constant(Scorer):
        name = "constant"

        def score(self, features, labels, *, source_logits=None, seed=0):
            return ScoreResult(0.5)

    with pytest.raises(AssertionError, match="noise"):
        check_scorer(Constant())


def test_source_logits_reach_a_scorer_that_needs_them():
    class Leepish(Scorer):
        name = "leepish"
        needs_source_logits = True

        def score(self, features, labels, *, source_logits=None, seed=0):
            assert source_logits is not None
            return ScoreResult(float(np.mean(source_logits.argmax(1) == labels % source_logits.shape[1])))

    check_scorer(Leepish())


def test_cv_folds_use_smallest_class_count():
    y = np.array([0] * 10 + [1] * 3)
    assert len(cv_folds(y)) == 3
    assert len(cv_folds(np.array([0] * 10 + [1] * 2))) == 2
    assert len(cv_folds(np.array([0] * 30 + [1] * 30))) == 5
    assert len(cv_folds(np.array([0] * 10 + [1]))) == 2  # singleton class: still 2 folds


def _informative(n_per_class=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    signal = np.eye(classes)[y] * 3.0 + rng.normal(0, 0.5, size=(len(y), classes))
    return rng, y, signal


@pytest.mark.parametrize("dim_noise", [5, 200])  # N > D (gram route) and N < D (SVD route)
def test_logme_prefers_informative_features(dim_noise):
    rng, y, signal = _informative()
    noise = rng.normal(size=(len(y), dim_noise))
    informative = np.hstack([signal, noise])
    uninformative = rng.normal(size=informative.shape)
    s = LogMEScorer()
    good, bad = s.score(informative, y).score, s.score(uninformative, y).score
    assert good > bad
    # More noise dimensions on top of the same signal lower the evidence (Occam factor).
    assert s.score(np.hstack([signal, noise[:, :2]]), y).score > s.score(informative, y).score


def _direct_evidence(f, y, alpha, beta):
    """log p(y | F, alpha, beta) / N computed the slow way, straight from the paper."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    res = ((f @ m - y) ** 2).sum()
    ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * logdet - beta / 2 * res
          - alpha / 2 * (m @ m) - n / 2 * np.log(2 * np.pi))
    return ev / n


@pytest.mark.parametrize("shape", [(60, 6), (20, 40)])
def test_logme_matches_the_paper_and_maximises_evidence(shape):
    rng = np.random.default_rng(1)
    f = rng.normal(size=shape)
    y = (f[:, 0] + 0.3 * rng.normal(size=shape[0]) > 0).astype(int)
    # Run the fixed point to convergence, without the reference code's 1e-5 denominator guard.
    s = LogMEScorer(max_iter=500, tol=1e-12, epsilon=1e-14)
    result = s.score(f, y)
    for c in (0, 1):
        target = (y == c).astype(float)
        alpha, beta = result.details["alpha"][c], result.details["beta"][c]
        ev = _direct_evidence(f, target, alpha, beta)
        assert result.details["per_class"][c] == pytest.approx(ev, rel=1e-6, abs=1e-8)
        # a maximum: nudging alpha or beta does not increase the evidence
        for da, db in ((1.2, 1), (1 / 1.2, 1), (1, 1.2), (1, 1 / 1.2)):
            assert _direct_evidence(f, target, alpha * da, beta * db) <= ev + 1e-9


def test_scorers_are_seed_deterministic_and_seed_sensitive():
    rng, y, signal = _informative(seed=3)
    x = signal + rng.normal(0, 2.0, size=signal.shape)
    lin = get_scorer("linear")
    assert lin.score(x, y, seed=1).score == lin.score(x, y, seed=1).score
    r = lin.score(x, y, seed=1)
    assert r.details["folds"] == 5 and 0.0 <= r.score <= 1.0 and r.std >= 0.0


def test_linear_ll_is_the_held_out_log_likelihood_of_the_linear_probes_cv_fits():
    from sklearn.metrics import log_loss

    from autotransfer.probe import linear_probe_model

    rng, y, signal = _informative(seed=4)
    x = signal + rng.normal(0, 2.0, size=signal.shape)
    fits = LinearProbeFits()
    ll = get_scorer("linear_ll").sharing(fits).score(x, y, seed=2)
    assert len(fits) == 1
    acc = get_scorer("linear").sharing(fits).score(x, y, seed=2)
    assert len(fits) == 1  # the accuracy came from the same fits
    want_ll, want_acc = [], []
    for train, test in cv_folds(y, 2):
        model = linear_probe_model(seed=2).fit(x[train], y[train])
        want_ll.append(-log_loss(y[test], model.predict_proba(x[test]), labels=model.classes_))
        want_acc.append(float(np.mean(model.predict(x[test]) == y[test])))
    assert ll.score == pytest.approx(np.mean(want_ll), rel=1e-6) and ll.score < 0
    assert acc.score == pytest.approx(np.mean(want_acc)) and ll.details["folds"] == acc.details["folds"] == 5
    # Less informative features: lower likelihood.
    worse = get_scorer("linear_ll").score(signal * 0.2 + rng.normal(0, 2.0, size=signal.shape), y, seed=2)
    assert worse.score < ll.score


def test_a_probes_linear_scorers_share_one_set_of_fits_of_their_own():
    from autotransfer.probe.leaderboard import ScorerSet

    mine = get_scorer("linear")
    scorers = ScorerSet.resolve("linear_ll", [mine, "knn"])
    assert scorers.main.fits is scorers.extras[0].fits and len(scorers.main.fits) == 0
    assert mine.fits is not scorers.main.fits  # the scorer passed in is not changed
    assert ScorerSet.resolve("linear_ll", ["linear"]).main.fits is not scorers.main.fits  # one per probe

"""Transferability scorers: how well do frozen features of one backbone fit the target labels?

A scorer maps ``(features [N, D], labels [N])`` (the TRAIN split only) to a :class:`ScoreResult`;
higher is better. Scorers that need the backbone's source-task predictions (LEEP-style) set
``needs_source_logits`` and receive ``source_logits [N, C]``.

New scorers plug in with :func:`register_scorer`; the probe stage looks them up by name.
"""
from __future__ import annotations

import copy
import hashlib
import warnings
from collections import OrderedDict
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from autotransfer.errors import UserInputError


@dataclass
class ScoreResult:
    """A transferability score (higher is better), its spread (e.g. across CV folds) and extras."""

    score: float
    std: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class Scorer(ABC):
    """Interface of a transferability scorer.

    ``score`` must be deterministic for a given ``seed`` and work with as few as 2 classes and
    2 samples in a class.
    """

    name: str = ""
    needs_source_logits: bool = False

    @abstractmethod
    def score(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        source_logits: np.ndarray | None = None,
        seed: int = 0,
    ) -> ScoreResult:
        """Score ``features [N, D]`` against integer ``labels [N]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ------------------------------------------------------------------------------------ helpers


# Below this many feature values one BLAS thread is faster: tiny matrix ops pay more in thread
# hand-off than they gain, and under CPU contention (TF threads, other jobs) multi-threaded OpenBLAS
# on a 60x12 logistic regression measured 20-50x slower than single-threaded.
_SINGLE_THREAD_BELOW = 1_000_000


def blas_threads(x: np.ndarray) -> threadpool_limits:
    """Context limiting BLAS/OpenMP to one thread for small ``x`` (no limit for large ones)."""
    return threadpool_limits(1 if x.size < _SINGLE_THREAD_BELOW else None)


def _check_inputs(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be [N, D] with one label per row; got {x.shape} and {y.shape}.")
    if len(np.unique(y)) < 2:
        raise ValueError("scoring needs at least 2 classes in the labels.")
    return x, y


def cv_folds(labels: np.ndarray, seed: int = 0, max_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k folds with k = min(max_folds, smallest class count), at least 2."""
    y = np.asarray(labels)
    smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
    k = max(2, min(max_folds, smallest))
    with warnings.catch_warnings():
        # A singleton class (k forced to 2) makes sklearn warn; such a fold just misses the class.
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _cv_accuracy(make_model: Callable[[], Any], x: np.ndarray, y: np.ndarray, seed: int) -> ScoreResult:
    accs = []
    with blas_threads(x), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in cv_folds(y, seed):
            model = make_model()
            model.fit(x[train], y[train])
            accs.append(float(np.mean(model.predict(x[test]) == y[test])))
    return ScoreResult(float(np.mean(accs)), float(np.std(accs)), {"folds": len(accs), "fold_scores": accs})


class LinearProbeFits:
    """Held-out probabilities of the last few linear-probe CVs (an LRU of ``size``): ``linear`` and
    ``linear_ll`` score the same fits (one CV, two metrics) when both run on the same features and
    share one of these. Keyed by a digest of the features and labels with the seed, C, max_iter and
    max_folds. The probe makes one per call (:class:`~autotransfer.probe.leaderboard.ScorerSet`)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._folds: OrderedDict[str, list[tuple[np.ndarray, np.ndarray]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._folds)

    def probas(self, x: np.ndarray, y: np.ndarray, seed: int, C: float, max_iter: int,
               max_folds: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """``(classes, [(test_idx, proba [n_test, len(classes)]), ...])`` per CV fold; a class absent
        from a fold's training part gets probability 0 there."""
        h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        h.update(np.ascontiguousarray(y).tobytes())
        key = f"{h.hexdigest()}:{seed}:{C}:{max_iter}:{max_folds}"
        classes = np.unique(y)
        if key in self._folds:
            self._folds.move_to_end(key)
            return classes, self._folds[key]
        folds = _cv_linear_probas(x, y, classes, seed, C, max_iter, max_folds)
        self._folds[key] = folds
        while len(self._folds) > self.size:
            self._folds.popitem(last=False)
        return classes, folds


def _cv_linear_probas(x: np.ndarray, y: np.ndarray, classes: np.ndarray, seed: int, C: float, max_iter: int,
                      max_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    folds = []
    with blas_threads(x), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in cv_folds(y, seed, max_folds):
            model = linear_probe_model(C, max_iter, seed)
            model.fit(x[train], y[train])
            proba = np.zeros((len(test), len(classes)))
            proba[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(x[test])
            folds.append((test, proba))
    return folds


def linear_probe_model(C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> Pipeline:
    """StandardScaler + multinomial (lbfgs) logistic regression: the probe's linear head."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed),
    )


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, *, C: float = 1.0, seed: int = 0) -> Pipeline:
    """Fit :func:`linear_probe_model` on all of ``features`` (e.g. the train split)."""
    model = linear_probe_model(C=C, seed=seed)
    with blas_threads(np.asarray(features)), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(np.asarray(features, dtype=np.float64), np.asarray(labels))
    return model


# ------------------------------------------------------------------------------------ scorers


class LinearProbeScorer(Scorer):
    """Cross-validated accuracy of a linear probe (StandardScaler + multinomial logistic regression).

    ``C`` is fixed (1.0 by default), not tuned: a C grid would multiply the scoring cost by its
    length, and whether it changes the ranking has not been measured yet.
    """

    name = "linear"
    metric = "accuracy"

    def __init__(self, C: float = 1.0, max_iter: int = 1000, max_folds: int = 5,
                 fits: LinearProbeFits | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.max_folds = max_folds
        #: The CV fits this scorer reads and adds to: its own, or one shared with the other linear scorers.
        self.fits = fits if fits is not None else LinearProbeFits()

    def sharing(self, fits: LinearProbeFits) -> "LinearProbeScorer":
        """A copy of this scorer that reads and adds to ``fits``."""
        twin = copy.copy(self)
        twin.fits = fits
        return twin

    def score(self, features, labels, *, source_logits=None, seed=0) -> ScoreResult:
        x, y = _check_inputs(features, labels)
        classes, folds = self.fits.probas(x.astype(np.float64), y, seed, self.C, self.max_iter, self.max_folds)
        vals = [self._metric(classes, proba, y[test]) for test, proba in folds]
        return ScoreResult(float(np.mean(vals)), float(np.std(vals)),
                           {"folds": len(vals), "fold_scores": vals, "metric": self.metric})

    @staticmethod
    def _metric(classes: np.ndarray, proba: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(classes[np.argmax(proba, axis=1)] == y))


class LinearProbeLLScorer(LinearProbeScorer):
    """Cross-validated log-likelihood (mean log p(true class), <= 0) of the same linear probe.

    A proper scoring rule: it credits how confident the held-out predictions are, not only whether
    the arg-max is right, so it varies less across folds than accuracy at small N and separates
    near-tied candidates (benchmarks/selection.py; the numbers are in the README). The default
    ranking scorer; ``linear`` (CV accuracy of the same fits) stays beside it.
    """

    name = "linear_ll"
    metric = "log_likelihood"

    @staticmethod
    def _metric(classes: np.ndarray, proba: np.ndarray, y: np.ndarray) -> float:
        p = proba[np.arange(len(y)), np.searchsorted(classes, y)]
        return float(np.mean(np.log(np.clip(p, 1e-12, None))))


class KNNScorer(Scorer):
    """Cross-validated k-nearest-neighbour accuracy with cosine distance (no training at all)."""

    name = "knn"

    def __init__(self, n_neighbors: int = 5) -> None:
        self.n_neighbors = n_neighbors

    def score(self, features, labels, *, source_logits=None, seed=0) -> ScoreResult:
        x, y = _check_inputs(features, labels)
        x = x.astype(np.float64)
        folds = cv_folds(y, seed)
        smallest_train = min(len(tr) for tr, _ in folds)
        k = max(1, min(self.n_neighbors, smallest_train))
        result = _cv_accuracy(
            lambda: KNeighborsClassifier(k, metric="cosine", algorithm="brute"), x, y, seed
        )
        result.details["n_neighbors"] = k
        return result


class LogMEScorer(Scorer):
    """LogME (You et al., ICML 2021): mean per-class log marginal evidence of a Bayesian linear model.

    For each class c the one-hot target ``y_c`` is modelled as ``y_c = F w + noise`` with prior
    ``w ~ N(0, 1/alpha I)`` and noise precision ``beta``. alpha and beta are set by the paper's
    fixed-point iteration on the SVD of F (``sigma_i`` = squared singular values, ``z = U^T y``):

        gamma = sum(beta sigma / (alpha + beta sigma)),  alpha = gamma / m^T m,
        beta = (N - gamma) / ||F m - y||^2,

    and the score is ``L / N`` averaged over classes, where
    ``L = D/2 log alpha + N/2 log beta - 1/2 log|alpha I + beta F^T F| - beta/2 ||F m - y||^2
    - alpha/2 m^T m - N/2 log 2 pi``. ``log|A|`` counts the ``D - rank`` zero singular values as
    ``log alpha`` each (the reference code omits them, which only matters when D > N).
    Deterministic, no CV: ``std`` is 0. Features are used raw (float64), as in the paper.
    """

    name = "logme"

    def __init__(self, max_iter: int = 11, tol: float = 1e-3, epsilon: float = 1e-5) -> None:
        # Defaults are the reference implementation's: 11 iterations, relative tolerance 1e-3 on
        # alpha/beta, and 1e-5 added to both denominators (slightly biases a near-zero m^T m).
        self.max_iter = max_iter
        self.tol = tol
        self.epsilon = epsilon

    @staticmethod
    def _spectrum(f: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """Squared singular values ``sigma [k]`` and a map ``y -> U^T y`` for the nonzero ones."""
        n, d = f.shape
        if n > d:
            # Gram route: eigh of the D x D matrix is much cheaper than an SVD of the N x D one.
            evals, v = np.linalg.eigh(f.T @ f)
            keep = evals > max(evals.max(), 0.0) * 1e-10
            sigma, v = evals[keep], v[:, keep]
            s = np.sqrt(sigma)
            return sigma, lambda y: (v.T @ (f.T @ y)) / s[:, None]
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        keep = s**2 > max((s**2).max(), 0.0) * 1e-10
        u, sigma = u[:, keep], s[keep] ** 2
        return sigma, lambda y: u.T @ y

    def evidence(self, sigma: np.ndarray, z: np.ndarray, y_sq: float, n: int, d: int) -> tuple[float, float, float]:
        """Maximised per-sample log evidence for one target; returns ``(evidence, alpha, beta)``."""
        z2 = z**2
        res_outside = max(y_sq - float(z2.sum()), 0.0)  # residual orthogonal to the column space
        alpha, beta = 1.0, 1.0
        for _ in range(self.max_iter):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            m2 = float((sigma * z2 / (t + sigma) ** 2).sum())
            res2 = float((z2 / (1.0 + sigma / t) ** 2).sum()) + res_outside
            alpha = gamma / (m2 + self.epsilon)
            beta = (n - gamma) / (res2 + self.epsilon)
            if abs(alpha / beta - t) / t <= self.tol:
                break
        t = alpha / beta
        m2 = float((sigma * z2 / (t + sigma) ** 2).sum())
        res2 = float((z2 / (1.0 + sigma / t) ** 2).sum()) + res_outside
        logdet = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
        ev = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * logdet
            - beta / 2.0 * res2
            - alpha / 2.0 * m2
            - n / 2.0 * np.log(2 * np.pi)
        )
        return float(ev / n), float(alpha), float(beta)

    def score(self, features, labels, *, source_logits=None, seed=0) -> ScoreResult:
        x, y = _check_inputs(features, labels)
        f = x.astype(np.float64)
        n, d = f.shape
        classes = np.unique(y)
        targets = (y[:, None] == classes[None, :]).astype(np.float64)  # one-hot [N, K]
        with blas_threads(f):
            sigma, project = self._spectrum(f)
            zs = project(targets)  # [k, K]
        evs, alphas, betas = [], [], []
        for c in range(len(classes)):
            ev, a, b = self.evidence(sigma, zs[:, c], float(targets[:, c].sum()), n, d)
            evs.append(ev)
            alphas.append(a)
            betas.append(b)
        return ScoreResult(float(np.mean(evs)), 0.0, {"per_class": evs, "alpha": alphas, "beta": betas})


def _leep_from_posteriors(theta: np.ndarray, y: np.ndarray) -> ScoreResult:
    """LEEP given the "dummy source label" posteriors ``theta [N, Z]`` (rows sum to 1).

    Empirical joint ``P(y, z) = 1/N sum_{i: y_i = y} theta_iz``, conditional
    ``P(y | z) = P(y, z) / P(z)`` and score ``1/N sum_i log sum_z P(y_i | z) theta_iz``.
    """
    n = len(y)
    classes, yi = np.unique(y, return_inverse=True)
    onehot = np.zeros((n, len(classes)))
    onehot[np.arange(n), yi] = 1.0
    joint = onehot.T @ theta / n  # [K, Z]
    pz = joint.sum(axis=0, keepdims=True)
    cond = joint / np.maximum(pz, 1e-300)  # P(y|z); a z with no mass gets 0 everywhere
    eep = np.einsum("nz,nz->n", theta, cond[yi])  # sum_z P(y_i|z) theta_iz
    logs = np.log(np.maximum(eep, 1e-300))
    return ScoreResult(float(np.mean(logs)), 0.0, {"per_class": [float(logs[yi == c].mean()) for c in range(len(classes))]})


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class LEEPScorer(Scorer):
    """LEEP (Nguyen et al., ICML 2020): log expected empirical prediction of the source head.

    Needs the source model's logits on the target TRAIN items (``source_logits [N, Z]``, from the
    candidate's ``classifier_handle``); ``theta = softmax(logits)`` is read as P(z | x) over the Z
    source classes. Score in (-inf, 0], higher is better; deterministic, no CV (``std`` 0).
    Ignores ``features``.
    """

    name = "leep"
    needs_source_logits = True

    def score(self, features, labels, *, source_logits=None, seed=0) -> ScoreResult:
        _, y = _check_inputs(features, labels)
        if source_logits is None:
            raise ValueError("LEEP needs source_logits (give the candidate a classifier_handle).")
        logits = np.asarray(source_logits, dtype=np.float64)
        if logits.ndim != 2 or len(logits) != len(y):
            raise ValueError(f"source_logits must be [N, Z] with N={len(y)}; got {logits.shape}.")
        return _leep_from_posteriors(_softmax(logits), y)


class NLEEPScorer(Scorer):
    """N-LEEP (Li et al., "Ranking Neural Checkpoints", CVPR 2021): LEEP on a GMM's posteriors.

    Replaces the source head by a Gaussian mixture fitted to the (penultimate) features: PCA keeps
    the leading components explaining ``variance`` (80% in the paper) of the variance, a GMM with
    ``components_per_class * K`` components (K target classes; the paper's default is one per
    class, and it reports more components helping a little) is fitted on the reduced TRAIN
    features, and its posteriors P(v | x) play LEEP's P(z | x). Deterministic for a seed
    (k-means init with ``random_state=seed``); ``std`` 0. Needs no source logits.
    ``covariance_type`` "full" as in the paper; ``reg_covar`` keeps tiny classes (2 samples)
    from making it singular.
    """

    name = "nleep"

    def __init__(self, variance: float = 0.8, components_per_class: int = 1,
                 covariance_type: str = "full", reg_covar: float = 1e-4, max_iter: int = 100) -> None:
        self.variance = variance
        self.components_per_class = components_per_class
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter

    def score(self, features, labels, *, source_logits=None, seed=0) -> ScoreResult:
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        x, y = _check_inputs(features, labels)
        x = x.astype(np.float64)
        k = len(np.unique(y))
        n_comp = int(max(1, min(self.components_per_class * k, len(x))))
        with blas_threads(x), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if x.shape[1] > 1 and float(x.var(axis=0).sum()) > 0:
                reduced = PCA(n_components=self.variance, svd_solver="full").fit_transform(x)
            else:
                reduced = x - x.mean(axis=0)
            # Scale-free regularisation: reg_covar relative to the reduced features' mean variance.
            scale = float(reduced.var(axis=0).mean()) or 1.0
            gmm = GaussianMixture(n_comp, covariance_type=self.covariance_type, reg_covar=self.reg_covar * scale,
                                  max_iter=self.max_iter, random_state=seed)
            theta = gmm.fit(reduced).predict_proba(reduced)
        result = _leep_from_posteriors(theta, y)
        result.details.update(pca_dims=int(reduced.shape[1]), components=n_comp)
        return result


# ----------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[[], Scorer]] = {}


def register_scorer(name: str, factory: Callable[[], Scorer], *, overwrite: bool = False) -> None:
    """Make ``get_scorer(name)`` return ``factory()`` (a Scorer subclass works as the factory)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"A scorer named {name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[name] = factory


def available_scorers() -> list[str]:
    """Names accepted by :func:`get_scorer`, sorted."""
    return sorted(_REGISTRY)


#: Ranking criteria that are not per-candidate scorers: computed across candidates by probe().
CROSS_CANDIDATE = ("combined",)


def ranking_scorers() -> list[str]:
    """Names accepted as probe(scorer=...): every registered scorer plus ``combined``."""
    return available_scorers() + list(CROSS_CANDIDATE)


def get_scorer(name: str | Scorer) -> Scorer:
    """A fresh scorer by registered name (a Scorer instance is returned as is)."""
    if isinstance(name, Scorer):
        return name
    if name in CROSS_CANDIDATE:
        raise UserInputError(f"{name!r} normalises scores across candidates: pass it as probe(scorer={name!r}), "
                             "not as an extra scorer.")
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UserInputError(f"Unknown scorer {name!r}. Choose one of: {', '.join(available_scorers())}.")
    return factory()


register_scorer("linear", LinearProbeScorer)
register_scorer("linear_ll", LinearProbeLLScorer)
register_scorer("knn", KNNScorer)
register_scorer("logme", LogMEScorer)
register_scorer("leep", LEEPScorer)
register_scorer("nleep", NLEEPScorer)

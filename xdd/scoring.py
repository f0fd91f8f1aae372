"""Anomaly scorers, sklearn-style: ``__init__`` stores parameters, ``fit`` sets attributes
ending in ``_``, ``score`` refuses an unfitted scorer.  Score = -log density (higher = more OOD).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp


class NotFittedError(RuntimeError):
    pass


def l2_normalize(z: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Rows of z on the unit sphere (a zero row stays zero).  (N, d)"""
    norms = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    if inplace:
        z /= norms
        return z
    return z / norms


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2, (len(a), len(b)), clipped at 0 against rounding."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def gaussian_kde_logpdf(x: np.ndarray, train: np.ndarray, h: float) -> np.ndarray:
    """log (1/n) sum_j N(x; train_j, h^2 I), for each row of x.  (M,)"""
    n, d = train.shape
    sq = _sq_dists(x, train)  # (M, n)
    return logsumexp(-sq / (2.0 * h * h), axis=1) - math.log(n) - d * math.log(h * math.sqrt(2 * math.pi))


def loo_log_likelihood(train: np.ndarray, h: float) -> float:
    """Mean leave-one-out log density of the training points under the KDE (bandwidth h)."""
    n, d = train.shape
    sq = _sq_dists(train, train)
    np.fill_diagonal(sq, np.inf)  # leave each point out of its own density
    ll = logsumexp(-sq / (2.0 * h * h), axis=1) - math.log(n - 1) - d * math.log(h * math.sqrt(2 * math.pi))
    return float(ll.mean())


class KDEScorer:
    """Gaussian KDE on the labeled embeddings.

    bandwidth: a positive float, or "loo": the value on a log grid (multiples of the median
    pairwise distance) that maximises the leave-one-out log likelihood of the fitted points.
    Only the fitted (labeled) points are looked at, never test labels.
    """

    def __init__(self, bandwidth: str | float = "loo", grid: int = 41):
        self.bandwidth = bandwidth
        self.grid = grid

    def fit(self, z: np.ndarray) -> "KDEScorer":
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or len(z) < 1:
            raise ValueError(f"KDE needs a (n, d) array with n >= 1, got shape {z.shape}")
        self.train_ = z
        if self.bandwidth != "loo":
            self.bandwidth_ = float(self.bandwidth)
        elif len(z) < 2:
            self.bandwidth_ = 1.0  # nothing to leave out: a unit bandwidth, stated
        else:
            sq = _sq_dists(z, z)
            med = float(np.sqrt(np.median(sq[np.triu_indices(len(z), 1)])))
            med = med if med > 0 else 1.0
            hs = med * np.logspace(-3, 1, self.grid, base=2.0)
            lls = [loo_log_likelihood(z, h) for h in hs]
            self.bandwidth_ = float(hs[int(np.argmax(lls))])
        return self

    def log_density(self, z: np.ndarray, batch: int = 4096) -> np.ndarray:
        if not hasattr(self, "train_"):
            raise NotFittedError("KDEScorer is not fitted: call fit() first")
        z = np.asarray(z, dtype=np.float64)
        return np.concatenate([gaussian_kde_logpdf(z[i:i + batch], self.train_, self.bandwidth_)
                               for i in range(0, len(z), batch)]) if len(z) else np.empty(0)

    def score(self, z: np.ndarray) -> np.ndarray:
        """Anomaly score = -log density.  (M,)"""
        return -self.log_density(z)


class PixelKDE:
    """Baseline: KDE on raw pixels after a PCA fitted on the labeled images."""

    def __init__(self, n_components: int = 30, bandwidth: str | float = "loo"):
        self.n_components = n_components
        self.bandwidth = bandwidth

    def fit(self, x: np.ndarray) -> "PixelKDE":
        from sklearn.decomposition import PCA

        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        k = max(1, min(self.n_components, len(x) - 1, x.shape[1]))
        self.pca_ = PCA(n_components=k, random_state=0).fit(x)
        self.kde_ = KDEScorer(self.bandwidth).fit(self.pca_.transform(x))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "pca_"):
            raise NotFittedError("PixelKDE is not fitted: call fit() first")
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return self.kde_.score(self.pca_.transform(x))

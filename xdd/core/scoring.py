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
    # einsum sums each row's squares without an (N, d) temporary: ~4x faster than
    # np.linalg.norm on the 2,048 x 3,136 batches a run scores, equal to float rounding.
    norms = np.sqrt(np.einsum("ij,ij->i", z, z))[:, None]
    np.maximum(norms, 1e-12, out=norms)
    if inplace:
        z /= norms
        return z
    return z / norms


def _fit_rows(z: np.ndarray, dtype, what: str) -> np.ndarray:
    """The rows a scorer is fitted on, as a C-contiguous (n, d) array of dtype; n >= 1."""
    z = np.ascontiguousarray(z, dtype=dtype)
    if z.ndim != 2 or len(z) < 1:
        raise ValueError(f"{what} needs a (n, d) array with n >= 1, got shape {z.shape}")
    return z


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

    def __init__(self, bandwidth: str | float = "loo", grid: int = 41,
                 loo_sample: int | None = None, seed: int = 0):
        self.bandwidth = bandwidth
        self.grid = grid
        # With many fitted points (the unlabeled reference), the leave-one-out search runs on
        # a seeded subsample of this many of them (it is O(n^2)); the KDE uses them all.
        self.loo_sample = loo_sample
        self.seed = seed

    def fit(self, z: np.ndarray) -> "KDEScorer":
        z = self.train_ = _fit_rows(z, np.float64, "KDE")
        if self.bandwidth != "loo":
            self.bandwidth_ = float(self.bandwidth)
        elif len(z) < 2:
            self.bandwidth_ = 1.0  # nothing to leave out: a unit bandwidth, stated
        else:
            zs = z
            if self.loo_sample is not None and len(z) > self.loo_sample:
                pick = np.random.default_rng(self.seed).choice(len(z), self.loo_sample,
                                                               replace=False)
                zs = z[np.sort(pick)]
            sq = _sq_dists(zs, zs)
            med = float(np.sqrt(np.median(sq[np.triu_indices(len(zs), 1)])))
            med = med if med > 0 else 1.0
            hs = med * np.logspace(-3, 1, self.grid, base=2.0)
            lls = [loo_log_likelihood(zs, h) for h in hs]
            self.bandwidth_ = float(hs[int(np.argmax(lls))])
        return self

    def log_density(self, z: np.ndarray, batch: int | None = None) -> np.ndarray:
        if not hasattr(self, "train_"):
            raise NotFittedError("KDEScorer is not fitted: call fit() first")
        z = np.asarray(z, dtype=np.float64)
        if batch is None:  # at most ~2^22 float64 distances (32 MiB) at a time
            batch = max(1, min(4096, (1 << 22) // max(1, len(self.train_))))
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


class FeatureReducer:
    """L2-normalise (optional), then project on the first ``n_components`` principal components
    fitted on the rows given to ``fit`` (a seeded subsample of the reference).  0 components or
    at least the input dimension: no projection.  Output float32, (N, k)."""

    def __init__(self, n_components: int = 64, normalize: bool = True, seed: int = 0):
        self.n_components = n_components
        self.normalize = normalize
        self.seed = seed

    def _prep(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32).reshape(len(z), -1)
        return l2_normalize(z) if self.normalize else z

    def fit(self, z: np.ndarray) -> "FeatureReducer":
        from sklearn.decomposition import PCA

        x = self._prep(z)
        k = min(self.n_components, x.shape[1], len(x))
        self.dim_in_ = x.shape[1]
        # The PCA may centre x in place (bit-identical, no 100 MB copy) when x is our own.
        own = not np.may_share_memory(x, z)
        self.pca_ = (PCA(n_components=k, svd_solver="randomized" if k < min(x.shape) // 2
                         else "full", random_state=self.seed, copy=not own).fit(x)
                     if 0 < self.n_components < x.shape[1] else None)
        if self.pca_ is not None:
            # The SVD leaves a strided view; a C-ordered copy projects in the same order of
            # operations as a reducer rebuilt from state(), so both give the same bits.
            self.pca_.components_ = np.ascontiguousarray(self.pca_.components_)
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted reducer as plain arrays (an npz file keeps them without pickle)."""
        if not hasattr(self, "dim_in_"):
            raise NotFittedError("FeatureReducer is not fitted: call fit() first")
        out = {"n_components": np.int64(self.n_components), "normalize": np.bool_(self.normalize),
               "seed": np.int64(self.seed), "dim_in": np.int64(self.dim_in_)}
        if self.pca_ is not None:
            out.update(components=self.pca_.components_, mean=self.pca_.mean_,
                       explained_variance=self.pca_.explained_variance_)
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "FeatureReducer":
        """The reducer :meth:`state` described; it projects exactly as the fitted one did (the
        same scikit-learn transform, on the same arrays)."""
        red = cls(int(state["n_components"]), bool(state["normalize"]), int(state["seed"]))
        red.dim_in_ = int(state["dim_in"])
        red.pca_ = None
        if "components" in state:
            from sklearn.decomposition import PCA

            comps = np.asarray(state["components"])
            if comps.ndim != 2 or comps.shape[1] != red.dim_in_ \
                    or np.shape(state["mean"]) != (red.dim_in_,):
                raise ValueError("a FeatureReducer state with mismatched shapes")
            pca = PCA(n_components=len(comps), random_state=red.seed)
            pca.components_, pca.mean_ = comps, np.asarray(state["mean"])
            pca.explained_variance_ = np.asarray(state["explained_variance"])
            pca.n_components_, pca.n_features_in_ = len(comps), red.dim_in_
            red.pca_ = pca
        return red

    def transform(self, z: np.ndarray) -> np.ndarray:
        if not hasattr(self, "dim_in_"):
            raise NotFittedError("FeatureReducer is not fitted: call fit() first")
        z = self._prep(z)
        return z if self.pca_ is None else self.pca_.transform(z).astype(np.float32)


class KNNScorer:
    """Deep kNN (Sun et al., ICML 2022): the anomaly score of x is its Euclidean distance to
    its k-th nearest neighbour in the reference set.  ``backend``: "sklearn"
    (``NearestNeighbors``, exact) or "faiss" (``IndexFlatL2``, exact, float32)."""

    def __init__(self, k: int = 1, backend: str = "sklearn"):
        self.k = k
        self.backend = backend

    def fit(self, ref: np.ndarray) -> "KNNScorer":
        ref = _fit_rows(ref, np.float32, "k-NN")
        self.k_ = min(self.k, len(ref))
        if self.backend == "faiss":
            import faiss

            self.index_ = faiss.IndexFlatL2(ref.shape[1])
            self.index_.add(ref)
        elif self.backend == "sklearn":
            from sklearn.neighbors import NearestNeighbors

            self.index_ = NearestNeighbors(n_neighbors=self.k_, algorithm="brute").fit(ref)
        else:
            raise ValueError(f"unknown k-NN backend {self.backend!r}; accepted: sklearn, faiss")
        self.n_reference_ = len(ref)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Distance to the k-th nearest reference point.  (M,) float64"""
        if not hasattr(self, "index_"):
            raise NotFittedError("KNNScorer is not fitted: call fit() first")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not len(x):
            return np.empty(0)
        if self.backend == "faiss":
            d2, _ = self.index_.search(x, self.k_)  # squared distances, ascending
            return np.sqrt(np.maximum(d2[:, -1].astype(np.float64), 0.0))
        d, _ = self.index_.kneighbors(x, n_neighbors=self.k_)
        return d[:, -1].astype(np.float64)


class PyodKNN:
    """pyod's KNN detector with its defaults (n_neighbors=5, method="largest"), fitted on the
    reference.  Score = pyod's ``decision_function`` (higher = more OOD)."""

    def __init__(self, n_neighbors: int = 5):
        self.n_neighbors = n_neighbors

    def fit(self, ref: np.ndarray) -> "PyodKNN":
        from pyod.models.knn import KNN

        ref = np.asarray(ref, dtype=np.float64)
        self.detector_ = KNN(n_neighbors=min(self.n_neighbors, len(ref) - 1)).fit(ref)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "detector_"):
            raise NotFittedError("PyodKNN is not fitted: call fit() first")
        return np.asarray(self.detector_.decision_function(np.asarray(x, dtype=np.float64)),
                          dtype=np.float64)

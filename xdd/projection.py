"""2-D projections (PCA, t-SNE, UMAP) of embeddings, seeded.

Heavy libraries are imported inside the functions so importing this module stays cheap.
"""
from __future__ import annotations

import numpy as np

from .config import PROJECTIONS


def subsample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded subsample of range(n) of the given size (all of it if size >= n)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 3001]).choice(n, size=size, replace=False))


def _pca(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = max(1, min(k, z.shape[0], z.shape[1]))
    return PCA(n_components=k, random_state=seed).fit_transform(z)


def project(z: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, d) -> (N, 2) float32.  t-SNE and UMAP see the top 50 principal components."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; accepted: {', '.join(PROJECTIONS)}")
    z = np.asarray(z, dtype=np.float32)
    n = len(z)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    if method == "pca":
        out = _pca(z, 2, seed)
        if out.shape[1] < 2:
            out = np.c_[out, np.zeros(n)]
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        out = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                   n_jobs=None).fit_transform(_pca(z, 50, seed))
    else:
        import umap

        out = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed,
                        n_jobs=1).fit_transform(_pca(z, 50, seed))
    return np.asarray(out, dtype=np.float32)

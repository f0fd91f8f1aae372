"""2-D projections (PCA, t-SNE, UMAP) of embeddings, seeded.

t-SNE is openTSNE's: on 5,000 test embeddings it is several times faster than scikit-learn's
TSNE at the same trustworthiness (docs/PERFORMANCE.md, benchmark 4).  UMAP's numba functions
compile on their first call in a process (tens of seconds on a small CPU); a long-lived worker
calls :func:`warm_up` once at start so that no job pays for it.

Every projection runs with the thread count that the process gives torch (the worker sets it
to the usable cores less one): on a busy machine, OpenMP pools larger than the free cores
spin and make t-SNE many times slower.

Heavy libraries are imported inside the functions so importing this module stays cheap.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from .config import PROJECTIONS


def subsample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded subsample of range(n) of the given size (all of it if size >= n)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 3001]).choice(n, size=size, replace=False))


def threads() -> int:
    """Threads for the projection libraries: torch's setting when torch is loaded (the worker
    and the CLI set it), else the usable cores."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    from .device import usable_cores

    return usable_cores()


@contextmanager
def _limited(n: int) -> Iterator[None]:
    """Cap the OpenMP / BLAS pools of numpy, scikit-learn and numba at n threads, and give
    torch back its own thread count afterwards.

    numba's OpenMP layer shares libgomp with torch and sets its thread count to all cores
    when it starts its pool (UMAP's first call), which silently turned a one-thread worker
    into a two-thread one, many times slower on a busy machine.
    """
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    numba = sys.modules.get("numba")
    old = None
    if numba is not None:
        old = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if numba is not None and old is not None:
            numba.set_num_threads(old)
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)


def _pca(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = max(1, min(k, z.shape[0], z.shape[1]))
    return PCA(n_components=k, random_state=seed).fit_transform(z)


def _perplexity(n: int) -> float:
    # openTSNE needs 3 * perplexity < n; 30 is the usual value for a few thousand points.
    return float(min(30.0, max(0.1, (n - 1) / 3.0 - 0.01)))


def _tsne(x: np.ndarray, seed: int, n_jobs: int) -> np.ndarray:
    import openTSNE

    n = len(x)
    if x.shape[1] < 2:  # openTSNE's PCA initialisation needs two input dimensions
        x = np.c_[x, np.zeros(n)]
    # Exact neighbours below 1,000 points (openTSNE's own rule): deterministic for tests.
    emb = openTSNE.TSNE(n_components=2, perplexity=_perplexity(n), initialization="pca",
                        random_state=seed, n_jobs=n_jobs, neighbors="auto",
                        negative_gradient_method="bh" if n < 10_000 else "fft",
                        verbose=False).fit(np.ascontiguousarray(x, dtype=np.float64))
    return np.asarray(emb)


def _umap(x: np.ndarray, seed: int, n_neighbors: int = 15, **kw) -> np.ndarray:
    import umap

    n = len(x)
    if n < 10:  # the spectral initialisation needs more points than eigenvectors asked for
        kw.setdefault("init", "random")
    # n_jobs=1: a random_state makes UMAP single-threaded anyway (and says so in a warning).
    return umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), random_state=seed,
                     n_jobs=1, **kw).fit_transform(x)


def _import(method: str) -> None:
    """Load the libraries of a method before the thread cap is set: threadpoolctl only caps
    the OpenMP / BLAS runtimes already loaded, and an uncapped one makes t-SNE both slower on
    a busy machine and not reproducible."""
    import sklearn.decomposition  # noqa: F401  (scikit-learn's OpenMP runtime)

    if method == "tsne":
        import openTSNE  # noqa: F401
    elif method == "umap":
        import umap  # noqa: F401


def project(z: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, d) -> (N, 2) float32.  t-SNE and UMAP see the top 50 principal components."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; accepted: {', '.join(PROJECTIONS)}")
    z = np.asarray(z, dtype=np.float32)
    n = len(z)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    _import(method)
    n_threads = threads()
    with _limited(n_threads):
        if method == "pca":
            out = _pca(z, 2, seed)
            if out.shape[1] < 2:
                out = np.c_[out, np.zeros(n)]
        elif method == "tsne":
            out = _tsne(_pca(z, 50, seed), seed, n_threads)
        else:
            out = _umap(_pca(z, 50, seed).astype(np.float32), seed)
    return np.asarray(out, dtype=np.float32)


def warm_up() -> float:
    """Compile UMAP's numba functions now, on tiny random data; returns the seconds it took.

    Both of UMAP's neighbour searches are exercised (exact below 4,096 points, NN-descent
    above), so the first real projection of any size runs at full speed.  Call once per
    process that will project (the job worker does at start); later calls are cheap.
    """
    import time

    t = time.perf_counter()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    _import("umap")
    with _limited(threads()):
        _umap(x, 0, n_neighbors=5, n_epochs=10)
        _umap(x, 0, n_neighbors=5, n_epochs=10, force_approximation_algorithm=True)
    return time.perf_counter() - t

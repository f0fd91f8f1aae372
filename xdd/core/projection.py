"""2-D projections (PCA, t-SNE, UMAP) of embeddings, seeded.

t-SNE is openTSNE's: on 5,000 test embeddings it is several times faster than scikit-learn's
TSNE at the same trustworthiness (docs/PERFORMANCE.md, benchmark 4).  UMAP's numba functions
compile on their first call (tens of seconds on a small CPU).  numba keeps what it compiled on
disk (:func:`_cache_umap`), so this is paid once per installation, not once per process; a
long-lived worker also calls :func:`warm_up` when its queue is first empty, so that no job waits
on a compilation or on loading one.

Every projection runs with the thread count it is given, by default the one the process gives
torch (the worker sets it to the usable cores less one; a run's maps add the cores its scoring
threads held, xdd.pipeline.experiment): on a busy machine, OpenMP pools larger than the free cores spin
and make t-SNE many times slower.

Heavy libraries are imported inside the functions so importing this module stays cheap.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from xdd.core.config import PROJECTIONS


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
    from xdd.core.device import usable_cores

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


# numba's index file for UMAP's layout step, the function that dominates its compilation: it
# exists once a process has compiled UMAP with the on-disk cache on.
_UMAP_MARK = "layouts._optimize_layout_euclidean_single_epoch-*.nbi"
_UMAP_CACHED = False


def _cache_umap() -> None:
    """Have numba keep the compiled functions of umap-learn and pynndescent on disk.

    The two libraries declare only some of their numba functions ``cache=True``, so every
    fresh process (the CLI, a new worker) compiled the others again: 10-25 s on a 2-core CPU
    for UMAP's exact neighbours (below 4,096 points), ~30 s more for NN-descent.  Turning
    numba's cache on for them gives the same machine code (the maps are equal to the bit),
    loaded in well under a second.  numba keys its cache by the function's source and signature but not by
    its options, so where one function is wrapped twice (umap's layout step, serial and
    parallel) only the serial wrapper, the one a seeded UMAP runs, is cached; a function numba
    cannot cache (no writable cache directory, or pynndescent's NN-descent loop, which reaches
    dynamic globals) is left to compile as before.
    """
    global _UMAP_CACHED
    if _UMAP_CACHED:
        return
    import warnings

    import umap  # noqa: F401  (loads umap.umap_, umap.layouts, ...)
    from numba.core.dispatcher import Dispatcher
    from numba.core.errors import NumbaWarning

    # A function that reaches dynamic globals (pynndescent's nn_descent) compiles each time;
    # numba says so at every compilation, which is no news to a user of this cache.
    warnings.filterwarnings("ignore", message="Cannot cache compiled function",
                            category=NumbaWarning)

    found: dict[int, Dispatcher] = {}
    for name, mod in list(sys.modules.items()):
        if mod is not None and name.split(".")[0] in ("umap", "pynndescent"):
            for obj in vars(mod).values():
                if isinstance(obj, Dispatcher):
                    found[id(obj)] = obj
    by_func: dict[int, list[Dispatcher]] = {}
    for d in found.values():
        by_func.setdefault(id(d.py_func), []).append(d)
    for group in by_func.values():
        if len(group) > 1:
            group = [d for d in group if not d.targetoptions.get("parallel")]
            if len(group) != 1:
                continue
        d = group[0]
        if d.stats.cache_path is None:  # not cached yet
            try:
                d.enable_caching()
            except Exception:  # noqa: BLE001  numba found no place to keep it
                pass
    _UMAP_CACHED = True


def umap_compiled_on_disk() -> bool:
    """Whether numba's disk cache holds UMAP's compiled layout step, so a fresh process loads
    it instead of compiling.  Looks where numba would keep it (``NUMBA_CACHE_DIR`` when set,
    else beside umap-learn's sources, else the user's cache directory) without importing
    umap or numba."""
    import importlib.util
    import os
    from pathlib import Path

    own = os.environ.get("NUMBA_CACHE_DIR")
    if own:
        return any(Path(own).rglob(_UMAP_MARK))
    spec = importlib.util.find_spec("umap")
    if spec is None or not spec.submodule_search_locations:
        return False
    for loc in spec.submodule_search_locations:
        if any((Path(loc) / "__pycache__").glob(_UMAP_MARK)):
            return True
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numba"
    return user.is_dir() and any(user.rglob(_UMAP_MARK))


def _import(method: str) -> None:
    """Load the libraries of a method before the thread cap is set: threadpoolctl only caps
    the OpenMP / BLAS runtimes already loaded, and an uncapped one makes t-SNE both slower on
    a busy machine and not reproducible."""
    import sklearn.decomposition  # noqa: F401  (scikit-learn's OpenMP runtime)

    if method == "tsne":
        import openTSNE  # noqa: F401
    elif method == "umap":
        _cache_umap()


def project(z: np.ndarray, method: str, seed: int = 0, n_threads: int | None = None
            ) -> np.ndarray:
    """(N, d) -> (N, 2) float32.  t-SNE and UMAP see the top 50 principal components.
    ``n_threads``: the threads it may use (default :func:`threads`)."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; accepted: {', '.join(PROJECTIONS)}")
    z = np.asarray(z, dtype=np.float32)
    n = len(z)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    _import(method)
    n_threads = max(1, int(n_threads or threads()))
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


def pca_frames(final: np.ndarray, others: list[np.ndarray], seed: int = 0,
               n_threads: int | None = None) -> np.ndarray:
    """Frames of an embedding moving, on one pair of axes: the PCA fitted on ``final`` (N, d)
    places each of ``others`` (each (N, d), the same points earlier) by its ``transform``; the
    last frame is ``final``'s own map, exactly what ``project(final, "pca", seed)`` gives.
    Returns (len(others) + 1, N, 2) float32."""
    from sklearn.decomposition import PCA

    final = np.asarray(final, dtype=np.float32)
    n = len(final)
    if n < 3 or final.shape[1] < 2:
        return np.zeros((len(others) + 1, n, 2), np.float32)
    with _limited(max(1, int(n_threads or threads()))):
        pca = PCA(n_components=2, random_state=seed)
        last = pca.fit_transform(final)
        frames = [pca.transform(np.asarray(o, dtype=np.float32)) for o in others] + [last]
    return np.asarray(frames, dtype=np.float32)


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

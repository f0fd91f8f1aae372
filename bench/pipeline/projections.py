"""Benchmark 4: t-SNE (scikit-learn vs openTSNE) and UMAP of 5,000 test embeddings.

Seconds and quality (trustworthiness, k = 10, from ``sklearn.manifold.trustworthiness``, and
the kNN preservation: the mean fraction of each point's 10 nearest neighbours in the embedding
that are still among its 10 nearest on the map), all with the same thread cap.  UMAP is timed
in fresh processes sharing an empty numba cache directory (``NUMBA_CACHE_DIR``): its first
call in the first process (numba compiles, and keeps the result on disk), a second call in that
process, the first call of a second process (the compilation loaded from disk: what the CLI or
a new worker pays after the first run on a machine), and (``--warm-check``) the first call of a
third process after ``xdd.core.projection.warm_up()`` (what a job in the worker pays).

    python bench/pipeline/projections.py --cache CACHE --run-key KEY --json out.json
    python bench/pipeline/projections.py            # MNIST pixels instead of a run's embeddings
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._common import REPO, log, write_json, worker_threads  # noqa: E402

import numpy as np  # noqa: E402


def load_embeddings(cache: str | None, key: str | None, n: int, which: str = "xdd"
                    ) -> tuple[np.ndarray, np.ndarray, str]:
    """(z, label, description) of n test images: a cached run's embedding, or raw pixels."""
    from xdd.storage.data import load_mnist, to_tensor
    from xdd.core.projection import subsample

    if cache:
        os.environ["XDD_CACHE"] = cache
    data = load_mnist()
    idx = subsample(len(data.y_test), n, 0)
    if not key:
        z = data.x_test[idx].reshape(len(idx), -1).astype(np.float32) / 255.0
        return z, data.y_test[idx], "raw MNIST pixels (no run given)"
    from xdd.storage import store
    from xdd.core.config import from_dict, pretrain_key
    from xdd.core.models import Discriminator
    from xdd.train.retrain import embed_all

    res = store.load_results(key)
    if res is None:
        raise SystemExit(f"run {key} is not in the cache {cache}")
    cfg = from_dict(res["config"])
    D = Discriminator(cfg.pretrain.d_width)
    path = (store.run_dir(key) / "checkpoint.pt" if which == "xdd"
            else store.pretrain_dir(pretrain_key(cfg)) / "checkpoint.pt")
    D.load_state_dict(store.load_checkpoint(path)["D"])
    z = embed_all(D, to_tensor(data.x_test[idx])).double().numpy()
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)  # as scored
    return z.astype(np.float32), data.y_test[idx], f"{which} embedding of run {key}"


def knn_preservation(z: np.ndarray, y2: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours in z kept among its k nearest in y2."""
    from sklearn.neighbors import NearestNeighbors

    a = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(return_distance=False)[:, :k]
    b = NearestNeighbors(n_neighbors=k + 1).fit(y2).kneighbors(return_distance=False)[:, :k]
    return float(np.mean([len(np.intersect1d(r, s, assume_unique=True)) / k for r, s in zip(a, b)]))


def quality(z: np.ndarray, y2: np.ndarray) -> dict[str, float]:
    from sklearn.manifold import trustworthiness

    return {"trustworthiness": float(trustworthiness(z, y2, n_neighbors=10)),
            "knn_preservation": knn_preservation(z, y2)}


def umap_child(args: argparse.Namespace) -> None:
    """A fresh process: warm_up() (optional), then two UMAP projections; prints JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from xdd.core.projection import project, warm_up

    z = np.load(args.emb)["z"]
    out: dict[str, float] = {}
    t = time.perf_counter()
    import umap  # noqa: F401

    out["import_s"] = time.perf_counter() - t
    if args.warm:
        out["warm_up_s"] = warm_up()
    t, c = time.perf_counter(), time.process_time()
    y1 = project(z, "umap", 0)
    out["first_s"], out["first_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    if args.out_map:
        np.save(args.out_map, y1)
    if not args.warm:
        t, c = time.perf_counter(), time.process_time()
        y2 = project(z, "umap", 0)
        out["second_s"], out["second_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        out["deterministic"] = bool(np.array_equal(y1, y2))
        out.update(quality(z, y1))
    print(json.dumps(out))


def run_umap_child(emb: str, threads: int, warm: bool, numba_cache: str,
                   out_map: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--umap-child", "--emb", emb, "--threads", str(threads)]
    if out_map:
        cmd += ["--out-map", out_map]
    if warm:
        cmd.append("--warm")
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, NUMBA_CACHE_DIR=numba_cache))
    if p.returncode != 0:
        raise RuntimeError(f"UMAP child failed: {p.stderr[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


def clocked(fn):
    """(result, wall seconds, process CPU seconds of all threads)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def sklearn_tsne(x50: np.ndarray, seed: int = 0) -> np.ndarray:
    """The t-SNE the pipeline used before: scikit-learn, perplexity 30, PCA init, defaults."""
    from sklearn.manifold import TSNE

    n = len(x50)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                n_jobs=None).fit_transform(x50)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="XDD_CACHE holding the run")
    ap.add_argument("--run-key", default=None, help="a cached run whose embedding is projected")
    ap.add_argument("--embedding", default="xdd", choices=("xdd", "before"))
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=None,
                    help="thread cap for every library (default: the worker's torch threads)")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--skip-umap", action="store_true")
    ap.add_argument("--warm-check", action="store_true",
                    help="also time UMAP in a fresh process after warm_up() (about a minute)")
    ap.add_argument("--determinism", action="store_true",
                    help="also run openTSNE a second time and compare")
    ap.add_argument("--json", default=None)
    ap.add_argument("--umap-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--emb", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-map", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threads = args.threads or worker_threads()
    if args.umap_child:
        umap_child(args)
        return

    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    z, label, source = load_embeddings(args.cache, args.run_key, args.n, args.embedding)
    log(f"projections: {len(z)} points, {z.shape[1]}-d, {source}, {args.threads} thread(s)")
    result: dict = {"n": len(z), "dim": int(z.shape[1]), "source": source,
                    "threads": args.threads, "methods": {}}
    tmp = tempfile.mkdtemp(prefix="xdd-bench-proj-")
    emb = os.path.join(tmp, "z.npz")
    np.savez(emb, z=z)
    try:
        measure(args, z, emb, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(args.json, result)


def measure(args: argparse.Namespace, z: np.ndarray, emb: str, result: dict) -> None:
    from xdd.core.projection import _limited, _pca, project

    numba_cache = os.path.join(os.path.dirname(emb), "numba-cache")  # empty: nothing compiled
    if not args.skip_umap:
        log("UMAP in a fresh process (first call compiles), then a second call")
        maps = [emb + ".compiled.npy", emb + ".loaded.npy"]
        result["umap"] = run_umap_child(emb, args.threads, False, numba_cache, maps[0])
        log(f"  {result['umap']}")
        result["methods"]["UMAP (umap-learn)"] = {
            "seconds": result["umap"]["second_s"], "cpu_s": result["umap"]["second_cpu_s"],
            **{k: result["umap"][k] for k in ("trustworthiness", "knn_preservation")}}
        log("UMAP in another fresh process (the compilation on disk)")
        result["umap_from_disk"] = run_umap_child(emb, args.threads, False, numba_cache, maps[1])
        result["umap_from_disk"]["same_as_first"] = bool(
            np.array_equal(np.load(maps[0]), np.load(maps[1])))
        log(f"  {result['umap_from_disk']}")
    if args.warm_check:
        log("UMAP in a fresh process after warm_up()")
        result["umap_after_warm_up"] = run_umap_child(emb, args.threads, True, numba_cache)
        log(f"  {result['umap_after_warm_up']}")

    from sklearn.manifold import TSNE  # noqa: F401  (loaded before the thread cap)

    y_ot, w, c = clocked(lambda: project(z, "tsne", 0))
    entry = {"seconds": w, "cpu_s": c, **quality(z, y_ot)}
    if args.determinism:
        entry["deterministic"] = bool(np.array_equal(y_ot, project(z, "tsne", 0)))
    result["methods"]["t-SNE (openTSNE, xdd.core.projection)"] = entry
    log(f"  openTSNE {entry}")

    if not args.skip_sklearn:
        def run_sklearn():
            with _limited(args.threads):
                return sklearn_tsne(_pca(z, 50, 0))

        y_sk, w, c = clocked(run_sklearn)
        entry = {"seconds": w, "cpu_s": c, **quality(z, y_sk)}
        result["methods"]["t-SNE (scikit-learn TSNE)"] = entry
        log(f"  sklearn {entry}")

    y_pca, w, c = clocked(lambda: project(z, "pca", 0))
    result["methods"]["PCA"] = {"seconds": w, "cpu_s": c, **quality(z, y_pca)}


if __name__ == "__main__":
    main()

"""Benchmark 7: what the unlabeled reference adds to a quick run, per scored method, on one
CPU thread; scikit-learn and faiss side by side; and the peak memory of a whole quick run.

For a cached pretrained GAN (quick preset): the stages ``run_experiment`` adds for one
embedding method under the unlabeled reference -- the PCA fit on ``score.knn_pca_fit``
reference embeddings, embedding + projecting every reference image, projecting the 10,000 test
embeddings, the k-NN fit and search -- timed separately, median of ``--reps``, today's code
(``xdd.pipeline.reference``) beside the way runs did it before (2,048 images a forward pass, the PCA's
rows embedded twice), with the largest difference between their values.  The test embedding
itself is shared with the labeled reference and not counted per method.  With ``--peak``, one
whole quick run (the sweep's methods) is computed in a child process into a temporary cache
holding only the GAN, and its peak resident memory is read from ``getrusage``.

    python bench/pipeline/reference_cost.py --cache CACHE --digit 8 --gan-seed 0 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._common import REPO  # noqa: E402

METHODS = ("pixels", "before", "mcdd", "pyod", "xdd")  # the sweep's


def quick_config(digit: int, gan_seed: int):
    from xdd.core.config import preset

    return preset("quick", ood_digit=digit, methods=METHODS,
                  **{"pretrain.seed": gan_seed, "projection.methods": ("pca",)})


class Stages:
    """Wall and process CPU seconds of named stages, a list per stage (one per repetition).
    On a shared machine the wall time includes waiting for the core; the CPU time of this
    single-threaded process is what one idle thread would take."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def __call__(self, name: str, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        self.wall.setdefault(name, []).append(time.perf_counter() - t)
        self.cpu.setdefault(name, []).append(time.process_time() - c)
        return out


def one_round(timed: Stages, D, cfg, data, splits, ref, fit_rows) -> dict[str, float]:
    """Every stage once, the way runs did it before and today's; the largest differences
    between the two ways' values."""
    import numpy as np

    from xdd.core.scoring import FeatureReducer, KNNScorer
    from xdd.pipeline.reference import SCORE_BATCH, reference_features
    from xdd.storage.data import eval_arrays, to_tensor
    from xdd.train.retrain import embed_all

    x_eval, _ = eval_arrays(data, "test")
    sc = cfg.score

    def embed(u8, batch=None):
        return embed_all(D, to_tensor(u8), batch).numpy()

    # The way runs embedded the reference before: 2,048 images a forward pass, and the PCA's
    # rows embedded a second time for the fit.
    z_test_old = timed("old: embed the test images (2,048 a pass)",
                       lambda: embed(x_eval[splits.test], 2048))
    red_old = timed("old: PCA fit (embed + fit)", lambda: FeatureReducer(
        sc.knn_pca, True, cfg.seed).fit(embed(data.x_train[ref[fit_rows]], 2048)))
    feats_old = timed("old: embed + project the reference", lambda: np.concatenate([
        red_old.transform(embed(data.x_train[ref[i:i + SCORE_BATCH]], 2048))
        for i in range(0, len(ref), SCORE_BATCH)]))
    # Today's: xdd.pipeline.reference.reference_features, 256 a pass on a CPU, each image once.
    z_test = timed("embed the test images", lambda: embed(x_eval[splits.test]))
    red, feats = timed("embed the reference, fit the PCA, project", lambda: reference_features(
        embed, data.x_train, ref, fit_rows, FeatureReducer(sc.knn_pca, True, cfg.seed)))
    q = timed("project the test embeddings", lambda: red.transform(z_test))
    for backend in ("sklearn", "faiss"):
        s = timed(f"k-NN fit + search ({backend})",
                  lambda: KNNScorer(sc.knn_k, backend).fit(feats).score(q))
    s_old = KNNScorer(sc.knn_k).fit(feats_old).score(red_old.transform(z_test_old))
    return {"test_embedding_max_abs": float(np.abs(z_test - z_test_old).max()),
            "reference_features_max_abs": float(np.abs(feats - feats_old).max()),
            "knn_score_max_abs": float(np.abs(s - s_old).max()), "n_test": int(len(z_test))}


def per_method(med: dict[str, float]) -> dict[str, float]:
    """What one scored method pays for the unlabeled reference, per k-NN backend, and the
    way runs did it before."""
    new = med["embed the reference, fit the PCA, project"] + med["project the test embeddings"]
    old = med["old: PCA fit (embed + fit)"] + med["old: embed + project the reference"] + \
        med["project the test embeddings"]
    return {**{b: new + med[f"k-NN fit + search ({b})"] for b in ("sklearn", "faiss")},
            "old (sklearn)": old + med["k-NN fit + search (sklearn)"]}


def stage_costs(args: argparse.Namespace) -> dict[str, Any]:
    """The unlabeled reference's stages for a cached GAN, medians of --reps rounds."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from xdd.core.config import pretrain_key
    from xdd.pipeline.gan import load_pretrained
    from xdd.pipeline.reference import pca_fit_rows, reference_indices
    from xdd.storage.data import load_mnist, make_splits

    cfg = quick_config(args.digit, args.gan_seed)
    got = load_pretrained(cfg, "cpu")
    if got is None:
        raise SystemExit(f"no cached GAN for digit {args.digit}, GAN seed {args.gan_seed}")
    data = load_mnist()
    splits = make_splits(cfg, data)
    ref = reference_indices(cfg, splits)
    timed = Stages()
    for _ in range(args.reps):
        diffs = one_round(timed, got[1], cfg, data, splits, ref, pca_fit_rows(cfg, len(ref)))
    n_test = diffs.pop("n_test")
    med = {k: float(np.median(v)) for k, v in timed.wall.items()}
    med_cpu = {k: float(np.median(v)) for k, v in timed.cpu.items()}
    return {"digit": args.digit, "gan_seed": args.gan_seed, "n_reference": int(len(ref)),
            "n_test": n_test, "threads": 1, "reps": args.reps,
            "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
            "stages_wall_s": med, "stages_cpu_s": med_cpu,
            "per_method_wall_s": per_method(med), "per_method_cpu_s": per_method(med_cpu),
            "old_over_new_cpu": per_method(med_cpu)["old (sklearn)"] / per_method(med_cpu)["sklearn"],
            "same_values": diffs, "pretrain_key": pretrain_key(cfg)}


def peak_memory(digit: int, gan_seed: int) -> dict[str, Any]:
    """One whole quick run (the sweep's methods) in a child process, into a temporary cache
    holding only the GAN: its wall time, stage timings and peak resident memory."""
    from xdd.core.config import pretrain_key
    from xdd.storage import store

    tmp = Path(tempfile.mkdtemp(prefix="xdd-peak-"))
    try:
        src = store.pretrain_dir(pretrain_key(quick_config(digit, gan_seed)))
        shutil.copytree(src, tmp / "pretrain" / src.name)
        code = ("import torch; torch.set_num_threads(1); from xdd.core.config import preset; "
                "from xdd.pipeline.experiment import run_experiment; "
                f"r = run_experiment(preset('quick', ood_digit={digit}, methods={METHODS!r}, "
                f"**{{'pretrain.seed': {gan_seed}, 'projection.methods': ('pca',)}}), "
                "device='cpu'); import json; print(json.dumps(r['timings']))")
        env = dict(os.environ, XDD_CACHE=str(tmp), XDD_DATA_CACHE=str(store.data_dir()),
                   OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        return {"run_wall_s": time.perf_counter() - t,
                "run_timings_s": json.loads(res.stdout.strip().splitlines()[-1]),
                "run_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--digit", type=int, default=8)
    ap.add_argument("--gan-seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak", action="store_true", help="also measure a whole run's peak memory")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ["XDD_CACHE"] = args.cache
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = stage_costs(args)
    if args.peak:
        out.update(peak_memory(args.digit, args.gan_seed))
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

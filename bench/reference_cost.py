"""Benchmark 7: what the unlabeled reference adds to a quick run, per scored method, on one
CPU thread; scikit-learn and faiss side by side; and the peak memory of a whole quick run.

For a cached pretrained GAN (quick preset): the stages ``run_experiment`` adds for one
embedding method under the unlabeled reference -- the PCA fit on ``score.knn_pca_fit``
reference embeddings, embedding + projecting every reference image, projecting the 10,000 test
embeddings, the k-NN fit and search -- timed separately, median of ``--reps``.  The test
embedding itself is shared with the labeled reference and not counted.  With ``--peak``, one
whole quick run (the sweep's methods) is computed in a child process into a temporary cache
holding only the GAN, and its peak resident memory is read from ``getrusage``.

    python bench/reference_cost.py --cache /work/cache --digit 8 --gan-seed 0 --json out.json
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


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

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from xdd import store
    from xdd.config import preset, pretrain_key
    from xdd.data import eval_arrays, load_mnist, make_splits, to_tensor
    from xdd.experiment import SCORE_BATCH, load_pretrained, reference_indices
    from xdd.retrain import embed_all
    from xdd.scoring import FeatureReducer, KNNScorer

    methods = ("pixels", "before", "mcdd", "pyod", "xdd")
    cfg = preset("quick", ood_digit=args.digit, methods=methods,
                 **{"pretrain.seed": args.gan_seed, "projection.methods": ("pca",)})
    got = load_pretrained(cfg, "cpu")
    if got is None:
        raise SystemExit(f"no cached GAN for digit {args.digit}, GAN seed {args.gan_seed}")
    D = got[1]
    data = load_mnist()
    splits = make_splits(cfg, data)
    ref = reference_indices(cfg, splits)
    x_eval, _ = eval_arrays(data, "test")
    x_test = to_tensor(x_eval[splits.test])
    sc = cfg.score
    fit_rows = np.sort(np.random.default_rng([cfg.seed, 4001]).choice(
        len(ref), size=min(sc.knn_pca_fit, len(ref)), replace=False))
    z_test = embed_all(D, x_test).numpy()  # shared with the labeled reference: not counted

    stages: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def timed(name, fn):
        # Wall time, and the CPU time of this (single-threaded) process: on a shared machine
        # the wall time includes waiting for the core; the CPU time is what one idle thread
        # would take.
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        stages.setdefault(name, []).append(time.perf_counter() - t)
        cpu.setdefault(name, []).append(time.process_time() - c)
        return out

    for _ in range(args.reps):
        red = timed("PCA fit (embed + fit)", lambda: FeatureReducer(sc.knn_pca, True, 0).fit(
            embed_all(D, to_tensor(data.x_train[ref[fit_rows]])).numpy()))
        feats = timed("embed + project the reference", lambda: np.concatenate([
            red.transform(embed_all(D, to_tensor(data.x_train[ref[i:i + SCORE_BATCH]])).numpy())
            for i in range(0, len(ref), SCORE_BATCH)]))
        q = timed("project the test embeddings", lambda: red.transform(z_test))
        for backend in ("sklearn", "faiss"):
            timed(f"k-NN fit + search ({backend})",
                  lambda: KNNScorer(sc.knn_k, backend).fit(feats).score(q))
    def per_method(med):
        common = med["PCA fit (embed + fit)"] + med["embed + project the reference"] + \
            med["project the test embeddings"]
        return {b: common + med[f"k-NN fit + search ({b})"] for b in ("sklearn", "faiss")}

    med = {k: float(np.median(v)) for k, v in stages.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    out = {"digit": args.digit, "gan_seed": args.gan_seed, "n_reference": int(len(ref)),
           "n_test": int(len(z_test)), "threads": 1, "reps": args.reps,
           "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
           "stages_wall_s": med, "stages_cpu_s": med_cpu,
           "per_method_wall_s": per_method(med), "per_method_cpu_s": per_method(med_cpu),
           "pretrain_key": pretrain_key(cfg)}
    if args.peak:
        tmp = Path(tempfile.mkdtemp(prefix="xdd-peak-"))
        try:
            src = store.pretrain_dir(pretrain_key(cfg))
            shutil.copytree(src, tmp / "pretrain" / src.name)
            code = ("import torch; torch.set_num_threads(1); from xdd.config import preset; "
                    "from xdd.experiment import run_experiment; "
                    f"r = run_experiment(preset('quick', ood_digit={args.digit}, methods={methods!r}, "
                    f"**{{'pretrain.seed': {args.gan_seed}, 'projection.methods': ('pca',)}}), "
                    "device='cpu'); import json; print(json.dumps(r['timings']))")
            env = dict(os.environ, XDD_CACHE=str(tmp), XDD_DATA_CACHE=str(store.data_dir()),
                       OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)
            out["run_wall_s"] = time.perf_counter() - t
            out["run_timings_s"] = json.loads(res.stdout.strip().splitlines()[-1])
            out["run_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

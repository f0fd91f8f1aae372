"""Benchmark 5: embedding and KDE-scoring the 10k test images, as run_experiment does it.

For a cached run: f(x) of the 10,000 test images and of the labeled images with the retrained
discriminator, L2 normalisation, the KDE fit (leave-one-out bandwidth on the labeled
embeddings) and the scores.  Median of ``--reps`` repetitions after one warm-up, with the
stages timed separately.

    python bench/pipeline/scoring_speed.py --cache CACHE --run-key KEY --json out.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._common import log, median, worker_threads, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--run-key", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="default: the worker's")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ["XDD_CACHE"] = args.cache

    import numpy as np
    import torch

    torch.set_num_threads(args.threads or worker_threads())
    from xdd.storage import store
    from xdd.core.config import from_dict
    from xdd.storage.data import eval_arrays, load_mnist, to_tensor
    from xdd.core.scoring import l2_normalize as _normalize
    from xdd.core.models import Discriminator
    from xdd.train.retrain import embed_all
    from xdd.core.scoring import KDEScorer

    res = store.load_results(args.run_key)
    if res is None:
        raise SystemExit(f"run {args.run_key} is not in {args.cache}")
    cfg = from_dict(res["config"])
    D = Discriminator(cfg.pretrain.d_width)
    D.load_state_dict(store.load_checkpoint(store.run_dir(args.run_key) / "checkpoint.pt")["D"])
    D.eval()
    arrays = store.load_npz(args.run_key, "scores.npz")
    data = load_mnist(cfg.data.root)
    x_eval, _ = eval_arrays(data, cfg.data.eval_split)
    x_test = to_tensor(x_eval[arrays["test_index"]])
    x_lab = to_tensor(data.x_train[arrays["labeled_index"]])

    def once() -> dict[str, float]:
        t = {}
        c = time.perf_counter()
        z_test = embed_all(D, x_test).double().numpy()
        z_lab = embed_all(D, x_lab).double().numpy()
        t["embed"] = time.perf_counter() - c
        c = time.perf_counter()
        z_test, z_lab = _normalize(z_test), _normalize(z_lab)
        t["normalize"] = time.perf_counter() - c
        c = time.perf_counter()
        kde = KDEScorer(cfg.score.bandwidth).fit(z_lab)
        t["kde_fit"] = time.perf_counter() - c
        c = time.perf_counter()
        s = kde.score(z_test)
        t["kde_score"] = time.perf_counter() - c
        t["total"] = sum(t.values())
        stored = arrays.get("score_labeled_xdd", arrays.get("score_xdd"))  # older runs: score_xdd
        assert np.allclose(s, stored, rtol=1e-4, atol=1e-3), "scores differ from the run's"
        return t

    once()
    log(f"scoring: {len(x_test)} test + {len(x_lab)} labeled images, {args.reps} reps")
    reps = [once() for _ in range(args.reps)]
    out = {"n_test": len(x_test), "n_labeled": len(x_lab), "embed_dim": D.embed_dim,
           "threads": torch.get_num_threads(), "reps": reps,
           "median": {k: median([r[k] for r in reps]) for k in reps[0]}}
    with torch.profiler.profile() as prof:
        embed_all(D, x_test)
    out["profile_embed"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
    write_json(args.json, out)


if __name__ == "__main__":
    main()

"""The k of the unlabeled reference's k-NN, on the test set, from the networks the cached runs
already hold: the pretrained D (the run's GAN) and the XDD-retrained D (its checkpoint.pt).

For every cached test-split run of a preset (10 shots): the unlabeled reference exactly as
run_experiment builds it (xdd.pipeline.reference: the GAN's pretraining images, L2-normalised,
PCA-64 fitted on the run's seeded 8,192 rows, exact neighbours), scored with each k of
``--k``, AUPRC with the held-out digit as positive.  Nothing is retrained and nothing is
written to the cache.  The k compared here was chosen on the validation split first
(docs/METHOD.md section 7, bench/tuning/tune_unlabeled.py); this script only reports the test
figures.

    python bench/tuning/rescore_knn.py --cache /work/cache --k 1,10 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--k", default="1,10")
    ap.add_argument("--json", required=True)
    ap.add_argument("--limit", type=int, default=None, help="at most this many runs")
    args = ap.parse_args()
    os.environ["XDD_CACHE"] = args.cache
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ks = [int(k) for k in args.k.split(",")]

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from xdd.storage import store
    from xdd.core.config import from_dict
    from xdd.storage.data import eval_arrays, load_mnist, make_splits, to_tensor
    from xdd.pipeline.gan import load_pretrained
    from xdd.core.metrics import all_metrics
    from xdd.core.models import Discriminator
    from xdd.pipeline.reference import pca_fit_rows, reference_features, reference_indices
    from xdd.train.retrain import embed_all
    from xdd.core.scoring import FeatureReducer, KNNScorer

    data = load_mnist()
    x_test_all, y_test_all = eval_arrays(data, "test")
    rows = []
    for res in store.list_runs():
        if args.limit is not None and len(rows) >= args.limit:
            break
        if res.get("preset") != args.preset or res.get("eval_split") != "test" \
                or res.get("shots") != 10 or "xdd" not in res.get("methods", {}):
            continue
        cfg = from_dict(res["config"])
        got = load_pretrained(cfg, "cpu")
        ckpt = store.load_checkpoint(store.run_dir(res["run_key"]) / "checkpoint.pt")
        if got is None or ckpt is None:
            print(f"run {res['run_key']}: GAN or XDD checkpoint missing, skipped", flush=True)
            continue
        t = time.perf_counter()
        D_xdd = Discriminator(cfg.pretrain.d_width)
        D_xdd.load_state_dict(ckpt["D"])
        sp = make_splits(cfg, data)
        ref = reference_indices(cfg, sp)
        assert np.array_equal(ref, store.load_npz(res["run_key"], "scores.npz")["reference_index"])
        fit_rows = pca_fit_rows(cfg, len(ref))
        is_ood = (y_test_all[sp.test] == cfg.ood_digit).astype(np.int8)
        row = {"digit": cfg.ood_digit, "seed": cfg.seed, "gan_seed": cfg.pretrain.seed,
               "run_key": res["run_key"],
               "stored_k1": {m: res["references"]["unlabeled"][m]["auprc"]
                             for m in ("pixels", "before", "xdd")
                             if m in res["references"]["unlabeled"]}}
        for name, model in (("before", got[1]), ("xdd", D_xdd.eval())):
            red, feats = reference_features(
                lambda u8: embed_all(model, to_tensor(u8)).numpy(), data.x_train, ref, fit_rows,
                FeatureReducer(cfg.score.knn_pca, cfg.score.normalize, seed=cfg.seed))
            q = red.transform(embed_all(model, to_tensor(x_test_all[sp.test])).numpy())
            for k in ks:
                row[f"{name}_k{k}"] = all_metrics(is_ood, KNNScorer(k).fit(feats).score(q))["auprc"]
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The search of docs/METHOD.md section 7: XDD variants that bring the unlabeled images in,
scored under the unlabeled reference, on the validation split only (GAN seeds >= 100).

For every (digit, GAN seed) whose validation GAN is cached: the pretrained D's k-NN score and,
per variant, a retraining and its k-NN score (k = 1 and k = 10), exactly as run_experiment
computes the unlabeled reference (L2-normalised, PCA-64 fitted on 8,192 reference images,
exact neighbours), plus the raw-pixel 1-NN.  AUPRC on the validation images (the last 10k
training images; the reference and the labeled draw come from the first 50k).  Refuses test
data and seeds below 100.

    python bench/tune_unlabeled.py --cache /work/cache --digits 0-9 --seeds 100,101 --json out.json
    python bench/tune_unlabeled.py --summarize out.json [more.json ...]   # the table, the rule
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = {  # name -> RetrainConfig overrides (fixed before any run)
    "xdd": {},
    "xdd-600": {"steps": 600},
    "xdd-anchor": {"anchor_weight": 10.0},
    "xdd-anchor-600": {"anchor_weight": 10.0, "steps": 600},
}
KS = (1, 10)


def summarize(rows: list[dict]) -> str:
    """The table of docs/METHOD.md section 7 and the verdict of its rule, from the rows."""
    import numpy as np

    names = [n for n in VARIANTS if all(n in r for r in rows)]
    lines = ["| setting | " + " | ".join(f"digit {r['digit']}" for r in rows) + " | mean |",
             "|---" * (len(rows) + 2) + "|"]
    cells = {("pixels", "k1"): [r["pixels"]["k1"] for r in rows]}
    for name in ["before"] + names:
        for k in KS:
            cells[(name, f"k{k}")] = [r[name][f"k{k}"] for r in rows]
    for (name, k), v in cells.items():
        lines.append(f"| {name}, {k[1:]}-NN | " + " | ".join(f"{x:.3f}" for x in v)
                     + f" | **{np.mean(v):.3f}** |")
    best = max(((n, f"k{k}") for n in names for k in KS), key=lambda c: np.mean(cells[c]))
    base = cells[("before", best[1])]
    gain = float(np.mean(cells[best]) - np.mean(base))
    wins = sum(a > b for a, b in zip(cells[best], base))
    ok = gain >= 0.01 and wins > len(rows) / 2
    lines += ["", f"Best by the rule: **{best[0]}, {best[1][1:]}-NN**, mean "
              f"{np.mean(cells[best]):.3f}; against the pretrained D at the same k "
              f"{gain:+.3f}, above it on {wins} of {len(rows)} validation digits: "
              + ("**chosen**." if ok else "**not chosen** (nothing beat the unsupervised k-NN).")]
    return "\n".join(lines)


def main() -> None:
    from xdd.cli.main import _digit_list

    if len(sys.argv) > 2 and sys.argv[1] == "--summarize":
        rows = [r for f in sys.argv[2:] for r in json.loads(Path(f).read_text())]
        print(summarize(sorted(rows, key=lambda r: (r["digit"], r["seed"]))))
        return

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--digits", default="0-9")
    ap.add_argument("--seeds", default="100,101")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ["XDD_CACHE"] = args.cache
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seeds = _digit_list(args.seeds)
    if min(seeds) < 100:
        raise SystemExit("tuning uses seeds >= 100 only (DESIGN.md section 2)")

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from xdd.core.config import preset
    from xdd.storage.data import eval_arrays, load_mnist, make_splits, to_tensor
    from xdd.pipeline.experiment import load_pretrained
    from xdd.pipeline.reference import pca_fit_rows, reference_features, reference_indices
    from xdd.core.metrics import all_metrics
    from xdd.train.retrain import embed_all, retrain
    from xdd.core.scoring import FeatureReducer, KNNScorer

    data = load_mnist()
    x_eval_all, y_eval_all = eval_arrays(data, "val")
    rows = []
    for seed in seeds:
        for digit in _digit_list(args.digits):
            cfg = preset("quick", ood_digit=digit, seed=seed,
                         **{"pretrain.seed": seed, "data.eval_split": "val"})
            assert cfg.data.eval_split == "val"
            got = load_pretrained(cfg, "cpu")
            if got is None:
                print(f"digit {digit} seed {seed}: no validation GAN cached, skipped", flush=True)
                continue
            D0 = got[1]
            sp = make_splits(cfg, data)
            ref = reference_indices(cfg, sp)
            assert ref.max() < len(data.y_train) - 10000  # never a validation image
            x_val = to_tensor(x_eval_all[sp.test])
            is_ood = (y_eval_all[sp.test] == digit).astype(np.int8)
            fit_rows = pca_fit_rows(cfg, len(ref))
            x_unl = to_tensor(data.x_train[ref[fit_rows]])
            in_classes = [k for k in range(10) if k != digit]
            remap = {d: i for i, d in enumerate(in_classes)}
            x_lab = to_tensor(data.x_train[sp.labeled])
            y_lab = torch.tensor([remap[int(v)] for v in data.y_train[sp.labeled]])

            def knn_auprcs(model) -> dict[str, float]:
                red, feats = reference_features(
                    lambda u8: embed_all(model, to_tensor(u8)).numpy(), data.x_train, ref,
                    fit_rows, FeatureReducer(cfg.score.knn_pca, True, seed=cfg.seed))
                q = red.transform(embed_all(model, x_val).numpy())
                return {f"k{k}": all_metrics(is_ood, KNNScorer(k).fit(feats).score(q))["auprc"]
                        for k in KS}

            t = time.perf_counter()
            row = {"digit": digit, "seed": seed, "before": knn_auprcs(D0)}
            pix, pf = reference_features(
                lambda u8: u8.reshape(len(u8), -1) / 255.0, data.x_train, ref, fit_rows,
                FeatureReducer(cfg.score.pixel_knn_pca, False, seed=cfg.seed))
            row["pixels"] = {"k1": all_metrics(is_ood, KNNScorer(1).fit(pf).score(
                pix.transform(x_eval_all[sp.test].reshape(len(sp.test), -1) / 255.0)))["auprc"]}
            for name in args.variants.split(","):
                rcfg = dataclasses.replace(cfg.retrain, **VARIANTS[name])
                torch.manual_seed(cfg.seed)
                out = retrain(D0, rcfg, x_lab, y_lab, "xdd", cfg.seed, x_unlabeled=x_unl)
                row[name] = knn_auprcs(out.D)
            row["seconds"] = time.perf_counter() - t
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Choose the retraining settings on the validation split, never on the test set.

Pretraining and the labeled draw use the first 50k training images only
(``data.eval_split="val"``); AUPRC is measured on the last 10k training images.  Seeds 100..
are used here; the reported results (docs/RESULTS.md) use seeds 0.. on the test set.

The pretrained GAN of the validation split is computed once (and cached) by run_experiment;
each variant then only retrains and scores, in this process.  Usage::

    python bench/tune.py --digit 0 --seeds 100,101 --variants all
    python bench/tune.py --digit 0 --variants '{"mine": {"retrain.lr": 1e-4}}'
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from xdd.config import preset  # noqa: E402
from xdd.data import eval_arrays, load_mnist, make_splits, to_tensor  # noqa: E402
from xdd.experiment import load_pretrained, run_experiment  # noqa: E402
from xdd.metrics import auprc  # noqa: E402
from xdd.retrain import embed_all, retrain  # noqa: E402
from xdd.scoring import KDEScorer  # noqa: E402

# Every variant that was tried, in the order it was tried (docs/METHOD.md section 5).  Each
# is a set of overrides of the settings at the time of the first round ("round1"), written
# out in full so the table can be reproduced after the defaults changed.
ROUND1 = {"retrain.lr": 1e-4, "retrain.pair_weight": 1.0, "retrain.pull_weight": 0.0,
          "retrain.train_blocks": 4, "retrain.sigma_init": "mle"}
VARIANTS: dict[str, dict] = {
    "r1: all blocks, lr 1e-4 (first defaults)": {},
    "r1: + shifts of 2 px": {"retrain.augment_shift": 2},
    "r1: ratio mode": {"retrain.pair_mode": "ratio"},
    "r1: ratio mode + shifts": {"retrain.pair_mode": "ratio", "retrain.augment_shift": 2},
    "r1: lr 1e-5": {"retrain.lr": 1e-5},
    "r1: last block only": {"retrain.train_blocks": 1},
    "r1: MCDD only": {"method": "mcdd"},
    "r2: + center pull 1": {"retrain.pull_weight": 1.0},
    "r2: + center pull 10": {"retrain.pull_weight": 10.0},
    "r2: pull 10 + shifts": {"retrain.pull_weight": 10.0, "retrain.augment_shift": 2},
    "r2: pull 10, last block": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1},
    "r2: pull 10, last block, pair x10": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1,
                                          "retrain.pair_weight": 10.0},
    "r2: pull 10, last block, pair x30": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1,
                                          "retrain.pair_weight": 30.0},
    "r2: pull 10, last block, pair x100": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1,
                                           "retrain.pair_weight": 100.0},
    "r3: chosen (pull 10, last block, pair x10, lr 1e-3)": {
        "retrain.pull_weight": 10.0, "retrain.train_blocks": 1, "retrain.pair_weight": 10.0,
        "retrain.lr": 1e-3},
    "r3: chosen, two blocks": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 2,
                               "retrain.pair_weight": 10.0, "retrain.lr": 1e-3},
    "r3: chosen, pair x3": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1,
                            "retrain.pair_weight": 3.0, "retrain.lr": 1e-3},
    "r3: chosen, 400 steps": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1,
                              "retrain.pair_weight": 10.0, "retrain.lr": 1e-3,
                              "retrain.steps": 400},
    "r3: chosen, sigma_k = 1 at start": {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1,
                                         "retrain.pair_weight": 10.0, "retrain.lr": 1e-3,
                                         "retrain.sigma_init": "unit"},
    "r3: MCDD only, sigma_k = 1 at start": {"method": "mcdd", "retrain.sigma_init": "unit",
                                            "retrain.train_blocks": 1, "retrain.lr": 1e-3},
}


def _norm(z: torch.Tensor) -> np.ndarray:
    z = z.double().numpy()
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digit", type=int, default=0)
    ap.add_argument("--seeds", default="100,101")
    ap.add_argument("--variants", default="all", help="'all' or a JSON object name -> overrides")
    ap.add_argument("--preset", default="quick")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = VARIANTS if args.variants == "all" else json.loads(args.variants)
    # The named variants override the first round's settings; custom ones the current defaults.
    start = ROUND1 if args.variants == "all" else {}
    if min(seeds) < 100:
        sys.exit("error: seeds below 100 are kept for the reported results; use 100 and up")

    val = {"data.eval_split": "val", "projection.n_samples": 0}
    base = preset(args.preset, ood_digit=args.digit, methods=("before",), **val)
    run_experiment(base)  # pretrains (or finds) the validation-split GAN
    data = load_mnist()
    _, D = load_pretrained(base, torch.device("cpu"))
    x_eval, y_eval = eval_arrays(data, "val")
    x_eval_t = to_tensor(x_eval)
    is_ood = (y_eval == args.digit).astype(int)
    in_classes = [k for k in range(10) if k != args.digit]
    labeled = {}
    for s in seeds:
        sp = make_splits(preset(args.preset, ood_digit=args.digit, seed=s, **val), data)
        y = torch.tensor([in_classes.index(int(v)) for v in data.y_train[sp.labeled]])
        x = to_tensor(data.x_train[sp.labeled])
        before = auprc(is_ood, KDEScorer().fit(_norm(embed_all(D, x))).score(_norm(embed_all(D, x_eval_t))))
        labeled[s] = (x, y, before)

    print(f"digit {args.digit}, seeds {seeds}, validation split; AUPRC mean over seeds")
    print(f"{'variant':<55} {'before':>7} {'after':>7}")
    for name, overrides in variants.items():
        overrides = dict(overrides)
        method = overrides.pop("method", "xdd")
        t = time.perf_counter()
        rows = []
        for s in seeds:
            x, y, before = labeled[s]
            cfg = preset(args.preset, ood_digit=args.digit, seed=s, **val, **{**start, **overrides})
            torch.manual_seed(s)
            out = retrain(D, cfg.retrain, x, y, method, s)
            after = auprc(is_ood, KDEScorer().fit(_norm(embed_all(out.D, x)))
                          .score(_norm(embed_all(out.D, x_eval_t))))
            rows.append((before, after))
        r = np.array(rows)
        print(f"{name:<55} {r[:, 0].mean():>7.3f} {r[:, 1].mean():>7.3f}  "
              f"({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

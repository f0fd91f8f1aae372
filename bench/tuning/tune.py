"""Choose the retraining settings on the validation split, never on the test set.

Pretraining and the labeled draw use the first 50k training images only
(``data.eval_split="val"``); AUPRC is measured on the last 10k training images.  Seeds 100..
are used here; the reported results (docs/RESULTS.md) use seeds 0.. on the test set.

The pretrained GAN of the validation split is computed once per digit (and cached) by
run_experiment; each variant then only retrains and scores.  Digits run in parallel processes
(``--jobs``), one torch thread each.  Usage::

    python bench/tuning/tune.py --digits 0-9 --seeds 100,101 --variants rounds4-6 --jobs 2
    python bench/tuning/tune.py --digits 0,1 --variants '{"mine": {"retrain.lr": 1e-4}}'
    python bench/tuning/tune.py --digits 0 --variants rounds1-3   # the first search (one digit)

A custom JSON variant overrides the current defaults.

A variant is a set of overrides of the preset (dotted config keys), plus ``"method"`` (default
``xdd``).  The table gives, per variant, the mean AUPRC before and after over digits and seeds,
the number of digits where after > before, and after - before per digit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd

import numpy as np  # noqa: E402

from xdd.cli.main import _int_list  # noqa: E402  (the CLI's "0-9,3" parser)

# Each named search is (variants, start): a variant's overrides are applied on top of
# ``start``, which spells out the settings of the time in full, so a table can be reproduced
# after the defaults changed.

# Rounds 1-3 (docs/METHOD.md section 5): digit 0 only, and the GAN of that time (equal G and D
# learning rates, zero output bias: the unbalanced game of section 1).
ROUND1 = {"pretrain.g_lr": 2e-4, "pretrain.g_out_bias": 0.0, "retrain.pair_mode": "sphere",
          "retrain.lr": 1e-4, "retrain.pair_weight": 1.0, "retrain.pull_weight": 0.0,
          "retrain.train_blocks": 4, "retrain.sigma_init": "mle"}
_CHOSEN3 = {"retrain.pull_weight": 10.0, "retrain.train_blocks": 1, "retrain.pair_weight": 10.0,
            "retrain.lr": 1e-3}
ROUNDS_1_3: dict[str, dict] = {
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
    "r2: pull 10, last block, pair x10": {**_CHOSEN3, "retrain.lr": 1e-4},
    "r2: pull 10, last block, pair x30": {**_CHOSEN3, "retrain.lr": 1e-4,
                                          "retrain.pair_weight": 30.0},
    "r2: pull 10, last block, pair x100": {**_CHOSEN3, "retrain.lr": 1e-4,
                                           "retrain.pair_weight": 100.0},
    "r3: chosen (pull 10, last block, pair x10, lr 1e-3)": _CHOSEN3,
    "r3: chosen, two blocks": {**_CHOSEN3, "retrain.train_blocks": 2},
    "r3: chosen, pair x3": {**_CHOSEN3, "retrain.pair_weight": 3.0},
    "r3: chosen, 400 steps": {**_CHOSEN3, "retrain.steps": 400},
    "r3: chosen, sigma_k = 1 at start": {**_CHOSEN3, "retrain.sigma_init": "unit"},
    "r3: MCDD only, sigma_k = 1 at start": {"method": "mcdd", "retrain.sigma_init": "unit",
                                            "retrain.train_blocks": 1, "retrain.lr": 1e-3},
}

# Rounds 4-6: every digit, with the balanced GAN of section 1 (the presets' pretraining
# settings), starting from the settings chosen in round 3.
ROUND4 = {"retrain.pair_mode": "sphere", "retrain.sigma_init": "mle", "retrain.lr": 1e-3,
          "retrain.pair_weight": 10.0, "retrain.pull_weight": 10.0, "retrain.train_blocks": 1,
          "retrain.steps": 200}
_RATIO_ALL = {"retrain.pair_mode": "ratio", "retrain.train_blocks": 4, "retrain.lr": 1e-4}
ROUNDS_4_6: dict[str, dict] = {
    "r4: round-3 choice (sphere, pull 10, pair x10, last block, lr 1e-3)": {},
    "r4: MCDD only": {"method": "mcdd"},
    "r4: pairwise only": {"method": "pairwise"},
    "r4: pull 1": {"retrain.pull_weight": 1.0},
    "r4: pull 3": {"retrain.pull_weight": 3.0},
    "r4: pair x3": {"retrain.pair_weight": 3.0},
    "r4: pair x30": {"retrain.pair_weight": 30.0},
    "r4: two blocks": {"retrain.train_blocks": 2},
    "r4: all blocks, lr 1e-4": {"retrain.train_blocks": 4, "retrain.lr": 1e-4},
    "r4: ratio mode": {"retrain.pair_mode": "ratio"},
    "r4: raw mode": {"retrain.pair_mode": "raw"},
    "r4: 400 steps": {"retrain.steps": 400},
    "r4: no center pull": {"retrain.pull_weight": 0.0},
    "r4: sigma_k = 1 at start": {"retrain.sigma_init": "unit"},
    "r5: ratio, all blocks, lr 1e-4": _RATIO_ALL,
    "r5: ratio, two blocks": {"retrain.pair_mode": "ratio", "retrain.train_blocks": 2},
    "r5: ratio, pair x3": {"retrain.pair_mode": "ratio", "retrain.pair_weight": 3.0},
    "r5: ratio, pair x1": {"retrain.pair_mode": "ratio", "retrain.pair_weight": 1.0},
    "r5: ratio, pull 1": {"retrain.pair_mode": "ratio", "retrain.pull_weight": 1.0},
    "r5: ratio, 100 steps": {"retrain.pair_mode": "ratio", "retrain.steps": 100},
    "r6: ratio, all blocks, lr 1e-4, pair x3 (chosen)": {**_RATIO_ALL, "retrain.pair_weight": 3.0},
    "r6: ratio, all blocks, lr 1e-4, pair x30": {**_RATIO_ALL, "retrain.pair_weight": 30.0},
    "r6: ratio, all blocks, lr 1e-4, 400 steps": {**_RATIO_ALL, "retrain.steps": 400},
    "r6: ratio, all blocks, lr 3e-5": {**_RATIO_ALL, "retrain.lr": 3e-5},
    "r6: ratio, three blocks, lr 1e-4": {**_RATIO_ALL, "retrain.train_blocks": 3},
}
NAMED = {"rounds1-3": (ROUNDS_1_3, ROUND1), "rounds4-6": (ROUNDS_4_6, ROUND4)}


def _norm(z) -> np.ndarray:
    """A (N, d) float32 torch embedding as float64 numpy rows on the unit sphere, as scored."""
    from xdd.core.scoring import l2_normalize

    return l2_normalize(z.double().numpy(), inplace=True)


def tune_digit(preset_name: str, digit: int, seeds: list[int], variants: dict[str, dict],
               start: dict) -> dict[str, list[tuple[float, float]]]:
    """{variant: [(before, after) per seed]} for one OOD digit on the validation split."""
    import torch

    torch.set_num_threads(1)
    from xdd.core.config import preset
    from xdd.storage.data import eval_arrays, load_mnist, make_splits, to_tensor
    from xdd.pipeline.experiment import run_experiment
    from xdd.pipeline.gan import load_pretrained
    from xdd.core.metrics import auprc
    from xdd.train.retrain import embed_all, retrain
    from xdd.core.scoring import KDEScorer

    val = {"data.eval_split": "val", "projection.n_samples": 0}
    base = preset(preset_name, ood_digit=digit, methods=("before",), **val, **start)
    run_experiment(base)  # pretrains (or finds) the validation-split GAN
    data = load_mnist()
    _, D = load_pretrained(base, torch.device("cpu"))
    x_eval, y_eval = eval_arrays(data, "val")
    x_eval_t = to_tensor(x_eval)
    z_eval_before = _norm(embed_all(D, x_eval_t))
    is_ood = (y_eval == digit).astype(int)
    in_classes = [k for k in range(10) if k != digit]
    labeled = {}
    for s in seeds:
        sp = make_splits(preset(preset_name, ood_digit=digit, seed=s, **val, **start), data)
        y = torch.tensor([in_classes.index(int(v)) for v in data.y_train[sp.labeled]])
        x = to_tensor(data.x_train[sp.labeled])
        before = auprc(is_ood, KDEScorer().fit(_norm(embed_all(D, x))).score(z_eval_before))
        labeled[s] = (x, y, before)
    out: dict[str, list[tuple[float, float]]] = {}
    for name, overrides in variants.items():
        overrides = dict(overrides)
        method = overrides.pop("method", "xdd")
        rows = []
        for s in seeds:
            x, y, before = labeled[s]
            cfg = preset(preset_name, ood_digit=digit, seed=s, **val, **{**start, **overrides})
            torch.manual_seed(s)
            got = retrain(D, cfg.retrain, x, y, method, s)
            after = auprc(is_ood, KDEScorer().fit(_norm(embed_all(got.D, x)))
                          .score(_norm(embed_all(got.D, x_eval_t))))
            rows.append((float(before), float(after)))
        out[name] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", type=_int_list, default=list(range(10)), help="e.g. 0-9 or 0,1,4")
    ap.add_argument("--seeds", default="100,101")
    ap.add_argument("--variants", default="rounds4-6",
                    help="rounds1-3, rounds4-6, or a JSON object name -> overrides")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--jobs", type=int, default=1, help="digits tuned in parallel processes")
    ap.add_argument("--base", default="{}",
                    help='overrides applied to every variant and to the GAN, as JSON, e.g. '
                         '\'{"pretrain.g_lr": 2e-4}\' for the GAN of rounds 1-3')
    ap.add_argument("--json-out", help="also write the raw figures to this file")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    digits = args.digits
    if min(seeds) < 100:
        sys.exit("error: seeds below 100 are kept for the reported results; use 100 and up")
    variants, start = NAMED.get(args.variants) or (json.loads(args.variants), {})
    start = {**start, **json.loads(args.base)}

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {d: pool.submit(tune_digit, args.preset, d, seeds, variants, start)
                for d in digits}
        per_digit = {d: f.result() for d, f in futs.items()}

    print(f"validation split, preset {args.preset}, digits {digits}, seeds {seeds}, "
          f"overrides {start or 'none'}; "
          f"AUPRC (average precision), mean over digits and seeds ({time.perf_counter() - t0:.0f} s)")
    print(f"{'variant':<70} {'before':>7} {'after':>7} {'wins':>5}  after - before per digit")
    for name in variants:
        r = np.array([per_digit[d][name] for d in digits])  # (digits, seeds, 2)
        delta = r[:, :, 1].mean(1) - r[:, :, 0].mean(1)
        print(f"{name:<70} {r[:, :, 0].mean():>7.3f} {r[:, :, 1].mean():>7.3f} "
              f"{int((delta > 0).sum()):>2}/{len(digits)}  "
              + " ".join(f"{v:+.3f}" for v in delta), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"preset": args.preset, "seeds": seeds, "digits": digits,
             "results": {str(d): v for d, v in per_digit.items()}}, indent=1))


if __name__ == "__main__":
    main()

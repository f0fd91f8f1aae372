"""The search of docs/METHOD.md section 7: XDD variants that bring the unlabeled images in,
scored under the unlabeled reference, on the validation split only (GAN seeds >= 100).

For every (digit, GAN seed) whose validation GAN is cached: the pretrained D's k-NN score and,
per variant, a retraining and its k-NN score (k = 1 and k = 10), exactly as run_experiment
computes the unlabeled reference (L2-normalised, PCA-64 fitted on 8,192 reference images,
exact neighbours), plus the raw-pixel 1-NN.  AUPRC on the validation images (the last 10k
training images; the reference and the labeled draw come from the first 50k).  Refuses test
data and seeds below 100.

    python bench/tuning/tune_unlabeled.py --cache CACHE --digits 0-9 --seeds 100,101 --json out.json
    python bench/tuning/tune_unlabeled.py --summarize out.json [more.json ...]  # table, rule
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd

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


def validation_setting(data, digit: int, seed: int) -> SimpleNamespace | None:
    """What the search needs of one (digit, GAN seed) on the validation split: the cached
    pretrained D, the reference, the labeled draw and the validation images; None when its
    validation GAN is not cached."""
    import numpy as np
    import torch

    from xdd.core.config import preset
    from xdd.pipeline.gan import load_pretrained
    from xdd.pipeline.reference import pca_fit_rows, reference_indices
    from xdd.storage.data import eval_arrays, make_splits, to_tensor

    cfg = preset("quick", ood_digit=digit, seed=seed,
                 **{"pretrain.seed": seed, "data.eval_split": "val"})
    assert cfg.data.eval_split == "val"
    got = load_pretrained(cfg, "cpu")
    if got is None:
        return None
    x_eval_all, y_eval_all = eval_arrays(data, "val")
    sp = make_splits(cfg, data)
    ref = reference_indices(cfg, sp)
    assert ref.max() < len(data.y_train) - 10000  # never a validation image
    fit_rows = pca_fit_rows(cfg, len(ref))
    remap = {d: i for i, d in enumerate(k for k in range(10) if k != digit)}
    return SimpleNamespace(
        cfg=cfg, D0=got[1], ref=ref, fit_rows=fit_rows, x_val_u8=x_eval_all[sp.test],
        x_val=to_tensor(x_eval_all[sp.test]),
        is_ood=(y_eval_all[sp.test] == digit).astype(np.int8),
        x_unl=to_tensor(data.x_train[ref[fit_rows]]), x_lab=to_tensor(data.x_train[sp.labeled]),
        y_lab=torch.tensor([remap[int(v)] for v in data.y_train[sp.labeled]]))


def knn_auprcs(model, st: SimpleNamespace, data) -> dict[str, float]:
    """AUPRC of a network's k-NN score (each k of KS), as run_experiment scores the
    unlabeled reference."""
    from xdd.core.metrics import all_metrics
    from xdd.core.scoring import FeatureReducer, KNNScorer
    from xdd.pipeline.reference import reference_features
    from xdd.storage.data import to_tensor
    from xdd.train.retrain import embed_all

    red, feats = reference_features(
        lambda u8: embed_all(model, to_tensor(u8)).numpy(), data.x_train, st.ref, st.fit_rows,
        FeatureReducer(st.cfg.score.knn_pca, True, seed=st.cfg.seed))
    q = red.transform(embed_all(model, st.x_val).numpy())
    return {f"k{k}": all_metrics(st.is_ood, KNNScorer(k).fit(feats).score(q))["auprc"]
            for k in KS}


def pixel_auprc(st: SimpleNamespace, data) -> dict[str, float]:
    """AUPRC of the raw-pixel 1-NN (PCA of the pixels, not normalised)."""
    from xdd.core.metrics import all_metrics
    from xdd.core.scoring import FeatureReducer, KNNScorer
    from xdd.pipeline.reference import reference_features

    pix, pf = reference_features(
        lambda u8: u8.reshape(len(u8), -1) / 255.0, data.x_train, st.ref, st.fit_rows,
        FeatureReducer(st.cfg.score.pixel_knn_pca, False, seed=st.cfg.seed))
    x = st.x_val_u8.reshape(len(st.x_val_u8), -1) / 255.0
    return {"k1": all_metrics(st.is_ood, KNNScorer(1).fit(pf).score(pix.transform(x)))["auprc"]}


def search_row(st: SimpleNamespace, data, variants: list[str]) -> dict[str, Any]:
    """The pretrained D, the pixels and each variant's retraining, for one setting."""
    import torch

    from xdd.train.retrain import retrain

    t = time.perf_counter()
    row: dict[str, Any] = {"digit": st.cfg.ood_digit, "seed": st.cfg.seed,
                           "before": knn_auprcs(st.D0, st, data), "pixels": pixel_auprc(st, data)}
    for name in variants:
        rcfg = dataclasses.replace(st.cfg.retrain, **VARIANTS[name])
        torch.manual_seed(st.cfg.seed)
        out = retrain(st.D0, rcfg, st.x_lab, st.y_lab, "xdd", st.cfg.seed, x_unlabeled=st.x_unl)
        row[name] = knn_auprcs(out.D, st, data)
    row["seconds"] = time.perf_counter() - t
    return row


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
        raise SystemExit("tuning uses seeds >= 100 only (docs/DESIGN.md §2)")

    import torch

    torch.set_num_threads(1)
    from xdd.storage.data import load_mnist

    data = load_mnist()
    rows = []
    for seed in seeds:
        for digit in _digit_list(args.digits):
            st = validation_setting(data, digit, seed)
            if st is None:
                print(f"digit {digit} seed {seed}: no validation GAN cached, skipped", flush=True)
                continue
            rows.append(search_row(st, data, args.variants.split(",")))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

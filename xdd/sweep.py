"""Sweeps: many runs, one long table (a row per run x method), summaries as CSV and markdown."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterable

from . import store
from .config import RunConfig

METHOD_ORDER = ("pixels", "before", "mcdd", "pairwise", "svdd", "softmax", "xdd")


def results_table(results: Iterable[dict[str, Any]]):
    """Long pandas table: one row per (run, method) with every metric."""
    import pandas as pd

    rows = []
    for r in results:
        for m, v in r["methods"].items():
            rows.append({"run_key": r["run_key"], "preset": r["preset"], "ood_digit": r["ood_digit"],
                         "shots": r["shots"], "seed": r["seed"], "method": m,
                         "auprc": v["auprc"], "auroc": v["auroc"], "fpr95": v["fpr95"],
                         "aupr_in": v["aupr_in"], "base_rate": r["base_rate"],
                         "wall_time_s": r["wall_time_s"], "device": r["device"]})
    return pd.DataFrame(rows)


def _ordered(methods: Iterable[str]) -> list[str]:
    methods = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in methods] + [m for m in methods if m not in METHOD_ORDER]


def summary_markdown(df, shots: int | None = None) -> str:
    """Per digit and on average: AUPRC mean +- std over seeds (AUROC mean beside it)."""
    if shots is not None:
        df = df[df.shots == shots]
    methods = _ordered(df.method)
    g = df.groupby(["ood_digit", "method"])
    pr_m, pr_s, roc_m = g.auprc.mean(), g.auprc.std(ddof=0), g.auroc.mean()
    head = "| OOD digit | " + " | ".join(methods) + " |"
    sep = "|---|" + "---|" * len(methods)
    lines = [head, sep]
    for d in sorted(df.ood_digit.unique()):
        cells = []
        for m in methods:
            if (d, m) in pr_m.index:
                cells.append(f"{pr_m[(d, m)]:.3f} ± {pr_s[(d, m)]:.3f} ({roc_m[(d, m)]:.3f})")
            else:
                cells.append("–")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    # Mean over digits of the per-digit means; std = mean over digits of the per-digit stds.
    per_digit = df.groupby(["method", "ood_digit"]).agg(auprc=("auprc", "mean"),
                                                        auprc_sd=("auprc", lambda s: s.std(ddof=0)),
                                                        auroc=("auroc", "mean"))
    avg = per_digit.groupby("method").mean()
    lines.append("| **mean** | " + " | ".join(
        f"**{avg.auprc[m]:.3f}** ± {avg.auprc_sd[m]:.3f} ({avg.auroc[m]:.3f})" for m in methods) + " |")
    return "\n".join(lines)


def shots_markdown(df, methods=("before", "xdd")) -> str:
    """Mean AUPRC over digits and seeds against the shot count."""
    shots = sorted(df.shots.unique())
    methods = [m for m in methods if m in set(df.method)]
    lines = ["| method | " + " | ".join(f"{k} shots" for k in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for m in methods:
        sub = df[df.method == m]
        cells = []
        for k in shots:
            s = sub[sub.shots == k]
            per_digit = s.groupby("ood_digit").auprc.mean()
            cells.append(f"{per_digit.mean():.3f}" if len(per_digit) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sweep(configs: list[RunConfig], device: str = "auto", out: str | None = None,
              progress=None) -> Any:
    """Run (or load) every config; write ``<out>.csv`` and ``<out>.md``; return the table."""
    from tqdm import tqdm

    from .cli import TqdmProgress
    from .experiment import run_experiment

    t0 = time.perf_counter()
    results = []
    bar = tqdm(configs, desc="sweep", file=sys.stderr, dynamic_ncols=True)
    for cfg in bar:
        bar.set_postfix(digit=cfg.ood_digit, shots=cfg.shots, seed=cfg.seed)
        inner = progress or TqdmProgress(prefix=f"  d{cfg.ood_digit} k{cfg.shots} s{cfg.seed} ")
        results.append(run_experiment(cfg, device=device, progress=inner))
        if hasattr(inner, "close"):
            inner.close()
    df = results_table(results)
    stem = Path(out) if out else store.cache_root() / "sweeps" / configs[0].preset
    stem.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_bytes(stem.with_suffix(".csv"), df.to_csv(index=False).encode())
    md = [f"Sweep: preset {configs[0].preset}, {len(configs)} runs, "
          f"{time.perf_counter() - t0:.0f} s here (cached runs answer at once).", ""]
    for k in sorted(df.shots.unique()):
        md += [f"AUPRC (average precision, OOD = positive) mean ± std over seeds, AUROC in "
               f"brackets; {k} shots per class.", "", summary_markdown(df, k), ""]
    if df.shots.nunique() > 1:
        md += ["Mean AUPRC against shots:", "", shots_markdown(df), ""]
    store.atomic_write_bytes(stem.with_suffix(".md"), "\n".join(md).encode())
    print("\n".join(md))
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.md')}")
    return df

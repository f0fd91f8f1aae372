"""Sweeps: many runs, one long table (a row per run x method), summaries as CSV and markdown."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

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
              progress=None, command: str | None = None, title: str = "Sweep") -> Any:
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
    md = report_markdown(df, results, elapsed=time.perf_counter() - t0, title=title,
                         command=command)
    store.atomic_write_bytes(stem.with_suffix(".md"), md.encode())
    print(md)
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.md')}")
    return df


def targets_markdown(df, shots: int = 10) -> str:
    """The issue's targets, checked on the table (only for what the table holds)."""
    sub = df[df.shots == shots]
    mean = sub.groupby(["method", "ood_digit"]).auprc.mean().unstack()  # method x digit
    lines = []
    if "xdd" in mean.index and "before" in mean.index:
        wins = int((mean.loc["xdd"] > mean.loc["before"]).sum())
        lines.append(f"- XDD beats `before` on mean AUPRC for **{wins} of {mean.shape[1]}** "
                     f"digits (target: all 10, at the very least 9).")
    for other in ("mcdd", "pixels"):
        if "xdd" in mean.index and other in mean.index:
            a, b = mean.loc["xdd"].mean(), mean.loc[other].mean()
            lines.append(f"- Mean AUPRC, XDD {a:.3f} vs `{other}` {b:.3f}: XDD "
                         f"{'beats' if a > b else '**does not beat**'} it.")
    if "xdd" in mean.index:
        a = mean.loc["xdd"].mean()
        verdict = "met" if a >= 0.5 else "**missed**"
        lines.append(f"- Mean XDD AUPRC over the digits: {a:.3f} (target >= 0.5: {verdict}; "
                     f"moonshot >= 0.7).")
    return "\n".join(lines)


def _gan_line(results: list[dict[str, Any]]) -> list[str]:
    """How the GAN games ended: D's final loss over the pretrained GANs (none if unrecorded)."""
    d = {r.get("pretrain_key"): (r.get("pretrain_losses") or {}).get("d_loss") for r in results}
    d = {k: v for k, v in d.items() if isinstance(v, (int, float))}
    if not d:
        return []
    low = sum(v < 0.05 for v in d.values())
    return [f"- GAN pretraining: D's loss at the end lies between {min(d.values()):.2f} and "
            f"{max(d.values()):.2f} over the {len(d)} pretrained GANs"
            + (f"; **{low} ended with D winning outright (loss < 0.05)**" if low else
               " (none ended with D winning outright)")]


def report_markdown(df, results: list[dict[str, Any]], elapsed: float | None = None,
                    title: str = "Sweep", command: str | None = None) -> str:
    """The whole generated report: settings, per-digit tables per shot count, shot curve."""
    import datetime

    presets = sorted(df.preset.unique())
    seeds = sorted(int(s) for s in df.seed.unique())
    devices = sorted(df.device.unique())
    run_time = sum(r["wall_time_s"] for r in results)
    md = [f"# {title}", "", f"Generated by `{command}` on {datetime.date.today().isoformat()}."
          if command else f"Generated on {datetime.date.today().isoformat()}.", "",
          f"- preset: {', '.join(presets)}; OOD digits: {', '.join(str(int(d)) for d in sorted(df.ood_digit.unique()))}",
          f"- repetitions: {len(seeds)} (seeds {', '.join(map(str, seeds))}); shots per class: "
          f"{', '.join(str(int(k)) for k in sorted(df.shots.unique()))}",
          f"- runs: {len(results)}; compute time of the runs: {run_time / 60:.1f} min"
          + (f" (this invocation: {elapsed / 60:.1f} min; cached runs answer at once)"
             if elapsed is not None else ""),
          f"- device: {', '.join(devices)}",
          "- one pretrained GAN per OOD digit (pretraining seed 0), shared by all repetitions and "
          "shot counts; the seed changes the labeled draw and the retraining initialisation",
          *_gan_line(results),
          "- settings were chosen on the validation split with seeds >= 100 (`bench/tune.py`, "
          "docs/METHOD.md section 5); the test-set seeds here played no part in that",
          "- AUPRC = average precision (sklearn `average_precision_score`), OOD digit = positive; "
          "cells: mean ± std over seeds, mean AUROC in brackets", ""]
    for k in sorted(df.shots.unique()):
        md += [f"## {int(k)} shots per class", "", summary_markdown(df, k), ""]
        t = targets_markdown(df, k)
        if t:
            md += [t, ""]
    if df.shots.nunique() > 1:
        md += ["## Mean AUPRC against shots", "", shots_markdown(df), ""]
    return "\n".join(md)


def variant_of(res: dict[str, Any]) -> str:
    """"" for a plain preset run, else "field=value, ..." (see xdd.config.run_variant)."""
    from .config import run_variant

    return ", ".join(run_variant(res))


def cache_report(preset_name: str, command: str | None = None, shots: int = 10) -> str:
    """docs/RESULTS.md from every cached run of a preset: the main table (plain preset runs at
    ``shots``), AUPRC against shots, and the ablations (runs that change one setting)."""
    runs = [r for r in store.list_runs() if r.get("preset") == preset_name
            and r.get("eval_split", "test") == "test"]
    if not runs:
        raise ValueError(f"no cached runs of preset {preset_name!r} on the test set")
    by_variant: dict[str, list] = {}
    for r in runs:
        by_variant.setdefault(variant_of(r), []).append(r)
    main = by_variant.get("", [])
    if not main:
        raise ValueError(f"no plain {preset_name!r} runs cached (only variants)")
    df = results_table(main)
    md = [report_markdown(df[df.shots == shots], [r for r in main if r["shots"] == shots],
                          title=f"Results: {preset_name} preset", command=command)]
    if df.shots.nunique() > 1:
        md += ["## AUPRC against shots (mean over digits and seeds)", "",
               shots_markdown(df, methods=("before", "xdd")), "",
               "Digits and seeds per cell: " + "; ".join(
                   f"{int(k)} shots: {df[df.shots == k].ood_digit.nunique()} digits x "
                   f"{df[df.shots == k].seed.nunique()} seeds" for k in sorted(df.shots.unique())),
               ""]
    ablations = {v: rs for v, rs in by_variant.items() if v}
    if ablations:
        md += ["## Ablations", "",
               f"Mean AUPRC over the digits each variant covers, {shots} shots; the plain preset on "
               "the same digits and seeds beside it.", "",
               "| variant | digits x seeds | method | variant AUPRC | preset AUPRC | digits above "
               "`before` |",
               "|---|---|---|---|---|---|"]
        for v, rs in sorted(ablations.items()):
            vdf = results_table([r for r in rs if r["shots"] == shots])
            if vdf.empty:
                continue
            keys = set(zip(vdf.ood_digit, vdf.seed))
            same = np.array([k in keys for k in zip(df.ood_digit, df.seed)], dtype=bool)
            base = df[(df.shots == shots).to_numpy() & same]
            for m in _ordered(vdf.method):
                if m in ("pixels", "before"):
                    continue
                per_digit = vdf[vdf.method == m].groupby("ood_digit").auprc.mean()
                bm = base[base.method == m]
                b = bm.groupby("ood_digit").auprc.mean().mean() if len(bm) else float("nan")
                before = base[base.method == "before"].groupby("ood_digit").auprc.mean()
                common = per_digit.index.intersection(before.index)
                wins = (f"{int((per_digit[common] > before[common]).sum())} of {len(common)}"
                        if len(common) else "–")
                md.append(f"| {v} | {vdf.ood_digit.nunique()} x {vdf.seed.nunique()} | {m} | "
                          f"{per_digit.mean():.3f} | {b:.3f} | {wins} |")
        md.append("")
    return "\n".join(md)

"""The one report: tables of cached runs, their aggregation, and the generated results document.

Used by the CLI (``python -m xdd report`` / ``sweep``), docs/RESULTS.md and the Results page, so
that the three cannot disagree.  Conventions, stated once:

- AUPRC = average precision (sklearn ``average_precision_score``), OOD digit = positive.
- A cell aggregates the runs of one (digit, method, reference): mean, and the **sample**
  standard deviation over those runs (``ddof = 1``; 0 for a single run).  Each run has its own
  labeled draw, retraining start and (in sweeps) its own GAN.
- A mean over digits is the mean of the per-digit means; its "±" is the mean of the per-digit
  s.d.s.
- Every number is shown with its scoring reference (``labeled``: the paper's KDE over the
  labeled embeddings; ``unlabeled``: k-NN to the unlabeled in-distribution training images).
"""
from __future__ import annotations

import datetime
from typing import Any, Iterable

import numpy as np

from xdd.storage import store
from xdd.core.config import run_variant
from xdd.core.methods import DISPLAY_ORDER, REFERENCE_LABELS, REFERENCES, display_key, short

SD_DDOF = 1
SD_NOTE = ("± = sample standard deviation over the runs of a cell (ddof = 1; 0 for a single "
           "run)")
AUPRC_NOTE = "AUPRC = average precision (sklearn `average_precision_score`), OOD digit = positive"
METHOD_ORDER = DISPLAY_ORDER
METRICS = ("auprc", "auroc", "fpr95", "aupr_in")
# What the document supersedes (printed under the targets of docs/RESULTS.md).
HISTORY_NOTE = (
    "These tables supersede the earlier version of this document, whose three repetitions of "
    "a digit shared one GAN (pretraining seed 0) and which had the labeled reference only "
    "(XDD 0.398 vs before 0.287 there): one GAN per digit hid most of the variance. Here every "
    "repetition has a GAN of its own.")


# ---------------------------------------------------------------- reading runs


def run_metrics(res: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """reference -> method -> metrics of one run (a run older than the references has only
    the labeled one, under "methods")."""
    refs = res.get("references")
    if isinstance(refs, dict) and refs:
        return refs
    return {"labeled": res.get("methods") or {}}


def run_scores(arr: dict[str, np.ndarray], reference: str, method: str) -> np.ndarray | None:
    """A method's per-sample scores under a reference from a scores.npz dict (None if absent)."""
    s = arr.get(f"score_{reference}_{method}")
    if s is None and reference == "labeled":
        s = arr.get(f"score_{method}")  # runs written before the unlabeled reference
    return s


def gan_seed(res: dict[str, Any]) -> int:
    return int(((res.get("config") or {}).get("pretrain") or {}).get("seed", 0))


def variant_of(res: dict[str, Any]) -> str:
    """"" for a plain preset run, else "field=value, ..." as the run recorded it when it ran
    (see xdd.core.config.run_variant)."""
    return ", ".join(run_variant(res))


def runs_on_test_split(runs: Iterable[dict[str, Any]], preset_name: str) -> list[dict[str, Any]]:
    """The runs of a preset evaluated on the test split (what the results document reports)."""
    return [r for r in runs if r.get("preset") == preset_name
            and r.get("eval_split", "test") == "test"]


def results_table(results: Iterable[dict[str, Any]]):
    """Long pandas table: one row per (run, reference, method) with every metric."""
    import pandas as pd

    rows = []
    for r in results:
        for ref, methods in run_metrics(r).items():
            for m, v in methods.items():
                rows.append({
                    "run_key": r["run_key"], "variant": variant_of(r), "preset": r.get("preset"),
                    "eval_split": r.get("eval_split", "test"), "ood_digit": int(r["ood_digit"]),
                    "shots": int(r["shots"]), "seed": int(r["seed"]), "gan_seed": gan_seed(r),
                    "pretrain_key": r.get("pretrain_key"), "reference": ref, "method": m,
                    **{k: v.get(k) for k in METRICS}, "base_rate": r.get("base_rate"),
                    "wall_time_s": r.get("wall_time_s"), "device": r.get("device")})
    cols = ["run_key", "variant", "preset", "eval_split", "ood_digit", "shots", "seed",
            "gan_seed", "pretrain_key", "reference", "method", *METRICS, "base_rate",
            "wall_time_s", "device"]
    return pd.DataFrame(rows, columns=cols)


def ordered_methods(methods: Iterable[str]) -> list[str]:
    return sorted(dict.fromkeys(methods), key=lambda m: (display_key(m), m))


# ---------------------------------------------------------------- aggregation


def aggregate(df, by: list[str]):
    """Per group: runs, distinct GANs, mean AUPRC and its sample s.d. (ddof = 1, 0 for one
    run), mean AUROC, FPR@95 and base rate."""
    g = df.groupby(by, sort=True)
    out = g.agg(runs=("run_key", "nunique"), gans=("pretrain_key", "nunique"),
                auprc=("auprc", "mean"), auprc_sd=("auprc", lambda s: s.std(ddof=SD_DDOF)),
                auroc=("auroc", "mean"), fpr95=("fpr95", "mean"),
                base_rate=("base_rate", "mean")).reset_index()
    out["auprc_sd"] = out["auprc_sd"].fillna(0.0)
    return out


def over_digits(df, digit: str = "ood_digit"):
    """Per (reference, method): the mean over digits of the per-digit means (and s.d.s).
    ``digit``: the name of the digit column."""
    per_digit = aggregate(df, ["reference", "method", digit])
    g = per_digit.groupby(["reference", "method"], sort=True)
    return g.agg(digits=(digit, "nunique"), runs=("runs", "sum"), gans=("gans", "sum"),
                 auprc=("auprc", "mean"), auprc_sd=("auprc_sd", "mean"),
                 auroc=("auroc", "mean"), fpr95=("fpr95", "mean"),
                 base_rate=("base_rate", "mean")).reset_index()


def fmt_cell(mean: float, sd: float, auroc: float | None = None) -> str:
    text = f"{mean:.3f} ± {sd:.3f}"
    return text + (f" ({auroc:.3f})" if auroc is not None and np.isfinite(auroc) else "")


# ---------------------------------------------------------------- markdown


def digit_table(df, reference: str) -> str:
    """Per digit, one reference: AUPRC mean ± s.d. (mean AUROC), runs and GANs per row."""
    sub = df[df.reference == reference]
    methods = ordered_methods(sub.method)
    agg = aggregate(sub, ["ood_digit", "method"]).set_index(["ood_digit", "method"])
    # Runs and GANs of the row: those of XDD (baselines may cover fewer runs: the side-by-side
    # table counts each method's runs).
    main = sub[sub.method == "xdd"] if "xdd" in set(sub.method) else sub
    per_digit = aggregate(main, ["ood_digit"]).set_index("ood_digit")
    head = ("| OOD digit | runs | GANs | "
            + " | ".join(f"{short(m)} [{reference}]" for m in methods) + " |")
    lines = [head, "|---|---|---|" + "---|" * len(methods)]
    for d in sorted(sub.ood_digit.unique()):
        cells = [fmt_cell(agg.auprc[(d, m)], agg.auprc_sd[(d, m)], agg.auroc[(d, m)])
                 if (d, m) in agg.index else "–" for m in methods]
        runs, gans = ((per_digit.runs[d], per_digit.gans[d]) if d in per_digit.index
                      else ("–", "–"))
        lines.append(f"| {d} | {runs} | {gans} | "
                     + " | ".join(cells) + " |")
    avg = over_digits(sub).set_index("method")
    lines.append("| **mean** | | | " + " | ".join(
        f"**{avg.auprc[m]:.3f}** ± {avg.auprc_sd[m]:.3f} ({avg.auroc[m]:.3f})"
        for m in methods) + " |")
    return "\n".join(lines)


def side_by_side(df) -> str:
    """Mean AUPRC over digits, one row per method, one column per reference."""
    avg = over_digits(df).set_index(["reference", "method"])
    refs = [r for r in REFERENCES if r in set(df.reference)]
    lines = ["| method | " + " | ".join(f"AUPRC, {r} reference" for r in refs)
             + " | digits | runs | GANs |", "|---|" + "---|" * (len(refs) + 3)]
    for m in ordered_methods(df.method):
        cells = [fmt_cell(avg.auprc[(r, m)], avg.auprc_sd[(r, m)]) if (r, m) in avg.index
                 else "–" for r in refs]
        ndig = max(int(avg.digits[(r, m)]) for r in refs if (r, m) in avg.index)
        dm = df[df.method == m]
        lines.append(f"| {short(m)} | " + " | ".join(cells) + f" | {ndig} | "
                     f"{dm.run_key.nunique()} | {dm.pretrain_key.nunique()} |")
    return "\n".join(lines)


def _per_digit_means(df, reference: str):
    sub = df[df.reference == reference]
    return sub.groupby(["method", "ood_digit"]).auprc.mean().unstack()  # method x digit


def targets(df) -> list[tuple[bool, str]]:
    """The issue's targets checked on the table: (met, sentence) for what the table holds."""
    out: list[tuple[bool, str]] = []
    main = df[df.method == "xdd"] if "xdd" in set(df.method) else df
    gans = main.groupby("ood_digit").pretrain_key.nunique()
    if len(gans):
        short_of = int((gans < 3).sum())
        out.append((short_of == 0 and len(gans) >= 10,
                    f"GANs: {int(gans.min())}"
                    + (f"–{int(gans.max())}" if gans.max() != gans.min() else "")
                    + " GAN seeds behind each digit's "
                    f"XDD cells; **{short_of} of {len(gans)}** digits have fewer than 3 (target: "
                    "at least 3 GAN seeds per digit)."))
    lab = _per_digit_means(df, "labeled")
    if "xdd" in lab.index and "before" in lab.index:
        both = lab.loc[["xdd", "before"]].dropna(axis=1)
        wins = int((both.loc["xdd"] > both.loc["before"]).sum())
        out.append((wins >= 9 and both.shape[1] >= 10,
                    f"Paper protocol (labeled reference): XDD above `before` on **{wins} of "
                    f"{both.shape[1]}** digits (target: at least 9 of 10)."))
    unl = _per_digit_means(df, "unlabeled")
    if "xdd" in unl.index:
        for other in ("pixels", "before"):
            if other in unl.index:
                both = unl.loc[["xdd", other]].dropna(axis=1)
                wins = int((both.loc["xdd"] > both.loc[other]).sum())
                name = {"pixels": "the raw-pixel k-NN", "before": "the pretrained-D k-NN"}[other]
                out.append((wins >= 9 and both.shape[1] >= 10,
                            f"Unlabeled reference: XDD above {name} on **{wins} of "
                            f"{both.shape[1]}** digits (target: at least 9 of 10)."))
        mean = float(unl.loc["xdd"].mean())
        out.append((mean >= 0.75, f"Unlabeled reference: mean XDD AUPRC **{mean:.3f}** "
                                  f"(target >= 0.75; moonshot >= 0.90)."))
    return out


def targets_markdown(df) -> str:
    lines = []
    for met, text in targets(df):
        lines.append(f"- {'met' if met else '**missed**'}: {text}")
    return "\n".join(lines)


def _gan_lines(results: list[dict[str, Any]], df) -> list[str]:
    gans = sorted({(int(r["ood_digit"]), gan_seed(r)) for r in results if r.get("pretrain_key")})
    seeds = sorted({s for _, s in gans})
    per_digit = df.groupby("ood_digit").pretrain_key.nunique()
    lines = []
    if gans:
        lines.append(f"- GANs: {len(gans)} pretrained GANs (GAN pretraining seeds "
                     f"{', '.join(map(str, seeds))}); {int(per_digit.min())}"
                     + (f"–{int(per_digit.max())}" if per_digit.max() != per_digit.min() else "")
                     + " GAN(s) behind each digit's cells (column `GANs`). Pretraining is shared "
                     "across shot counts and methods of the same GAN seed.")
    d = {r.get("pretrain_key"): (r.get("pretrain_losses") or {}).get("d_loss") for r in results}
    d = {k: v for k, v in d.items() if isinstance(v, (int, float))}
    if d:
        low = sum(v < 0.05 for v in d.values())
        lines.append(f"- GAN pretraining: D's loss at the end lies between {min(d.values()):.2f} "
                     f"and {max(d.values()):.2f} over the {len(d)} pretrained GANs"
                     + (f"; **{low} ended with D winning outright (loss < 0.05)**" if low else
                        " (none ended with D winning outright)"))
    return lines


def _reference_lines(results: list[dict[str, Any]]) -> list[str]:
    """What each reference scored against; the reference's size (which depends on the held-out
    digit) is given as a range."""
    import re

    infos: dict[str, set] = {}
    sizes: dict[str, list[int]] = {}
    for r in results:
        for ref, text in (r.get("reference_info") or {}).items():
            sizes.setdefault(ref, []).extend(int(n) for n in re.findall(r"to (\d+) ", text))
            infos.setdefault(ref, set()).add(re.sub(r"to \d+ ", "to {n} ", text))
    out = []
    for ref in [r for r in REFERENCES if r in infos]:
        n = sizes.get(ref) or []
        span = (f"{min(n):,}" if min(n) == max(n) else f"{min(n):,}–{max(n):,}") if n else ""
        out.append(f"- **{ref}** reference: "
                   + "; ".join(sorted(t.replace("{n}", span) for t in infos[ref])))
    return out


def report_markdown(df, results: list[dict[str, Any]], elapsed: float | None = None,
                    title: str = "Sweep", command: str | None = None,
                    preamble: str | None = None) -> str:
    """The generated report of one shot count: targets first, then settings, the two
    references side by side and the per-digit tables of each."""
    presets = sorted(df.preset.unique())
    seeds = sorted(int(s) for s in df.seed.unique())
    run_time = sum(r.get("wall_time_s") or 0 for r in results)
    shots = ", ".join(str(int(k)) for k in sorted(df.shots.unique()))
    md = [f"# {title}", "",
          f"Generated by `{command}` on {datetime.date.today().isoformat()}." if command
          else f"Generated on {datetime.date.today().isoformat()}.", ""]
    t = targets_markdown(df)
    if t:
        md += [f"Targets ({shots} shots):", "", t, ""]
    if preamble:
        md += [preamble, ""]
    md += [f"- preset: {', '.join(presets)}; OOD digits: "
           f"{', '.join(str(int(d)) for d in sorted(df.ood_digit.unique()))}; shots per class: "
           f"{shots}",
           f"- repetitions: {len(seeds)} (seeds {', '.join(map(str, seeds))}); a repetition "
           "redraws the labeled set, the retraining start and the GAN (GAN seed = repetition "
           "seed)" if set(df.seed) == set(df.gan_seed) else
           f"- repetitions: {len(seeds)} (seeds {', '.join(map(str, seeds))}); GAN seeds "
           f"{', '.join(map(str, sorted(set(df.gan_seed))))}",
           *_gan_lines(results, df),
           f"- runs: {len(results)}; compute time of the runs: {run_time / 60:.1f} min"
           + (f" (this invocation: {elapsed / 60:.1f} min; cached runs answer at once)"
              if elapsed is not None else ""),
           f"- device: {', '.join(sorted(df.device.unique()))}",
           *_reference_lines(results),
           "- settings were chosen on the validation split with seeds >= 100 (`bench/tune.py`, "
           "docs/METHOD.md section 5); the test-set seeds here played no part in that",
           f"- {AUPRC_NOTE}; cells: mean ± s.d. over runs, mean AUROC in brackets; {SD_NOTE}",
           ""]
    md += ["## Both references side by side", "",
           "Mean AUPRC over the digits (± mean per-digit s.d.); runs and GANs: how many stand "
           "behind the method's cells.", "", side_by_side(df), ""]
    for ref in REFERENCES:
        if ref in set(df.reference):
            md += [f"## {REFERENCE_LABELS[ref][0].upper() + REFERENCE_LABELS[ref][1:]}", "",
                   digit_table(df, ref), ""]
    return "\n".join(md)


def shots_markdown(df, methods=("before", "xdd")) -> str:
    """Mean AUPRC over digits (of the per-digit means) against the shot count, per reference."""
    shots = sorted(df.shots.unique())
    lines = ["| method | reference | " + " | ".join(f"{k} shots" for k in shots) + " |",
             "|---|---|" + "---|" * len(shots)]
    for ref in [r for r in REFERENCES if r in set(df.reference)]:
        for m in [m for m in methods if m in set(df.method)]:
            sub = df[(df.method == m) & (df.reference == ref)]
            cells = []
            for k in shots:
                per_digit = sub[sub.shots == k].groupby("ood_digit").auprc.mean()
                cells.append(f"{per_digit.mean():.3f}" if len(per_digit) else "–")
            lines.append(f"| {m} | {ref} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablations_markdown(df, by_variant: dict[str, list], shots: int) -> list[str]:
    ablations = {v: rs for v, rs in by_variant.items() if v}
    if not ablations:
        return []
    md = ["## Ablations", "",
          f"Mean AUPRC over the digits each variant covers, {shots} shots; the plain preset on "
          "the same digits and seeds beside it.", "",
          "| variant | reference | digits x seeds | method | variant AUPRC | preset AUPRC | "
          "digits above `before` |",
          "|---|---|---|---|---|---|---|"]
    for v, rs in sorted(ablations.items()):
        vdf = results_table([r for r in rs if r["shots"] == shots])
        if vdf.empty:
            continue
        keys = set(zip(vdf.ood_digit, vdf.seed))
        same = np.array([k in keys for k in zip(df.ood_digit, df.seed)], dtype=bool)
        base = df[(df.shots == shots).to_numpy() & same]
        for ref in [r for r in REFERENCES if r in set(vdf.reference)]:
            vref, bref = vdf[vdf.reference == ref], base[base.reference == ref]
            for m in ordered_methods(vref.method):
                if m in ("pixels", "before", "pyod"):
                    continue
                per_digit = vref[vref.method == m].groupby("ood_digit").auprc.mean()
                bm = bref[bref.method == m]
                b = bm.groupby("ood_digit").auprc.mean().mean() if len(bm) else float("nan")
                before = bref[bref.method == "before"].groupby("ood_digit").auprc.mean()
                common = per_digit.index.intersection(before.index)
                wins = (f"{int((per_digit[common] > before[common]).sum())} of {len(common)}"
                        if len(common) else "–")
                md.append(f"| {v} | {ref} | {vdf.ood_digit.nunique()} x {vdf.seed.nunique()} | "
                          f"{m} | {per_digit.mean():.3f} | {b:.3f} | {wins} |")
    md.append("")
    return md


def cache_report(preset_name: str, command: str | None = None, shots: int = 10,
                 preamble: str | None = None) -> str:
    """docs/RESULTS.md from every cached test-split run of a preset: the main tables (plain
    preset runs at ``shots``), AUPRC against shots, and the ablations (runs that change one
    setting).  ``preamble``: markdown placed after the targets (e.g. what it supersedes)."""
    runs = runs_on_test_split(store.list_runs(), preset_name)
    if not runs:
        raise ValueError(f"no cached runs of preset {preset_name!r} on the test set")
    by_variant: dict[str, list] = {}
    for r in runs:
        by_variant.setdefault(variant_of(r), []).append(r)
    main = by_variant.get("", [])
    if not main:
        raise ValueError(f"no plain {preset_name!r} runs cached (only variants)")
    df = results_table(main)
    main_k = [r for r in main if r["shots"] == shots]
    if not main_k:
        raise ValueError(f"no plain {preset_name!r} runs with {shots} shots cached")
    md = [report_markdown(df[df.shots == shots], main_k, title=f"Results: {preset_name} preset",
                          command=command, preamble=HISTORY_NOTE if preamble is None
                          else preamble)]
    if df.shots.nunique() > 1:
        md += ["## AUPRC against shots (mean over digits and runs)", "",
               shots_markdown(df, methods=("before", "xdd")), "",
               "Digits and runs per cell: " + "; ".join(
                   f"{int(k)} shots: {df[df.shots == k].ood_digit.nunique()} digits x "
                   f"{df[df.shots == k].seed.nunique()} seeds" for k in sorted(df.shots.unique())),
               ""]
    md += ablations_markdown(df, by_variant, shots)
    return "\n".join(md)


def cache_csv(preset_name: str) -> str:
    """Every test-split run x reference x method of a preset, one row each (CSV text)."""
    return results_table(runs_on_test_split(store.list_runs(), preset_name)).to_csv(index=False)

"""The generated results document (docs/RESULTS.md, ``python -m xdd report`` / ``sweep``):
markdown tables of the long table (:mod:`xdd.report.tables`), the targets first
(:mod:`xdd.report.targets`)."""
from __future__ import annotations

import datetime
import re
from typing import Any

import numpy as np

from xdd.core.methods import AFTER, BEFORE, BY_NAME, REFERENCE_LABELS, REFERENCES, short
from xdd.report.tables import AUPRC_NOTE, SD_NOTE, after_rows, aggregate, gan_seed, \
    ordered_methods, over_digits, results_table, runs_on_split, span, variant_of
from xdd.report.compare import compare_markdown, settings_of
from xdd.report.targets import targets_markdown
from xdd.storage import store

# What the document supersedes (printed under the targets of docs/RESULTS.md).
HISTORY_NOTE = (
    "Every run here was computed on one machine with the current code: the GANs of GAN seed 0 "
    "ship with the app (made on another machine), those of seeds 1 and 2 were pretrained with "
    "the runs. The previous version of these tables came from the same code on "
    "another CPU (XDD 0.610, pretrained D 0.584, pixels 0.573 under the unlabeled reference): "
    "the same seed gives another float trajectory on another CPU, so a GAN pretrained there "
    "differs from one pretrained here, and so do the runs on it (docs/METHOD.md section 9). "
    "Older still, one GAN per digit and the labeled reference only (XDD 0.398 vs before 0.287) "
    "hid most of the GAN-to-GAN variance.")


def fmt_cell(mean: float, sd: float, auroc: float | None = None) -> str:
    text = f"{mean:.3f} ± {sd:.3f}"
    return text + (f" ({auroc:.3f})" if auroc is not None and np.isfinite(auroc) else "")


# ---------------------------------------------------------------- tables


def digit_table(df, reference: str) -> str:
    """Per digit, one reference: AUPRC mean ± s.d. (mean AUROC), runs and GANs per row."""
    sub = df[df.reference == reference]
    methods = ordered_methods(sub.method)
    agg = aggregate(sub, ["ood_digit", "method"]).set_index(["ood_digit", "method"])
    # Runs and GANs of the row: those of the after method (baselines may cover fewer runs: the
    # side-by-side table counts each method's runs).
    per_digit = aggregate(after_rows(sub), ["ood_digit"]).set_index("ood_digit")
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


def shots_markdown(df, methods: tuple[str, ...] = (BEFORE, AFTER)) -> str:
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


# ---------------------------------------------------------------- settings


def _gan_lines(results: list[dict[str, Any]], df) -> list[str]:
    gans = sorted({(int(r["ood_digit"]), gan_seed(r)) for r in results if r.get("pretrain_key")})
    seeds = sorted({s for _, s in gans})
    per_digit = df.groupby("ood_digit").pretrain_key.nunique()
    lines = []
    if gans:
        lines.append(f"- GANs: {len(gans)} pretrained GANs (GAN pretraining seeds "
                     f"{', '.join(map(str, seeds))}); {span(per_digit)}"
                     " GAN(s) behind each digit's cells (column `GANs`). Pretraining is shared "
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
    infos: dict[str, set] = {}
    sizes: dict[str, list[int]] = {}
    for r in results:
        for ref, text in (r.get("reference_info") or {}).items():
            sizes.setdefault(ref, []).extend(int(n) for n in re.findall(r"to (\d+) ", text))
            infos.setdefault(ref, set()).add(re.sub(r"to \d+ ", "to {n} ", text))
    out = []
    for ref in [r for r in REFERENCES if r in infos]:
        n = sizes.get(ref) or []
        size = (f"{min(n):,}" if min(n) == max(n) else f"{min(n):,}–{max(n):,}") if n else ""
        out.append(f"- **{ref}** reference: "
                   + "; ".join(sorted(t.replace("{n}", size) for t in infos[ref])))
    return out


def _settings_lines(df, results: list[dict[str, Any]], elapsed: float | None) -> list[str]:
    """The bullet list under the targets: preset, repetitions, GANs, runs, devices, references."""
    presets = sorted(df.preset.unique())
    seeds = sorted(int(s) for s in df.seed.unique())
    run_time = sum(r.get("wall_time_s") or 0 for r in results)
    shots = ", ".join(str(int(k)) for k in sorted(df.shots.unique()))
    reps = f"- repetitions: {len(seeds)} (seeds {', '.join(map(str, seeds))}); "
    return [f"- preset: {', '.join(presets)}; OOD digits: "
            f"{', '.join(str(int(d)) for d in sorted(df.ood_digit.unique()))}; shots per class: "
            f"{shots}",
            reps + "a repetition redraws the labeled set, the retraining start and the GAN (GAN "
            "seed = repetition seed)" if set(df.seed) == set(df.gan_seed) else
            reps + f"GAN seeds {', '.join(map(str, sorted(set(df.gan_seed))))}",
            *_gan_lines(results, df),
            f"- runs: {len(results)}; compute time of the runs: {run_time / 60:.1f} min"
            + (f" (this invocation: {elapsed / 60:.1f} min; cached runs answer at once)"
               if elapsed is not None else ""),
            f"- device: {', '.join(sorted(df.device.unique()))}",
            *_reference_lines(results),
            ("- settings were chosen on the validation split with seeds >= 100 "
             "(docs/METHOD.md sections 5 and 9); the test-set seeds here played no part in that"
             if set(df.eval_split) == {"test"} else
             "- evaluation split: " + ", ".join(sorted(set(df.eval_split))) + " (the last 10k "
             "training images; pretraining and labeled draws from the first 50k): where "
             "settings are chosen, never the test set"),
            f"- {AUPRC_NOTE}; cells: mean ± s.d. over runs, mean AUROC in brackets; {SD_NOTE}",
            ""]


# ---------------------------------------------------------------- documents


def report_markdown(df, results: list[dict[str, Any]], elapsed: float | None = None,
                    title: str = "Sweep", command: str | None = None,
                    preamble: str | None = None) -> str:
    """The generated report of one shot count: targets first, then settings, the two
    references side by side and the per-digit tables of each."""
    shots = ", ".join(str(int(k)) for k in sorted(df.shots.unique()))
    today = datetime.date.today().isoformat()
    md = [f"# {title}", "",
          f"Generated by `{command}` on {today}." if command else f"Generated on {today}.", ""]
    # The targets are the test protocol's (ten digits); a validation report has none.
    t = targets_markdown(df) if set(df.eval_split) <= {"test"} else ""
    if t:
        md += [f"Targets ({shots} shots):", "", t, ""]
    if preamble:
        md += [preamble, ""]
    md += _settings_lines(df, results, elapsed)
    md += ["## Both references side by side", "",
           "Mean AUPRC over the digits (± mean per-digit s.d.); runs and GANs: how many stand "
           "behind the method's cells.", "", side_by_side(df), ""]
    for ref in REFERENCES:
        if ref in set(df.reference):
            md += [f"## {REFERENCE_LABELS[ref][0].upper() + REFERENCE_LABELS[ref][1:]}", "",
                   digit_table(df, ref), ""]
    return "\n".join(md)


def _shots_section(df) -> list[str]:
    """AUPRC against shots, when the plain runs hold more than one shot count."""
    if df.shots.nunique() <= 1:
        return []
    return ["## AUPRC against shots (mean over digits and runs)", "",
            shots_markdown(df), "",
            "Digits and runs per cell: " + "; ".join(
                f"{int(k)} shots: {df[df.shots == k].ood_digit.nunique()} digits x "
                f"{df[df.shots == k].seed.nunique()} seeds" for k in sorted(df.shots.unique())),
            ""]


def cache_report(preset_name: str, command: str | None = None, shots: int = 10,
                 preamble: str | None = None, split: str = "test") -> str:
    """docs/RESULTS.md from every cached run of a preset on one evaluation split: the main
    tables (plain preset runs at ``shots``), AUPRC against shots, and the settings compared
    (runs that change settings, beside the plain preset's: xdd.report.compare).
    ``preamble``: markdown placed after the targets (e.g. what it supersedes)."""
    where = "the test set" if split == "test" else f"the {split} split"
    runs = runs_on_split(store.list_runs(), preset_name, split)
    if not runs:
        raise ValueError(f"no cached runs of preset {preset_name!r} on {where}")
    main = [r for r in runs if not settings_of(variant_of(r))]
    if not main:
        raise ValueError(f"no plain {preset_name!r} runs on {where} cached (only variants)")
    df = results_table(main)
    main_k = [r for r in main if r["shots"] == shots]
    if not main_k:
        raise ValueError(f"no plain {preset_name!r} runs with {shots} shots on {where} cached")
    title = f"Results: {preset_name} preset" + ("" if split == "test" else f", {split} split")
    md = [report_markdown(df[df.shots == shots], main_k, title=title, command=command,
                          preamble=(HISTORY_NOTE if split == "test" else None)
                          if preamble is None else preamble)]
    md += _shots_section(df)
    every = results_table([r for r in runs if r["shots"] == shots])
    md += compare_markdown(every, preset_name, [m for m in ordered_methods(every.method)
                                                if _retrains(m)],
                           [m for m in ordered_methods(every.method) if not _retrains(m)])
    return "\n".join(md)


def _retrains(method: str) -> bool:
    """Whether a method scores a retrained network (an unknown name: yes), so that a setting
    of the retraining can change it."""
    row = BY_NAME.get(method)
    return row is None or row.objective is not None


def cache_csv(preset_name: str, split: str = "test") -> str:
    """Every run x reference x method of a preset on one split, one row each (CSV text)."""
    return results_table(runs_on_split(store.list_runs(), preset_name, split)).to_csv(
        index=False)

"""Reading cached runs into one long table, and aggregating it (the conventions are stated in
:mod:`xdd.report`): what the results document, the CLI and the Results page all start from."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from xdd.core.methods import AFTER, display_key
from xdd.core.variants import run_variant

SD_DDOF = 1
SD_NOTE = ("± = sample standard deviation over the runs of a cell (ddof = 1; 0 for a single "
           "run)")
AUPRC_NOTE = "AUPRC = average precision (sklearn `average_precision_score`), OOD digit = positive"
METRICS = ("auprc", "auroc", "fpr95", "aupr_in")
COLUMNS = ("run_key", "variant", "preset", "eval_split", "ood_digit", "shots", "seed",
           "gan_seed", "pretrain_key", "reference", "method", *METRICS, "base_rate",
           "wall_time_s", "device")


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
    (see xdd.core.variants.run_variant)."""
    return ", ".join(run_variant(res))


def runs_on_split(runs: Iterable[dict[str, Any]], preset_name: str,
                  split: str = "test") -> list[dict[str, Any]]:
    """The runs of a preset evaluated on one split ("test": what the results document
    reports; "val": where settings are chosen)."""
    return [r for r in runs if r.get("preset") == preset_name
            and r.get("eval_split", "test") == split]


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
    return pd.DataFrame(rows, columns=list(COLUMNS))


def ordered_methods(methods: Iterable[str]) -> list[str]:
    return sorted(dict.fromkeys(methods), key=lambda m: (display_key(m), m))


def after_rows(df):
    """The rows of the retrained "after" method (xdd.core.methods.AFTER), whose runs and GANs
    stand for a digit's (baselines may cover fewer runs); the whole table when it has none."""
    return df[df.method == AFTER] if AFTER in set(df.method) else df


def per_digit_means(df, reference: str, digit: str = "ood_digit"):
    """Mean AUPRC per method and digit under one reference: a method x digit frame."""
    sub = df[df.reference == reference]
    return sub.groupby(["method", digit]).auprc.mean().unstack()


def span(counts) -> str:
    """'3', or '2–4' when the counts (a pandas Series) differ: the smallest and the largest."""
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo}" + (f"–{hi}" if hi != lo else "")


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

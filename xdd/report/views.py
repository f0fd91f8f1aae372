"""What the Results page shows beside the aggregation of :mod:`xdd.report.tables`: pure functions
of the page's table (:func:`page_table`), so that the page only draws and its numbers are tested
without Streamlit.

The page's table is the report's long table with the digit column called ``digit``, the preset
column naming a run's variant (custom settings are never averaged with the preset's own runs)
and a ``threads`` column (the torch thread count the run computed with: two runs of one config
at different thread counts may differ in the last digits).
"""
from __future__ import annotations

from typing import Any, Iterable

from xdd.core.fmt import config_group, thread_count, thread_counts
from xdd.core.methods import AFTER, BEFORE, REFERENCES, display_key, label
from xdd.report.tables import SD_DDOF, aggregate, over_digits, results_table

DIGIT = "digit"
PAPER_SHOTS = 10  # the shot count the page opens on when it is cached
CELL = [DIGIT, "method", "reference"]
CURVE_COLUMNS = ["method", "shots", "mean", "std", "count"]


def page_table(runs: Iterable[dict[str, Any]]):
    """One row per (run, reference, method), as :func:`results_table`, with the page's columns."""
    runs = list(runs)
    df = results_table(runs)
    groups = {r["run_key"]: config_group(r) for r in runs}
    df["preset"] = df["run_key"].map(groups)
    df["threads"] = df["device"].map(thread_count)
    return df.rename(columns={"ood_digit": DIGIT})


def presets_by_runs(df) -> list[str]:
    """The presets (variants) of the table, the one with the most runs first, then by name."""
    return sorted(df["preset"].dropna().unique(),
                  key=lambda p: (-df[df["preset"] == p]["run_key"].nunique(), p))


def default_shots(df) -> int:
    """The paper's shot count when it is in the table, else the most common one."""
    counts = set(df["shots"].unique())
    return PAPER_SHOTS if PAPER_SHOTS in counts else int(df["shots"].mode().iloc[0])


def digit_cells(df):
    """Per (digit, method): the report's aggregation, its run count called ``n``."""
    return aggregate(df, [DIGIT, "method"]).rename(columns={"runs": "n"})


def chance_per_digit(cells):
    """The base rate (chance AUPRC) of each digit of :func:`digit_cells`."""
    return cells.groupby(DIGIT)["base_rate"].mean()


def before_after(cells) -> dict[str, float] | None:
    """The headline numbers of :func:`digit_cells`: the mean AUPRC of BEFORE and of AFTER over
    the digits both cover, the gain, and on how many of those digits AFTER is above BEFORE.
    None when either is missing."""
    present = set(cells["method"])
    if BEFORE not in present or AFTER not in present:
        return None
    both = cells.pivot(index=DIGIT, columns="method", values="auprc")[[BEFORE, AFTER]].dropna()
    before, after = float(both[BEFORE].mean()), float(both[AFTER].mean())
    return {"mean_before": before, "mean_after": after, "gain": after - before,
            "wins": int((both[AFTER] > both[BEFORE]).sum()), "digits": len(both)}


def side_by_side_rows(df) -> list[dict[str, Any]]:
    """One row per method (display order): per reference the mean over digits of AUPRC, its
    ± (mean per-digit s.d.), AUROC and FPR@95 (keys ``auprc_<ref>`` ...), the digits, runs,
    chance AUPRC and thread counts behind it."""
    avg = over_digits(df, digit=DIGIT)
    rows = []
    for m in sorted(avg["method"].unique(), key=display_key):
        row: dict[str, Any] = {"method": label(m), "name": m}
        for ref in REFERENCES:
            hit = avg[(avg["method"] == m) & (avg["reference"] == ref)]
            if len(hit):
                h = hit.iloc[0]
                row.update({f"auprc_{ref}": h["auprc"], f"sd_{ref}": h["auprc_sd"],
                            f"auroc_{ref}": h["auroc"], f"fpr95_{ref}": h["fpr95"],
                            "digits": int(h["digits"]), "chance": h["base_rate"]})
        mine = df[df["method"] == m]
        row["runs"] = int(mine["run_key"].nunique())
        row["threads"] = thread_counts(mine["device"])
        rows.append(row)
    return rows


def per_digit_table(df, preset: str, shots: int):
    """Per (digit, method, reference): the report's aggregation with the page's column names
    (AUPRC, AUPRC_sd, AUROC, FPR95, chance), the preset and shot count in front and the thread
    counts of its runs last."""
    table = aggregate(df, CELL).rename(columns={"auprc": "AUPRC", "auprc_sd": "AUPRC_sd",
                                                "auroc": "AUROC", "fpr95": "FPR95",
                                                "base_rate": "chance"})
    table.insert(0, "preset", preset)
    table.insert(1, "shots", shots)
    threads = df.groupby(CELL)["device"].agg(thread_counts).rename("threads").reset_index()
    return table.merge(threads, on=CELL, how="left")


def run_choices(df) -> list[dict[str, Any]]:
    """The runs of the table, by digit and seed: key, digit, seed, GAN seed and thread count."""
    runs = (df[["run_key", DIGIT, "seed", "gan_seed", "device"]].drop_duplicates()
            .sort_values([DIGIT, "seed"]).to_dict("records"))
    return [dict(r, threads=thread_count(r["device"])) for r in runs]


def shots_curve(df, digit: int | None, n_shot_counts: int):
    """Mean AUPRC against the shot count per method: over the seeds (of the means over digits)
    with their sample s.d. and count.  ``digit``: one digit, or None for the digits cached at
    every one of the ``n_shot_counts`` shot counts (so that the mean compares like with like).
    Empty when no digit qualifies."""
    import pandas as pd

    if digit is not None:
        dd = df[df[DIGIT] == digit]
    else:
        full = df.groupby(DIGIT)["shots"].nunique()
        dd = df[df[DIGIT].isin(full[full == n_shot_counts].index)]
    if dd.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    per_seed = dd.groupby(["method", "shots", "seed"])["auprc"].mean().reset_index()
    line = per_seed.groupby(["method", "shots"])["auprc"].agg(
        ["mean", lambda v: v.std(ddof=SD_DDOF), "count"])
    line.columns = CURVE_COLUMNS[2:]
    return line.reset_index().fillna({"std": 0.0})

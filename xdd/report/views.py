"""What the Results page shows beside the aggregation of :mod:`xdd.report.tables`: pure functions
of the page's table (:func:`page_table`), so that the page only draws and its numbers are tested
without Streamlit.

The page's table is the report's long table with the digit column called ``digit``, the preset
column naming a run's variant (custom settings are never averaged with the preset's own runs),
``base_preset`` the preset it started from (what the settings comparison groups by)
and a ``threads`` column (the torch thread count the run computed with: two runs of one config
at different thread counts may differ in the last digits).

Below it, what the pages show of one run up close, as pure numpy: the Embeddings page's linked
selection (highlight masks, per-digit counts, the images whose anomaly-score rank moved most),
the Results page's score histograms and threshold readout, a retraining's curves and the
ranges of its animation.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

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
    df["base_preset"] = df["preset"]
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


# ---------------------------------------------------------------- one run up close
#
# What the Embeddings page's linked selection and the Results page's score distributions and
# training curves show, as pure numpy: the pages pick and draw, these compute.


def percentile_ranks(scores) -> np.ndarray:
    """Percentile rank of each score among all of them: 0 for the lowest (most typical), 100
    for the highest (most unusual); equal scores are ordered by position (a stable sort)."""
    s = np.asarray(scores, dtype=np.float64)
    ranks = np.argsort(np.argsort(s, kind="stable"), kind="stable")
    return 100.0 * ranks / max(1, len(s) - 1)


def rank_moves(before, after) -> np.ndarray:
    """Per image, how far its anomaly score's percentile rank moved from ``before`` to
    ``after`` (the same images in the same order): positive = more unusual after retraining.
    The ranks are over all the images given (the whole test set, not a map's subsample)."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ in shape")
    return percentile_ranks(after) - percentile_ranks(before)


def positions_of(index, wanted) -> np.ndarray:
    """Where each of ``wanted`` sits in ``index`` (e.g. a map's test indices in scores.npz's
    test_index); a wanted value that is not in ``index`` raises ValueError."""
    index, wanted = np.asarray(index), np.asarray(wanted)
    order = np.argsort(index, kind="stable")
    pos = np.searchsorted(index[order], wanted)
    pos = np.minimum(pos, len(index) - 1)
    found = order[pos]
    if len(wanted) and not np.array_equal(index[found], wanted):
        raise ValueError("some wanted values are not in the index")
    return found


def top_moved(moves, n: int) -> np.ndarray:
    """The positions of the ``n`` largest moves by size (either direction), largest first;
    equal sizes in position order; NaN (an image without both scores) never counts."""
    moves = np.asarray(moves, dtype=np.float64)
    size = np.where(np.isnan(moves), -np.inf, np.abs(moves))
    order = np.argsort(-size, kind="stable")
    order = order[np.isfinite(size[order])]
    return order[:max(0, int(n))]


def highlight_points(trace_rows, selected) -> list[list[int]]:
    """Per trace, the positions of its points whose row is in ``selected`` (what plotly's
    ``selectedpoints`` takes: the other points are drawn dimmed)."""
    chosen = np.asarray(sorted(set(int(r) for r in selected)), dtype=np.int64)
    return [np.flatnonzero(np.isin(np.asarray(rows, dtype=np.int64), chosen)).tolist()
            for rows in trace_rows]


def selection_counts(selected, digits, ood_digit: int) -> dict[str, Any]:
    """A selection of map rows in words: how many (each row once), how many of them are the
    held-out digit, and the count per digit (digits in increasing order)."""
    rows = np.asarray(list(dict.fromkeys(int(r) for r in selected)), dtype=np.int64)
    got = np.asarray(digits)[rows].astype(int) if len(rows) else np.zeros(0, int)
    values, counts = np.unique(got, return_counts=True)
    return {"n": int(len(rows)), "n_ood": int((got == ood_digit).sum()),
            "per_digit": {int(d): int(c) for d, c in zip(values, counts)}}


def share_threshold(scores, share: float) -> float:
    """The score threshold that flags the top ``share`` (0-1] of the images: the k-th highest
    score, k = round(share x n), at least 1.  Flagging is score >= threshold, so images tied
    with the k-th are flagged too."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    k = min(len(s), max(1, int(round(float(share) * len(s)))))
    return float(s[k - 1])


def threshold_readout(scores, is_ood, threshold: float) -> dict[str, float]:
    """What flagging every image with score >= ``threshold`` does: flagged images, held-out
    images caught (recall = caught / held-out), in-distribution images flagged (FPR = false
    alarms / in-distribution) and precision (caught / flagged; NaN when nothing is flagged)."""
    s = np.asarray(scores, dtype=np.float64)
    ood = np.asarray(is_ood).astype(bool)
    flagged = s >= threshold
    caught, false_alarms = int((flagged & ood).sum()), int((flagged & ~ood).sum())
    n_ood, n_in = int(ood.sum()), int((~ood).sum())
    n_flagged = caught + false_alarms
    return {"threshold": float(threshold), "flagged": n_flagged, "caught": caught,
            "false_alarms": false_alarms, "n_ood": n_ood, "n_in": n_in,
            "recall": caught / n_ood if n_ood else float("nan"),
            "fpr": false_alarms / n_in if n_in else float("nan"),
            "precision": caught / n_flagged if n_flagged else float("nan")}


def score_histogram(scores, is_ood, bins: int = 40) -> dict[str, np.ndarray]:
    """Histogram of one method's scores on ``bins`` equal bins over their range: the share of
    the in-distribution and of the held-out images in each bin (each group sums to 1)."""
    s = np.asarray(scores, dtype=np.float64)
    ood = np.asarray(is_ood).astype(bool)
    edges = np.histogram_bin_edges(s, bins=bins)
    share_in = np.histogram(s[~ood], bins=edges)[0] / max(1, int((~ood).sum()))
    share_ood = np.histogram(s[ood], bins=edges)[0] / max(1, int(ood.sum()))
    return {"edges": edges, "centres": (edges[:-1] + edges[1:]) / 2, "in": share_in,
            "ood": share_ood}


CURVE_SIDES = ("ixz", "izy")  # the two sides of L = I(X;Z) - beta I(Z;Y) as the loss weighs them


def curve_view(fields: dict[str, np.ndarray]) -> dict[str, Any]:
    """One retraining's curves (xdd.pipeline.curves.load_curves()[method]) as the page draws
    them: ``step`` and ``loss`` always; ``sides`` True when the loss has the two IB sides
    (``ixz``, ``izy``: then loss = ixz + izy), with them; ``within`` / ``between`` and the
    learning rate when recorded; ``constant_lr`` when it never changed."""
    out: dict[str, Any] = {"step": np.asarray(fields["step"]),
                           "loss": np.asarray(fields["loss"]),
                           "sides": all(k in fields for k in CURVE_SIDES)}
    for k in CURVE_SIDES + ("within", "between", "lr"):
        if k in fields:
            out[k] = np.asarray(fields[k])
    lr = out.get("lr")
    out["constant_lr"] = bool(lr is not None and len(lr) and np.all(lr == lr[0]))
    return out


def frame_ranges(frames, pad: float = 0.05) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis ranges (x, y) that hold every point of every frame, ``pad`` of the span added on
    each side, so that an animation's axes stay still while its points move."""
    f = np.asarray(frames, dtype=np.float64).reshape(-1, 2)
    lo, hi = f.min(axis=0), f.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - pad * span, hi + pad * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))

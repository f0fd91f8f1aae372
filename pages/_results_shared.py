"""What the Results page draws that is the same for every visitor: the view's tables, the
figures of the cache and of one run, the settings comparison.  Each is computed once per
cache state (pages._charts.shared, keyed by the cache's signature) and handed to every session
as the same object, so a render of the page only sends what is already built.

They live in a module rather than in the page's script, which Streamlit executes afresh on
every render: a cached function defined there is keyed anew (its source read and hashed) on
each render, which cost more than some of the computations it saved.

The numbers come from the report package (``xdd.report.tables`` aggregates as docs/RESULTS.md
does, ``xdd.report.views`` shapes what the page shows, ``xdd.report.compare`` compares
settings).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pages._charts import MAIN_WIDTH, OTHER_WIDTH, Frozen, legend_row, shared, styled
from pages._common import OOD_COLOR
from pages._data import cached_runs, run_arrays, run_curves
from xdd.core.fmt import md_table
from xdd.core.methods import AFTER, BEFORE, REFERENCE_SHORT, REFERENCES, color, display_key, \
    is_main, label, short
from xdd.core.metrics import pr_curve
from xdd.report import compare
from xdd.report.tables import run_scores
from xdd.report.views import before_after, chance_per_digit, curve_view, default_shots, \
    digit_cells, page_table, per_digit_table, presets_by_runs, run_choices, score_histogram, \
    share_threshold, shots_curve, side_by_side_rows, threshold_readout


PR_POINTS = 800  # points per precision-recall curve, at most


HIST_BINS = 40  # bins of each score histogram


IN_COLOR = "#7f9cb5"  # the in-distribution images in the score histograms


@dataclass(frozen=True)
class View:
    """What the filters picked, and the page's table cut to it (shared: :func:`view_frames`)."""
    signature: tuple  # the cache's (pages._data.cache_signature)
    preset: str
    shots: int
    reference: str
    methods: tuple[str, ...]
    linked: str | None = None  # the run the address bar named when the page was opened

    @property
    def ref_note(self) -> str:
        return f"{self.reference} reference"

    @property
    def key(self) -> tuple:
        """What the shared computations of this view are keyed by (with the signature)."""
        return (self.preset, self.shots, self.reference, self.methods)

    @cached_property
    def frames(self) -> dict[str, Any]:
        return view_frames(self.signature, *self.key)

    @property
    def df(self) -> pd.DataFrame:  # the picked preset, shots, reference and methods
        return self.frames["df"]

    @property
    def df_ref(self) -> pd.DataFrame:  # the picked preset and reference, every shot count
        return self.frames["df_ref"]

    @property
    def df_both(self) -> pd.DataFrame:  # the picked preset, shots and methods, both references
        return self.frames["df_both"]

    @property
    def shot_counts(self) -> list[int]:
        return self.frames["shot_counts"]


@shared(8)
def runs_frame(signature: tuple) -> pd.DataFrame:
    """The page's table of every cached run (xdd.report.views.page_table)."""
    return page_table(cached_runs())


@shared(8)
def choices(signature: tuple) -> dict[str, Any]:
    """The filters' options: presets (most runs first); per preset its shot counts, default
    shot count and references; per (preset, reference) its methods in display order."""
    df_all = runs_frame(signature)
    out: dict[str, Any] = {"presets": presets_by_runs(df_all), "per_preset": {},
                           "methods": {}, "runs": list(df_all["run_key"].unique())}
    for p, df_p in df_all.groupby("preset"):
        out["per_preset"][p] = {
            "shot_counts": sorted(df_p["shots"].unique().tolist()),
            "default_shots": default_shots(df_p),
            "refs": [r for r in REFERENCES if r in set(df_p["reference"])]}
        for r, df_r in df_p.groupby("reference"):
            out["methods"][(p, r)] = sorted(df_r["method"].unique(), key=display_key)
    return out


@shared(64)
def view_frames(signature: tuple, preset: str, shots: int, reference: str,
                methods: tuple[str, ...]) -> dict[str, Any]:
    """A view's tables and numbers: the cut tables, the report's per-digit cells (the same
    aggregation as docs/RESULTS.md and the CLI: mean and sample s.d.), the headline numbers and
    the tables the page prints."""
    df_all = runs_frame(signature)
    df_p = df_all[df_all["preset"] == preset]
    df_ref = df_p[df_p["reference"] == reference]
    df_both = df_p[(df_p["shots"] == shots) & df_p["method"].isin(methods)]
    df = df_ref[(df_ref["shots"] == shots) & df_ref["method"].isin(methods)]
    cells = digit_cells(df)
    table = per_digit_table(df_both, preset, shots)
    shown = table.assign(method=table["method"].map(short))
    return {"df": df, "df_ref": df_ref, "df_both": df_both, "cells": cells,
            "shot_counts": sorted(df_p["shots"].unique().tolist()),
            "nums": before_after(cells),
            "n_seeds": int(cells["n"].max()) if len(cells) else 0,
            "runs": df["run_key"].nunique(), "digits": df["digit"].nunique(),
            "side_md": md_table(side_by_side_rows(df_both), SIDE_COLUMNS),
            "per_digit_md": md_table(shown.to_dict("records"), PER_DIGIT_COLUMNS),
            "per_digit_csv": table.to_csv(index=False).encode(),
            "run_choices": run_choices(df)}


@shared(8)
def all_runs_csv(signature: tuple) -> bytes:
    return runs_frame(signature).to_csv(index=False).encode()


@shared(32)
def pr_curves(root: str, key: str, methods: tuple[str, ...], reference: str,
              mtime: int) -> dict[str, Any]:
    """Precision/recall per method of one run under a reference, thinned to at most ~800
    points per curve."""
    arr = run_arrays(key, "scores.npz")
    if arr is None:
        return {}
    out = {}
    for m in methods:
        s = run_scores(arr, reference, m)
        if s is None:
            continue
        p, r, _ = pr_curve(arr["is_ood"], s)
        keep = np.unique(np.r_[np.linspace(0, len(p) - 1, min(len(p), PR_POINTS)).astype(int)])
        out[m] = (r[keep], p[keep])
    out["_base_rate"] = float(np.mean(arr["is_ood"]))
    return out


SIDE_COLUMNS = [("method", "method", ""), ("digits", "digits", "d"), ("runs", "runs", "d")]


for _ref in REFERENCES:
    SIDE_COLUMNS += [(f"auprc_{_ref}", f"AUPRC (avg. precision), {_ref} ref.", ".3f"),
                     (f"sd_{_ref}", f"± s.d., {_ref} ref.", ".3f"),
                     (f"auroc_{_ref}", f"AUROC, {_ref} ref.", ".3f"),
                     (f"fpr95_{_ref}", f"FPR@95%TPR, {_ref} ref.", ".3f")]


SIDE_COLUMNS += [("chance", "chance AUPRC", ".3f"), ("threads", "threads", "")]


PER_DIGIT_COLUMNS = [
    ("digit", "digit", "d"), ("method", "method", ""), ("reference", "reference", ""),
    ("runs", "runs", "d"), ("gans", "GANs", "d"), ("AUPRC", "AUPRC", ".3f"),
    ("AUPRC_sd", "± s.d.", ".3f"), ("AUROC", "AUROC", ".3f"), ("FPR95", "FPR@95%TPR", ".3f"),
    ("chance", "chance", ".3f"), ("threads", "threads", "")]


def line_width(method: str) -> float:
    return MAIN_WIDTH if is_main(method) else OTHER_WIDTH


@shared(64)
def fig1(signature: tuple, vkey: tuple) -> Frozen:
    view = View(signature, *vkey)
    cells = view.frames["cells"]
    note = view.ref_note
    fig = go.Figure()
    for m in sorted(cells["method"].unique(), key=display_key):
        a = cells[cells["method"] == m]
        fig.add_trace(go.Bar(
            x=a["digit"], y=a["auprc"], name=label(m), marker_color=color(m),
            error_y=dict(type="data", array=a["auprc_sd"], visible=bool((a["n"] > 1).any()),
                         thickness=1.2, width=3),
            customdata=np.c_[a["n"], a["auprc_sd"]],
            hovertemplate=(f"<b>{short(m)}</b><br>digit %{{x}}<br>"
                           f"AUPRC ({note}) %{{y:.3f}} ± %{{customdata[1]:.3f}}<br>"
                           "%{customdata[0]} run(s)<extra></extra>")))
    chance = chance_per_digit(cells)
    fig.add_trace(go.Scatter(
        x=chance.index, y=chance.values, mode="markers", name="chance (base rate)",
        marker=dict(symbol="line-ew", size=34, line=dict(width=2, color="black")),
        hovertemplate="chance %{y:.3f}<extra></extra>"))
    styled(fig, 430, grid="y", barmode="group", bargap=0.2,
           # All ten digits always on the axis: a digit not computed yet is a visible gap.
           xaxis=dict(title="held-out (OOD) digit", tickmode="linear", dtick=1,
                      range=[-0.5, 9.5], showgrid=False),
           yaxis_title=f"AUPRC (average precision), {note}", yaxis_range=[0, 1.02],
           legend=legend_row(1.1))
    return Frozen(fig)


@shared(64)
def pr_fig(signature: tuple, vkey: tuple, key: str, mtime: int) -> Frozen | None:
    view = View(signature, *vkey)
    curves = pr_curves(signature[0], key, view.methods, view.reference, mtime)
    if not curves:
        return None
    aps = view.df[view.df["run_key"] == key].set_index("method")["auprc"]
    fig = go.Figure()
    # Baselines first, so that before and XDD are drawn on top; the legend keeps the display order.
    for m in sorted((k for k in curves if not k.startswith("_")), key=display_key,
                    reverse=True):
        r, p = curves[m]
        fig.add_trace(go.Scatter(
            legendrank=display_key(m), x=r, y=p, mode="lines",
            name=f"{short(m)} (AUPRC {aps.get(m, np.nan):.3f}, {view.ref_note})",
            line=dict(color=color(m), width=line_width(m)),
            hovertemplate="recall %{x:.2f}<br>precision %{y:.2f}<extra></extra>"))
    fig.add_hline(y=curves["_base_rate"], line_dash="dot", line_color="black",
                  annotation_text="chance", annotation_position="bottom right")
    styled(fig, 420, grid="xy", xaxis_title="recall (share of the held-out digit found)",
           yaxis_title="precision", xaxis_range=[0, 1], yaxis_range=[0, 1.02],
           legend=dict(x=1.0, xanchor="right", y=1.0))
    return Frozen(fig)


@shared(32)
def gan_grid_png(root: str, key: str, mtime: int) -> bytes | None:
    """The run's first 64 generator samples as one 8-wide PNG grid, encoded once."""
    import io

    from PIL import Image

    samples = run_arrays(key, "gan_samples.npz")
    if samples is None:
        return None
    imgs = samples["images"][:64]  # (n, 28, 28) uint8
    n = len(imgs) - len(imgs) % 8
    grid = (imgs[:n].reshape(n // 8, 8, 28, 28).transpose(0, 2, 1, 3)
            .reshape(n // 8 * 28, 8 * 28))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grid, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


@shared(64)
def shots_fig(signature: tuple, vkey: tuple, pick_dig: Any) -> Frozen | None:
    view = View(signature, *vkey)
    shot_counts = view.shot_counts
    dd = view.df_ref[view.df_ref["method"].isin(view.methods)]
    line = shots_curve(dd, None if pick_dig == "all" else pick_dig, len(shot_counts))
    if line.empty:
        return None
    fig = go.Figure()
    for m in sorted(line["method"].unique(), key=display_key):
        a = line[line["method"] == m]
        fig.add_trace(go.Scatter(
            x=a["shots"], y=a["mean"], mode="lines+markers", name=short(m),
            line=dict(color=color(m), width=line_width(m)),
            error_y=dict(type="data", array=a["std"], visible=bool((a["count"] > 1).any())),
            hovertemplate="%{x} shots<br>AUPRC %{y:.3f}<extra></extra>"))
    log_x = max(shot_counts) / max(1, min(shot_counts)) >= 10
    styled(fig, 380, grid="xy", xaxis_title="labeled shots per in-distribution digit",
           yaxis_title="AUPRC", xaxis_type="log" if log_x else "linear",
           yaxis_range=[0, 1.02], legend=legend_row(1.12))
    fig.update_xaxes(tickvals=shot_counts)
    return Frozen(fig)


SPLIT_NAMES = {"test": "test split", "val": "validation split"}


CMP_HEIGHT = 380


@shared(16)
def compare_data(signature: tuple, base: str, split: str, shots: int, field: str,
                 method: str, reference: str) -> dict[str, Any]:
    """What the comparison draws, computed once per cache state and shared by every session
    (xdd.report.compare: the same functions as the results document)."""
    df = _group_table(signature, base, split, shots)
    baselines = [m for m in sorted(df["method"].unique(), key=display_key)
                 if m in (BEFORE, "pixels")]
    points = compare.field_points(df, field, base, method)
    levels = compare.method_lines(df, field, base, baselines)
    paired = compare.paired(df, method)
    fields = compare.swept_fields(df)
    parallel = (compare.parallel_table(df, method, reference, base)
                if len(fields) >= compare.PARALLEL_MIN_FIELDS else pd.DataFrame())
    return {"paired": paired,
            "figure": (Frozen(compare_figure(points, levels, field, method))
                       if not points.empty and points["value"].nunique() >= 2 else None),
            "paired_md": md_table([{**r, "leads": f"{r['leads']} of {r['gans']}"}
                                   for r in paired.to_dict("records")], PAIRED_COLUMNS),
            "parallel": (Frozen(parallel_figure(parallel, fields))
                         if not parallel.empty else None)}


@shared(8)
def compare_groups(signature: tuple) -> list[tuple[str, str]]:
    return compare.groups(runs_frame(signature))


@shared(32)
def compare_options(signature: tuple, base: str, split: str,
                    shots: int | None = None) -> dict[str, Any]:
    """The comparison's options for a preset and split: its shot counts; with ``shots``, the
    swept fields, each with the retrained networks its runs scored."""
    df_all = runs_frame(signature)
    here = df_all[(df_all["base_preset"] == base) & (df_all["eval_split"] == split)]
    out: dict[str, Any] = {"shot_counts": sorted(here["shots"].unique().tolist())}
    if shots is not None:
        k = here[here["shots"] == shots]
        out["fields"] = {
            f: [m for m in sorted(k["method"].unique(), key=display_key)
                if m not in (BEFORE, "pixels")
                and m in set(compare.field_runs(k, f, base)["method"])]
            for f in compare.swept_fields(k)}
    return out


def _group_table(signature: tuple, base: str, split: str, shots: int) -> pd.DataFrame:
    df = runs_frame(signature)
    return df[(df["base_preset"] == base) & (df["eval_split"] == split)
              & (df["shots"] == shots)]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def compare_figure(points: pd.DataFrame, levels: dict[tuple[str, str], float], field: str,
                   method: str) -> go.Figure:
    """AUPRC against one field, one panel per reference: the method's points with GAN-seed
    error bars, the preset's value starred, the unchanged baselines as level lines."""
    refs = [r for r in REFERENCES if r in set(points["reference"])]
    fig = make_subplots(rows=1, cols=len(refs), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[f"{r} reference" for r in refs])
    values = list(points["value"].drop_duplicates())
    numeric = _numeric(values)
    for col, ref in enumerate(refs, start=1):
        p = points[points["reference"] == ref]
        x = p["value"].tolist() if numeric else [compare.fmt_value(v) for v in p["value"]]
        fig.add_trace(go.Scatter(
            x=x, y=p["auprc"], mode="lines+markers", name=short(method), legendgroup=method,
            showlegend=col == 1, line=dict(color=color(method), width=MAIN_WIDTH),
            error_y=dict(type="data", array=p["sd_gan"], visible=bool((p["gans"] > 1).any())),
            customdata=np.c_[p["gans"], p["keys"]],
            hovertemplate=f"{field} = %{{x}}<br>AUPRC %{{y:.3f}}<br>GANs %{{customdata[0]}}, "
                          "draws %{customdata[1]}<extra></extra>"), 1, col)
        own = p[p["is_preset"]]
        if not own.empty:
            fig.add_trace(go.Scatter(
                x=own["value"].tolist() if numeric else
                [compare.fmt_value(v) for v in own["value"]], y=own["auprc"], mode="markers",
                name="the preset's value", legendgroup="preset", showlegend=col == 1,
                marker=dict(symbol="star", size=16, color=color(method),
                            line=dict(width=1.2, color="black")),
                hovertemplate="the preset's value<br>AUPRC %{y:.3f}<extra></extra>"), 1, col)
        for m in (BEFORE, "pixels"):
            if (ref, m) in levels:
                fig.add_hline(y=levels[(ref, m)], line_dash="dot", line_color=color(m),
                              row=1, col=col, annotation_text=short(m),
                              annotation_position="bottom right")
    positive = numeric and all(v > 0 for v in values)
    log_x = positive and max(values) / min(values) >= 10
    styled(fig, CMP_HEIGHT, grid="xy", meta="compare", yaxis_title="AUPRC",
           legend=legend_row(1.15))
    fig.update_xaxes(title_text=field, type="log" if log_x else
                     ("linear" if numeric else "category"))
    if numeric:
        fig.update_xaxes(tickvals=values)
    return fig


PAIRED_COLUMNS = [("setting", "variant", ""), ("reference", "reference", ""),
                  ("pairs", "pairs", "d"), ("digits", "digits", "d"), ("gans", "GANs", "d"),
                  ("variant", "variant AUPRC", ".3f"), ("preset", "preset AUPRC", ".3f"),
                  ("diff", "diff (variant − preset)", "+.3f"), ("se", "± s.e.", ".3f"),
                  ("leads", "GAN seeds it leads on", "")]


def parallel_figure(table: pd.DataFrame, fields: list[str]) -> go.Figure:
    """One line per run across the swept fields, coloured by its AUPRC."""
    dims = []
    for f in fields:
        vals = table[f].tolist()
        if _numeric(vals):
            dims.append(dict(label=f, values=[float(v) for v in vals]))
        else:
            cats = sorted({str(v) for v in vals})
            dims.append(dict(label=f, values=[cats.index(str(v)) for v in vals],
                             tickvals=list(range(len(cats))), ticktext=cats))
    dims.append(dict(label="AUPRC", values=table["auprc"].tolist(), range=[0, 1]))
    fig = go.Figure(go.Parcoords(line=dict(color=table["auprc"], colorscale="Viridis",
                                           showscale=True, cmin=0, cmax=1),
                                 dimensions=dims))
    return styled(fig, 360, margin=(60, 40, 50, 20), meta="parallel")


def score_figure(arr: dict[str, np.ndarray], reference: str, pair: list[str],
                 reads: dict[str, dict[str, float]], aps: pd.Series) -> go.Figure:
    """The two methods' score histograms side by side (in-distribution vs held-out, each as
    the share of its group, so the heights compare across panels), the threshold marked."""
    is_ood = arr["is_ood"].astype(bool)
    fig = make_subplots(rows=1, cols=len(pair), shared_yaxes=True, horizontal_spacing=0.04)
    for col, m in enumerate(pair, start=1):
        h = score_histogram(run_scores(arr, reference, m), is_ood, HIST_BINS)
        width = float(h["edges"][1] - h["edges"][0])
        for name, share, colour in ((f"in-distribution ({int((~is_ood).sum()):,} images)",
                                     h["in"], IN_COLOR),
                                    (f"held-out digit ({int(is_ood.sum()):,} images)",
                                     h["ood"], OOD_COLOR)):
            fig.add_trace(go.Bar(
                x=h["centres"], y=share, width=width, name=name, marker_color=colour,
                opacity=0.65, legendgroup=name, showlegend=col == 1,
                hovertemplate=f"{short(m)}<br>score %{{x:.3g}}<br>%{{y:.1%}} of the group"
                              "<extra></extra>"), 1, col)
        t = reads[m]["threshold"]
        fig.add_vline(x=t, line_dash="dash", line_color="black", line_width=1.5, row=1,
                      col=col, annotation_text=f"flag ≥ {t:.4g}",
                      annotation_position="top right", annotation_font_size=12)
        fig.update_xaxes(title_text=f"anomaly score, {short(m)} ({REFERENCE_SHORT[reference]})"
                                    f"<br>AUPRC {aps.get(m, np.nan):.3f}", nticks=6,
                         row=1, col=col)
    styled(fig, 380, margin=(10, 10, 30, 10), grid="y", barmode="overlay", bargap=0,
           meta="score-histograms",
           legend=legend_row(1.12))
    fig.update_yaxes(title_text="share of the group's images", tickformat=".0%", row=1, col=1)
    return fig


def threshold_pr_figure(curves: dict[str, Any], pair: list[str],
                        reads: dict[str, dict[str, float]], ref_note: str) -> go.Figure:
    """The pair's precision-recall curves with the threshold's operating points marked."""
    fig = go.Figure()
    for m in pair:
        r, p = curves[m]
        fig.add_trace(go.Scatter(x=r, y=p, mode="lines", name=short(m), legendgroup=m,
                                 line=dict(color=color(m), width=MAIN_WIDTH),
                                 hovertemplate="recall %{x:.2f}<br>precision %{y:.2f}"
                                               "<extra></extra>"))
        rd = reads[m]
        fig.add_trace(go.Scatter(
            x=[rd["recall"]], y=[rd["precision"]], mode="markers", legendgroup=m,
            name=f"{short(m)} at the threshold",
            marker=dict(size=15, symbol="star", color=color(m),
                        line=dict(width=1.2, color="black")),
            hovertemplate=f"{short(m)}: flag ≥ {rd['threshold']:.4g}<br>recall %{{x:.3f}}<br>"
                          "precision %{y:.3f}<extra></extra>"))
    fig.add_hline(y=curves["_base_rate"], line_dash="dot", line_color="black",
                  annotation_text="chance", annotation_position="bottom right")
    return styled(fig, 360, margin=(10, 10, 10, 10), grid="xy", meta="threshold-pr",
                  xaxis_title=f"recall ({ref_note})", yaxis_title="precision",
                  xaxis_range=[0, 1.02], yaxis_range=[0, 1.02],
                  legend=dict(x=1.0, xanchor="right", y=1.0, font=dict(size=11)))


def _readout_row(m: str, rd: dict[str, float]) -> dict[str, Any]:
    return {"method": short(m), "threshold": f"≥ {rd['threshold']:.4g}",
            "flagged": rd["flagged"], "caught": f"{rd['caught']} of {rd['n_ood']}",
            "recall": rd["recall"], "false": f"{rd['false_alarms']} of {rd['n_in']}",
            "fpr": rd["fpr"], "precision": rd["precision"]}


READOUT_COLUMNS = [("method", "network", ""), ("threshold", "flags a score", ""),
                   ("flagged", "images flagged", "d"), ("caught", "held-out caught", ""),
                   ("recall", "recall", ".3f"), ("false", "in-distribution flagged", ""),
                   ("fpr", "FPR", ".3f"), ("precision", "precision", ".3f")]


@shared(64)
def score_facts(root: str, key: str, reference: str, mtime: int) -> dict[str, Any] | None:
    """Which of before/after a run scored under a reference, its held-out share and size."""
    arr = run_arrays(key, "scores.npz")
    if arr is None:
        return None
    is_ood = arr["is_ood"].astype(bool)
    return {"pair": [m for m in (BEFORE, AFTER) if run_scores(arr, reference, m) is not None],
            "base": float(is_ood.mean()), "n": len(is_ood)}


@shared(128)
def threshold_view(signature: tuple, vkey: tuple, key: str, mtime: int,
                   share: int) -> dict[str, Any]:
    """The histograms, readout table and operating points of one run at one threshold (a
    share of the test images flagged)."""
    view = View(signature, *vkey)
    arr = run_arrays(key, "scores.npz")
    pair = score_facts(signature[0], key, view.reference, mtime)["pair"]
    is_ood = arr["is_ood"].astype(bool)
    reads = {m: threshold_readout(s, is_ood, share_threshold(s, share / 100))
             for m in pair for s in [run_scores(arr, view.reference, m)]}
    aps = view.df[view.df["run_key"] == key].set_index("method")["auprc"]
    curves = pr_curves(signature[0], key, tuple(pair), view.reference, mtime)
    return {"scores": Frozen(score_figure(arr, view.reference, pair, reads, aps)),
            "table": md_table([_readout_row(m, reads[m]) for m in pair], READOUT_COLUMNS),
            "pr": (Frozen(threshold_pr_figure(curves, pair, reads, view.ref_note))
                   if all(m in curves for m in pair) else None)}


CURVE_NAMES = {"ixz": "I(X;Z) side: λ × pairwise",
               "izy": "−β·I(Z;Y) side: β × MCDD",
               "loss": "loss L (their sum)"}


CURVE_COLORS = {"ixz": "#9467bd", "izy": "#1f77b4", "loss": "black",
                "within": "#2ca02c", "between": "#d62728"}


def _izy_name(fields: dict[str, np.ndarray]) -> str:
    return ("−β·I(Z;Y) side: β × (MCDD + pull)" if "pull" in fields
            else CURVE_NAMES["izy"])


def loss_figure(cv: dict[str, Any], izy_name: str) -> go.Figure:
    fig = go.Figure()
    for k in (("ixz", "izy", "loss") if cv["sides"] else ("loss",)):
        fig.add_trace(go.Scatter(
            x=cv["step"], y=cv[k], mode="lines", name=izy_name if k == "izy" else CURVE_NAMES[k],
            line=dict(color=CURVE_COLORS[k], width=MAIN_WIDTH if k == "loss" else OTHER_WIDTH,
                      dash="solid" if k == "loss" else "dot" if k == "ixz" else "dash"),
            hovertemplate="step %{x}<br>%{y:.4g}<extra></extra>"))
    return styled(fig, 330, margin=(10, 10, 10, 10), grid="xy", xaxis_title="retraining step",
                  meta="loss-sides", yaxis_title="value in the loss",
                  legend=legend_row(-0.25, yanchor="top", font=dict(size=11)))


def spread_figure(cv: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for k, name in (("within", "within-class spread"),
                    ("between", "distance² between class centres")):
        fig.add_trace(go.Scatter(x=cv["step"], y=cv[k], mode="lines", name=name,
                                 line=dict(color=CURVE_COLORS[k], width=MAIN_WIDTH),
                                 hovertemplate="step %{x}<br>%{y:.4g}<extra></extra>"))
    return styled(fig, 330, margin=(10, 10, 10, 10), grid="xy", xaxis_title="retraining step",
                  meta="class-spread", yaxis_title="on the unit sphere", yaxis_rangemode="tozero",
                  legend=legend_row(-0.25, yanchor="top", font=dict(size=11)))


def plane_figure(cv: dict[str, Any], izy_name: str) -> go.Figure:
    """One side against the other, coloured by step: where the loss took the embedding."""
    steps = cv["step"]
    fig = go.Figure(go.Scatter(
        x=cv["ixz"], y=cv["izy"], mode="lines+markers", name="retraining",
        line=dict(color="#bbbbbb", width=1),
        marker=dict(size=7, color=steps, colorscale="Viridis", showscale=True,
                    colorbar=dict(title="step", thickness=10, len=0.9)),
        hovertemplate="step %{marker.color}<br>I(X;Z) side %{x:.4g}<br>"
                      "−β·I(Z;Y) side %{y:.4g}<extra></extra>"))
    fig.update_xaxes(nticks=4)
    for i, text in ((0, "start"), (len(steps) - 1, "end")):
        fig.add_annotation(x=cv["ixz"][i], y=cv["izy"][i], text=text, showarrow=True,
                           arrowhead=0, ax=24, ay=-18, font=dict(size=11))
    return styled(fig, 330, margin=(10, 10, 10, 10), grid="xy", showlegend=False,
                  meta="information-plane",
                  xaxis_title=CURVE_NAMES["ixz"], yaxis_title=izy_name)


@shared(64)
def curve_figures(root: str, key: str, mtime: int, method: str) -> dict[str, Any]:
    """One retrained network's curves and their three figures."""
    fields = run_curves(key)[method]
    cv = curve_view(fields)
    izy_name = _izy_name(fields)
    return {"cv": cv, "loss": Frozen(loss_figure(cv, izy_name)),
            "spread": (Frozen(spread_figure(cv)) if "within" in cv and "between" in cv
                       else None),
            "plane": Frozen(plane_figure(cv, izy_name)) if cv["sides"] else None}

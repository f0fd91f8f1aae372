"""Results page: the paper's Fig. 1 for whatever is cached, a metrics table, PR curves,
AUPRC against the number of labeled shots, and a CSV download; then one run up close: its
anomaly scores before and after retraining with a threshold to try, and how its retraining
went (the loss's two sides, the classes' spread, the information plane).  Reads the cache only.

The numbers come from the report package (``xdd.report.tables`` aggregates as docs/RESULTS.md
does, ``xdd.report.views`` shapes what this page shows); the page picks and draws.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages import _links as links
from pages._charts import MAIN_WIDTH, OTHER_WIDTH, legend_row, show, styled
from pages._common import OOD_COLOR, require_router
from pages._data import cache_signature, cached_runs, run_arrays, run_curves, run_mtime, \
    verified_results
from pages._jobs import first_visit_panel
from xdd.core.fmt import md_table, threads_note
from xdd.core.methods import AFTER, BEFORE, REFERENCE_LABELS, REFERENCE_SHORT, \
    REFERENCES, color, display_key, is_main, label, short
from xdd.core.metrics import pr_curve
from xdd.report import compare
from xdd.report.tables import AUPRC_NOTE, SD_NOTE, run_scores
from xdd.report.views import before_after, chance_per_digit, curve_view, default_shots, \
    digit_cells, page_table, per_digit_table, presets_by_runs, run_choices, score_histogram, \
    share_threshold, shots_curve, side_by_side_rows, threshold_readout

PR_POINTS = 800  # points per precision-recall curve, at most
D_WON = 0.05  # D's final pretraining loss below which it won the game outright
HIST_BINS = 40  # bins of each score histogram
IN_COLOR = "#7f9cb5"  # the in-distribution images in the score histograms
ESTIMATOR_NOTE = ("I(X;Z) and I(Z;Y) here are the estimators the loss computes on the labeled "
                  "batch, weighted as the loss weighs them, not the true mutual information.")


@dataclass(frozen=True)
class View:
    """What the filters picked, and the page's table cut to it."""
    preset: str
    shots: int
    reference: str
    methods: list[str]
    shot_counts: list[int]
    df: Any  # the picked preset, shots, reference and methods
    df_ref: Any  # the picked preset and reference, every shot count
    df_both: Any  # the picked preset, shots and methods, both references
    linked: str | None = None  # the run the address bar named when the page was opened

    @property
    def ref_note(self) -> str:
        return f"{self.reference} reference"


@st.cache_data(show_spinner=False, max_entries=8)
def runs_frame(signature: tuple) -> pd.DataFrame:
    """The page's table of every cached run (xdd.report.views.page_table)."""
    return page_table(cached_runs())


@st.cache_data(show_spinner=False, max_entries=32)
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


def line_width(method: str) -> float:
    return MAIN_WIDTH if is_main(method) else OTHER_WIDTH


# ---------------------------------------------------------------- sections


def header() -> None:
    st.title("Results")
    st.caption("Out-of-distribution detection on MNIST: one digit held out, scored by how "
               "unusual each test image is. " + AUPRC_NOTE + ". Chance level is the share of "
               "the held-out digit in the test set (about 0.10).")


def nothing_cached() -> None:
    st.info("No finished run is cached yet. Jobs that are still running appear here as soon "
            "as they finish.")
    st.page_link("pages/run.py", label="Go to the Run page", icon=":material/play_circle:")


def filters(df_all: pd.DataFrame, problems: list[str]) -> View | None:
    """Preset, shot count, reference and methods; None (and a note) when no method is picked.
    Each opens on what the address bar names (else on the run it names, else the defaults),
    and what is picked is written back, so a copied link opens the same view."""
    f1, f2, f4, f3 = st.columns([1, 1, 1.6, 3])
    linked = links.initial("res-run", "run", list(df_all["run_key"].unique()), problems)
    wanted = linked_run(df_all, linked)
    presets = presets_by_runs(df_all)
    first_preset = wanted["preset"] if wanted else presets[0]
    link_preset = links.initial("res-preset", "preset", presets, problems)
    pick_preset = f1.selectbox("Preset", presets, key="res-preset",
                               index=presets.index(link_preset or first_preset),
                               help="Runs of different presets are never mixed in one chart; "
                                    "runs whose settings differ from their preset are listed "
                                    "apart.")
    df_p = df_all[df_all["preset"] == pick_preset]
    shot_counts = sorted(df_p["shots"].unique())
    default_k = (wanted["shots"] if wanted and wanted["preset"] == pick_preset
                 else default_shots(df_p))
    link_k = links.initial("res-shots", "shots", shot_counts, problems)
    pick_shots = f2.selectbox("Labeled shots per digit", shot_counts,
                              index=shot_counts.index(default_k if link_k is None else link_k),
                              key="res-shots")
    refs_here = [r for r in REFERENCES if r in set(df_p["reference"])]
    link_ref = links.initial("res-ref", "ref", refs_here, problems)
    pick_ref = f4.segmented_control(
        "Scoring reference", refs_here, default=link_ref or refs_here[0], required=True,
        key="res-ref", format_func=lambda r: REFERENCE_SHORT[r],
        help="labeled: the paper's protocol, a KDE over the labeled images' embeddings. "
             "unlabeled: k-NN distance to the in-distribution training images the GAN was "
             "pretrained on, without their labels.")
    df_ref = df_p[df_p["reference"] == pick_ref]
    present = sorted(df_ref["method"].unique(), key=display_key)
    link_methods = links.initial("res-methods", "methods", present, problems, many=True)
    pick_methods = f3.pills("Methods", present, selection_mode="multi",
                            default=link_methods or present, key="res-methods",
                            format_func=short)
    links.write({"preset": None if pick_preset == first_preset else pick_preset,
                 "shots": None if pick_shots == default_k else str(pick_shots),
                 "ref": None if pick_ref == refs_here[0] else pick_ref,
                 "methods": None if set(pick_methods or []) == set(present)
                 else links.join(pick_methods or [])})
    if not pick_methods:
        st.info("Select at least one method.")
        return None
    df_both = df_p[(df_p["shots"] == pick_shots) & df_p["method"].isin(pick_methods)]
    df = df_ref[(df_ref["shots"] == pick_shots) & df_ref["method"].isin(pick_methods)]
    return View(pick_preset, pick_shots, pick_ref, list(pick_methods), shot_counts, df, df_ref,
                df_both, linked)


def linked_run(df_all: pd.DataFrame, key: str | None) -> dict[str, Any] | None:
    """The run the address bar names (``?run=<key>``, as the Method page links to it): its
    preset and shots, which the filters then open on; None when absent or not cached."""
    hit = df_all[df_all["run_key"] == key]
    if hit.empty:
        return None
    return {"run_key": hit["run_key"].iloc[0], "preset": hit["preset"].iloc[0],
            "shots": hit["shots"].iloc[0]}


def headline(view: View, cells: pd.DataFrame) -> None:
    """Before vs after over the digits both cover, and how many runs the view holds."""
    note = view.ref_note
    cols = st.columns(4)
    nums = before_after(cells)
    if nums is not None:
        cols[0].metric(f"Mean AUPRC before ({note})", f"{nums['mean_before']:.3f}")
        cols[1].metric(f"Mean AUPRC after XDD ({note})", f"{nums['mean_after']:.3f}",
                       delta=f"{nums['gain']:+.3f}")
        cols[2].metric("Digits where XDD helps", f"{nums['wins']} of {nums['digits']}")
    n_seeds = int(cells["n"].max()) if len(cells) else 0
    cols[3].metric("Runs in this view", f"{view.df['run_key'].nunique()}",
                   help=f"{view.df['digit'].nunique()} digits × up to {n_seeds} seeds")


def digit_figure(view: View, cells: pd.DataFrame) -> None:
    """The paper's Fig. 1: AUPRC per held-out digit, one bar per method, chance marked."""
    note = view.ref_note
    st.subheader(f"AUPRC per held-out digit ({note})")
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
    show(fig, "fig1")
    n_seeds = int(cells["n"].max()) if len(cells) else 0
    seeds_note = ("seeds" if n_seeds > 1 else
                  "seeds (only one seed so far: add repetitions on the Run page)")
    st.caption(f"Bars: mean over runs ({note}); error bars: {SD_NOTE} — over {seeds_note}. "
               f"Each run has its own labeled draw and, in sweeps, its own GAN. "
               f"Preset {view.preset}, {view.shots} labeled shots per digit.")


def references_table(view: View) -> None:
    """Both references side by side: the means over digits of every metric."""
    st.subheader("Table: both references side by side")
    spec = [("method", "method", ""), ("digits", "digits", "d"), ("runs", "runs", "d")]
    for ref in REFERENCES:
        spec += [(f"auprc_{ref}", f"AUPRC (avg. precision), {ref} ref.", ".3f"),
                 (f"sd_{ref}", f"± s.d., {ref} ref.", ".3f"),
                 (f"auroc_{ref}", f"AUROC, {ref} ref.", ".3f"),
                 (f"fpr95_{ref}", f"FPR@95%TPR, {ref} ref.", ".3f")]
    spec += [("chance", "chance AUPRC", ".3f"), ("threads", "threads", "")]
    st.markdown(md_table(side_by_side_rows(view.df_both), spec))
    st.caption("Means over the held-out digits (each digit first averaged over its runs); ± is "
               "the mean per-digit s.d. " + AUPRC_NOTE + ". AUROC: area under the ROC curve. "
               "FPR@95%TPR: share of in-distribution images flagged when 95 % of the held-out "
               "digit is caught (lower is better). threads: the CPU threads the runs computed "
               "with (runs of one config at other thread counts may differ in the last digits). "
               "labeled ref.: " + REFERENCE_LABELS["labeled"] + "; unlabeled ref.: "
               + REFERENCE_LABELS["unlabeled"] + ".")


def per_digit(view: View, df_all: pd.DataFrame) -> None:
    """Per held-out digit (an expander) and the two CSV downloads."""
    table = per_digit_table(view.df_both, view.preset, view.shots)
    with st.expander("Per held-out digit"):
        shown = table.assign(method=table["method"].map(short))
        st.markdown(md_table(shown.to_dict("records"), [
            ("digit", "digit", "d"), ("method", "method", ""), ("reference", "reference", ""),
            ("runs", "runs", "d"), ("gans", "GANs", "d"), ("AUPRC", "AUPRC", ".3f"),
            ("AUPRC_sd", "± s.d.", ".3f"), ("AUROC", "AUROC", ".3f"),
            ("FPR95", "FPR@95%TPR", ".3f"), ("chance", "chance", ".3f"),
            ("threads", "threads", "")]))
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", view.preset)
    d1, d2, _ = st.columns([1, 1, 1.5])
    d1.download_button("Per-digit table (CSV)", table.to_csv(index=False).encode(),
                       file_name=f"xdd-{safe_name}-{view.shots}shots.csv", mime="text/csv",
                       key="dl-table", icon=":material/download:")
    d2.download_button("Every run (CSV)", df_all.to_csv(index=False).encode(),
                       file_name="xdd-all-runs.csv", mime="text/csv", key="dl-all",
                       icon=":material/download:")


def pick_run(view: View) -> str:
    """The run whose curves and GAN are shown (digit, seeds and thread count named)."""
    runs = {r["run_key"]: r for r in run_choices(view.df)}
    keys = list(runs)
    pick = st.selectbox(
        "Run", keys, key="res-run", index=keys.index(view.linked) if view.linked in keys else 0,
        format_func=lambda k: f"digit {runs[k]['digit']} held out · seed {runs[k]['seed']} · "
                              f"GAN seed {runs[k]['gan_seed']} · "
                              f"{threads_note(runs[k]['device'])} · run {k}")
    links.write({"run": None if pick == keys[0] and view.linked != pick else pick})
    return pick


def pr_figure(view: View, key: str) -> None:
    """Precision-recall curves of one run under the picked reference."""
    curves = pr_curves(cache_signature()[0], key, tuple(view.methods), view.reference,
                       run_mtime(key))
    if not curves:
        st.warning("This run's score file is missing or failed its integrity check; it has been "
                   "removed from the cache. Submit the run again.")
        return
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
    show(fig, "fig-pr")


def gan_check(key: str) -> None:
    """What the run's GAN learned to draw, and how its pretraining ended."""
    with st.expander("What the GAN of this run learned to draw"):
        # The pretrained D is the embedding before retraining; a GAN whose D won outright (its
        # loss near 0) only learned to tell digits from noise, and its features are those of a
        # noise detector.
        samples = run_arrays(key, "gan_samples.npz")
        res = verified_results(key) or {}
        if samples is None:
            st.caption("This run has no generator samples (it was computed before they were "
                       "recorded, or uses no GAN).")
            return
        imgs = samples["images"][:64]  # (n, 28, 28) uint8
        n = len(imgs) - len(imgs) % 8
        grid = (imgs[:n].reshape(n // 8, 8, 28, 28).transpose(0, 2, 1, 3)
                .reshape(n // 8 * 28, 8 * 28))
        c1, c2 = st.columns([1, 1])
        c1.image(grid, caption="64 images drawn by the pretrained generator G", width=320,
                 clamp=True)
        gan_losses(c2, res)


def gan_losses(col: Any, res: dict[str, Any]) -> None:
    losses = res.get("pretrain_losses") or {}
    d_loss = losses.get("d_loss")
    if isinstance(d_loss, (int, float)):
        col.metric("D's loss at the end of pretraining", f"{d_loss:.3f}")
        col.metric("G's loss at the end of pretraining",
                   f"{losses.get('g_loss', float('nan')):.3f}")
        if d_loss < D_WON:
            col.warning("D won the game outright (its loss is near 0): G's images are easy "
                        "to tell from digits, and D's features may only detect noise. "
                        "Expect a weak \"before\" embedding.")
        else:
            col.caption("A balanced game keeps D's loss well above 0 (0.4–1.2 for the quick "
                        "preset's GANs): D had to learn what digits look like to keep up "
                        "with G.")
    if res.get("pretrain_source") == "bundle":
        col.info("This GAN was not trained on this machine: it ships with the app "
                 "(xdd/pretrained/, made by `python -m xdd pretrain --bundle`), so the first "
                 "run needs no pretraining. `python -m xdd run --force` trains one here.")


def shots_section(view: View) -> None:
    """AUPRC against the number of labeled shots, for one digit or the mean over digits."""
    st.subheader(f"AUPRC against the number of labeled shots ({view.ref_note})")
    shot_counts = view.shot_counts
    if len(shot_counts) < 2:
        st.caption("Only one shot count is cached for this preset. Submit the same digits with "
                   "other shot counts (e.g. 1, 3, 10, 30) on the Run page to see this curve.")
        return
    digits = sorted(view.df_ref["digit"].unique().tolist())
    pick_dig = st.selectbox("Held-out digit", ["all"] + digits, key="res-shot-digit",
                            format_func=lambda d: "mean over digits" if d == "all" else str(d))
    dd = view.df_ref[view.df_ref["method"].isin(view.methods)]
    line = shots_curve(dd, None if pick_dig == "all" else pick_dig, len(shot_counts))
    if line.empty:
        st.caption("No digit is cached at every shot count yet; pick a single digit.")
        return
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
    show(fig, "fig-shots")
    st.caption("Mean over seeds (and digits) at each shot count; error bars: s.d. over seeds.")


# ---------------------------------------------------------------- settings compared

SPLIT_NAMES = {"test": "test split", "val": "validation split"}
CMP_HEIGHT = 380


@st.cache_data(show_spinner=False, max_entries=16)
def compare_data(signature: tuple, base: str, split: str, shots: int, field: str,
                 method: str) -> dict[str, Any]:
    """What the comparison draws, computed once per cache state and shared by every session
    (xdd.report.compare: the same functions as the results document)."""
    df = _group_table(signature, base, split, shots)
    baselines = [m for m in sorted(df["method"].unique(), key=display_key)
                 if m in (BEFORE, "pixels")]
    return {"points": compare.field_points(df, field, base, method),
            "levels": compare.method_lines(df, field, base, baselines),
            "paired": compare.paired(df, method),
            "fields": compare.swept_fields(df)}


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
                        subplot_titles=[REFERENCE_SHORT[r] + " reference" for r in refs])
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


def compare_section(view: View, df_all: pd.DataFrame, problems: list[str]) -> None:
    """AUPRC against any swept setting, both references, and every variant paired with the
    preset: the same numbers as the results document's "Settings compared"."""
    st.subheader("Compare settings")
    options = compare.groups(df_all)
    if not options:
        st.caption("No cached run changes a setting of its preset yet. Sweep a setting on the "
                   "Run page (Advanced · Sweep over a setting), or `python -m xdd sweep --vary "
                   "FIELD=V1,V2,...`, to compare settings here.")
        return
    labels = {f"{p} · {SPLIT_NAMES.get(s, s)}": (p, s) for p, s in options}
    names = {f"{p}:{s}": lab for lab, (p, s) in labels.items()}
    c1, c2, c3, c4 = st.columns([1.4, 1.4, 0.8, 1])
    link_group = links.initial("res-cmp-group", "compare", list(names), problems)
    group = c1.selectbox("Runs", list(labels), key="res-cmp-group",
                         index=list(labels).index(names[link_group]) if link_group else 0,
                         help="A preset's runs on one evaluation split: the validation split is "
                              "where settings are chosen, the test split where they are "
                              "reported.")
    base, split = labels[group]
    here = df_all[(df_all["base_preset"] == base) & (df_all["eval_split"] == split)]
    shot_counts = sorted(here["shots"].unique().tolist())
    default_k = view.shots if view.shots in shot_counts else shot_counts[0]
    link_k = links.initial("res-cmp-shots", "compare_shots", shot_counts, problems)
    shots = c3.selectbox("Shots", shot_counts, key="res-cmp-shots",
                         index=shot_counts.index(default_k if link_k is None else link_k))
    fields = compare.swept_fields(here[here["shots"] == shots])
    if not fields:
        st.caption(f"No run with {shots} shots changes a setting here.")
        return
    link_field = links.initial("res-cmp-field", "field", fields, problems)
    field = c2.selectbox("Setting on the x axis", fields, key="res-cmp-field",
                         index=fields.index(link_field) if link_field else 0)
    retrained = [m for m in sorted(here["method"].unique(), key=display_key)
                 if m not in (BEFORE, "pixels") and m in set(compare.field_runs(
                     here[here["shots"] == shots], field, base)["method"])]
    if not retrained:
        st.caption("No retrained network was scored in these runs.")
        return
    default_m = AFTER if AFTER in retrained else retrained[0]
    link_m = links.initial("res-cmp-method", "network", retrained, problems)
    method = c4.selectbox("Network", retrained, key="res-cmp-method", format_func=short,
                          index=retrained.index(link_m or default_m))
    links.write({"compare": None if group == list(labels)[0] else f"{base}:{split}",
                 "compare_shots": None if shots == default_k else str(shots),
                 "field": None if field == fields[0] else field,
                 "network": None if method == default_m else method})
    data = compare_data(cache_signature(), base, split, shots, field, method)
    pts = data["points"]
    if pts.empty or pts["value"].nunique() < 2:
        st.caption(f"Only one value of {field} is cached beside the preset's runs; sweep it "
                   "over more values to draw a curve.")
    else:
        show(compare_figure(pts, data["levels"], field, method), "fig-compare")
        st.caption("Each point: the mean over held-out digits of the per-digit mean AUPRC, "
                   "over the (digit, GAN seed, labeled draw) draws that every value covers, so "
                   "every point stands on the same draws. Error bars: s.d. over GAN seeds of "
                   "the mean over digits (how far the answer moves when the GANs are drawn "
                   "again). Star: the preset's own value. Dotted: the pretrained D and the "
                   "raw pixels in the plain runs, which no retraining setting changes.")
    paired = data["paired"]
    if not paired.empty:
        st.markdown(f"**Every variant beside the preset** ({short(method)}, {shots} shots, "
                    f"{SPLIT_NAMES.get(split, split)})")
        rows = [{**r, "leads": f"{r['leads']} of {r['gans']}"}
                for r in paired.to_dict("records")]
        st.markdown(md_table(rows, PAIRED_COLUMNS))
        st.caption("Pairs: a variant's run and the preset's run of the same digit, GAN seed, "
                   "labeled draw and shots. diff: variant − preset over the pairs, ± its "
                   "standard error (s.d. of the differences / √pairs). Leads: GAN seeds on "
                   "which the mean difference over the digits is above zero.")
    if len(data["fields"]) >= compare.PARALLEL_MIN_FIELDS:
        ref = view.reference
        table = compare.parallel_table(_group_table(cache_signature(), base, split, shots),
                                       method, ref, base)
        if not table.empty:
            st.markdown(f"**Every run across the settings that vary** ({view.ref_note})")
            show(parallel_figure(table, data["fields"]), "fig-parallel")
            st.caption("One line per run; drag along an axis to keep only the runs in a range.")


# ---------------------------------------------------------------- one run up close


def one_run_heading(view: View, key: str) -> None:
    res = verified_results(key) or {}
    st.header("One run up close", divider="gray")
    st.caption(f"The run picked above: digit {res.get('ood_digit', '?')} held out, seed "
               f"{res.get('seed', '?')}, {res.get('shots', '?')} labeled shots per digit, "
               f"preset {view.preset} (run {key}).")


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


def score_distributions(view: View, key: str) -> None:
    """Before vs after: the anomaly scores of the in-distribution and the held-out test
    images, and what a threshold that flags a share of them catches."""
    st.subheader(f"Anomaly scores before and after retraining ({view.ref_note})")
    arr = run_arrays(key, "scores.npz")
    if arr is None:
        st.warning("This run's score file is missing or failed its integrity check.")
        return
    pair = [m for m in (BEFORE, AFTER) if run_scores(arr, view.reference, m) is not None]
    if len(pair) < 2:
        st.caption(f"This run has no before/after scores under the {view.ref_note}.")
        return
    is_ood = arr["is_ood"].astype(bool)
    base = float(is_ood.mean())
    share = st.slider("Flag the most unusual … of the test images", 1, 99,
                      int(np.clip(round(100 * base), 1, 99)), format="%d%%", key="res-flag",
                      help="A threshold on the anomaly score: every test image scoring at or "
                           "above it is flagged as OOD. Set here as the share of test images "
                           "it flags, so that it means the same for both networks.")
    reads = {m: threshold_readout(s, is_ood, share_threshold(s, share / 100))
             for m in pair for s in [run_scores(arr, view.reference, m)]}
    aps = view.df[view.df["run_key"] == key].set_index("method")["auprc"]
    show(score_figure(arr, view.reference, pair, reads, aps), "fig-scores")
    st.caption("Bars: the share of each group's test images in each score bin (each colour "
               "sums to 100 % per panel), so the heights compare across the panels; each "
               "network's scores have their own axis, since the two embeddings' densities are "
               "not on one scale. The dashed line is the threshold: it flags the same share of "
               "test images in both panels.")
    st.markdown(f"**At this threshold** ({share} % of the {len(is_ood):,} test images "
                "flagged)")
    st.markdown(md_table([_readout_row(m, reads[m]) for m in pair], READOUT_COLUMNS))
    c1, c2 = st.columns([1.2, 1])
    with c1:
        curves = pr_curves(cache_signature()[0], key, tuple(pair), view.reference,
                           run_mtime(key))
        if all(m in curves for m in pair):
            show(threshold_pr_figure(curves, pair, reads, view.ref_note), "fig-threshold-pr")
    c2.caption("**Recall**: the share of the held-out digit's test images that are flagged. "
               "**FPR** (false-positive rate): the share of in-distribution test images "
               "flagged, i.e. false alarms. **Precision**: the share of flagged images that "
               "really are the held-out digit. The stars mark the threshold's operating point "
               "on each network's precision–recall curve; moving the slider slides them "
               "along the curves. "
               + (f"At {round(100 * base)} % (the held-out digit's share of the test set) as "
                  "many images are flagged as there are held-out ones, so recall and "
                  "precision nearly coincide." if share == round(100 * base) else ""))


PANEL_WIDTH = 300  # px: three training-curve panels in a row on a 1400 px wide page, one at 1024
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


def training_curves(key: str) -> None:
    """How the run's retraining went, step by step: the loss's two sides and their sum, the
    classes' spread and separation, and the information plane."""
    st.subheader("How the retraining went")
    if verified_results(key) is None:
        st.warning("This run's files are missing or failed their integrity check.")
        return
    curves = run_curves(key)
    if curves is None:
        st.info("This run was computed before runs kept their training curves, so there is "
                "nothing to draw here. Recompute it (the same settings, on the Run page) to "
                "see how its retraining went.")
        return
    methods = sorted(curves, key=display_key)
    pick = st.segmented_control(
        "Retrained network", methods, default=AFTER if AFTER in methods else methods[0],
        required=True, format_func=short, key="res-curve-method",
        help="Every network this run retrained; each records its own curves.")
    fields = curves[pick]
    cv = curve_view(fields)
    izy_name = _izy_name(fields)
    lr = (f" The learning rate stayed at {cv['lr'][0]:.3g} throughout."
          if cv["constant_lr"] else "")
    st.caption(f"L = I(X;Z) − β·I(Z;Y), minimised over {len(cv['step'])} steps on the labeled "
               f"images. {ESTIMATOR_NOTE}{lr}")
    # Three panels of a fixed width that wrap onto more rows on a narrow page.
    with st.container(horizontal=True, gap="small"):
        with st.container(width=PANEL_WIDTH):
            st.markdown("**The loss and its two sides**")
            show(loss_figure(cv, izy_name), f"fig-loss-{pick}")
            st.caption("Lower is better for both: the pairwise side falls as classes move "
                       "apart; the MCDD side falls as each image gets closer to its own class "
                       "centre." if cv["sides"] else
                       f"{label(pick)} has no I(X;Z) and I(Z;Y) sides: its loss is drawn "
                       "alone.")
        with st.container(width=PANEL_WIDTH):
            st.markdown("**Spread within and between the classes**")
            if "within" in cv and "between" in cv:
                show(spread_figure(cv), f"fig-spread-{pick}")
                st.caption("Of the labeled images' embeddings on the unit sphere: their mean "
                           "squared distance to their class centre, and the mean squared "
                           "distance between class centres.")
            else:
                st.caption("Not recorded for this network.")
        with st.container(width=PANEL_WIDTH):
            st.markdown("**The information plane**")
            if cv["sides"]:
                show(plane_figure(cv, izy_name), f"fig-plane-{pick}")
                st.caption("One side against the other, one dot per step (colour). The loss is "
                           "their sum, so a step that lowers it moves the dot towards the lower "
                           "left (x + y falls).")
            else:
                st.caption(f"{label(pick)} has no two sides to plot against each other.")


# ---------------------------------------------------------------- the page


def render() -> None:
    require_router()
    header()
    runs = cached_runs()
    if first_visit_panel("results"):
        return
    if not runs:
        nothing_cached()
        return
    df_all = runs_frame(cache_signature())
    if df_all.empty:
        st.info("The cached runs hold no metrics.")
        return
    problems: list[str] = []
    slot = st.empty()  # the link's message, above the filters it concerns
    view = filters(df_all, problems)
    if view is None:
        with slot:
            links.warn(problems)
        return
    # The same aggregation as docs/RESULTS.md and the CLI (xdd.report): mean and sample s.d.
    cells = digit_cells(view.df)
    headline(view, cells)
    digit_figure(view, cells)
    references_table(view)
    per_digit(view, df_all)
    st.subheader(f"Precision–recall curves of one run ({view.ref_note})")
    key = pick_run(view)
    pr_figure(view, key)
    gan_check(key)
    shots_section(view)
    compare_section(view, df_all, problems)
    with slot:
        links.warn(problems)
    # One run up close: below the shots curve, whose chart the page has always drawn third.
    one_run_heading(view, key)
    score_distributions(view, key)
    training_curves(key)


render()

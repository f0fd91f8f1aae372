"""Results page: the paper's Fig. 1 for whatever is cached, a metrics table, PR curves,
AUPRC against the number of labeled shots, and a CSV download.  Reads the cache only."""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages._common import require_router
from pages._data import cache_signature, cached_runs, run_arrays, run_mtime, verified_results
from pages._jobs import first_visit_panel
from xdd.core.fmt import config_group, md_table
from xdd.core.methods import REFERENCE_LABELS, REFERENCE_SHORT, REFERENCES, color, display_key, label, \
    short
from xdd.core.metrics import pr_curve
from xdd.report.tables import AUPRC_NOTE, SD_DDOF, SD_NOTE, aggregate, over_digits, results_table, \
    run_scores

require_router()
st.title("Results")
st.caption("Out-of-distribution detection on MNIST: one digit held out, scored by how unusual "
           "each test image is. " + AUPRC_NOTE + ". Chance level is the share of the held-out "
           "digit in the test set (about 0.10).")

runs = cached_runs()
if first_visit_panel("results"):
    st.stop()
if not runs:
    st.info("No finished run is cached yet. Jobs that are still running appear here as soon "
            "as they finish.")
    st.page_link("pages/run.py", label="Go to the Run page", icon=":material/play_circle:")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=8)
def runs_frame(signature: tuple) -> pd.DataFrame:
    """One row per (run, reference, method): xdd.report.tables's table, with the preset column naming
    a run's variant (custom settings are never averaged with the preset's own runs)."""
    runs = cached_runs()
    df = results_table(runs)
    groups = {r["run_key"]: config_group(r) for r in runs}
    df["preset"] = df["run_key"].map(groups)
    return df.rename(columns={"ood_digit": "digit"})


df_all = runs_frame(cache_signature())
if df_all.empty:
    st.info("The cached runs hold no metrics.")
    st.stop()

# ---------------------------------------------------------------- filters

presets = sorted(df_all["preset"].dropna().unique(),
                 key=lambda p: (-df_all[df_all["preset"] == p]["run_key"].nunique(), p))
f1, f2, f4, f3 = st.columns([1, 1, 1.6, 3])
pick_preset = f1.selectbox("Preset", presets, key="res-preset",
                           help="Runs of different presets are never mixed in one chart; runs "
                                "whose settings differ from their preset are listed apart.")
df_p = df_all[df_all["preset"] == pick_preset]
shot_counts = sorted(df_p["shots"].unique())
default_shots = 10 if 10 in shot_counts else int(df_p["shots"].mode().iloc[0])
pick_shots = f2.selectbox("Labeled shots per digit", shot_counts,
                          index=shot_counts.index(default_shots), key="res-shots")
refs_here = [r for r in REFERENCES if r in set(df_p["reference"])]
pick_ref = f4.segmented_control(
    "Scoring reference", refs_here, default=refs_here[0], required=True, key="res-ref",
    format_func=lambda r: REFERENCE_SHORT[r],
    help="labeled: the paper's protocol, a KDE over the labeled images' embeddings. "
         "unlabeled: k-NN distance to the in-distribution training images the GAN was "
         "pretrained on, without their labels.")
df_both = df_p[df_p["shots"] == pick_shots]
df_p = df_p[df_p["reference"] == pick_ref]
present = sorted(df_p["method"].unique(), key=display_key)
pick_methods = f3.pills("Methods", present, selection_mode="multi", default=present,
                        key="res-methods", format_func=short)
if not pick_methods:
    st.info("Select at least one method.")
    st.stop()
df = df_p[(df_p["shots"] == pick_shots) & (df_p["method"].isin(pick_methods))]
df_both = df_both[df_both["method"].isin(pick_methods)]
ref_note = f"{pick_ref} reference"

# The same aggregation as docs/RESULTS.md and the CLI (xdd.report.tables): mean and sample s.d.
agg = aggregate(df, ["digit", "method"]).rename(columns={"runs": "n"})
n_seeds = int(agg["n"].max()) if len(agg) else 0

# ---------------------------------------------------------------- headline numbers

by_method = agg.groupby("method")["auprc"].mean()
cols = st.columns(4)
if "before" in by_method and "xdd" in by_method:
    both = agg.pivot(index="digit", columns="method", values="auprc")[["before", "xdd"]].dropna()
    cols[0].metric(f"Mean AUPRC before ({ref_note})", f"{both['before'].mean():.3f}")
    cols[1].metric(f"Mean AUPRC after XDD ({ref_note})", f"{both['xdd'].mean():.3f}",
                   delta=f"{both['xdd'].mean() - both['before'].mean():+.3f}")
    cols[2].metric("Digits where XDD helps", f"{int((both['xdd'] > both['before']).sum())} "
                   f"of {len(both)}")
cols[3].metric("Runs in this view", f"{df['run_key'].nunique()}",
               help=f"{df['digit'].nunique()} digits × up to {n_seeds} seeds")

# ---------------------------------------------------------------- Fig. 1

st.subheader(f"AUPRC per held-out digit ({ref_note})")
fig = go.Figure()
for m in sorted(agg["method"].unique(), key=display_key):
    a = agg[agg["method"] == m]
    fig.add_trace(go.Bar(
        x=a["digit"], y=a["auprc"], name=label(m),
        marker_color=color(m),
        error_y=dict(type="data", array=a["auprc_sd"], visible=bool((a["n"] > 1).any()),
                     thickness=1.2, width=3),
        customdata=np.c_[a["n"], a["auprc_sd"]],
        hovertemplate=(f"<b>{short(m)}</b><br>digit %{{x}}<br>"
                       f"AUPRC ({ref_note}) %{{y:.3f}} ± %{{customdata[1]:.3f}}<br>"
                       "%{customdata[0]} run(s)"
                       "<extra></extra>")))
chance = agg.groupby("digit")["base_rate"].mean()
fig.add_trace(go.Scatter(
    x=chance.index, y=chance.values, mode="markers", name="chance (base rate)",
    marker=dict(symbol="line-ew", size=34, line=dict(width=2, color="black")),
    hovertemplate="chance %{y:.3f}<extra></extra>"))
fig.update_layout(
    barmode="group", bargap=0.2, height=430, margin=dict(l=10, r=10, t=30, b=10),
    # All ten digits always on the axis: a digit not computed yet is a visible gap.
    xaxis=dict(title="held-out (OOD) digit", tickmode="linear", dtick=1,
               range=[-0.5, 9.5], showgrid=False),
    yaxis_title=f"AUPRC (average precision), {ref_note}",
    yaxis_range=[0, 1.02], legend=dict(orientation="h", y=1.1, x=0),
    plot_bgcolor="white", yaxis_gridcolor="#eee")
st.plotly_chart(fig, key="fig1", config={"displaylogo": False})
seeds_note = ("seeds" if n_seeds > 1 else
              "seeds (only one seed so far: add repetitions on the Run page)")
st.caption(f"Bars: mean over runs ({ref_note}); error bars: {SD_NOTE} — over {seeds_note}. "
           f"Each run has its own labeled draw and, in sweeps, its own GAN. "
           f"Preset {pick_preset}, {pick_shots} labeled shots per digit.")

# ---------------------------------------------------------------- table + CSV

st.subheader("Table: both references side by side")
both_avg = over_digits(df_both, digit="digit")
summary_rows = []
for m in sorted(both_avg["method"].unique(), key=display_key):
    row: dict[str, Any] = {"method": label(m)}
    for ref in REFERENCES:
        hit = both_avg[(both_avg["method"] == m) & (both_avg["reference"] == ref)]
        if len(hit):
            h = hit.iloc[0]
            row.update({f"auprc_{ref}": h["auprc"], f"sd_{ref}": h["auprc_sd"],
                        f"auroc_{ref}": h["auroc"], f"fpr95_{ref}": h["fpr95"],
                        "digits": int(h["digits"]), "chance": h["base_rate"]})
    row["runs"] = int(df_both[df_both["method"] == m]["run_key"].nunique())
    summary_rows.append(row)
cols_spec = [("method", "method", ""), ("digits", "digits", "d"), ("runs", "runs", "d")]
for ref in REFERENCES:
    cols_spec += [(f"auprc_{ref}", f"AUPRC (avg. precision), {ref} ref.", ".3f"),
                  (f"sd_{ref}", f"± s.d., {ref} ref.", ".3f"),
                  (f"auroc_{ref}", f"AUROC, {ref} ref.", ".3f"),
                  (f"fpr95_{ref}", f"FPR@95%TPR, {ref} ref.", ".3f")]
cols_spec.append(("chance", "chance AUPRC", ".3f"))
st.markdown(md_table(summary_rows, cols_spec))
st.caption("Means over the held-out digits (each digit first averaged over its runs); ± is the "
           "mean per-digit s.d. " + AUPRC_NOTE + ". AUROC: area under the ROC curve. "
           "FPR@95%TPR: share of in-distribution images flagged when 95 % of the held-out digit "
           "is caught (lower is better). labeled ref.: " + REFERENCE_LABELS["labeled"]
           + "; unlabeled ref.: " + REFERENCE_LABELS["unlabeled"] + ".")
per_digit_all = aggregate(df_both, ["digit", "method", "reference"])
table = per_digit_all.rename(columns={"auprc": "AUPRC", "auprc_sd": "AUPRC_sd",
                                      "auroc": "AUROC", "fpr95": "FPR95",
                                      "base_rate": "chance"})
table.insert(0, "preset", pick_preset)
table.insert(1, "shots", pick_shots)
with st.expander("Per held-out digit"):
    per_digit = table.assign(method=table["method"].map(short))
    st.markdown(md_table(per_digit.to_dict("records"), [
        ("digit", "digit", "d"), ("method", "method", ""), ("reference", "reference", ""),
        ("runs", "runs", "d"), ("gans", "GANs", "d"), ("AUPRC", "AUPRC", ".3f"),
        ("AUPRC_sd", "± s.d.", ".3f"), ("AUROC", "AUROC", ".3f"),
        ("FPR95", "FPR@95%TPR", ".3f"), ("chance", "chance", ".3f")]))
safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", pick_preset)
d1, d2, _ = st.columns([1, 1, 1.5])
d1.download_button("Per-digit table (CSV)", table.to_csv(index=False).encode(),
                   file_name=f"xdd-{safe_name}-{pick_shots}shots.csv", mime="text/csv",
                   key="dl-table", icon=":material/download:")
d2.download_button("Every run (CSV)", df_all.to_csv(index=False).encode(),
                   file_name="xdd-all-runs.csv", mime="text/csv", key="dl-all",
                   icon=":material/download:")

# ---------------------------------------------------------------- PR curves


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
        keep = np.unique(np.r_[np.linspace(0, len(p) - 1, min(len(p), 800)).astype(int)])
        out[m] = (r[keep], p[keep])
    out["_base_rate"] = float(np.mean(arr["is_ood"]))
    return out


st.subheader(f"Precision–recall curves of one run ({ref_note})")
runs_here = (df[["run_key", "digit", "seed", "gan_seed"]].drop_duplicates()
             .sort_values(["digit", "seed"]).to_dict("records"))
pick_run = st.selectbox(
    "Run", [r["run_key"] for r in runs_here], key="res-run",
    format_func=lambda k: next(f"digit {r['digit']} held out · seed {r['seed']} · GAN seed "
                               f"{r['gan_seed']} · run {k}"
                               for r in runs_here if r["run_key"] == k))
curves = pr_curves(cache_signature()[0], pick_run, tuple(pick_methods), pick_ref,
                   run_mtime(pick_run))
if not curves:
    st.warning("This run's score file is missing or failed its integrity check; it has been "
               "removed from the cache. Submit the run again.")
else:
    aps = df[df["run_key"] == pick_run].set_index("method")["auprc"]
    fig_pr = go.Figure()
    # Baselines first, so that before and XDD are drawn on top; the legend keeps the display order.
    for m in sorted((k for k in curves if not k.startswith("_")), key=display_key,
                    reverse=True):
        r, p = curves[m]
        fig_pr.add_trace(go.Scatter(
            legendrank=display_key(m),
            x=r, y=p, mode="lines",
            name=f"{short(m)} (AUPRC {aps.get(m, np.nan):.3f}, {ref_note})",
            line=dict(color=color(m), width=3 if m in ("before", "xdd") else 1.6),
            hovertemplate="recall %{x:.2f}<br>precision %{y:.2f}<extra></extra>"))
    fig_pr.add_hline(y=curves["_base_rate"], line_dash="dot", line_color="black",
                     annotation_text="chance", annotation_position="bottom right")
    fig_pr.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10),
                         xaxis_title="recall (share of the held-out digit found)",
                         yaxis_title="precision", xaxis_range=[0, 1], yaxis_range=[0, 1.02],
                         plot_bgcolor="white", xaxis_gridcolor="#eee", yaxis_gridcolor="#eee",
                         legend=dict(x=1.0, xanchor="right", y=1.0))
    st.plotly_chart(fig_pr, key="fig-pr", config={"displaylogo": False})

with st.expander("What the GAN of this run learned to draw"):
    # The pretrained D is the "before" embedding; a GAN whose D won outright (its loss near 0)
    # only learned to tell digits from noise, and its features are those of a noise detector.
    samples = run_arrays(pick_run, "gan_samples.npz")
    res_one = verified_results(pick_run) or {}
    losses = res_one.get("pretrain_losses") or {}
    if samples is None:
        st.caption("This run has no generator samples (it was computed before they were "
                   "recorded, or uses no GAN).")
    else:
        imgs = samples["images"][:64]  # (n, 28, 28) uint8
        n = len(imgs) - len(imgs) % 8
        grid = imgs[:n].reshape(n // 8, 8, 28, 28).transpose(0, 2, 1, 3).reshape(n // 8 * 28, 8 * 28)
        c1, c2 = st.columns([1, 1])
        c1.image(grid, caption="64 images drawn by the pretrained generator G", width=320,
                 clamp=True)
        d_loss = losses.get("d_loss")
        if isinstance(d_loss, (int, float)):
            c2.metric("D's loss at the end of pretraining", f"{d_loss:.3f}")
            c2.metric("G's loss at the end of pretraining", f"{losses.get('g_loss', float('nan')):.3f}")
            if d_loss < 0.05:
                c2.warning("D won the game outright (its loss is near 0): G's images are easy "
                           "to tell from digits, and D's features may only detect noise. "
                           "Expect a weak \"before\" embedding.")
            else:
                c2.caption("A balanced game keeps D's loss well above 0 (0.4–1.2 for the quick "
                           "preset's GANs): D had to learn what digits look like to keep up "
                           "with G.")
        if res_one.get("pretrain_source") == "bundle":
            c2.info("This GAN was not trained on this machine: it ships with the app "
                    "(xdd/pretrained/, made by `python -m xdd pretrain --bundle`), so the first "
                    "run needs no pretraining. `python -m xdd run --force` trains one here.")

# ---------------------------------------------------------------- AUPRC vs shots

st.subheader(f"AUPRC against the number of labeled shots ({ref_note})")
if len(shot_counts) < 2:
    st.caption("Only one shot count is cached for this preset. Submit the same digits with "
               "other shot counts (e.g. 1, 3, 10, 30) on the Run page to see this curve.")
else:
    dig_opts = ["all"] + sorted(df_p["digit"].unique().tolist())
    pick_dig = st.selectbox("Held-out digit", dig_opts, key="res-shot-digit",
                            format_func=lambda d: "mean over digits" if d == "all" else str(d))
    dd = df_p[df_p["method"].isin(pick_methods)]
    if pick_dig != "all":
        dd = dd[dd["digit"] == pick_dig]
    else:
        # Only digits cached at every shot count, so that the mean compares like with like.
        full = dd.groupby("digit")["shots"].nunique()
        dd = dd[dd["digit"].isin(full[full == len(shot_counts)].index)]
    if dd.empty:
        st.caption("No digit is cached at every shot count yet; pick a single digit.")
    else:
        per_seed = dd.groupby(["method", "shots", "seed"])["auprc"].mean().reset_index()
        line = per_seed.groupby(["method", "shots"])["auprc"].agg(
            ["mean", lambda v: v.std(ddof=SD_DDOF), "count"])
        line.columns = ["mean", "std", "count"]
        line = line.reset_index().fillna({"std": 0.0})
        fig_s = go.Figure()
        for m in sorted(line["method"].unique(), key=display_key):
            a = line[line["method"] == m]
            fig_s.add_trace(go.Scatter(
                x=a["shots"], y=a["mean"], mode="lines+markers", name=short(m),
                line=dict(color=color(m), width=3 if m in ("before", "xdd") else 1.6),
                error_y=dict(type="data", array=a["std"], visible=bool((a["count"] > 1).any())),
                hovertemplate="%{x} shots<br>AUPRC %{y:.3f}<extra></extra>"))
        log_x = max(shot_counts) / max(1, min(shot_counts)) >= 10
        fig_s.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10),
                            xaxis_title="labeled shots per in-distribution digit",
                            yaxis_title="AUPRC", xaxis_type="log" if log_x else "linear",
                            yaxis_range=[0, 1.02], plot_bgcolor="white",
                            xaxis_gridcolor="#eee", yaxis_gridcolor="#eee",
                            legend=dict(orientation="h", y=1.12, x=0))
        fig_s.update_xaxes(tickvals=shot_counts)
        st.plotly_chart(fig_s, key="fig-shots", config={"displaylogo": False})
        st.caption("Mean over seeds (and digits) at each shot count; error bars: s.d. over "
                   "seeds.")

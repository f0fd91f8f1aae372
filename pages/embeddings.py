"""Embeddings page: 2-D maps (t-SNE / UMAP / PCA) of the test images before and after XDD
retraining, side by side, with the held-out digit highlighted and the labeled examples in
black (the paper's Fig. 2-3).  A box or lasso selection shows the selected images.

The projections are computed by the worker and stored in projections.npz; this page only
reads them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages._common import DIGIT_COLORS, OOD_COLOR, require_router
from pages._data import cached_runs, run_arrays, run_images
from pages._jobs import bad_run_panel, first_visit_panel
from xdd.core.fmt import PROJ_LABELS, config_group, describe_config
from xdd.core.methods import REFERENCES
from xdd.report.tables import run_metrics, run_scores

MAX_IMAGES = 120
SIDES = (("before", "Before: pretrained GAN discriminator"), ("xdd", "After: XDD retraining"))

require_router()
st.title("Embeddings")
st.caption("Each dot is a test image, placed so that images the network embeds close together "
           "stay close on the map. Left: the embedding after GAN pretraining; right: after "
           "retraining with the XDD loss on the labeled examples (black). Drag a box or lasso "
           "over either map to see the images you selected.")

if first_visit_panel("embeddings"):
    st.stop()
runs = [r for r in cached_runs() if "projections.npz" in (r.get("files") or {})]
pending = sum(bool(r.get("projections_pending")) for r in cached_runs())
if pending:
    st.info(f"Maps still being computed for {pending} run{'s' if pending > 1 else ''}: "
            "the scores are on the Results page already; the maps appear here when ready "
            "(progress on the Run page).")
if not runs:
    st.info("No cached run has projections yet. Runs of every preset compute them; they "
            "appear here when a job finishes.")
    st.page_link("pages/run.py", label="Go to the Run page", icon=":material/play_circle:")
    st.stop()

runs.sort(key=lambda r: (r.get("preset", ""), r.get("ood_digit", 0), r.get("shots", 0),
                         r.get("seed", 0)))
by_key = {r["run_key"]: r for r in runs}
labels = {k: dict(r, preset=config_group(r)) for k, r in by_key.items()}
newest = max(runs, key=lambda r: r.get("started") or 0)["run_key"]
keys = list(by_key)
pick = st.selectbox("Run", keys, index=keys.index(newest), key="emb-run",
                    format_func=lambda k: f"{describe_config(labels[k])} · run {k}")
res = by_key[pick]
ood_digit = int(res.get("ood_digit", -1))
proj = run_arrays(pick, "projections.npz")
scores = run_arrays(pick, "scores.npz")
if proj is None or scores is None:
    bad_run_panel(res)
    st.stop()

sides = [(e, t) for e, t in SIDES if any(k.startswith(e + "_") for k in proj)]
available = [p for p in ("tsne", "umap", "pca") if all(f"{e}_{p}" in proj for e, _ in sides)]
if not sides or not available:
    st.error("This run's projection file holds no before/after maps.")
    st.stop()

c1, c2, c3, c4 = st.columns([1.4, 1.4, 1.2, 1.2], vertical_alignment="bottom")
method = c1.segmented_control("Projection", available, default=available[0], required=True,
                              format_func=lambda p: PROJ_LABELS[p], key="emb-proj")
score_refs = [r for r in REFERENCES if any(run_scores(scores, r, e) is not None
                                           for e, _ in SIDES)]
color_opts = ["digit"] + [f"score:{r}" for r in score_refs]
color_by = c2.segmented_control(
    "Colour by", color_opts, default="digit", required=True, key="emb-color",
    format_func=lambda c: "digit" if c == "digit" else f"score, {c.split(':')[1]} ref.",
    help="Anomaly score under the labeled reference (the paper: KDE over the labeled "
         "embeddings) or the unlabeled reference (k-NN distance to the unlabeled "
         "in-distribution training images).")
size = c3.slider("Point size", 2, 12, 5, key="emb-size")
show_lab = c4.toggle("Labeled examples", value=True, key="emb-lab",
                     help="The labeled training images used for retraining and for the KDE, "
                          "drawn as black markers.")

M = len(proj["index"])
test_digit = proj["label"].astype(int)
lab_digit = proj["labeled_label"].astype(int)


def subsample_scores(name: str, reference: str) -> np.ndarray:
    """The method's scores under a reference for the projected test subsample (NaN when the
    run lacks them)."""
    s = run_scores(scores, reference, name)
    if s is None:
        return np.full(M, np.nan)
    ti = scores["test_index"]
    order = np.argsort(ti)
    pos = order[np.searchsorted(ti[order], proj["index"])]
    return s[pos].astype(float)


def rank_pct(s: np.ndarray) -> np.ndarray:
    """Percentile rank of each score (0 = most typical, 100 = most unusual)."""
    r = np.argsort(np.argsort(s, kind="stable"), kind="stable")
    return 100.0 * r / max(1, len(s) - 1)


def build_figure(emb: str, title: str) -> tuple[go.Figure, list[np.ndarray]]:
    """The map of one embedding; also, per trace, the projection rows it draws (for selection)."""
    xy = proj[f"{emb}_{method}"]
    by_ref = {r: subsample_scores(emb, r) for r in REFERENCES}
    sc = by_ref[color_by.split(":")[1]] if color_by != "digit" else by_ref["labeled"]
    is_ood = test_digit == ood_digit
    kind = np.where(is_ood, f"OOD (digit {ood_digit})", "in-distribution")
    custom = np.c_[test_digit, kind, np.round(by_ref["labeled"], 3), np.round(by_ref["unlabeled"], 3)]
    hover = ("digit %{customdata[0]}<br>%{customdata[1]}<br>anomaly score, labeled ref. "
             "%{customdata[2]}<br>anomaly score, unlabeled ref. %{customdata[3]}"
             "<extra></extra>")
    fig = go.Figure()
    rows: list[np.ndarray] = []
    if color_by == "digit":
        for d in [d for d in range(10) if d != ood_digit] + [ood_digit]:
            idx = np.flatnonzero(test_digit == d)
            if not len(idx):
                continue
            ood = d == ood_digit
            fig.add_trace(go.Scattergl(
                x=xy[idx, 0], y=xy[idx, 1], mode="markers",
                name=f"{d} (OOD)" if ood else str(d), customdata=custom[idx],
                hovertemplate=hover,
                marker=dict(size=size + 3 if ood else size,
                            color=OOD_COLOR if ood else DIGIT_COLORS[d],
                            opacity=0.95 if ood else 0.6,
                            symbol="diamond" if ood else "circle",
                            line=dict(width=0.8, color="black") if ood else dict(width=0))))
            rows.append(idx)
    else:
        pct = rank_pct(np.nan_to_num(sc, nan=0.0))
        for ood in (False, True):
            idx = np.flatnonzero(is_ood == ood)
            fig.add_trace(go.Scattergl(
                x=xy[idx, 0], y=xy[idx, 1], mode="markers",
                name=f"{ood_digit} (OOD)" if ood else "in-distribution",
                customdata=custom[idx], hovertemplate=hover,
                marker=dict(size=size + 3 if ood else size, color=pct[idx], coloraxis="coloraxis",
                            symbol="diamond" if ood else "circle", opacity=0.85,
                            line=dict(width=0.8, color="black") if ood else dict(width=0))))
            rows.append(idx)
        fig.update_layout(coloraxis=dict(
            colorscale="Viridis", cmin=0, cmax=100,
            colorbar=dict(title="score<br>rank %", thickness=12, len=0.8)))
    if show_lab and len(xy) > M:
        lab = np.arange(M, len(xy))
        fig.add_trace(go.Scattergl(
            x=xy[lab, 0], y=xy[lab, 1], mode="markers", name="labeled",
            customdata=np.c_[lab_digit, np.full(len(lab), "labeled example")],
            hovertemplate="digit %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            marker=dict(size=size + 2, color="black", symbol="x")))
        rows.append(lab)
    by_metrics = run_metrics(res)
    parts = [f"AUPRC {by_metrics[r][emb]['auprc']:.3f} ({r} ref.)" for r in REFERENCES
             if emb in by_metrics.get(r, {})]
    sub = ("  ·  " + ", ".join(parts)) if parts else ""
    fig.update_layout(
        title=dict(text=f"{title}<span style='font-size:13px;color:#555'>{sub}</span>",
                   x=0.0, font=dict(size=16)),
        height=520, margin=dict(l=5, r=5, t=45, b=5), plot_bgcolor="white",
        legend=dict(orientation="h", y=-0.02, yanchor="top", x=0, itemsizing="constant",
                    font=dict(size=12)),
        dragmode="lasso", uirevision=f"{pick}-{method}")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, title=None)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title=None,
                     scaleanchor="x", scaleratio=1)
    return fig, rows


selected: list[int] = []  # projection rows (test subsample) selected on either map
cols = st.columns(len(sides))
for col, (emb, title) in zip(cols, sides):
    fig, rows = build_figure(emb, title)
    with col:
        event = st.plotly_chart(
            fig, on_select="rerun", selection_mode=("box", "lasso"),
            key=f"map-{emb}-{pick}-{method}-{color_by}-{show_lab}",
            config={"displaylogo": False, "scrollZoom": False})
    points: list[dict[str, Any]] = (event or {}).get("selection", {}).get("points", []) or []
    for pt in points:
        c, i = pt.get("curve_number"), pt.get("point_index", pt.get("point_number"))
        if c is None or i is None or not 0 <= c < len(rows) or not 0 <= i < len(rows[c]):
            continue
        row = int(rows[c][i])
        if row < M:  # labeled (training) examples are not test images
            selected.append(row)

st.caption(f"{M} test images (a fixed random subsample, the same on both maps) and "
           f"{len(lab_digit)} labeled examples. {PROJ_LABELS[method]} coordinates have no units. "
           + ("Colour: rank of the anomaly score within the map (yellow = most unusual)."
              if color_by != "digit" else ""))

# ---------------------------------------------------------------- selected images

st.subheader("Selected images")
# Held-out digit first (what the class wants to see), then by digit; each map's own order.
sel = sorted(dict.fromkeys(selected), key=lambda r: (test_digit[r] != ood_digit, test_digit[r]))
if not sel:
    st.caption("Drag a box or lasso over either map to show the images here.")
else:
    sel_digits = test_digit[sel]
    n_ood = int((sel_digits == ood_digit).sum())
    counts = ", ".join(f"{d}: {int((sel_digits == d).sum())}" for d in np.unique(sel_digits))
    st.markdown(f"**{len(sel)} selected**, {n_ood} of them the held-out digit {ood_digit} "
                f"&nbsp;·&nbsp; per digit: {counts}")
    shown = sel[:MAX_IMAGES]
    try:
        x_shown = run_images(res, proj["index"][shown])
    except Exception as exc:  # a moved data folder: say so instead of failing the page
        st.error(f"Could not load the MNIST images: {exc}")
        st.stop()
    imgs = [np.kron(255 - x, np.ones((3, 3), np.uint8)) for x in x_shown]
    caps = [f"{test_digit[r]}{' OOD' if test_digit[r] == ood_digit else ''}" for r in shown]
    st.image(imgs, caption=caps, width=64)
    if len(sel) > MAX_IMAGES:
        st.caption(f"Showing the first {MAX_IMAGES} of {len(sel)}.")

"""Embeddings page: 2-D maps (t-SNE / UMAP / PCA) of the test images before and after XDD
retraining, side by side, with the held-out digit highlighted and the labeled examples in
black (the paper's Fig. 2-3).  A box or lasso selection shows the selected images.

The projections are computed by the worker and stored in projections.npz; this page only
reads them.  Which methods have a map comes from the method table (``projected``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages._charts import legend_row, show, styled
from pages._common import DIGIT_COLORS, OOD_COLOR, require_router
from pages._data import cached_runs, run_arrays, run_images
from pages._jobs import bad_run_panel, first_visit_panel
from xdd.core.fmt import PROJ_LABELS, config_group, describe_config, threads_note
from xdd.core.methods import AFTER, BEFORE, BY_NAME, REFERENCES, display_order, label
from xdd.report.tables import run_metrics, run_scores

MAX_IMAGES = 120
PROJECTIONS = ("tsne", "umap", "pca")
# The map titles of the paper's pair; any other projected method is titled by its label.
SIDE_TITLES = {BEFORE: "Before: pretrained GAN discriminator", AFTER: "After: XDD retraining"}


@dataclass(frozen=True)
class RunMaps:
    """One run's projections and scores, as the maps read them."""
    key: str
    res: dict[str, Any]
    proj: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]

    @property
    def ood_digit(self) -> int:
        return int(self.res.get("ood_digit", -1))

    @property
    def n_test(self) -> int:
        """The projected test subsample (the rows after it are the labeled examples)."""
        return len(self.proj["index"])

    @property
    def test_digit(self) -> np.ndarray:
        return self.proj["label"].astype(int)

    @property
    def lab_digit(self) -> np.ndarray:
        return self.proj["labeled_label"].astype(int)

    def sides(self) -> list[tuple[str, str]]:
        """(method, title) of the maps this run has: the projected methods, display order."""
        return [(m, SIDE_TITLES.get(m, label(m))) for m in display_order()
                if BY_NAME[m].projected and any(k.startswith(m + "_") for k in self.proj)]

    def subsample_scores(self, name: str, reference: str) -> np.ndarray:
        """The method's scores under a reference for the projected test subsample (NaN when
        the run lacks them)."""
        s = run_scores(self.scores, reference, name)
        if s is None:
            return np.full(self.n_test, np.nan)
        ti = self.scores["test_index"]
        order = np.argsort(ti)
        pos = order[np.searchsorted(ti[order], self.proj["index"])]
        return s[pos].astype(float)


@dataclass(frozen=True)
class Controls:
    projection: str
    color_by: str  # "digit" or "score:<reference>"
    size: int
    show_labeled: bool


def rank_pct(s: np.ndarray) -> np.ndarray:
    """Percentile rank of each score (0 = most typical, 100 = most unusual)."""
    r = np.argsort(np.argsort(s, kind="stable"), kind="stable")
    return 100.0 * r / max(1, len(s) - 1)


# ---------------------------------------------------------------- sections


def header() -> None:
    st.title("Embeddings")
    st.caption("Each dot is a test image, placed so that images the network embeds close "
               "together stay close on the map. Left: the embedding after GAN pretraining; "
               "right: after retraining with the XDD loss on the labeled examples (black). Drag "
               "a box or lasso over either map to see the images you selected.")


def runs_with_maps() -> list[dict[str, Any]]:
    """The cached runs that have maps, saying how many are still being computed; [] (and
    what to do) when none has."""
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
    return runs


def pick_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run picker (the newest run first picked): its run, config and thread count named."""
    runs = sorted(runs, key=lambda r: (r.get("preset", ""), r.get("ood_digit", 0),
                                       r.get("shots", 0), r.get("seed", 0)))
    by_key = {r["run_key"]: r for r in runs}
    labels = {k: dict(r, preset=config_group(r)) for k, r in by_key.items()}
    newest = max(runs, key=lambda r: r.get("started") or 0)["run_key"]
    keys = list(by_key)
    pick = st.selectbox("Run", keys, index=keys.index(newest), key="emb-run",
                        format_func=lambda k: f"{describe_config(labels[k])} · "
                                              f"{threads_note(by_key[k].get('device'))} · run {k}")
    return by_key[pick]


def controls(run: RunMaps, sides: list[tuple[str, str]], available: list[str]) -> Controls:
    c1, c2, c3, c4 = st.columns([1.4, 1.4, 1.2, 1.2], vertical_alignment="bottom")
    projection = c1.segmented_control("Projection", available, default=available[0],
                                      required=True, format_func=lambda p: PROJ_LABELS[p],
                                      key="emb-proj")
    score_refs = [r for r in REFERENCES if any(run_scores(run.scores, r, e) is not None
                                               for e, _ in sides)]
    color_by = c2.segmented_control(
        "Colour by", ["digit"] + [f"score:{r}" for r in score_refs], default="digit",
        required=True, key="emb-color",
        format_func=lambda c: "digit" if c == "digit" else f"score, {c.split(':')[1]} ref.",
        help="Anomaly score under the labeled reference (the paper: KDE over the labeled "
             "embeddings) or the unlabeled reference (k-NN distance to the unlabeled "
             "in-distribution training images).")
    size = c3.slider("Point size", 2, 12, 5, key="emb-size")
    show_lab = c4.toggle("Labeled examples", value=True, key="emb-lab",
                         help="The labeled training images used for retraining and for the "
                              "KDE, drawn as black markers.")
    return Controls(projection, color_by, size, show_lab)


def _marker(ood: bool, size: int, **style: Any) -> dict[str, Any]:
    """The held-out digit: larger black-edged diamonds; the rest: plain circles."""
    return dict(size=size + 3 if ood else size, symbol="diamond" if ood else "circle",
                line=dict(width=0.8, color="black") if ood else dict(width=0), **style)


def _digit_traces(run: RunMaps, xy, custom, hover: str, size: int) -> list[tuple[Any, Any]]:
    """One trace per digit (the held-out digit last, on top), with its rows."""
    ood_digit, test_digit = run.ood_digit, run.test_digit
    out = []
    for d in [d for d in range(10) if d != ood_digit] + [ood_digit]:
        idx = np.flatnonzero(test_digit == d)
        if not len(idx):
            continue
        ood = d == ood_digit
        out.append((go.Scattergl(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=f"{d} (OOD)" if ood else str(d),
            customdata=custom[idx], hovertemplate=hover,
            marker=_marker(ood, size, color=OOD_COLOR if ood else DIGIT_COLORS[d],
                           opacity=0.95 if ood else 0.6)), idx))
    return out


def _score_traces(run: RunMaps, xy, custom, hover: str, size: int,
                  sc: np.ndarray) -> list[tuple[Any, Any]]:
    """In-distribution and held-out images coloured by the rank of their anomaly score."""
    pct = rank_pct(np.nan_to_num(sc, nan=0.0))
    is_ood = run.test_digit == run.ood_digit
    out = []
    for ood in (False, True):
        idx = np.flatnonzero(is_ood == ood)
        out.append((go.Scattergl(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers",
            name=f"{run.ood_digit} (OOD)" if ood else "in-distribution",
            customdata=custom[idx], hovertemplate=hover,
            marker=_marker(ood, size, color=pct[idx], coloraxis="coloraxis", opacity=0.85)),
            idx))
    return out


def build_figure(run: RunMaps, ctrl: Controls, emb: str,
                 title: str) -> tuple[go.Figure, list[np.ndarray]]:
    """The map of one embedding; also, per trace, the projection rows it draws (for selection)."""
    xy = run.proj[f"{emb}_{ctrl.projection}"]
    m = run.n_test
    by_ref = {r: run.subsample_scores(emb, r) for r in REFERENCES}
    is_ood = run.test_digit == run.ood_digit
    kind = np.where(is_ood, f"OOD (digit {run.ood_digit})", "in-distribution")
    custom = np.c_[run.test_digit, kind, np.round(by_ref["labeled"], 3),
                   np.round(by_ref["unlabeled"], 3)]
    hover = ("digit %{customdata[0]}<br>%{customdata[1]}<br>anomaly score, labeled ref. "
             "%{customdata[2]}<br>anomaly score, unlabeled ref. %{customdata[3]}"
             "<extra></extra>")
    fig = go.Figure()
    if ctrl.color_by == "digit":
        traces = _digit_traces(run, xy, custom, hover, ctrl.size)
    else:
        traces = _score_traces(run, xy, custom, hover, ctrl.size,
                               by_ref[ctrl.color_by.split(":")[1]])
        fig.update_layout(coloraxis=dict(
            colorscale="Viridis", cmin=0, cmax=100,
            colorbar=dict(title="score<br>rank %", thickness=12, len=0.8)))
    if ctrl.show_labeled and len(xy) > m:
        lab = np.arange(m, len(xy))
        traces.append((go.Scattergl(
            x=xy[lab, 0], y=xy[lab, 1], mode="markers", name="labeled",
            customdata=np.c_[run.lab_digit, np.full(len(lab), "labeled example")],
            hovertemplate="digit %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            marker=dict(size=ctrl.size + 2, color="black", symbol="x")), lab))
    for trace, _ in traces:
        fig.add_trace(trace)
    by_metrics = run_metrics(run.res)
    parts = [f"AUPRC {by_metrics[r][emb]['auprc']:.3f} ({r} ref.)" for r in REFERENCES
             if emb in by_metrics.get(r, {})]
    sub = ("  ·  " + ", ".join(parts)) if parts else ""
    styled(fig, 520, margin=(5, 5, 45, 5),
           title=dict(text=f"{title}<span style='font-size:13px;color:#555'>{sub}</span>",
                      x=0.0, font=dict(size=16)),
           legend=legend_row(-0.02, yanchor="top", itemsizing="constant", font=dict(size=12)),
           dragmode="lasso", uirevision=f"{run.key}-{ctrl.projection}")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, title=None)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title=None,
                     scaleanchor="x", scaleratio=1)
    return fig, [rows for _, rows in traces]


def _selected_rows(event: Any, rows: list[np.ndarray], n_test: int) -> list[int]:
    """The test-subsample rows a box or lasso selection picked on one map."""
    points: list[dict[str, Any]] = (event or {}).get("selection", {}).get("points", []) or []
    out = []
    for pt in points:
        c, i = pt.get("curve_number"), pt.get("point_index", pt.get("point_number"))
        if c is None or i is None or not 0 <= c < len(rows) or not 0 <= i < len(rows[c]):
            continue
        row = int(rows[c][i])
        if row < n_test:  # labeled (training) examples are not test images
            out.append(row)
    return out


def maps(run: RunMaps, ctrl: Controls, sides: list[tuple[str, str]]) -> list[int]:
    """The maps side by side; returns the projection rows selected on any of them."""
    selected: list[int] = []
    for col, (emb, title) in zip(st.columns(len(sides)), sides):
        fig, rows = build_figure(run, ctrl, emb, title)
        with col:
            event = show(fig, f"map-{emb}-{run.key}-{ctrl.projection}-{ctrl.color_by}-"
                              f"{ctrl.show_labeled}",
                         on_select="rerun", selection_mode=("box", "lasso"),
                         config={"scrollZoom": False})
        selected += _selected_rows(event, rows, run.n_test)
    st.caption(f"{run.n_test} test images (a fixed random subsample, the same on both maps) "
               f"and {len(run.lab_digit)} labeled examples. {PROJ_LABELS[ctrl.projection]} "
               "coordinates have no units. "
               + ("Colour: rank of the anomaly score within the map (yellow = most unusual). "
                  if ctrl.color_by != "digit" else "")
               + f"AUPRCs computed with {threads_note(run.res.get('device'))} (a run of the "
                 "same settings at another thread count may differ in the last digits).")
    return selected


def selected_images(run: RunMaps, selected: list[int]) -> None:
    st.subheader("Selected images")
    # Held-out digit first (what the class wants to see), then by digit; each map's own order.
    test_digit, ood_digit = run.test_digit, run.ood_digit
    sel = sorted(dict.fromkeys(selected),
                 key=lambda r: (test_digit[r] != ood_digit, test_digit[r]))
    if not sel:
        st.caption("Drag a box or lasso over either map to show the images here.")
        return
    sel_digits = test_digit[sel]
    n_ood = int((sel_digits == ood_digit).sum())
    counts = ", ".join(f"{d}: {int((sel_digits == d).sum())}" for d in np.unique(sel_digits))
    st.markdown(f"**{len(sel)} selected**, {n_ood} of them the held-out digit {ood_digit} "
                f"&nbsp;·&nbsp; per digit: {counts}")
    shown = sel[:MAX_IMAGES]
    try:
        x_shown = run_images(run.res, run.proj["index"][shown])
    except Exception as exc:  # a moved data folder: say so instead of failing the page
        st.error(f"Could not load the MNIST images: {exc}")
        return
    imgs = [np.kron(255 - x, np.ones((3, 3), np.uint8)) for x in x_shown]
    caps = [f"{test_digit[r]}{' OOD' if test_digit[r] == ood_digit else ''}" for r in shown]
    st.image(imgs, caption=caps, width=64)
    if len(sel) > MAX_IMAGES:
        st.caption(f"Showing the first {MAX_IMAGES} of {len(sel)}.")


# ---------------------------------------------------------------- the page


def render() -> None:
    require_router()
    header()
    if first_visit_panel("embeddings"):
        return
    runs = runs_with_maps()
    if not runs:
        return
    res = pick_run(runs)
    key = res["run_key"]
    proj, scores = run_arrays(key, "projections.npz"), run_arrays(key, "scores.npz")
    if proj is None or scores is None:
        bad_run_panel(res)
        return
    run = RunMaps(key, res, proj, scores)
    sides = run.sides()
    available = [p for p in PROJECTIONS if all(f"{e}_{p}" in proj for e, _ in sides)]
    if not sides or not available:
        st.error("This run's projection file holds no before/after maps.")
        return
    ctrl = controls(run, sides, available)
    selected = maps(run, ctrl, sides)
    selected_images(run, selected)


render()

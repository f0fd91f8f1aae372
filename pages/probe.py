"""Probe page: ask a finished run about a digit of your own.

Draw on the canvas, upload a picture (PNG or JPEG, any size) or pick a built-in probe; the
page turns it into an MNIST-like 28 x 28 input (``xdd.probe.image``), shows it as the model sees
it, and scores it exactly as the run scored its test images (``xdd.probe.loading``): before and
after XDD, under both references, with its percentile among the run's ordinary test digits,
its nearest training images, the class posterior after retraining and a marker on the run's
maps.

What is the same for every visitor (the networks, the fitted scorers, the maps' embeddings) is
built once per run and kept with ``st.cache_resource`` (pages/_probe_shared.py); a probe then
takes milliseconds.  The page trains nothing and writes nothing; torch is loaded when this page
is first opened.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages._charts import legend_row, show, styled
from pages._common import DIGIT_COLORS, OOD_COLOR, require_router
from pages._data import cached_runs, run_mtime, verified_results
from pages._jobs import bad_run_panel, first_visit_panel
from pages._probe_shared import examples_for, prober_for
from xdd.core.fmt import PROJ_LABELS, config_group, describe_config, threads_note
from xdd.core.methods import AFTER, BEFORE, REFERENCE_LABELS, label
from xdd.probe.image import ProbeInputError, decode, to_mnist
from xdd.probe.prober import MAP_K, N_NEIGHBOURS, PCA_TOLERANCE, sentence, why_not

CANVAS_PX = 280  # the drawing canvas (10 x the model's 28 px)
STROKE_PX = 20  # the pen: ~2 px once the digit is scaled into its 20 px box, as MNIST's strokes
INPUTS = ("Draw", "Upload", "Examples")
SIDE_TITLES = {BEFORE: "Before: pretrained GAN discriminator", AFTER: "After: XDD retraining"}
PROBE_COLOR = "#111111"


def header() -> None:
    st.title("Probe")
    st.caption("Ask a finished run about a digit of your own: draw it, upload a picture of "
               "it, or pick a built-in probe. It is scored exactly as the run scored its test "
               "images, before and after XDD retraining, under both references, and placed on "
               "the run's maps.")


# ---------------------------------------------------------------- the run


def pick_run() -> dict[str, Any] | None:
    """The run picker over the runs that can be probed (the newest first picked); the others
    are listed with the reason.  None (and what to do) when no run can be probed."""
    runs = [r for r in cached_runs() if r.get("run_key")]
    ok = [r for r in runs if why_not(r) is None]
    others = [(r, why_not(r)) for r in runs if why_not(r) is not None]
    if others:
        with st.expander(f"{len(others)} cached run{'s' * (len(others) > 1)} cannot be probed"):
            for r, why in others:
                st.markdown(f"- {describe_config(r)} · run {r['run_key']}: {why}.")
    if not ok:
        st.info("No cached run can be probed yet: a run that scored both the pretrained and the "
                "XDD-retrained network (every preset does) can be, once it finishes.")
        st.page_link("pages/run.py", label="Go to the Run page", icon=":material/play_circle:")
        return None
    ok = sorted(ok, key=lambda r: (r.get("preset", ""), r.get("ood_digit", 0),
                                   r.get("shots", 0), r.get("seed", 0)))
    by_key = {r["run_key"]: r for r in ok}
    newest = max(ok, key=lambda r: r.get("started") or 0)["run_key"]
    keys = list(by_key)
    pick = st.selectbox(
        "Run", keys, index=keys.index(newest), key="probe-run",
        format_func=lambda k: f"{describe_config(dict(by_key[k], preset=config_group(by_key[k])))}"
                              f" · {threads_note(by_key[k].get('device'))} · run {k}")
    return by_key[pick]


# ---------------------------------------------------------------- the input


def read_input(pr) -> tuple[np.ndarray | None, str]:
    """The model's input (28, 28) uint8 from the chosen source, and where it came from; None
    (after one message saying why) when there is nothing to probe."""
    mode = st.segmented_control("Input", INPUTS, default=INPUTS[0], required=True,
                                key="probe-input")
    if mode == "Draw":
        from streamlit_drawable_canvas import st_canvas

        st.space(32)  # the canvas's toolbar floats above it: room, so it covers no button
        canvas = st_canvas(stroke_width=STROKE_PX, stroke_color="#000000",
                           background_color="#ffffff", height=CANVAS_PX, width=CANVAS_PX,
                           drawing_mode="freedraw", return_image_data=True, key="probe-canvas")
        st.caption("Draw one digit with the mouse (or a finger); it is scored when you lift "
                   "the pen. The toolbar's arrows undo and redo, its bin clears the canvas.")
        img = canvas.image_data
        try:
            if img is None:
                raise ProbeInputError("empty")
            return to_mnist(img), "your drawing"
        except ProbeInputError:
            st.info("The canvas is empty: draw a digit on it.")
            return None, ""
    if mode == "Upload":
        up = st.file_uploader("A picture of one digit (PNG or JPEG, any size, up to 20 MB)",
                              type=["png", "jpg", "jpeg"], key="probe-upload")
        if up is None:
            st.info("Upload a picture of one digit: dark on light or light on dark.")
            return None, ""
        try:
            return to_mnist(decode(up.getvalue())), f"your picture ({up.name})"
        except ProbeInputError as exc:
            st.error(f"Cannot probe this file: {exc}.")
            return None, ""
    exs = examples_for(pr.key, run_mtime(pr.key), pr)
    names = [e.name for e in exs]
    default = next((n for n in names if "held out" in n), names[0])
    pick = st.pills("Built-in probes", names, default=default, key="probe-example",
                    required=True, wrap=True, width="stretch",
                    help="Made by code: a test image of each digit (the held-out one named), "
                         "a letter drawn and preprocessed like a drawing, noise, and a test "
                         "digit inverted (the test images, the noise and the inverted digit go "
                         "in as they are).")
    ex = next((e for e in exs if e.name == pick), None)
    if ex is None:
        st.info("Pick one of the built-in probes.")
        return None, ""
    note = ex.note
    if ex.test_row is not None:
        note += " (the run stored its scores: they are the ones below)"
    return ex.image, note


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def big(x: np.ndarray, k: int) -> np.ndarray:
    """A 28 x 28 image k times larger, pixels kept square."""
    return np.kron(x, np.ones((k, k), np.uint8))


# ---------------------------------------------------------------- what the run says


def model_view(x: np.ndarray, source: str) -> None:
    st.markdown("**What the model sees**")
    st.image(big(x, 8), caption=f"{_cap(source)}, as an MNIST input: 28 × 28 grey levels, "
                                "white on black", width=224)


def posterior_chart(pr, result) -> None:
    p = result.posterior
    if not np.all(np.isfinite(p)):
        st.caption("No class posterior: this run kept no class centres.")
        return
    top = int(np.argmax(p))
    st.markdown(f"**After XDD it thinks it is a {result.digits[top]}** "
                f"(MCDD posterior {p[top]:.1%}).")
    fig = go.Figure(go.Bar(x=[str(d) for d in result.digits], y=p,
                           marker_color=[DIGIT_COLORS[d] for d in result.digits],
                           hovertemplate="digit %{x}: %{y:.2%}<extra></extra>"))
    styled(fig, 190, margin=(10, 10, 10, 30), grid="y")
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title=None)
    fig.update_xaxes(title=None, type="category")
    show(fig, "probe-posterior")
    st.caption(f"Softmax over the nine in-distribution digits of −‖z − μₖ‖²/(2σₖ²) − d·log σₖ "
               f"+ bₖ, with the class centres the retraining learned, z on the unit sphere as "
               f"the loss saw it. Digit {pr.ood_digit} is held out: it is no class, so the "
               "posterior cannot name it — a confident posterior does not make a digit "
               "ordinary.")


def scores_section(pr, result) -> None:
    st.subheader("How unusual is it?")
    for ref in pr.references:
        st.markdown(f"**{_cap(REFERENCE_LABELS[ref])}**")
        cols = st.columns(2)
        for col, m in zip(cols, (BEFORE, AFTER)):
            side = result.sides[m]
            pct = side.percentiles[ref]
            with col:
                st.metric(f"{SIDE_TITLES[m]} · anomaly score", f"{side.scores[ref]:,.4g}")
                st.progress(min(1.0, pct / 100.0), text=f"{_cap(sentence(pct))} "
                                                         f"(percentile {pct:.1f})")
    n_ord = len(pr.sides[AFTER].ordinary[pr.references[0]])
    auprc = ", ".join(f"{label(m)} {pr.auprc[r][m]:.3f} ({r} ref.)"
                      for r in pr.references for m in (BEFORE, AFTER))
    st.caption(f"Anomaly score: higher = more unusual (labeled reference: −log density of a "
               f"KDE; unlabeled: k-NN distance). Percentile: the share of this run's {n_ord:,} "
               f"ordinary (in-distribution) test images whose stored score is lower. "
               f"The run's AUPRC (average precision, OOD digit = positive): {auprc}."
               + (recomputed_note(pr) if pr.recomputed else ""))


def recomputed_note(pr) -> str:
    err = pr.recomputed_error
    how = ("they give the very scores the run stored" if err == 0 else
           f"the run's first test images scored on them lie within {err:.0e} (relative) of "
           "the scores it stored: the pretrained network's unlabeled-reference scores here "
           "may differ from the run's in their last digits (the PCA that made its features "
           "rounded as that machine's linear algebra did)")
    return (" The pretrained network's reference features were not kept with this run (it "
            "read that network's unlabeled scores from an earlier run or the shipped ones): "
            f"they were computed here, once, in memory, as the run would have; {how}.")


def neighbours_section(pr, result) -> None:
    if "unlabeled" not in pr.references:
        return
    st.subheader("Nearest training images")
    for m in (BEFORE, AFTER):
        side = result.sides[m]
        st.markdown(f"**{SIDE_TITLES[m]}**")
        imgs = [big(pr.train_images[i], 3) for i in side.neighbours]
        caps = [f"{int(pr.train_labels[i])} · d {d:.3f}"
                for i, d in zip(side.neighbours, side.distances)]
        st.image(imgs, caption=caps, width=64)
    st.caption(f"The {N_NEIGHBOURS} nearest of the run's unlabeled reference images in each "
               "network's embedding, by the very features its k-NN searches (L2-normalised, "
               "PCA). Captions: the image's true digit (never used by the scorer) and its "
               "distance.")


def map_figure(pr, method: str, projection: str, place: np.ndarray) -> go.Figure:
    xy = pr.proj[f"{method}_{projection}"]
    digits = pr.proj["label"].astype(int)
    m = len(digits)
    fig = go.Figure()
    for d in [d for d in range(10) if d != pr.ood_digit] + [pr.ood_digit]:
        idx = np.flatnonzero(digits == d)
        if not len(idx):
            continue
        ood = d == pr.ood_digit
        fig.add_trace(go.Scatter(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers",
            name=f"{d} (OOD)" if ood else str(d), hoverinfo="skip",
            marker=dict(size=6 if ood else 4, color=OOD_COLOR if ood else DIGIT_COLORS[d],
                        opacity=0.9 if ood else 0.45,
                        symbol="diamond" if ood else "circle")))
    if len(xy) > m:
        fig.add_trace(go.Scatter(x=xy[m:, 0], y=xy[m:, 1], mode="markers", name="labeled",
                                 hoverinfo="skip",
                                 marker=dict(size=4, color="#333333", opacity=0.7, symbol="x")))
    fig.add_trace(go.Scatter(x=[place[0]], y=[place[1]], mode="markers", name="your probe",
                             hovertemplate="your probe<extra></extra>",
                             marker=dict(size=22, color="#ffd400", symbol="star",
                                         line=dict(width=2, color=PROBE_COLOR))))
    styled(fig, 440, margin=(5, 5, 35, 5),
           title=dict(text=SIDE_TITLES[method], x=0.0, font=dict(size=15)),
           legend=legend_row(-0.02, yanchor="top", itemsizing="constant", font=dict(size=11)),
           uirevision=f"{pr.key}-{method}-{projection}")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, title=None)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title=None,
                     scaleanchor="x", scaleratio=1)
    return fig


def maps_section(pr, result) -> None:
    st.subheader("Where it lands on the run's maps")
    available = pr.projections
    if not available:
        st.info("This run has no maps (yet): they appear once its projections are computed.")
        return
    projection = st.segmented_control(
        "Map", available, default=available[0], required=True, key="probe-proj",
        format_func=lambda p: PROJ_LABELS[p] + (" (exact)" if p == "pca" else " (approximate)"))
    for col, m in zip(st.columns(2), (BEFORE, AFTER)):
        with col:
            show(map_figure(pr, m, projection, result.sides[m].places[projection]),
                 f"probe-map-{m}", config={"scrollZoom": False})
    if projection == "pca":
        errs = [pr.sides[m].pca_error for m in (BEFORE, AFTER)]
        worst = max(e for e in errs if e is not None)
        how = ("reproduces the stored map exactly" if worst == 0 else
               f"reproduces the stored map to {worst:.0e} of its extent"
               if worst <= PCA_TOLERANCE else
               f"differs from the stored map by up to {worst:.1%} of its extent (the networks "
               "rounded differently here), so the marker is approximate")
        st.caption("PCA: the run's PCA is refitted here on the maps' points, embedded again by "
                   f"the same networks and normalised as scored; the refit {how}. The probe "
                   "is placed by that PCA's own transform.")
    else:
        st.caption(f"{PROJ_LABELS[projection]} has no exact place for a new point (the run "
                   "kept no transform for it): the marker is an approximation, the mean map "
                   f"position of the probe's {MAP_K} nearest map points in the embedding "
                   "(normalised as scored).")


# ---------------------------------------------------------------- the page


@st.fragment
def probe_panel(key: str) -> None:
    """Input and answer in one fragment: a stroke reruns this part of the page only."""
    pr, why = prober_for(key)
    if pr is None:
        st.warning(f"This run cannot be probed: {why}.")
        return
    left, middle, right = st.columns([1.15, 0.9, 1.25], gap="medium")
    with left:
        x, source = read_input(pr)
    if x is None:
        return
    result = pr.probe(x)
    with middle:
        model_view(x, source)
    # The scores go out before the charts (they still show below the columns): the browser
    # draws them while plotly is busy with the posterior and the maps.
    scores_section(pr, result)
    with right:
        posterior_chart(pr, result)
    maps_section(pr, result)
    neighbours_section(pr, result)


def render() -> None:
    require_router()
    header()
    res = None if first_visit_panel("probe") else pick_run()
    if res is None:
        return
    key = res["run_key"]
    if verified_results(key) is None:
        bad_run_panel(res)
        return
    probe_panel(key)


render()

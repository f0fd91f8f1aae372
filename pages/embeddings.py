"""Embeddings page: 2-D maps (t-SNE / UMAP / PCA) of the test images before and after XDD
retraining, side by side, with the held-out digit highlighted and the labeled examples in
black (the paper's Fig. 2-3).  A box or lasso selection on either map highlights the same
images on the other map and in the retraining animation, and lists them; a button selects the
images whose anomaly-score rank moved most.  The animation plays the embedding's retraining
frames on the final map's PCA axes.

The projections are computed by the worker and stored in projections.npz; this page only
reads them.  Which methods have a map comes from the method table (``projected``); the
selection's state is in pages/_selection.py, the animation's figure in pages/_frames.py, the
numbers they show in xdd.report.views.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import streamlit as st

from pages import _links as links
from pages import _selection as selection
from pages._charts import show
from pages._common import DIGIT_COLORS, OOD_COLOR, require_router
from pages._data import cached_runs, run_arrays, run_images, run_mtime
from pages._frames import animation_figure
from pages._jobs import bad_run_panel, first_visit_panel
from pages._maps import Controls, RunMaps, shared_map
from xdd.core.fmt import PROJ_LABELS, config_group, describe_config, threads_note
from xdd.core.methods import AFTER, BEFORE, REFERENCE_SHORT, REFERENCES, short
from xdd.report.tables import run_metrics, run_scores
from xdd.report.views import rank_moves, selection_counts, top_moved
from xdd.storage import store


MAX_IMAGES = 120


PROJECTIONS = ("tsne", "umap", "pca")


MOVED_DEFAULT = 20  # how many images the "moved most" button selects, unless changed


def header() -> None:
    st.title("Embeddings")
    st.caption("Each dot is a test image, placed so that images the network embeds close "
               "together stay close on the map. Left: the embedding after GAN pretraining; "
               "right: after retraining with the XDD loss on the labeled examples (black). Drag "
               "a box or lasso over either map: the same images light up on the other map and "
               "are listed below.")


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


def pick_run(runs: list[dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    """The run picker: the run named in the address bar (``?run=<key>``, as the Method page
    links to it), else the newest; its config and thread count named.  The pick goes back to
    the address bar."""
    runs = sorted(runs, key=lambda r: (r.get("preset", ""), r.get("ood_digit", 0),
                                       r.get("shots", 0), r.get("seed", 0)))
    by_key = {r["run_key"]: r for r in runs}
    labels = {k: dict(r, preset=config_group(r)) for k, r in by_key.items()}
    newest = max(runs, key=lambda r: r.get("started") or 0)["run_key"]
    keys = list(by_key)
    wanted = links.initial("emb-run", "run", keys, problems)
    pick = st.selectbox("Run", keys, index=keys.index(wanted or newest), key="emb-run",
                        format_func=lambda k: f"{describe_config(labels[k])} · "
                                              f"{threads_note(by_key[k].get('device'))} · run {k}")
    links.write({"run": None if pick == newest and wanted is None else pick})
    return by_key[pick]


def controls(run: RunMaps, sides: list[tuple[str, str]], available: list[str],
             problems: list[str]) -> Controls:
    """Projection, colouring (both in the address bar), point size, labeled markers."""
    score_refs = [r for r in REFERENCES if any(run_scores(run.scores, r, e) is not None
                                               for e, _ in sides)]
    colourings = ["digit"] + [f"score:{r}" for r in score_refs]
    link_proj = links.initial("emb-proj", "projection", available, problems)
    link_col = links.initial("emb-color", "colour", colourings, problems)
    # One row that wraps when the page is narrow: nothing is cut off at any width.
    with st.container(horizontal=True, gap="small", vertical_alignment="bottom"):
        projection = st.segmented_control(
            "Projection", available, default=link_proj or available[0], required=True,
            format_func=lambda p: PROJ_LABELS[p], key="emb-proj")
        color_by = st.segmented_control(
            "Colour by", colourings, default=link_col or "digit",
            required=True, key="emb-color",
            format_func=lambda c: "digit" if c == "digit" else f"score, {c.split(':')[1]} ref.",
            help="Anomaly score under the labeled reference (the paper: KDE over the labeled "
                 "embeddings) or the unlabeled reference (k-NN distance to the unlabeled "
                 "in-distribution training images).")
        size = st.slider("Point size", 2, 12, 5, key="emb-size", width=150)
        show_lab = st.toggle("Labeled examples", value=True, key="emb-lab",
                             help="The labeled training images used for retraining and for "
                                  "the KDE, drawn as black markers.")
    links.write({"projection": None if projection == available[0] else projection,
                 "colour": None if color_by == "digit" else color_by})
    return Controls(projection, color_by, size, show_lab)


def auprc_line(run: RunMaps, emb: str) -> str:
    """The map's AUPRC under every reference the run has, for its heading."""
    by_metrics = run_metrics(run.res)
    return " · ".join(f"AUPRC {by_metrics[r][emb]['auprc']:.3f} ({REFERENCE_SHORT[r]})"
                      for r in REFERENCES if emb in by_metrics.get(r, {}))


def maps(run: RunMaps, ctrl: Controls, sides: list[tuple[str, str]]) -> None:
    """The maps side by side, the current selection highlighted on every one of them."""
    sel = selection.current(run.key)
    root, mtime = str(store.cache_root().resolve()), run_mtime(run.key)
    for col, (emb, title) in zip(st.columns(len(sides)), sides):
        fig, rows = shared_map(root, run.key, mtime, run, ctrl, emb,
                               tuple(sel.rows) if sel else None)
        key = f"map-{emb}-{run.key}-{ctrl.projection}-{ctrl.color_by}-{ctrl.show_labeled}"
        selection.remember_rows(key, rows)
        with col:
            st.markdown(f"**{title}**")
            st.caption(auprc_line(run, emb) or "no AUPRC recorded")
            show(fig, key, on_select=partial(selection.on_map_select, key, run.key, emb,
                                             run.n_test),
                 selection_mode=("box", "lasso"), config={"scrollZoom": False})
    st.caption(f"{run.n_test} test images (a fixed random subsample, the same on both maps) "
               f"and {len(run.lab_digit)} labeled examples. {PROJ_LABELS[ctrl.projection]} "
               "coordinates have no units. "
               + ("Colour: rank of the anomaly score within the map (yellow = most unusual). "
                  if ctrl.color_by != "digit" else "")
               + f"AUPRC = average precision with the held-out digit as positive, computed "
                 f"with {threads_note(run.res.get('device'))} (a run of the same settings at "
                 "another thread count may differ in the last digits).")


def _source_words(sel: selection.Selection) -> str:
    if sel.source == selection.MOVED:
        return (f"the {len(sel.rows)} whose anomaly-score rank moved most, "
                f"{REFERENCE_SHORT.get(sel.reference, sel.reference)}")
    return f"drawn on the {short(sel.source)} map"


def selection_bar(run: RunMaps) -> None:
    """What is selected (how many, the held-out digit's share, per digit) and Clear."""
    sel = selection.current(run.key)
    if sel is None:
        st.caption("Nothing selected. Drag a box or lasso over either map, or pick the images "
                   "that moved most below: the same images light up on both maps and in the "
                   "animation. A new selection replaces the last one.")
        return
    c = selection_counts(sel.rows, run.test_digit, run.ood_digit)
    counts = ", ".join(f"{d}: {n}" for d, n in c["per_digit"].items())
    with st.container(horizontal=True, vertical_alignment="center", gap="medium"):
        st.markdown(f"**{c['n']} selected** ({_source_words(sel)}), {c['n_ood']} of them the "
                    f"held-out digit {run.ood_digit} &nbsp;·&nbsp; per digit: {counts}",
                    width="content")
        st.button("Clear the selection", key="emb-clear", on_click=selection.clear,
                  icon=":material/deselect:")


def moved_most(run: RunMaps, ctrl: Controls) -> None:
    """Select the test images whose anomaly score's rank changed most with retraining."""
    ref = ctrl.reference
    before, after = run_scores(run.scores, ref, BEFORE), run_scores(run.scores, ref, AFTER)
    st.subheader("Which images moved most")
    if before is None or after is None:
        st.caption(f"This run has no {REFERENCE_SHORT[ref]} scores for both maps.")
        return
    moves = rank_moves(before, after)[run.positions()]
    n_max = int(np.isfinite(moves).sum())
    why = ("the reference the maps are coloured by" if ctrl.color_by != "digit" else
           "the paper's; colour the maps by the other reference's score to rank under it")
    st.caption(f"Every test image's anomaly score is ranked among all {len(before):,} test "
               f"images before and after retraining, under the {REFERENCE_SHORT[ref]} "
               f"({why}); an image moved by how many percentile points its rank changed, "
               "up (more unusual after) or down. The button selects the map's images that "
               "moved most either way.")
    with st.container(horizontal=True, vertical_alignment="bottom", gap="medium"):
        n = st.number_input("How many", 1, max(1, n_max), min(MOVED_DEFAULT, max(1, n_max)),
                            key="emb-moved-n", width=140)
        rows = top_moved(moves, int(n))
        picked = selection.Selection(run.key, tuple(int(r) for r in rows), selection.MOVED,
                                     {int(r): float(moves[r]) for r in rows}, ref)
        st.button(f"Select the {len(rows)} that moved most", key="emb-moved",
                  on_click=selection.replace, args=(picked,), icon=":material/swap_vert:")


def animation(run: RunMaps, ctrl: Controls) -> None:
    """The retraining's frames, played on the final map's PCA axes (or why there are none)."""
    emb = AFTER if run.frames(AFTER) is not None else next(
        (e for e, _ in run.sides() if run.frames(e) is not None), None)
    st.subheader("The embedding during retraining")
    if emb is None:
        st.info("This run was computed before runs kept the retraining's frames, so there is "
                "nothing to animate. Recompute it (the same settings, on the Run page) to see "
                "the embedding move.")
        return
    xy, steps = run.frames(emb)
    total = int(steps[-1])
    at = ", ".join(f"{int(s)}" for s in steps[:-1]) + f" and {total}"
    pct = ", ".join(f"{100 * s / max(1, total):g}" for s in steps[:-1]) + " and 100 %"
    st.caption(f"The {short(emb)} embedding of the same {run.n_test} test images and "
               f"{len(run.lab_digit)} labeled examples at retraining steps {at} ({pct} of its "
               f"{total} steps; step 0 is the pretrained network). Every frame is drawn on "
               "the PCA axes of the final embedding, so the last frame is the right-hand map "
               "above with Projection = PCA, point for point. The selection above is "
               "highlighted here too.")
    if not st.toggle("Show the animation", key="emb-anim",
                     help="Press ▶ play under it, or drag the step slider."):
        return
    sel = selection.current(run.key)
    fig = animation_figure(xy, steps, run.test_digit, run.proj["index"], run.ood_digit,
                           len(run.lab_digit), ctrl.show_labeled, ctrl.size, DIGIT_COLORS,
                           OOD_COLOR, sel.rows if sel else None)
    show(fig, f"anim-{emb}-{run.key}", config={"scrollZoom": False, "displayModeBar": False})


def selected_images(run: RunMaps) -> None:
    st.subheader("Selected images")
    sel = selection.current(run.key)
    if sel is None:
        st.caption("Drag a box or lasso over either map to show the images here.")
        return
    test_digit, ood_digit = run.test_digit, run.ood_digit
    if sel.source == selection.MOVED:  # largest move first, as ranked
        rows = list(sel.rows)
    else:  # held-out digit first (what the class wants to see), then by digit
        rows = sorted(sel.rows, key=lambda r: (test_digit[r] != ood_digit, test_digit[r]))
    shown = rows[:MAX_IMAGES]
    try:
        x_shown = run_images(run.res, run.proj["index"][shown])
    except Exception as exc:  # a moved data folder: say so instead of failing the page
        st.error(f"Could not load the MNIST images: {exc}")
        return
    imgs = [np.kron(255 - x, np.ones((3, 3), np.uint8)) for x in x_shown]
    caps = [f"{test_digit[r]}{' OOD' if test_digit[r] == ood_digit else ''}"
            + (f" {sel.moves[r]:+.0f}" if r in sel.moves else "") for r in shown]
    st.image(imgs, caption=caps, width=64)
    if sel.moves:
        st.caption("Under each image: its digit and how many percentile points its anomaly "
                   "score's rank moved (+: more unusual after retraining).")
    if len(rows) > MAX_IMAGES:
        st.caption(f"Showing the first {MAX_IMAGES} of {len(rows)}.")


def render() -> None:
    require_router()
    header()
    if first_visit_panel("embeddings"):
        return
    runs = runs_with_maps()
    if not runs:
        return
    problems: list[str] = []
    slot = st.empty()  # the link's message, above the controls it concerns
    res = pick_run(runs, problems)
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
    ctrl = controls(run, sides, available, problems)
    with slot:
        links.warn(problems)
    maps(run, ctrl, sides)
    selection_bar(run)
    moved_most(run, ctrl)
    animation(run, ctrl)
    selected_images(run)


render()

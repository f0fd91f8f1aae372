"""Results page: the paper's Fig. 1 for whatever is cached, a metrics table, PR curves,
AUPRC against the number of labeled shots, and a CSV download; then one run up close: its
anomaly scores before and after retraining with a threshold to try, and how its retraining
went (the loss's two sides, the classes' spread, the information plane).  Reads the cache only.

The numbers come from the report package (``xdd.report.tables`` aggregates as docs/RESULTS.md
does, ``xdd.report.views`` shapes what this page shows); what every visitor sees alike is built
once and shared (pages/_results_shared.py); the page picks and draws.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from pages import _links as links
from pages._charts import show
from pages._common import require_router
from pages._data import cache_signature, cached_runs, run_curves, run_mtime, verified_results
from pages._jobs import first_visit_panel
from pages._results_shared import SPLIT_NAMES, View, all_runs_csv, choices, compare_data, \
    compare_groups, compare_options, curve_figures, fig1, gan_grid_png, pr_fig, runs_frame, \
    score_facts, shots_fig, threshold_view
from xdd.core.fmt import threads_note
from xdd.core.methods import AFTER, REFERENCE_LABELS, REFERENCE_SHORT, display_key, label, \
    short
from xdd.report.tables import AUPRC_NOTE, SD_NOTE


D_WON = 0.05  # D's final pretraining loss below which it won the game outright


ESTIMATOR_NOTE = ("I(X;Z) and I(Z;Y) here are the estimators the loss computes on the labeled "
                  "batch, weighted as the loss weighs them, not the true mutual information.")


def header() -> None:
    st.title("Results")
    st.caption("Out-of-distribution detection on MNIST: one digit held out, scored by how "
               "unusual each test image is. " + AUPRC_NOTE + ". Chance level is the share of "
               "the held-out digit in the test set (about 0.10).")


def nothing_cached() -> None:
    st.info("No finished run is cached yet. Jobs that are still running appear here as soon "
            "as they finish.")
    st.page_link("pages/run.py", label="Go to the Run page", icon=":material/play_circle:")


def filters(signature: tuple, problems: list[str]) -> View | None:
    """Preset, shot count, reference and methods; None (and a note) when no method is picked.
    Each opens on what the address bar names (else on the run it names, else the defaults),
    and what is picked is written back, so a copied link opens the same view."""
    f1, f2, f4, f3 = st.columns([1, 1, 1.6, 3])
    opts = choices(signature)
    linked = links.initial("res-run", "run", opts["runs"], problems)
    wanted = linked_run(runs_frame(signature), linked)
    presets = opts["presets"]
    first_preset = wanted["preset"] if wanted else presets[0]
    link_preset = links.initial("res-preset", "preset", presets, problems)
    pick_preset = f1.selectbox("Preset", presets, key="res-preset",
                               index=presets.index(link_preset or first_preset),
                               help="Runs of different presets are never mixed in one chart; "
                                    "runs whose settings differ from their preset are listed "
                                    "apart.")
    mine = opts["per_preset"][pick_preset]
    shot_counts = mine["shot_counts"]
    default_k = (wanted["shots"] if wanted and wanted["preset"] == pick_preset
                 else mine["default_shots"])
    link_k = links.initial("res-shots", "shots", shot_counts, problems)
    pick_shots = f2.selectbox("Labeled shots per digit", shot_counts,
                              index=shot_counts.index(default_k if link_k is None else link_k),
                              key="res-shots")
    refs_here = mine["refs"]
    link_ref = links.initial("res-ref", "ref", refs_here, problems)
    pick_ref = f4.segmented_control(
        "Scoring reference", refs_here, default=link_ref or refs_here[0], required=True,
        key="res-ref", format_func=lambda r: REFERENCE_SHORT[r],
        help="labeled: the paper's protocol, a KDE over the labeled images' embeddings. "
             "unlabeled: k-NN distance to the in-distribution training images the GAN was "
             "pretrained on, without their labels.")
    present = opts["methods"][(pick_preset, pick_ref)]
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
    chosen = tuple(m for m in present if m in pick_methods)
    return View(signature, pick_preset, int(pick_shots), pick_ref, chosen, linked)


def linked_run(df_all: pd.DataFrame, key: str | None) -> dict[str, Any] | None:
    """The run the address bar names (``?run=<key>``, as the Method page links to it): its
    preset and shots, which the filters then open on; None when absent or not cached."""
    hit = df_all[df_all["run_key"] == key]
    if hit.empty:
        return None
    return {"run_key": hit["run_key"].iloc[0], "preset": hit["preset"].iloc[0],
            "shots": int(hit["shots"].iloc[0])}


def headline(view: View) -> None:
    """Before vs after over the digits both cover, and how many runs the view holds."""
    note = view.ref_note
    cols = st.columns(4)
    nums = view.frames["nums"]
    if nums is not None:
        cols[0].metric(f"Mean AUPRC before ({note})", f"{nums['mean_before']:.3f}")
        cols[1].metric(f"Mean AUPRC after XDD ({note})", f"{nums['mean_after']:.3f}",
                       delta=f"{nums['gain']:+.3f}")
        cols[2].metric("Digits where XDD helps", f"{nums['wins']} of {nums['digits']}")
    cols[3].metric("Runs in this view", f"{view.frames['runs']}",
                   help=f"{view.frames['digits']} digits × up to {view.frames['n_seeds']} seeds")


def digit_figure(view: View) -> None:
    """The paper's Fig. 1: AUPRC per held-out digit, one bar per method, chance marked."""
    st.subheader(f"AUPRC per held-out digit ({view.ref_note})")
    show(fig1(view.signature, view.key), "fig1")
    n_seeds = view.frames["n_seeds"]
    seeds_note = ("seeds" if n_seeds > 1 else
                  "seeds (only one seed so far: add repetitions on the Run page)")
    st.caption(f"Bars: mean over runs ({view.ref_note}); error bars: {SD_NOTE} — over "
               f"{seeds_note}. Each run has its own labeled draw and, in sweeps, its own GAN. "
               f"Preset {view.preset}, {view.shots} labeled shots per digit.")


def references_table(view: View) -> None:
    """Both references side by side: the means over digits of every metric."""
    st.subheader("Table: both references side by side")
    st.markdown(view.frames["side_md"])
    st.caption("Means over the held-out digits (each digit first averaged over its runs); ± is "
               "the mean per-digit s.d. " + AUPRC_NOTE + ". AUROC: area under the ROC curve. "
               "FPR@95%TPR: share of in-distribution images flagged when 95 % of the held-out "
               "digit is caught (lower is better). threads: the CPU threads the runs computed "
               "with (runs of one config at other thread counts may differ in the last digits). "
               "labeled ref.: " + REFERENCE_LABELS["labeled"] + "; unlabeled ref.: "
               + REFERENCE_LABELS["unlabeled"] + ".")


def per_digit(view: View) -> None:
    """Per held-out digit (an expander) and the two CSV downloads."""
    with st.expander("Per held-out digit"):
        st.markdown(view.frames["per_digit_md"])
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", view.preset)
    d1, d2, _ = st.columns([1, 1, 1.5])
    d1.download_button("Per-digit table (CSV)", view.frames["per_digit_csv"],
                       file_name=f"xdd-{safe_name}-{view.shots}shots.csv", mime="text/csv",
                       key="dl-table", icon=":material/download:")
    d2.download_button("Every run (CSV)", all_runs_csv(view.signature),
                       file_name="xdd-all-runs.csv", mime="text/csv", key="dl-all",
                       icon=":material/download:")


def pick_run(view: View) -> str:
    """The run whose curves and GAN are shown (digit, seeds and thread count named)."""
    runs = {r["run_key"]: r for r in view.frames["run_choices"]}
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
    fig = pr_fig(view.signature, view.key, key, run_mtime(key))
    if fig is None:
        st.warning("This run's score file is missing or failed its integrity check; it has been "
                   "removed from the cache. Submit the run again.")
        return
    show(fig, "fig-pr")


def gan_check(root: str, key: str) -> None:
    """What the run's GAN learned to draw, and how its pretraining ended."""
    with st.expander("What the GAN of this run learned to draw"):
        # The pretrained D is the embedding before retraining; a GAN whose D won outright (its
        # loss near 0) only learned to tell digits from noise, and its features are those of a
        # noise detector.
        png = gan_grid_png(root, key, run_mtime(key))
        res = verified_results(key) or {}
        if png is None:
            st.caption("This run has no generator samples (it was computed before they were "
                       "recorded, or uses no GAN).")
            return
        c1, c2 = st.columns([1, 1])
        c1.image(png, caption="64 images drawn by the pretrained generator G", width=320)
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
    fig = shots_fig(view.signature, view.key, pick_dig)
    if fig is None:
        st.caption("No digit is cached at every shot count yet; pick a single digit.")
        return
    show(fig, "fig-shots")
    st.caption("Mean over seeds (and digits) at each shot count; error bars: s.d. over seeds.")


def compare_section(view: View, problems: list[str]) -> None:
    """AUPRC against any swept setting, both references, and every variant paired with the
    preset: the same numbers as the results document's "Settings compared"."""
    st.subheader("Compare settings")
    options = compare_groups(view.signature)
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
    shot_counts = compare_options(view.signature, base, split)["shot_counts"]
    default_k = view.shots if view.shots in shot_counts else shot_counts[0]
    link_k = links.initial("res-cmp-shots", "compare_shots", shot_counts, problems)
    shots = c3.selectbox("Shots", shot_counts, key="res-cmp-shots",
                         index=shot_counts.index(default_k if link_k is None else link_k))
    per_field = compare_options(view.signature, base, split, shots)["fields"]
    fields = list(per_field)
    if not fields:
        st.caption(f"No run with {shots} shots changes a setting here.")
        return
    link_field = links.initial("res-cmp-field", "field", fields, problems)
    field = c2.selectbox("Setting on the x axis", fields, key="res-cmp-field",
                         index=fields.index(link_field) if link_field else 0)
    retrained = per_field[field]
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
    data = compare_data(view.signature, base, split, shots, field, method, view.reference)
    if data["figure"] is None:
        st.caption(f"Only one value of {field} is cached beside the preset's runs; sweep it "
                   "over more values to draw a curve.")
    else:
        show(data["figure"], "fig-compare")
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
        st.markdown(data["paired_md"])
        st.caption("Pairs: a variant's run and the preset's run of the same digit, GAN seed, "
                   "labeled draw and shots. diff: variant − preset over the pairs, ± its "
                   "standard error (s.d. of the differences / √pairs). Leads: GAN seeds on "
                   "which the mean difference over the digits is above zero.")
    if data["parallel"] is not None:
        st.markdown(f"**Every run across the settings that vary** ({view.ref_note})")
        show(data["parallel"], "fig-parallel")
        st.caption("One line per run; drag along an axis to keep only the runs in a range.")


def one_run_heading(view: View, key: str) -> None:
    res = verified_results(key) or {}
    st.header("One run up close", divider="gray")
    st.caption(f"The run picked above: digit {res.get('ood_digit', '?')} held out, seed "
               f"{res.get('seed', '?')}, {res.get('shots', '?')} labeled shots per digit, "
               f"preset {view.preset} (run {key}).")


def score_distributions(view: View, key: str) -> None:
    """Before vs after: the anomaly scores of the in-distribution and the held-out test
    images, and what a threshold that flags a share of them catches."""
    st.subheader(f"Anomaly scores before and after retraining ({view.ref_note})")
    mtime = run_mtime(key)
    facts = score_facts(view.signature[0], key, view.reference, mtime)
    if facts is None:
        st.warning("This run's score file is missing or failed its integrity check.")
        return
    if len(facts["pair"]) < 2:
        st.caption(f"This run has no before/after scores under the {view.ref_note}.")
        return
    base, n = facts["base"], facts["n"]
    share = st.slider("Flag the most unusual … of the test images", 1, 99,
                      int(np.clip(round(100 * base), 1, 99)), format="%d%%", key="res-flag",
                      help="A threshold on the anomaly score: every test image scoring at or "
                           "above it is flagged as OOD. Set here as the share of test images "
                           "it flags, so that it means the same for both networks.")
    shown = threshold_view(view.signature, view.key, key, mtime, share)
    show(shown["scores"], "fig-scores")
    st.caption("Bars: the share of each group's test images in each score bin (each colour "
               "sums to 100 % per panel), so the heights compare across the panels; each "
               "network's scores have their own axis, since the two embeddings' densities are "
               "not on one scale. The dashed line is the threshold: it flags the same share of "
               "test images in both panels.")
    st.markdown(f"**At this threshold** ({share} % of the {n:,} test images flagged)")
    st.markdown(shown["table"])
    c1, c2 = st.columns([1.2, 1])
    with c1:
        if shown["pr"] is not None:
            show(shown["pr"], "fig-threshold-pr")
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


def training_curves(root: str, key: str) -> None:
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
    figs = curve_figures(root, key, run_mtime(key), pick)
    cv = figs["cv"]
    lr = (f" The learning rate stayed at {cv['lr'][0]:.3g} throughout."
          if cv["constant_lr"] else "")
    st.caption(f"L = I(X;Z) − β·I(Z;Y), minimised over {len(cv['step'])} steps on the labeled "
               f"images. {ESTIMATOR_NOTE}{lr}")
    # Three panels of a fixed width that wrap onto more rows on a narrow page.
    with st.container(horizontal=True, gap="small"):
        with st.container(width=PANEL_WIDTH):
            st.markdown("**The loss and its two sides**")
            show(figs["loss"], f"fig-loss-{pick}")
            st.caption("Lower is better for both: the pairwise side falls as classes move "
                       "apart; the MCDD side falls as each image gets closer to its own class "
                       "centre." if cv["sides"] else
                       f"{label(pick)} has no I(X;Z) and I(Z;Y) sides: its loss is drawn "
                       "alone.")
        with st.container(width=PANEL_WIDTH):
            st.markdown("**Spread within and between the classes**")
            if "within" in cv and "between" in cv:
                show(figs["spread"], f"fig-spread-{pick}")
                st.caption("Of the labeled images' embeddings on the unit sphere: their mean "
                           "squared distance to their class centre, and the mean squared "
                           "distance between class centres.")
            else:
                st.caption("Not recorded for this network.")
        with st.container(width=PANEL_WIDTH):
            st.markdown("**The information plane**")
            if cv["sides"]:
                show(figs["plane"], f"fig-plane-{pick}")
                st.caption("One side against the other, one dot per step (colour). The loss is "
                           "their sum, so a step that lowers it moves the dot towards the lower "
                           "left (x + y falls).")
            else:
                st.caption(f"{label(pick)} has no two sides to plot against each other.")


def render() -> None:
    require_router()
    header()
    runs = cached_runs()
    if first_visit_panel("results"):
        return
    if not runs:
        nothing_cached()
        return
    signature = cache_signature()
    if runs_frame(signature).empty:
        st.info("The cached runs hold no metrics.")
        return
    problems: list[str] = []
    slot = st.empty()  # the link's message, above the filters it concerns
    view = filters(signature, problems)
    if view is None:
        with slot:
            links.warn(problems)
        return
    headline(view)
    digit_figure(view)
    references_table(view)
    per_digit(view)
    st.subheader(f"Precision–recall curves of one run ({view.ref_note})")
    key = pick_run(view)
    pr_figure(view, key)
    gan_check(signature[0], key)
    shots_section(view)
    compare_section(view, problems)
    with slot:
        links.warn(problems)
    # One run up close: below the shots curve, whose chart the page has always drawn third.
    one_run_heading(view, key)
    score_distributions(view, key)
    training_curves(signature[0], key)


render()

"""Watching the loss work: the pure functions behind the new views (xdd.report.views), and the
views themselves under AppTest on the cached tiny run: training curves and score
distributions with a threshold on the Results page, the linked selection, the "moved most"
ranking and the retraining animation on the Embeddings page, the Method page's links; and a
run made before curves and frames were kept, which gets one message per view.

The lasso itself (a real drag on a map) is driven in a browser: tests/test_browser_dynamics.py.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.test_app import _arr, figures, open_page, texts
from xdd.core.metrics import pr_curve
from xdd.core.methods import AFTER, BEFORE
from xdd.pipeline.curves import CURVES_FILE, load_curves
from xdd.report import views
from xdd.storage import store

# ---------------------------------------------------------------- the pure functions


def test_percentile_ranks_and_rank_moves_exact() -> None:
    assert views.percentile_ranks([3.0, 1.0, 2.0]).tolist() == [100.0, 0.0, 50.0]
    assert views.percentile_ranks([1.0, 1.0, 2.0]).tolist() == [0.0, 50.0, 100.0]  # stable
    assert views.percentile_ranks([7.0]).tolist() == [0.0]
    moves = views.rank_moves([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    assert moves == pytest.approx([100.0, 100 / 3, -100 / 3, -100.0])
    assert views.rank_moves([1.0, 2.0], [5.0, 9.0]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        views.rank_moves([1.0, 2.0], [1.0])


def test_positions_and_top_moved_exact() -> None:
    assert views.positions_of([5, 3, 9], [9, 5, 3]).tolist() == [2, 0, 1]
    with pytest.raises(ValueError):
        views.positions_of([5, 3, 9], [4])
    moves = np.array([5.0, -10.0, 10.0, np.nan, 1.0])
    # by size either way; equal sizes in position order; NaN never picked
    assert views.top_moved(moves, 3).tolist() == [1, 2, 0]
    assert views.top_moved(moves, 10).tolist() == [1, 2, 0, 4]
    assert views.top_moved(moves, 0).tolist() == []


def test_highlight_points_and_selection_counts_exact() -> None:
    rows = [np.array([0, 2, 4]), np.array([1, 3]), np.array([5]), np.array([6, 7])]
    assert views.highlight_points(rows, {2, 3, 5, 9}) == [[1], [1], [0], []]
    assert views.highlight_points(rows, []) == [[], [], [], []]
    digits = np.array([8, 1, 8, 3, 8, 1])
    c = views.selection_counts([0, 2, 2, 5], digits, ood_digit=8)
    assert c == {"n": 3, "n_ood": 2, "per_digit": {1: 1, 8: 2}}
    assert views.selection_counts([], digits, 8) == {"n": 0, "n_ood": 0, "per_digit": {}}


def _numpy_readout(s: np.ndarray, ood: np.ndarray, t: float) -> dict[str, float]:
    """The readout computed directly, for comparison."""
    flag = s >= t
    return {"flagged": int(np.count_nonzero(flag)),
            "recall": np.count_nonzero(flag & ood) / np.count_nonzero(ood),
            "fpr": np.count_nonzero(flag & ~ood) / np.count_nonzero(~ood),
            "precision": np.count_nonzero(flag & ood) / np.count_nonzero(flag)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_readout_equals_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ood = rng.random(500) < 0.1
    s = np.round(rng.normal(size=500) + 1.5 * ood, 1)  # rounded: ties at the threshold
    for share in (0.01, 0.05, 0.1, 0.37, 0.99):
        t = views.share_threshold(s, share)
        k = max(1, round(share * len(s)))
        assert t == np.sort(s)[::-1][k - 1]
        got = views.threshold_readout(s, ood, t)
        want = _numpy_readout(s, ood, t)
        assert got["flagged"] == want["flagged"] >= k
        for key in ("recall", "fpr", "precision"):
            assert got[key] == want[key], key
        assert got["caught"] + got["false_alarms"] == got["flagged"]
        # the operating point lies on the precision-recall curve (its threshold is a score)
        p, r, thr = pr_curve(ood, s)
        i = int(np.flatnonzero(thr == t)[0]) + 1  # pr_curve prepends (recall 0, precision 1)
        assert (r[i], p[i]) == (got["recall"], got["precision"])
    nothing = views.threshold_readout(s, ood, s.max() + 1)
    assert nothing["flagged"] == 0 and np.isnan(nothing["precision"])


def test_score_histogram_shares() -> None:
    s = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 4.0])
    ood = np.array([0, 0, 0, 1, 1, 0], bool)
    h = views.score_histogram(s, ood, bins=4)
    assert h["edges"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert h["in"].tolist() == [0.25, 0.25, 0.25, 0.25]  # 0 | 1 | 2 | 4 (last bin closed)
    assert h["ood"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert h["centres"].tolist() == [0.5, 1.5, 2.5, 3.5]


def test_curve_view_and_frame_ranges() -> None:
    ib = {"step": np.array([1.0, 2.0]), "loss": np.array([3.0, 1.0]),
          "ixz": np.array([-1.0, -2.0]), "izy": np.array([4.0, 3.0]),
          "lr": np.array([1e-4, 1e-4]), "within": np.array([0.3, 0.2]),
          "between": np.array([0.5, 0.6])}
    cv = views.curve_view(ib)
    assert cv["sides"] and cv["constant_lr"] and cv["ixz"].tolist() == [-1.0, -2.0]
    one = views.curve_view({"step": np.array([1.0]), "loss": np.array([2.0]),
                            "lr": np.array([0.1])})
    assert not one["sides"] and "ixz" not in one and "within" not in one
    frames = np.array([[[0.0, 0.0], [1.0, 2.0]], [[-1.0, 4.0], [3.0, 0.0]]])
    assert views.frame_ranges(frames, pad=0.0) == ((-1.0, 3.0), (0.0, 4.0))
    assert views.frame_ranges(frames, pad=0.25) == ((-2.0, 4.0), (-1.0, 5.0))


# ---------------------------------------------------------------- helpers


def by_meta(at, meta: str) -> dict:
    """The plotly figure whose layout.meta is ``meta`` (the new views name their charts)."""
    hits = [f for f in figures(at) if f["layout"].get("meta") == meta]
    assert len(hits) == 1, [f["layout"].get("meta") for f in figures(at)]
    return hits[0]


def make_old_run(key: str) -> None:
    """Turn a cached run into one made before curves and frames were kept: curves.npz gone,
    projections.npz without the frame keys, results.json's hashes re-recorded."""
    d = store.run_dir(key)
    proj = store.load_npz(key, "projections.npz")
    keep = {k: v for k, v in proj.items() if "_frame" not in k}
    assert len(keep) < len(proj)
    (d / CURVES_FILE).unlink()
    res = json.loads((d / "results.json").read_text())
    res["files"].pop(CURVES_FILE)
    store.atomic_write_json(d / "results.json", res)
    store.add_run_file(key, "projections.npz", keep, {})  # rewrites the hash and the digest
    assert store.load_results(key) is not None and load_curves(key) is None


def readout_rows(at) -> dict[str, list[str]]:
    table = next(m.value for m in at.markdown if m.value.startswith("| network |"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {r[0]: r for r in rows}


# ---------------------------------------------------------------- Results page


def test_results_training_curves_of_the_tiny_run(tiny_run) -> None:
    curves = load_curves(tiny_run.key)
    assert set(curves) == {"mcdd", "xdd"}
    at = open_page("results")
    pick = at.segmented_control(key="res-curve-method")
    assert pick.value == AFTER and list(pick.options) == ["XDD", "MCDD only"]
    body = texts(at)
    assert "not the true mutual information" in body
    assert "L = I(X;Z) − β·I(Z;Y), minimised over 10 steps" in body
    c = curves[AFTER]
    loss = {t["name"]: t for t in by_meta(at, "loss-sides")["data"]}
    assert list(loss) == ["I(X;Z) side: λ × pairwise", "−β·I(Z;Y) side: β × (MCDD + pull)",
                          "loss L (their sum)"]
    for name, field in zip(loss, ("ixz", "izy", "loss")):
        assert np.array_equal(_arr(loss[name]["x"]), c["step"])
        assert np.array_equal(_arr(loss[name]["y"]), c[field])
    assert np.allclose(c["ixz"] + c["izy"], c["loss"])  # the two sides add up to the loss
    spread = by_meta(at, "class-spread")["data"]
    assert np.array_equal(_arr(spread[0]["y"]), c["within"])
    assert np.array_equal(_arr(spread[1]["y"]), c["between"])
    plane = by_meta(at, "information-plane")["data"][0]
    assert np.array_equal(_arr(plane["x"]), c["ixz"]) and np.array_equal(_arr(plane["y"]), c["izy"])
    assert np.array_equal(_arr(plane["marker"]["color"]), c["step"])  # coloured by step
    # the other retrained network's own curves
    at.segmented_control(key="res-curve-method").set_value("mcdd").run()
    assert not at.exception
    loss = by_meta(at, "loss-sides")["data"]
    assert np.array_equal(_arr(loss[2]["y"]), curves["mcdd"]["loss"])


def test_results_threshold_readout_equals_numpy(tiny_run) -> None:
    arr = store.load_npz(tiny_run.key, "scores.npz")
    ood = arr["is_ood"].astype(bool)
    at = open_page("results")
    assert at.slider(key="res-flag").value == round(100 * ood.mean())
    for share, ref in ((at.slider(key="res-flag").value, "labeled"), (25, "labeled"),
                       (3, "unlabeled")):
        at.slider(key="res-flag").set_value(share)
        at.segmented_control(key="res-ref").set_value(ref).run()
        assert not at.exception
        rows = readout_rows(at)
        stars = {t["name"]: t for t in by_meta(at, "threshold-pr")["data"]
                 if t["name"].endswith("at the threshold")}
        hist = by_meta(at, "score-histograms")
        for m, short in ((BEFORE, "before"), (AFTER, "XDD")):
            s = arr[f"score_{ref}_{m}"]
            t = np.sort(s)[::-1][max(1, round(share / 100 * len(s))) - 1]
            want = _numpy_readout(s, ood, t)
            row = rows[short]
            assert row[1] == f"≥ {t:.4g}"
            assert int(row[2]) == want["flagged"]
            assert row[3] == f"{int(np.count_nonzero((s >= t) & ood))} of {int(ood.sum())}"
            assert float(row[4]) == pytest.approx(want["recall"], abs=5e-4)
            assert row[5] == f"{int(np.count_nonzero((s >= t) & ~ood))} of {int((~ood).sum())}"
            assert float(row[6]) == pytest.approx(want["fpr"], abs=5e-4)
            assert float(row[7]) == pytest.approx(want["precision"], abs=5e-4)
            star = stars[f"{short} at the threshold"]  # exact, not rounded
            assert _arr(star["x"])[0] == want["recall"]
            assert _arr(star["y"])[0] == want["precision"]
            # the histograms: each group's share per bin, as numpy counts them
            bars = [b for b in hist["data"] if b["xaxis"] == ("x" if m == BEFORE else "x2")]
            edges = np.histogram_bin_edges(s, bins=40)
            assert np.allclose(_arr(bars[0]["y"]), np.histogram(s[~ood], edges)[0] / (~ood).sum())
            assert np.allclose(_arr(bars[1]["y"]), np.histogram(s[ood], edges)[0] / ood.sum())
        assert f"({share} % of the {len(ood):,} test images flagged)" in texts(at)


def test_old_run_gets_one_message_per_view(tiny_run) -> None:
    make_old_run(tiny_run.key)
    at = open_page("results")
    infos = [i.value for i in at.info]
    assert infos == ["This run was computed before runs kept their training curves, so there "
                     "is nothing to draw here. Recompute it (the same settings, on the Run "
                     "page) to see how its retraining went."]
    assert not [f for f in figures(at) if f["layout"].get("meta") in
                ("loss-sides", "class-spread", "information-plane")]
    by_meta(at, "score-histograms")  # the scores are still there
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception
    infos = [i.value for i in at.info]
    assert len(infos) == 1 and infos[0].startswith(
        "This run was computed before runs kept the retraining's frames")
    assert not [t for t in at.toggle if t.key == "emb-anim"]
    assert len(figures(at)) == 2  # the maps


# ---------------------------------------------------------------- Embeddings page


def _highlighted(fig: dict, col: int = 4) -> set[int]:
    """The test indices a map draws at full opacity (selectedpoints), from its customdata."""
    out: set[int] = set()
    for t in fig["data"]:
        sp = t.get("selectedpoints")
        if sp is None:
            continue
        cd = t.get("customdata")
        cd = _arr(cd) if isinstance(cd, dict) else cd
        for i in sp:
            v = cd[i][col] if col is not None else cd[i]
            out.add(int(float(v)))
    return out


def test_moved_most_selects_and_highlights_on_every_view(tiny_run) -> None:
    proj = store.load_npz(tiny_run.key, "projections.npz")
    arr = store.load_npz(tiny_run.key, "scores.npz")
    at = open_page("embeddings")
    figs = figures(at)
    assert len(figs) == 2 and all("selectedpoints" not in t for f in figs for t in f["data"])
    assert "Nothing selected" in texts(at)
    # What the button must pick, straight from numpy: rank every test image's labeled-reference
    # score before and after, keep the map's images, take the 7 largest moves either way.
    def pct(s):
        return 100.0 * np.argsort(np.argsort(s, kind="stable"), kind="stable") / (len(s) - 1)
    move = pct(arr["score_labeled_xdd"]) - pct(arr["score_labeled_before"])
    pos = np.array([int(np.flatnonzero(arr["test_index"] == i)[0]) for i in proj["index"]])
    on_map = move[pos]
    want_rows = np.argsort(-np.abs(on_map), kind="stable")[:7]
    want = set(proj["index"][want_rows].tolist())
    at.number_input(key="emb-moved-n").set_value(7).run()
    at.button(key="emb-moved").click().run()
    assert not at.exception
    for fig in figures(at):  # both maps: exactly those test images at full opacity
        assert _highlighted(fig) == want
        assert all(t["unselected"]["marker"]["opacity"] < 0.2 for t in fig["data"])
    digits = proj["label"][want_rows]
    counts = ", ".join(f"{d}: {int((digits == d).sum())}" for d in sorted(set(digits)))
    bar = next(m.value for m in at.markdown if "selected**" in m.value)
    assert bar.startswith("**7 selected** (the 7 whose anomaly-score rank moved most, "
                          "labeled ref.)")
    assert f"{int((digits == 8).sum())} of them the held-out digit 8" in bar
    assert bar.endswith(f"per digit: {counts}")
    caps = [c for im in at.get("image") for c in im.captions]
    assert caps == [
        f"{proj['label'][r]}{' OOD' if proj['label'][r] == 8 else ''} {on_map[r]:+.0f}"
        for r in want_rows]
    # The reference the page shows: colouring by the unlabeled score ranks under it.
    at.segmented_control(key="emb-color").set_value("score:unlabeled").run()
    assert "under the unlabeled ref. (the reference the maps are coloured by)" in texts(at)
    # ... and the selection stays, through a projection change, in the animation too.
    at.segmented_control(key="emb-proj").set_value("pca").run()
    at.toggle(key="emb-anim").set_value(True).run()
    assert not at.exception
    anim = by_meta(at, "retraining-animation")
    assert _highlighted(anim, col=None) == want
    for fig in figures(at)[:2]:
        assert _highlighted(fig) == want
    assert "**7 selected**" in texts(at)
    at.button(key="emb-clear").click().run()
    assert "Nothing selected" in texts(at)
    assert all("selectedpoints" not in t for f in figures(at) for t in f["data"])


def test_animation_frames_of_the_tiny_run(tiny_run) -> None:
    proj = store.load_npz(tiny_run.key, "projections.npz")
    steps = proj[f"{AFTER}_frame_steps"]
    at = open_page("embeddings")
    body = texts(at)
    total = int(steps[-1])
    listed = ", ".join(str(int(s)) for s in steps[:-1]) + f" and {total}"
    assert f"at retraining steps {listed} (" in body
    assert "Every frame is drawn on the PCA axes of the final embedding" in body
    assert len(figures(at)) == 2  # the animation waits for its toggle
    at.toggle(key="emb-anim").set_value(True).run()
    assert not at.exception
    anim = by_meta(at, "retraining-animation")
    assert [f["name"] for f in anim["frames"]] == [str(int(s)) for s in steps]
    assert [s["label"] for s in anim["layout"]["sliders"][0]["steps"]] == \
        [str(int(s)) for s in steps]
    names = [t["name"] for t in anim["data"]]
    assert names[-2:] == ["8 (OOD)", "labeled"]
    n_lab = len(proj["labeled_label"])
    m = len(proj["index"])

    def points(traces) -> np.ndarray:
        return np.concatenate([np.c_[_arr(t["x"]), _arr(t["y"])] for t in traces])

    rows = np.concatenate([np.flatnonzero(proj["label"] == d) for d in
                           [d for d in range(10) if d != 8] + [8]] + [np.arange(m, m + n_lab)])
    frames = proj[f"{AFTER}_frames"]
    assert np.array_equal(points(anim["data"]), frames[0][rows])  # opens on step 0
    for f, frame in enumerate(anim["frames"]):
        assert np.array_equal(points(frame["data"]), frames[f][rows])
    assert np.array_equal(points(anim["frames"][-1]["data"]), proj[f"{AFTER}_pca"][rows])
    # the held-out digit as on the static maps: red diamonds
    ood = next(t for t in anim["data"] if t["name"] == "8 (OOD)")
    assert ood["marker"]["symbol"] == "diamond" and len(_arr(ood["x"])) == int(
        (proj["label"] == 8).sum())


def test_map_headings_carry_their_auprcs(tiny_run) -> None:
    res = tiny_run.results["references"]
    at = open_page("embeddings")
    heads = [m.value for m in at.markdown if m.value.startswith("**") and ":" in m.value]
    assert heads[:2] == ["**Before: pretrained GAN discriminator**", "**After: XDD retraining**"]
    caps = [c.value for c in at.caption if c.value.startswith("AUPRC ")]
    for cap, m in zip(caps, (BEFORE, AFTER)):
        assert cap == (f"AUPRC {res['labeled'][m]['auprc']:.3f} (labeled ref.) · "
                       f"AUPRC {res['unlabeled'][m]['auprc']:.3f} (unlabeled ref.)")


# ---------------------------------------------------------------- links to a run


def test_run_in_the_address_bar_is_the_one_shown(tiny_run) -> None:
    from tests.test_app import clone_run

    other = "e" * 16
    clone_run(tiny_run.key, other, seed=1)
    for page, key in (("embeddings", "emb-run"), ("results", "res-run")):
        for wanted in (tiny_run.key, other):
            at = open_page(page, run=wanted)
            assert at.selectbox(key=key).value == wanted, (page, wanted)


def test_method_page_links_to_the_demo_run(tiny_run) -> None:
    from pages._jobs import demo_config
    from xdd.core.config import run_key

    demo = run_key(demo_config())
    at = open_page("method")
    body = texts(at)
    for view in ("The loss and its two sides", "The information plane",
                 "The embedding during retraining", "Before and after, linked",
                 "Score distributions and a threshold"):
        assert f"**{view}**" in body, view
    assert f"run `{demo}`); it is not computed here yet" in body
    assert len(at.get("plotly_chart")) == 1  # text only: the references sketch is the chart
    # With the demo's run cached (the tiny run's files under its key), the links name it.
    from tests.test_app import clone_run

    clone_run(tiny_run.key, demo)
    at = open_page("method")
    links = {p.proto.label: p.proto for p in at.get("page_link")}
    for label, page in (("Its Results page", "results"), ("Its Embeddings page", "embeddings")):
        assert re.search(rf"{page}", links[label].page)
        assert links[label].query_string == f"run={demo}"
    assert f"run `{demo}`) is cached" in texts(at)

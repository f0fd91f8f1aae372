"""The Probe page and xdd.probe: MNIST-like preprocessing against hand-computed images, a test
image probed gets exactly the score its run stored, percentiles against numpy, the class
posterior against its formula, map placement, and every bad input's one message (AppTest)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xdd.core.methods import AFTER, BEFORE
from xdd.probe.image import MAX_BYTES, ProbeInputError, centre_of_mass, decode, grey, ink, \
    to_mnist
from xdd.storage import store

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
TIMEOUT = 120


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- preprocessing


def test_a_dark_bar_on_paper_is_inverted_scaled_into_the_box_and_centred() -> None:
    # A black 40 x 80 bar on white: inverted to full ink; the longer side 80 -> 20 px, so the
    # bar becomes 10 x 20 (box filter of a uniform area: 255 exactly); its centre of mass
    # (4.5, 9.5) goes to (13.5, 13.5): top = floor(13.5 - 4.5 + 0.5) = 9, left = 4.
    a = np.full((100, 100), 255, np.uint8)
    a[30:70, 10:90] = 0
    m = to_mnist(a)
    want = np.zeros((28, 28), np.uint8)
    want[9:19, 4:24] = 255
    assert m.dtype == np.uint8 and m.shape == (28, 28)
    assert np.array_equal(m, want)
    assert centre_of_mass(m) == (13.5, 13.5)


def test_grey_levels_are_ink_above_the_background_stretched_to_255() -> None:
    # Background 20 (the border's median); a 20 x 10 block, left half 100, right half 60: ink
    # 80 and 40, stretched by 255 / 80 to 255 and 127.5 (-> 128). No scaling (the longer side
    # is 20 already). Centre of mass: row 9.5; column (255 * 10 + 127.5 * 35) / (5 * 382.5)
    # = 3.667, so top = floor(13.5 - 9.5 + 0.5) = 4 and left = floor(13.5 - 3.667 + 0.5) = 10.
    a = np.full((60, 60), 20, np.uint8)
    a[10:30, 20:25] = 100
    a[10:30, 25:30] = 60
    m = to_mnist(a)
    want = np.zeros((28, 28), np.uint8)
    want[4:24, 10:15] = 255
    want[4:24, 15:20] = 128
    assert np.array_equal(m, want)
    assert ink(a).max() == 255.0 and ink(a)[0, 0] == 0.0


def test_a_small_digit_is_enlarged_and_polarity_does_not_matter() -> None:
    # a 5 x 5 white square on black is enlarged (bilinear) to 20 x 20, uniform, rows/cols 4..23
    a = np.zeros((30, 30), np.uint8)
    a[3:8, 20:25] = 255
    want = np.zeros((28, 28), np.uint8)
    want[4:24, 4:24] = 255
    assert np.array_equal(to_mnist(a), want)
    assert np.array_equal(to_mnist(255 - a), want)  # black on white: the same input


def test_an_asymmetric_shape_is_centred_by_its_mass_not_its_box() -> None:
    a = np.zeros((240, 160), np.uint8)  # an L: a long stem and a heavy foot, 20 px margins
    a[20:220, 20:40] = 255
    a[180:220, 20:140] = 255
    m = to_mnist(a)
    rows, cols = np.nonzero(m)
    assert rows.max() - rows.min() + 1 == 20  # the longer side fills the box
    assert cols.max() - cols.min() + 1 == 12  # 120 * 20 / 200, aspect kept
    # The L's 200 x 120 box holds 4,000 px of stem and 4,000 more of foot: its mass sits at
    # (139.5, 39.5), which the 10:1 box filter maps to (13.5, 3.5) in the 20 x 12 box; so
    # top = floor(13.5 - 13.5 + 0.5) = 0 and left = floor(13.5 - 3.5 + 0.5) = 10: the box
    # itself is far from centred, its mass exactly centred.
    assert (rows.min(), cols.min()) == (0, 10)
    assert centre_of_mass(m) == pytest.approx((13.5, 13.5), abs=1e-9)


def test_transparent_and_rgb_images_read_as_ink_on_paper() -> None:
    rgba = np.zeros((50, 50, 4), np.uint8)  # transparent canvas, one black opaque stroke
    rgba[10:40, 22:28] = (0, 0, 0, 255)
    rgb = np.full((50, 50, 3), 255, np.uint8)
    rgb[10:40, 22:28] = 0
    assert np.array_equal(grey(rgba), grey(rgb))
    assert np.array_equal(to_mnist(rgba), to_mnist(rgb))
    assert to_mnist(rgb).max() == 255


@pytest.mark.parametrize("level", [0, 255, 128])
def test_a_single_tone_image_is_blank(level: int) -> None:
    with pytest.raises(ProbeInputError, match="blank"):
        to_mnist(np.full((40, 40), level, np.uint8))


def test_decode_refuses_what_is_not_a_readable_small_png_or_jpeg() -> None:
    with pytest.raises(ProbeInputError, match="not an image"):
        decode(b"hello, not a picture")
    with pytest.raises(ProbeInputError, match="limit is 20 MB"):
        decode(b"\x89PNG" + bytes(MAX_BYTES))
    with pytest.raises(ProbeInputError, match="10,000 px"):
        decode(_png(np.zeros((1, 10_001), np.uint8)))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="GIF")
    with pytest.raises(ProbeInputError, match="PNG or JPEG"):
        decode(buf.getvalue())
    with pytest.raises(ProbeInputError, match="damaged"):
        decode(_png(np.zeros((64, 64), np.uint8))[:60])
    a = np.zeros((30, 40), np.uint8)
    a[5:9, 7:30] = 200
    out = decode(_png(a))
    assert out.shape == (30, 40, 4) and np.array_equal(out[..., 0], a)
    jpg = io.BytesIO()
    Image.fromarray(a).save(jpg, format="JPEG")
    assert decode(jpg.getvalue()).shape == (30, 40, 4)
    big = np.zeros((3000, 2000), np.uint8)  # a large photo is read at most 1,024 px wide
    big[600:2400, 900:1100] = 255
    got = decode(_png(big))
    assert got.shape == (1024, 683, 4)
    # the same input either way, but for the edges' rounding (two box filters for one)
    diff = np.abs(to_mnist(got).astype(int) - to_mnist(big).astype(int))
    assert diff.max() <= 8 and np.array_equal(to_mnist(got) > 0, to_mnist(big) > 0)


def test_examples_are_made_by_code() -> None:
    from xdd.probe.examples import examples, noise, scribble

    imgs = np.stack([np.full((28, 28), d * 20, np.uint8) for d in range(10)])
    labels = np.array([3, 8, 1, 8, 0])
    exs = examples(imgs, np.array([5, 6, 7, 8, 9]), labels, ood_digit=8)
    names = [e.name for e in exs]
    assert names == ["0", "1", "3", "8 (held out)", "scribble", "noise", "inverted"]
    held = exs[3]
    assert held.test_row == 1 and np.array_equal(held.image, imgs[6])
    assert np.array_equal(exs[-1].image, 255 - imgs[5])  # the first in-distribution one
    s = scribble()
    assert s.shape == (28, 28) and s.dtype == np.uint8 and s.max() == 255
    assert abs(centre_of_mass(s)[0] - 13.5) <= 0.5
    assert np.array_equal(noise(), noise()) and noise().std() > 50


# ---------------------------------------------------------------- scoring a tiny run


@pytest.fixture
def prober(tiny_run):
    from xdd.probe.loading import load

    return load(tiny_run.key)


def test_a_test_image_gets_exactly_the_score_the_run_stored(prober) -> None:
    sc = prober.scores
    assert prober.references == ("labeled", "unlabeled")
    assert not prober.recomputed  # the pretrained D's features came from beside its GAN
    rows = list(range(0, len(sc["test_index"]), 11)) + list(np.flatnonzero(sc["is_ood"])[:5])
    for row in rows:
        x = prober.eval_images[sc["test_index"][row]]  # the raw 28 x 28, no preprocessing
        res = prober.probe(x)
        for m in (BEFORE, AFTER):
            for ref in ("labeled", "unlabeled"):
                assert res.sides[m].scores[ref] == sc[f"score_{ref}_{m}"][row], (row, m, ref)


def test_percentile_is_the_share_of_ordinary_test_scores_below(prober) -> None:
    from xdd.probe.prober import sentence

    sc = prober.scores
    ordinary = sc["is_ood"] == 0
    for row in (0, int(np.flatnonzero(sc["is_ood"])[0])):
        res = prober.probe(prober.eval_images[sc["test_index"][row]])
        for m in (BEFORE, AFTER):
            for ref in ("labeled", "unlabeled"):
                s = res.sides[m].scores[ref]
                want = 100.0 * np.mean(sc[f"score_{ref}_{m}"][ordinary] < s)
                assert res.sides[m].percentiles[ref] == pytest.approx(want, abs=1e-12)
    assert sentence(97.9) == "more unusual than 97 % of ordinary test digits"
    assert sentence(100.0) == "more unusual than every ordinary test digit"


def test_the_posterior_is_the_mcdd_softmax_of_the_trained_centres(prober) -> None:
    sc = prober.scores
    obj = {k: v.double().numpy() for k, v in prober.objective.items()}
    lab = prober.train_images[sc["labeled_index"]]
    hits = 0
    for x, y in zip(lab, sc["labeled_label"]):
        res = prober.probe(x)
        z = prober.embed(prober.sides[AFTER], x).double().numpy()[0]
        z = z / np.linalg.norm(z)  # the tiny preset's pair mode ("ratio") is on the sphere
        d = len(z)
        logits = (-((z - obj["centers"]) ** 2).sum(1) / (2 * np.exp(2 * obj["log_sigma"]))
                  - d * obj["log_sigma"] + obj["bias"])
        want = np.exp(logits - logits.max())
        want /= want.sum()
        assert res.posterior.shape == (9,) and res.posterior.sum() == pytest.approx(1.0)
        assert np.allclose(res.posterior, want, atol=1e-5)
        hits += res.digits[int(np.argmax(res.posterior))] == y
    assert res.digits == (0, 1, 2, 3, 4, 5, 6, 7, 9)
    # the retraining fitted its own labeled images: the posterior names nearly all of them
    assert hits >= 0.9 * len(lab), hits


def test_a_run_that_reused_the_pretrained_scores_is_probed_all_the_same(tiny_run) -> None:
    """A run that read the pretrained D's unlabeled scores (xdd.pipeline.reuse) never kept its
    reference features: the probe computes them in memory, to the same bits, writing nothing."""
    from xdd.pipeline.reference import cached_path
    from xdd.probe.loading import load

    cached_path(tiny_run.cfg).unlink()
    before = _snapshot(tiny_run.cache)
    pr = load(tiny_run.key)
    assert pr.recomputed and pr.recomputed_error == 0.0  # the run's first 64 test images
    sc = pr.scores
    for row in (0, 17, int(np.flatnonzero(sc["is_ood"])[0])):
        res = pr.probe(pr.eval_images[sc["test_index"][row]])
        assert res.sides[BEFORE].scores["unlabeled"] == sc["score_unlabeled_before"][row]
    assert _snapshot(tiny_run.cache) == before


def test_neighbours_are_the_knn_scorers_own(prober) -> None:
    sc = prober.scores
    x = prober.eval_images[sc["test_index"][3]]
    res = prober.probe(x)
    for m in (BEFORE, AFTER):
        side = res.sides[m]
        assert len(side.neighbours) == 8 and np.all(np.diff(side.distances) >= 0)
        assert set(side.neighbours) <= set(prober.ref_index.tolist())
        # tiny preset: 1-NN distance, so the score is the nearest neighbour's distance
        assert side.distances[0] == pytest.approx(side.scores["unlabeled"], rel=1e-6)


def test_map_placement_of_a_test_image_lands_on_its_stored_position(prober) -> None:
    proj = prober.proj
    assert prober.projections == ("pca", "tsne")
    for m in (BEFORE, AFTER):
        # the refit reproduces the stored PCA map (same rows, same float32 embedding, same
        # seeded PCA): equal to the bit here
        assert prober.sides[m].pca_error is not None and prober.sides[m].pca_error <= 1e-6
    for m in (BEFORE, AFTER):
        pca, tsne = proj[f"{m}_pca"], proj[f"{m}_tsne"]
        extent = float(np.ptp(pca, axis=0).max())
        ratios = []
        for i, idx in enumerate(proj["index"]):
            places = prober.probe(prober.eval_images[idx]).sides[m].places
            # PCA: the stored map is the PCA's fit_transform (U S), the probe's its transform
            # ((z - mean) V^T): the same float32 numbers in another order of operations, a
            # few float32 roundings of the largest coordinate apart (seen: <= 1e-6 of the
            # extent). 1e-5 of the extent leaves room and still fails any real misplacement.
            assert np.allclose(places["pca"], pca[i], rtol=0, atol=1e-5 * extent), (m, i)
            # t-SNE: the mean of its 5 nearest map points (itself one of them), measured
            # against how far the other map points lie from its stored position
            d = np.linalg.norm(places["tsne"] - tsne[i])
            ratios.append(d / np.median(np.linalg.norm(tsne - tsne[i], axis=1)))
        ratios = np.array(ratios)
        assert np.median(ratios) < 0.2 and np.mean(ratios < 0.25) >= 0.8, np.median(ratios)


def test_an_old_run_says_why_it_cannot_be_probed(tiny_run) -> None:
    from xdd.probe.loading import load
    from xdd.probe.prober import ProbeUnavailable, why_not

    _make_old(tiny_run.key)
    res = store.load_results(tiny_run.key)
    assert res is not None  # still a valid run: only the probe's files are missing
    assert "computed before runs kept what a probe needs" in why_not(res)
    with pytest.raises(ProbeUnavailable, match="reference_after.npz"):
        load(tiny_run.key)


def _make_old(key: str) -> None:
    """Make a run look as a run computed before runs kept what a probe needs."""
    d = store.run_dir(key)
    res = json.loads((d / "results.json").read_text())
    del res["files"]["reference_after.npz"]
    (d / "reference_after.npz").unlink()
    res["results_sha256"] = store.results_digest(res)
    store.atomic_write_json(d / "results.json", res)


# ---------------------------------------------------------------- the page (AppTest)


def _snapshot(cache: Path) -> dict[str, tuple[int, int]]:
    """Every file of the runs and the GANs with its size and modification time."""
    out = {}
    for sub in ("runs", "pretrain"):
        for p in (cache / sub).rglob("*"):
            if p.is_file():
                st = p.stat()
                out[str(p.relative_to(cache))] = (st.st_size, st.st_mtime_ns)
    return out


def _open_probe():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/probe.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _messages(at) -> list[str]:
    return [str(e.value) for kind in ("error", "warning", "info") for e in getattr(at, kind)]


def test_page_with_an_empty_cache_offers_the_quick_demo() -> None:
    at = _open_probe()
    assert "Nothing has been computed yet" in "\n".join(str(m.value) for m in at.markdown)
    assert [b.label for b in at.button if b.label.startswith("▶ Quick demo")] == [
        "▶ Quick demo: hold out digit 8"]
    assert not at.metric and not at.get("plotly_chart")


def test_page_scores_an_example_as_the_run_stored_it(tiny_run) -> None:
    at = _open_probe()
    assert at.title[0].value == "Probe"
    assert _messages(at) == ["The canvas is empty: draw a digit on it."]
    at.segmented_control(key="probe-input").set_value("Examples").run()
    assert not at.exception and not _messages(at)
    assert at.pills(key="probe-example").value == "8 (held out)"
    sc = store.load_npz(tiny_run.key, "scores.npz")
    row = int(np.flatnonzero(sc["label"] == 8)[0])
    shown = [m.value for m in at.metric]
    want = [f"{sc[f'score_{r}_{m}'][row]:,.4g}" for r in ("labeled", "unlabeled")
            for m in (BEFORE, AFTER)]
    assert shown == want
    body = "\n".join(str(m.value) for m in at.markdown)
    assert "After XDD it thinks it is a" in body
    figs = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    maps = [f for f in figs if any(t.get("name") == "your probe" for t in f["data"])]
    assert len(maps) == 2
    stars = [next(t for t in f["data"] if t.get("name") == "your probe") for f in maps]
    assert all(len(s["x"]) == 1 for s in stars)
    assert (stars[0]["x"], stars[0]["y"]) != (stars[1]["x"], stars[1]["y"])  # two embeddings
    at.pills(key="probe-example").set_value("noise").run()
    assert not at.exception and not _messages(at)
    assert "uniform random grey levels" in at.image[0].captions[0].lower()  # the model sees
    assert [m.value for m in at.metric] != shown


def test_each_bad_input_gives_one_message_and_writes_nothing(tiny_run) -> None:
    before = _snapshot(tiny_run.cache)
    at = _open_probe()
    at.segmented_control(key="probe-input").set_value("Upload").run()
    assert _messages(at) == ["Upload a picture of one digit: dark on light or light on dark."]
    bad = {
        "black.png": (_png(np.zeros((64, 64), np.uint8)), "the image is blank"),
        "white.png": (_png(np.full((64, 64), 255, np.uint8)), "the image is blank"),
        "notes.png": (b"these are my notes, not a picture", "not an image that can be read"),
        "huge.png": (b"\x89PNG" + bytes(MAX_BYTES + 1), "the limit is 20 MB"),
        "wide.png": (_png(np.zeros((2, 10_001), np.uint8)), "the limit is 10,000 px"),
    }
    for name, (data, why) in bad.items():
        at.file_uploader(key="probe-upload").set_value((name, data, "image/png")).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        msgs = _messages(at)
        assert len(msgs) == 1 and msgs[0].startswith("Cannot probe this file:") and why in msgs[0], \
            (name, msgs)
        assert not at.metric, name  # nothing scored
    good = np.zeros((64, 64), np.uint8)
    good[10:50, 28:36] = 255  # a "1"
    at.file_uploader(key="probe-upload").set_value(("one.png", _png(good), "image/png")).run()
    assert not at.exception and not _messages(at) and len(at.metric) == 4
    assert _snapshot(tiny_run.cache) == before


def test_a_run_that_fails_verification_gives_one_message(tiny_run) -> None:
    p = store.run_dir(tiny_run.key) / "reference_after.npz"
    data = bytearray(p.read_bytes())
    data[-100] ^= 0xFF
    p.write_bytes(bytes(data))
    before = _snapshot(tiny_run.cache)
    at = _open_probe()
    msgs = _messages(at)
    assert len(msgs) == 1 and "failed their integrity check" in msgs[0], msgs
    assert not at.metric
    assert _snapshot(tiny_run.cache) == before


def test_an_old_run_is_listed_with_its_reason(tiny_run) -> None:
    _make_old(tiny_run.key)
    at = _open_probe()
    msgs = _messages(at)
    assert len(msgs) == 1 and msgs[0].startswith("No cached run can be probed yet"), msgs
    listed = "\n".join(str(m.value) for m in at.markdown)
    assert tiny_run.key in listed and "computed before runs kept what a probe needs" in listed


def test_other_pages_do_not_load_the_probe(tiny_run) -> None:
    """The navigation names the Probe page; opening the app does not import xdd.probe's
    scoring nor torch (the page loads them when it is opened)."""
    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({APP!r}, default_timeout={TIMEOUT})
at.run()
assert not at.exception, at.exception
print("LOADED", [m for m in ("torch", "xdd.probe.prober", "streamlit_drawable_canvas") if m in sys.modules])
at.switch_page("pages/probe.py").run()
assert not at.exception, at.exception
print("PROBE", [m for m in ("torch", "xdd.probe.prober", "streamlit_drawable_canvas") if m in sys.modules])
"""
    env = dict(os.environ, XDD_CACHE=str(tiny_run.cache), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout, out.stdout
    assert "PROBE ['torch', 'xdd.probe.prober', 'streamlit_drawable_canvas']" in out.stdout, \
        out.stdout
    nav = (REPO / "pages" / "_common.py").read_text()
    assert 'st.Page("pages/probe.py", title="Probe"' in nav

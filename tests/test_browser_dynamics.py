"""The Embeddings page's new views in a real headless Chromium (Debian's, as
tests/test_browser.py launches it), on the finished tiny run: a lasso on the "before" map
highlights exactly the images it enclosed on the "after" map and in the retraining animation,
and ▶ play takes the animation to its last frame, which is the static "after" PCA map.

Screenshots go to ``test-artifacts/`` (git-ignored).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, _no_exception, _stop, \
    _wait_http, serve_app
from xdd.core.methods import AFTER, BEFORE
from xdd.storage import store

pytestmark = pytest.mark.slow

# One chart's traces, found by its layout.meta: coordinates, customdata, selectedpoints, and
# each point's position on the page (the plot's pixel transform, for the lasso's geometry).
CHART_JS = """(meta) => {
    const el = Array.from(document.querySelectorAll('.js-plotly-plot'))
        .find(e => e.layout && e.layout.meta === meta);
    if (!el || !el._fullLayout) return null;
    const arr = v => v == null ? [] : Array.from(v._inputArray || v);
    const fl = el._fullLayout, xa = fl.xaxis, ya = fl.yaxis;
    const box = el.getBoundingClientRect();
    const sl = fl.sliders && fl.sliders.length ? fl.sliders[0] : null;
    return {
        active: sl ? sl.active : null,
        n_frames: el._transitionData ? el._transitionData._frames.length : 0,
        animating: !!(el._transitionData && el._transitionData._animationRaf),
        traces: el.data.map(t => {
            const x = arr(t.x).map(Number), y = arr(t.y).map(Number);
            return {
                name: String(t.name), x: x, y: y,
                cd: arr(t.customdata).map(r => Array.isArray(r) ? String(r[4]) : String(r)),
                sp: t.selectedpoints == null ? null : Array.from(t.selectedpoints),
                px: x.map(v => box.left + xa._offset + xa.l2p(v)),
                py: y.map(v => box.top + ya._offset + ya.l2p(v)),
            };
        }),
    };
}"""


def chart(page, meta: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = page.evaluate(CHART_JS, meta)
        if got and got["traces"]:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"no chart with meta {meta!r} on the page")
        time.sleep(0.3)


def highlighted(ch: dict) -> set[int]:
    """The test indices a chart draws at full opacity."""
    return {int(float(t["cd"][i])) for t in ch["traces"] if t["sp"] is not None
            for i in t["sp"]}


def points(ch: dict) -> np.ndarray:
    return np.concatenate([np.c_[t["x"], t["y"]] for t in ch["traces"]])


@pytest.fixture
def app_on_tiny_run(tiny_run, data_cache: Path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
                    "(`make sysdeps` or `apt-get install chromium`)")
    log = tiny_run.cache.parent / "streamlit.log"
    env = dict(os.environ, XDD_CACHE=str(tiny_run.cache), XDD_DATA_CACHE=str(data_cache),
               OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc, url = serve_app(env, log)
    try:
        _wait_http(f"{url}/_stcore/health", proc, log)
        yield url, tiny_run
    finally:
        _stop({proc.pid}, group=True)


def test_lasso_links_the_maps_and_the_animation_plays_to_the_after_map(app_on_tiny_run):
    from playwright.sync_api import sync_playwright

    url, tiny_run = app_on_tiny_run
    proj = store.load_npz(tiny_run.key, "projections.npz")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.set_default_timeout(60_000)
        try:
            _explore(page, url, proj)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "dynamics-failure.png"))
            raise
        finally:
            browser.close()


def _explore(page, url: str, proj: dict[str, np.ndarray]) -> None:
    page.goto(f"{url}/embeddings")
    before = chart(page, f"map:{BEFORE}")
    chart(page, f"map:{AFTER}")
    _no_exception(page)
    assert highlighted(before) == set()

    # ---- a lasso around the upper-left quarter of the "before" map
    drag = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
    x0, y0 = drag["x"] + 2, drag["y"] + 2
    x1, y1 = drag["x"] + drag["width"] * 0.55, drag["y"] + drag["height"] * 0.55
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    page.get_by_text("selected (drawn on the before map)").wait_for(timeout=30_000)
    # What the lasso enclosed, from the before map's own geometry (labeled examples are not
    # test images); points within 2 px of the edge are left out of the comparison.
    inside, edge = set(), set()
    for t in before["traces"]:
        if t["name"] == "labeled":
            continue
        for px, py, cd in zip(t["px"], t["py"], t["cd"]):
            dx, dy = min(px - x0, x1 - px), min(py - y0, y1 - py)
            if min(dx, dy) > 2:
                inside.add(int(float(cd)))
            elif min(dx, dy) > -2:
                edge.add(int(float(cd)))
    assert len(inside) >= 5, "the lasso should enclose some test images"
    deadline = time.monotonic() + 30
    while True:  # the rerun redraws both maps with the selection
        after = chart(page, f"map:{AFTER}")
        if highlighted(after):
            break
        assert time.monotonic() < deadline, "the after map never showed the selection"
        time.sleep(0.3)
    lit = highlighted(after)
    assert inside <= lit <= inside | edge, (sorted(inside), sorted(lit), sorted(edge))
    assert highlighted(chart(page, f"map:{BEFORE}")) == lit  # the same images on both maps
    page.get_by_text(f"{len(lit)} selected").wait_for()
    digits = proj["label"][np.isin(proj["index"], sorted(lit))]
    counts = ", ".join(f"{d}: {int((digits == d).sum())}" for d in sorted(set(digits.tolist())))
    page.get_by_text(f"per digit: {counts}").wait_for()
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "dynamics-01-lasso.png"))

    # ---- the animation: the selection is lit there too; ▶ play runs to the last frame
    page.get_by_text("Show the animation").click()
    anim = chart(page, "retraining-animation")
    assert highlighted(anim) == lit
    steps = proj[f"{AFTER}_frame_steps"]
    assert anim["active"] == 0 and anim["n_frames"] == len(steps)
    assert np.allclose(np.sort(points(anim), axis=0),
                       np.sort(proj[f"{AFTER}_frames"][0], axis=0), atol=1e-6)
    page.get_by_text("▶ play").click()
    deadline = time.monotonic() + 60
    while True:
        anim = chart(page, "retraining-animation")
        if anim["active"] == len(steps) - 1 and not anim["animating"]:
            break
        assert time.monotonic() < deadline, f"the animation stopped at {anim['active']}"
        time.sleep(0.3)
    time.sleep(1.0)  # the last glide
    anim = chart(page, "retraining-animation")
    last = points(anim)
    page.get_by_text(f"retraining step {int(steps[-1])} of {int(steps[-1])}").wait_for()
    page.screenshot(path=str(ARTIFACTS / "dynamics-02-animation.png"))

    # ---- the static "after" PCA map holds exactly the last frame's points
    page.locator("button", has_text="PCA").first.click()
    deadline = time.monotonic() + 30
    while True:
        static = points(chart(page, f"map:{AFTER}"))
        if np.allclose(np.sort(static, axis=0), np.sort(proj[f"{AFTER}_pca"], axis=0),
                       atol=1e-6):
            break
        assert time.monotonic() < deadline, "the after map never switched to PCA"
        time.sleep(0.3)
    key = lambda a: a[np.lexsort((a[:, 1], a[:, 0]))]  # noqa: E731  (as point sets)
    assert np.array_equal(key(last), key(static))
    assert highlighted(chart(page, "retraining-animation")) == lit
    _no_exception(page)

"""The Probe page in a real headless Chromium: ``streamlit run app.py`` over a cache holding the
tiny run, a stroke drawn on the canvas with the mouse, then the scores, the model's input and a
marker on both maps.

Needs Debian's Chromium at /usr/bin/chromium (``make test`` installs it); without it the test
fails saying so, it is never skipped.  Screenshots go to ``test-artifacts/`` (git-ignored).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.slow

# Every plotly chart's traces: name, and the marker's coordinates (plotly.js keeps a decoded
# typed array in `_inputArray` where python sent a packed one).
PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el =>
    (el.data || []).map(t => {
        const arr = v => v == null ? [] : Array.from(v._inputArray || v).map(Number);
        return {name: t.name === undefined ? null : String(t.name), x: arr(t.x), y: arr(t.y)};
    }))"""
METRICS_JS = ("() => Array.from(document.querySelectorAll('[data-testid=stMetricValue]'))"
              ".map(e => e.innerText)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def probe_app(tmp_path_factory: pytest.TempPathFactory, data_cache: Path,
              _tiny_run_master) -> Iterator[tuple[str, str]]:
    """The app served over a copy of the tiny run's cache; (url, run key)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
                    "(`make sysdeps` or `apt-get install chromium`)")
    cfg, results, key, master = _tiny_run_master
    cache = tmp_path_factory.mktemp("browser-probe") / "cache"
    shutil.copytree(master, cache)
    log = cache.parent / "streamlit.log"
    port = _free_port()
    env = dict(os.environ, XDD_CACHE=str(cache), XDD_DATA_CACHE=str(data_cache),
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield url, key
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_draw_a_stroke_and_see_scores_and_a_marker_on_both_maps(probe_app) -> None:
    from playwright.sync_api import sync_playwright

    url, key = probe_app
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.set_default_timeout(90_000)
        try:
            page.goto(f"{url}/probe")
            page.get_by_role("heading", name="Probe").wait_for()
            page.get_by_text("The canvas is empty: draw a digit on it.").wait_for()
            assert page.locator("[data-testid=stException]").count() == 0
            assert page.evaluate(METRICS_JS) == []
            canvas = page.locator("canvas").last  # fabric.js draws on the upper canvas
            box = canvas.bounding_box()
            assert box and round(box["width"]) == 280 and round(box["height"]) == 280
            # a "7": a bar, then a long diagonal
            stroke = [(70, 60), (210, 60), (150, 150), (120, 230)]
            page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
            page.mouse.up()
            page.get_by_text("of ordinary test digits").first.wait_for()
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3"
                                   " && !document.querySelector('[data-stale=true]')")
            assert page.locator("[data-testid=stException]").count() == 0
            assert page.get_by_text("The canvas is empty").count() == 0
            # four scores (two references x before, after), each a number
            values = page.evaluate(METRICS_JS)
            assert len(values) == 4, values
            assert all(math.isfinite(float(v.replace(",", "").replace("−", "-")))
                       for v in values), values
            # the model's input is drawn, the posterior names a digit
            page.get_by_text("Your drawing, as an MNIST input").wait_for()
            page.get_by_text("After XDD it thinks it is a").wait_for()
            # a marker on both maps, one point each, at different places (two embeddings)
            plots = page.evaluate(PLOTS_JS)
            maps = [p for p in plots if any(t["name"] == "your probe" for t in p)]
            assert len(maps) == 2, [[t["name"] for t in p] for p in plots]
            stars = [next(t for t in m if t["name"] == "your probe") for m in maps]
            assert all(len(s["x"]) == 1 and len(s["y"]) == 1 for s in stars), stars
            assert (stars[0]["x"], stars[0]["y"]) != (stars[1]["x"], stars[1]["y"])
            assert all(math.isfinite(v) for s in stars for v in s["x"] + s["y"]), stars
            for m in maps:  # beside the run's own map points (150 test images + 90 labeled)
                assert sum(len(t["x"]) for t in m if t["name"] != "your probe") == 240
            page.screenshot(path=str(ARTIFACTS / "probe-drawn.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "probe-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

"""End to end in a real headless Chromium: start ``streamlit run app.py`` on a free port with a
temporary cache, submit a tiny run from the Run page, watch it finish, then check that the
Results, Embeddings and Method pages draw their charts with the expected data.

Screenshots go to ``test-artifacts/`` (git-ignored; CI keeps them as artefacts).  The test
needs Debian's Chromium at /usr/bin/chromium (``make test`` installs it); without it the test
fails with a message saying so, it is never skipped.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
TINY = dict(n_test_points=150)  # preset("tiny").projection.n_samples

pytestmark = pytest.mark.slow

# Plotly figure data of every chart on the page.  Plotly (python) sends numeric arrays base64
# packed ({dtype, bdata}); plotly.js keeps the decoded typed array in `_inputArray`.
PLOTS_JS = """() => {
    const arr = v => v == null ? [] : Array.from(v._inputArray || v);
    return Array.from(document.querySelectorAll('.js-plotly-plot')).map(el =>
        (el.data || []).map(t => ({
            name: t.name === undefined ? null : String(t.name), type: t.type || 'scatter',
            x: arr(t.x).map(v => (typeof v === 'number' ? v : String(v))),
            y: arr(t.y).map(Number),
        })));
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"streamlit did not answer on {url} within {timeout} s:\n"
                         f"{log.read_text()}")


def _worker_pids(cache: Path) -> set[int]:
    """Pids of the worker processes that the app started for this cache (this host only)."""
    from xdd.jobs import workerproc

    pids: set[int] = set()
    spawned = cache / "jobs" / "spawned.json"
    if spawned.is_file():
        try:
            pids.add(int(json.loads(spawned.read_text())["pid"]))
        except (ValueError, KeyError, TypeError):
            pass
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDD_CACHE", str(cache))
        try:
            for w in workerproc.workers(alive_only=False):
                if w.get("host") == workerproc.HOST and isinstance(w.get("pid"), int):
                    pids.add(w["pid"])
        except Exception:
            pass
    # Only processes that really are `python -m xdd worker` (a pid may have been reused).
    ours = set()
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"xdd" in cmd and b"worker" in cmd:
            ours.add(pid)
    return ours


def _stop(pids: set[int], group: bool = False) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = set()
        for pid in pids:
            try:
                os.killpg(pid, sig) if group else os.kill(pid, sig)
                live.add(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while live and time.monotonic() < deadline:
            for pid in list(live):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not our child: poll its existence instead
                    done = 0 if Path(f"/proc/{pid}").exists() else pid
                if done:
                    live.discard(pid)
            time.sleep(0.2)
        if not live:
            return
        pids = live


def serve_app(env: dict[str, str], log: Path, address: str = "127.0.0.1"
              ) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free port in its own session, output to ``log``; returns
    the process and its local URL (the tests and the benchmarks start the app this way)."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", address,
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, data_cache: Path
            ) -> Iterator[tuple[str, Path]]:
    """``streamlit run app.py`` on a free port with an empty temporary cache."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
                    "(`make sysdeps` or `apt-get install chromium`)")
    cache = tmp_path_factory.mktemp("browser") / "cache"
    cache.mkdir()
    log = cache.parent / "streamlit.log"
    env = dict(os.environ, XDD_CACHE=str(cache), XDD_DATA_CACHE=str(data_cache),
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc, url = serve_app(env, log)
    try:
        _wait_http(f"{url}/_stcore/health", proc, log)
        yield url, cache
    finally:
        _stop({proc.pid}, group=True)
        _stop(_worker_pids(cache))


@pytest.fixture(scope="module")
def browser_page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _plots(page, n: int, timeout: float = 60) -> list[list[dict[str, Any]]]:
    """Wait until at least n plotly charts have data, then return their traces."""
    deadline = time.monotonic() + timeout
    while True:
        plots = page.evaluate(PLOTS_JS)
        if len([p for p in plots if p]) >= n:
            return plots
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {n} plotly charts, found {len(plots)}")
        time.sleep(0.5)


def _plot_where(page, wanted, timeout: float = 60) -> list[dict[str, Any]]:
    """The first plotly chart on the page whose traces satisfy ``wanted``, once drawn."""
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in page.evaluate(PLOTS_JS) if wanted(p)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError("no plotly chart on the page holds what was looked for")
        time.sleep(0.5)


def _no_exception(page) -> None:
    assert page.locator("[data-testid=stException]").count() == 0, page.inner_text("body")


def _results_of(cache: Path) -> dict[str, Any]:
    from xdd.storage import store

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDD_CACHE", str(cache))
        runs = store.list_runs()
        assert len(runs) == 1, runs
        res = store.load_results(runs[0]["run_key"])
        proj = store.load_npz(runs[0]["run_key"], "projections.npz")
    assert res is not None and proj is not None
    return {"res": res, "proj": proj}


def test_submit_tiny_run_and_explore(app_url, browser_page) -> None:
    try:
        _explore(app_url, browser_page)
    except BaseException:
        browser_page.screenshot(path=str(ARTIFACTS / "failure.png"))
        raise


def _mark(t0: float, what: str) -> None:
    print(f"{time.monotonic() - t0:6.1f} s  {what}", flush=True)


def _explore(app_url, page) -> None:
    url, cache = app_url
    t0 = time.monotonic()

    # ---- the server's very first page request is a sub-path (a bookmark after a restart):
    # the app's own navigation and sidebar appear, not Streamlit's listing of pages/
    page.goto(f"{url}/results")
    nav = page.locator("[data-testid=stSidebarNav]")
    nav.wait_for()
    page.get_by_role("heading", name="Results").wait_for()
    page.get_by_text("Worker").first.wait_for()
    # each link reads "<icon name>\n\n<title>"; the title is the last line
    assert [t.split()[-1] for t in nav.locator("a").all_inner_texts()] == [
        "Run", "Results", "Embeddings", "Probe", "Method"], nav.inner_text()

    _mark(t0, "sub-path first request")
    # ---- first visit: empty cache, the app says what to do
    page.goto(url)
    page.get_by_text("Nothing has been computed yet").wait_for()
    page.get_by_role("button", name="Quick demo: hold out digit 8").wait_for()
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "01-run-first-visit.png"))

    _mark(t0, "first visit")
    # ---- submit a tiny run (digit 8 is preselected)
    page.locator("button", has_text="tiny (test)").click()
    submit = page.get_by_role("button", name="Submit 1 job")
    page.wait_for_function("() => document.body.innerText.includes('tiny')")
    submit.click()
    page.wait_for_url("**job=*", timeout=90_000)
    job_id = page.url.split("job=")[1].split("&")[0]
    assert len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id), page.url
    page.locator("[data-testid=stProgress]").first.wait_for(timeout=90_000)
    page.screenshot(path=str(ARTIFACTS / "02-run-progress.png"))
    _mark(t0, "submitted")
    page.get_by_text("AUPRC before").wait_for(timeout=180_000)
    _mark(t0, "finished")
    page.get_by_text("0 running · 0 queued").wait_for()  # the full rerun after the last poll
    assert page.get_by_text("Nothing has been computed yet").count() == 0
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "03-run-finished.png"))

    # ---- a reload (or a second tab) finds the job again through the URL
    second = page.context.browser.new_page(viewport={"width": 1400, "height": 1200})
    second.goto(page.url)
    second.get_by_text("AUPRC before").wait_for()
    second.get_by_text(job_id).first.wait_for()  # the card names the job from the URL
    second.close()

    data = _results_of(cache)
    res, proj = data["res"], data["proj"]
    assert res["ood_digit"] == 8 and res["preset"] == "tiny"

    _mark(t0, "second tab")
    # ---- Results: Fig. 1 bars hold exactly the cached AUPRC values
    page.goto(f"{url}/results")
    # the page draws more charts below (the run up close): find Fig. 1 and the PR curves by
    # what they hold, whatever order they are drawn in
    fig1 = _plot_where(page, lambda f: any(t["type"] == "bar" and t["name"] ==
                                           "After XDD retraining" for t in f))
    _no_exception(page)
    bars = {t["name"]: t for t in fig1 if t["type"] == "bar"}
    assert set(bars) == {"Before (pretrained GAN discriminator)", "After XDD retraining",
                         "Raw pixels (no network)", "MCDD term only"}, list(bars)
    for name, method in (("Before (pretrained GAN discriminator)", "before"),
                         ("After XDD retraining", "xdd")):
        assert bars[name]["x"] == [8]
        assert bars[name]["y"][0] == pytest.approx(res["methods"][method]["auprc"], abs=1e-9)
    pr = _plot_where(page, lambda f: f and all(t["type"] == "scatter" and "(AUPRC " in
                                               str(t["name"]) for t in f))
    assert len(pr) == len(res["methods"])  # one PR curve per scored method
    assert all(0.0 <= v <= 1.0 for t in pr for v in t["y"])
    page.get_by_text("average precision").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "04-results.png"), full_page=True)

    _mark(t0, "results")
    # ---- Embeddings: two maps, every projected test point and labeled example drawn
    page.goto(f"{url}/embeddings")
    plots = _plots(page, 2)
    _no_exception(page)
    m = len(proj["index"])
    n_lab = len(proj["labeled_label"])
    n_ood = int((proj["label"] == 8).sum())
    assert m == TINY["n_test_points"]
    for fig in plots[:2]:
        by_name = {t["name"]: t for t in fig}
        assert sum(len(t["x"]) for t in fig) == m + n_lab
        assert len(by_name["labeled"]["x"]) == n_lab == res["n_labeled"]
        assert len(by_name["8 (OOD)"]["x"]) == n_ood > 0
        assert all(t["type"] == "scattergl" for t in fig)
    # The "after" map shows the XDD projection: its coordinates are the cached ones.
    after_xy = np.concatenate([np.c_[t["x"], t["y"]] for t in plots[1]])
    assert np.allclose(np.sort(after_xy[:, 0]), np.sort(proj["xdd_tsne"][:, 0]), atol=1e-4)
    page.screenshot(path=str(ARTIFACTS / "05-embeddings.png"), full_page=True)

    _mark(t0, "embeddings")
    # A lasso drawn around the whole "before" map (its default drag mode) selects every test
    # point; the page then lists the selected test images below the maps.
    chart = page.locator(".js-plotly-plot").first
    box = chart.locator(".nsewdrag").first.bounding_box()
    x0, y0 = box["x"] + 2, box["y"] + 2
    x1, y1 = box["x"] + box["width"] - 2, box["y"] + box["height"] - 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    page.get_by_text(f"{m} selected").wait_for(timeout=30_000)
    images = page.locator("[data-testid=stImageContainer]")  # one per image of the grid
    images.nth(min(m, 120) - 1).wait_for(state="attached")
    assert images.count() == min(m, 120)  # at most 120 images are drawn
    page.wait_for_function(  # and every one of them was served and decoded
        "() => Array.from(document.querySelectorAll('[data-testid=stImageContainer] img'))"
        ".every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "06-embeddings-selection.png"), full_page=True)

    _mark(t0, "selection")
    # ---- Method: the formulas, and the live toy
    page.goto(f"{url}/method")
    page.locator(".katex").first.wait_for()
    assert page.locator(".katex-display").count() >= 8
    page.get_by_role("tab", name="Try it: MCDD only vs XDD").click()
    page.get_by_role("button", name="Train both").click()
    plots = _plots(page, 3, timeout=120)  # the references sketch (first tab), then the toy
    assert [t["name"] for t in plots[0]][:2] == ["unlabeled reference", "labeled reference"]
    toy = plots[1]
    # two sphere wireframes + 9 classes x 2 spheres, 10 points per class
    assert len(toy) == 2 + 18
    assert [t["type"] for t in toy] == ["scatter3d"] * 20
    assert sorted(len(t["x"]) for t in toy[2:]) == [10] * 18
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "07-method.png"), full_page=True)
    _mark(t0, "method")

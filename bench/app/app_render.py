"""Benchmark 6: seconds from navigation to charts rendered, in headless Chromium.

Starts ``streamlit run app.py`` on a free port over a seeded cache, opens each page once
untimed (the app's ``st.cache_data`` and the browser's cache get warm and the number of charts
the page draws is counted), then navigates to it ``--reps`` more times and takes the median
time from ``page.goto`` to every ``.js-plotly-plot`` of the page having been laid out by
plotly.js.  ``--seed-5000`` first adds a run whose projections hold 5,000 test points, so the
Embeddings page (which opens the newest run) draws 5,000 points per map.

    python bench/app/app_render.py --cache CACHE --seed-5000 8 --json out.json
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._browser import CHROMIUM, LAUNCH_ARGS, serve_app, stop, wait_http  # noqa: E402
from bench._common import REPO, log, median, worker_threads, write_json  # noqa: E402

PAGES = {"Results": "results", "Embeddings": "embeddings"}

# Every chart laid out by plotly.js (it sets _fullLayout once the first draw is done) and at
# least `n` of them; also returns the number of points the page's traces carry.
RENDERED_JS = """(n) => {
    const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
    if (plots.length < n) return false;
    if (!plots.every(p => p._fullLayout && p.querySelector('.main-svg'))) return false;
    return true;
}"""
STATS_JS = """() => {
    const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
    const len = v => v == null ? 0 : (v._inputArray || v).length || 0;
    return plots.map(p => ({traces: (p.data || []).length,
                            points: (p.data || []).reduce((s, t) => s + len(t.x), 0),
                            types: Array.from(new Set((p.data || []).map(t => t.type || 'scatter')))}));
}"""
WEBGL_JS = "() => !!document.createElement('canvas').getContext('webgl')"


def seed_5000(digit: int, threads: int, preset_name: str = "quick", n: int = 5000) -> dict:
    """A quick-preset run of `digit` (pretraining reused when cached) with 5,000 projected test
    points (PCA: the page's drawing cost depends on the points, not on the projection)."""
    import torch

    torch.set_num_threads(threads)
    from xdd.core.config import preset
    from xdd.pipeline.experiment import run_experiment

    cfg = preset(preset_name, ood_digit=digit, methods=("before", "xdd"),
                 **{"projection.n_samples": n, "projection.methods": ("pca",),
                    "data.n_test": None})
    t = time.perf_counter()
    res = run_experiment(cfg, device="cpu")
    return {"run_key": res["run_key"], "seconds": time.perf_counter() - t,
            "pretrain_reused": res["pretrain_reused"]}


def settle(page, timeout_s: float = 60.0, quiet_s: float = 2.0) -> int:
    """Wait until the number of rendered charts has not changed for quiet_s; returns it."""
    t0 = time.perf_counter()
    last, since = -1, time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        n = page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length")
        ok = n > 0 and page.evaluate(RENDERED_JS, n)
        if n != last or not ok:
            last, since = n, time.perf_counter()
        elif time.perf_counter() - since >= quiet_s:
            return n
        time.sleep(0.1)
    raise RuntimeError(f"charts did not settle within {timeout_s} s (last count {last})")


def measure(url: str, reps: int, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.set_default_timeout(timeout_s * 1000)
            for title, path in PAGES.items():
                page.goto(f"{url}/{path}")
                n = settle(page, timeout_s)
                stats = page.evaluate(STATS_JS)
                times = []
                for _ in range(reps):
                    page.goto("about:blank")
                    t = time.perf_counter()
                    page.goto(f"{url}/{path}", wait_until="commit")
                    page.wait_for_function(RENDERED_JS, arg=n, polling="raf")
                    times.append(time.perf_counter() - t)
                out[title] = {"charts": n, "chart_stats": stats, "seconds": times,
                              "median_s": median(times)}
                log(f"  {title}: {n} charts, median {median(times):.2f} s {['%.2f' % s for s in times]}")
            out["webgl"] = page.evaluate(WEBGL_JS)
            out["chromium"] = browser.version
        finally:
            browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="XDD_CACHE with finished runs")
    ap.add_argument("--seed-5000", type=int, default=None, metavar="DIGIT",
                    help="first add a quick run of DIGIT with 5,000 projected points")
    ap.add_argument("--seed-preset", default="quick", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    result: dict = {"reps": args.reps}
    os.environ["XDD_CACHE"] = args.cache
    if not (REPO / "app.py").is_file():
        result.update(status="not measured", reason="app.py does not exist yet")
        write_json(args.json, result)
        return
    if not Path(CHROMIUM).is_file():
        result.update(status="not measured", reason=f"{CHROMIUM} is missing")
        write_json(args.json, result)
        return
    if args.seed_5000 is not None:
        log(f"app: seeding a run with 5,000 projected points (digit {args.seed_5000})")
        result["seeded"] = seed_5000(args.seed_5000, worker_threads(), args.seed_preset)
    logfile = Path(tempfile.mkdtemp(prefix="xdd-bench-app-")) / "streamlit.log"
    proc, url = serve_app(dict(os.environ, XDD_CACHE=args.cache), logfile)
    try:
        result["startup_s"] = wait_http(f"{url}/_stcore/health", proc, timeout=120)
        log(f"app: streamlit up in {result['startup_s']:.1f} s at {url}")
        result.update(measure(url, args.reps, args.timeout))
        result["status"] = "measured"
    except Exception as exc:  # the app is unfinished or broken: say so, do not fail the suite
        result.update(status="not measured", reason=f"{type(exc).__name__}: {exc}",
                      log_tail=logfile.read_text()[-2000:] if logfile.is_file() else "")
        log(f"app: not measured: {result['reason']}")
    finally:
        stop({proc.pid}, group=True)
    if result.get("status") == "measured":  # keep the server log only when it explains a failure
        shutil.rmtree(logfile.parent, ignore_errors=True)
    else:
        result["server_log"] = str(logfile)
    write_json(args.json, result)


if __name__ == "__main__":
    main()

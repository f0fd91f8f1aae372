"""The Probe page's latency and what a run keeps for probing.

For one finished run (a quick-preset run of ``--digit`` with the demo's methods, computed into
``--cache`` first when it is not there; its GAN comes from the shipped bundle):

- **kept**: the MB a run keeps for probing (its checkpoint.pt and reference_after.npz) and the
  pretrained D's reference features kept beside its GAN (shared by every run of that GAN);
- **cold**: a fresh process, as the page's first visitor after a server start: import torch,
  rebuild the run (``xdd.probe.loading.load``: networks, fitted scorers, the maps' embeddings),
  then the first probe; again as for a run that reused the pretrained D's unlabeled scores
  (its reference features, not on disk, computed by the probe);
- **warm**: one probe as the page computes it after a stroke, server side: the canvas's RGBA
  image made into an input (``to_mnist``) and scored (``Prober.probe``), ``--reps`` times;
- **browser** (``--browser``): ``streamlit run app.py`` in headless Chromium, the run's page
  opened, strokes drawn on the canvas: seconds from the mouse-up to new scores on the page
  (the stroke's PNG sent, the fragment rerun, the scores drawn) and to the page settled.

``--busy`` runs each measurement a second time beside a process that keeps one core busy with
torch convolutions at one thread, as the job worker does on a 2-core machine (it uses the
usable cores less one).

    python bench/app/probe.py --cache /tmp/xdd-probe --busy --browser --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._common import REPO, log, machine, median, worker_threads, write_json  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
# Strokes drawn in the browser, in canvas pixels (the canvas is 280 x 280): a 7, then lines
# across it, each changing the drawing and so the scores.
STROKES = [[(70, 60), (210, 60), (150, 150), (120, 230)], [(140, 40), (140, 240)],
           [(60, 150), (220, 150)], [(80, 80), (200, 200)], [(200, 80), (80, 200)],
           [(100, 40), (100, 240)]]
BUSY_CODE = """
import torch
torch.set_num_threads(1)
x = torch.randn(64, 32, 28, 28)
conv = torch.nn.Conv2d(32, 64, 3, padding=1)
while True:
    conv(x).sum().backward()
"""


def ensure_run(digit: int) -> tuple[str, float | None]:
    """The quick demo run of ``digit`` in XDD_CACHE (computed now when absent, at the worker's
    thread count); returns (run key, seconds it took or None when cached)."""
    import torch

    from xdd.core.config import preset, run_key
    from xdd.core.methods import BY_NAME, is_main, names
    from xdd.pipeline.experiment import cached_results, run_experiment

    methods = tuple(m for m in names() if is_main(m) or BY_NAME[m].network is None)
    cfg = preset("quick", ood_digit=digit, methods=methods)
    if cached_results(cfg) is not None:
        return run_key(cfg), None
    torch.set_num_threads(worker_threads())
    log(f"probe: computing the quick run of digit {digit} (a few minutes)")
    t = time.perf_counter()
    run_experiment(cfg, device="cpu")
    return run_key(cfg), time.perf_counter() - t


def drawn_seven() -> "object":
    """A 7 as the canvas sends it: RGBA, black 20 px strokes on white, 280 x 280."""
    import numpy as np
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
    ImageDraw.Draw(im).line(STROKES[0], fill=(0, 0, 0, 255), width=20)
    return np.asarray(im)


COLD_CODE = """
import json, sys, time
t0 = time.perf_counter()
import xdd
import torch
t1 = time.perf_counter()
from bench.app.probe import drawn_seven
from xdd.probe.image import to_mnist
from xdd.probe.loading import load
if sys.argv[2] == "recompute":  # as a run that reused the pretrained D's scores: no features
    import xdd.pipeline.reference as reference
    reference.load_cached = lambda *args: None
pr = load(sys.argv[1])
assert pr.recomputed == (sys.argv[2] == "recompute")
t2 = time.perf_counter()
pr.probe(to_mnist(drawn_seven()))
t3 = time.perf_counter()
print(json.dumps({"import_torch_s": t1 - t0, "load_s": t2 - t1, "first_probe_s": t3 - t2,
                  "total_s": t3 - t0, "recomputed_error": pr.recomputed_error}))
"""


def cold(key: str, recompute: bool = False) -> dict:
    """A fresh process: torch imported, the run rebuilt, one probe (seconds of each).
    ``recompute``: as for a run that reused the pretrained D's unlabeled scores, whose
    reference features are then computed by the probe (xdd.probe.prober)."""
    out = subprocess.run([sys.executable, "-c", COLD_CODE, key,
                          "recompute" if recompute else "kept"], cwd=REPO, env=dict(os.environ),
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm(pr, reps: int) -> dict:
    """Seconds of one stroke's server-side work (to_mnist + probe), ``reps`` times."""
    from xdd.probe.image import to_mnist

    img = drawn_seven()
    pr.probe(to_mnist(img))  # anything lazily imported on the first call
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        pr.probe(to_mnist(img))
        times.append(time.perf_counter() - t)
    times.sort()
    return {"median_s": median(times), "p90_s": times[int(0.9 * (len(times) - 1))],
            "max_s": times[-1], "reps": reps}


@contextmanager
def busy_core(on: bool):
    """A process keeping one core busy (torch convolutions at one thread), as the worker."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", BUSY_CODE], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3.0)  # torch imported, the loop running
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cache: str, logfile: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, XDD_CACHE=cache, PYTHONPATH=str(REPO))
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited: {logfile.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("streamlit did not start within 120 s")


METRICS_JS = ("() => Array.from(document.querySelectorAll('[data-testid=stMetricValue]'))"
              ".map(e => e.innerText).join('|')")
CHANGED_JS = "(b) => { const v = (" + METRICS_JS + ")(); return v !== '' && v !== b; }"
SETTLED_JS = "() => !document.querySelector('[data-stale=true]')"


def browser(url: str, busy: bool) -> dict:
    """Seconds from each stroke's mouse-up to new scores on the page, and to the page settled
    (no element left stale); the first stroke after opening the page is reported apart."""
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(120_000)
            t = time.perf_counter()
            page.goto(f"{url}/probe")
            page.get_by_text("The canvas is empty").wait_for()
            out["open_s"] = time.perf_counter() - t  # the run rebuilt (cold) or cached
            canvas = page.locator("canvas").last
            box = canvas.bounding_box()
            with busy_core(busy):
                scores, settled = [], []
                for stroke in STROKES:
                    before = page.evaluate(METRICS_JS)
                    page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
                    page.mouse.down()
                    for x, y in stroke[1:]:
                        page.mouse.move(box["x"] + x, box["y"] + y, steps=10)
                    t = time.perf_counter()
                    page.mouse.up()
                    page.wait_for_function(CHANGED_JS, arg=before, polling=10)
                    scores.append(time.perf_counter() - t)
                    page.wait_for_function(SETTLED_JS, polling=10)
                    settled.append(time.perf_counter() - t)
                    time.sleep(0.5)
            out.update(first_stroke_scores_s=scores[0], first_stroke_settled_s=settled[0],
                       scores_s=scores[1:], settled_s=settled[1:],
                       scores_median_s=median(scores[1:]), scores_max_s=max(scores[1:]),
                       settled_median_s=median(settled[1:]))
        finally:
            b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="XDD_CACHE (the run is computed there)")
    ap.add_argument("--digit", type=int, default=8)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--busy", action="store_true", help="measure beside a busy core, too")
    ap.add_argument("--browser", action="store_true", help="measure in headless Chromium, too")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ["XDD_CACHE"] = args.cache
    os.environ.setdefault("XDD_WARMUP", "0")
    key, secs = ensure_run(args.digit)
    from xdd.probe.loading import kept_bytes, load

    kept = {k: round(v / 2**20, 2) for k, v in kept_bytes(key).items()}
    result: dict = {"machine": machine(), "run_key": key, "run_computed_s": secs,
                    "kept_mb": kept, "kept_in_run_mb": round(
                        sum(v for k, v in kept.items() if "beside" not in k), 2)}
    log(f"probe: run {key}, kept {kept}")
    pr = load(key)
    for label, on in [("idle", False)] + ([("busy", True)] if args.busy else []):
        with busy_core(on):
            result[f"cold_{label}"] = cold(key)
            result[f"cold_recomputed_{label}"] = cold(key, recompute=True)
            result[f"warm_{label}"] = warm(pr, args.reps)
        log(f"probe: {label}: cold {result[f'cold_{label}']}, cold recomputing the pretrained "
            f"reference {result[f'cold_recomputed_{label}']}, warm {result[f'warm_{label}']}")
    if args.browser:
        if not Path(CHROMIUM).is_file():
            result["browser"] = f"not measured: {CHROMIUM} is missing"
        else:
            logfile = Path(tempfile.mkdtemp(prefix="xdd-bench-probe-")) / "streamlit.log"
            proc, url = _serve(args.cache, logfile)
            try:
                for label, on in [("idle", False)] + ([("busy", True)] if args.busy else []):
                    result[f"browser_{label}"] = browser(url, on)
                    log(f"probe: browser {label}: {result[f'browser_{label}']}")
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    write_json(args.json, result)


if __name__ == "__main__":
    main()

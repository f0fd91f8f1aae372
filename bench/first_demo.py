"""The first demo as a teacher sees it: a fresh cache, the app served, the quick-demo button
clicked in headless Chromium, the Results page's AUPRC bars on screen.  Also the page's own
estimate before the click, and (``--cli``) command-line runs of another digit: the quick preset
on the cache the demo left (its GAN from the bundle), with a GAN pretrained here (fp32 and
bf16 + channels_last) and with its GAN cached, the tiny preset cold and cached, each against
the estimate it printed before it ran.
Rewrites the "First demo" section of docs/PERFORMANCE.md.

    python bench/first_demo.py                # ~2-5 min on a 2-core CPU
    python bench/first_demo.py --cli 3        # and six `python -m xdd run --ood-digit 3` (~12 min)
    python bench/first_demo.py --no-doc --json out.json

The cache starts empty, as after ``make app`` on a fresh clone (the converted MNIST in
``XDD_DATA_CACHE`` is shared, as the first start of the app converts it once).  A calibration
is measured first (``python -m xdd calibrate``, what the page starts by itself when nothing is
measured), so the page shows its estimate; the clock starts at the click.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench and xdd
from bench._browser import CHROMIUM, LAUNCH_ARGS, serve_app, stop, wait_http  # noqa: E402
from bench._common import DOC, REPO, loadavg, log, machine, write_json, write_section  # noqa: E402

BEGIN = "<!-- bench/first_demo.py: begin (generated; edits between these markers are overwritten) -->"
END = "<!-- bench/first_demo.py: end -->"
TARGET_DEMO_S, TARGET_CLI_S = 60.0, 90.0


def _seconds(text: str) -> float | None:
    """'about 2 min 5 s' / '45 s' / '1.2 h' -> seconds (the page's fmt_duration)."""
    m = re.search(r"about \*{0,2}([^*,)]+)", text)
    if not m:
        return None
    total, found = 0.0, False
    for num, unit in re.findall(r"([\d.]+)\s*(h|min|s)\b", m.group(1)):
        total += float(num) * {"h": 3600, "min": 60, "s": 1}[unit]
        found = True
    return total if found else None


FAST = ["--set", "pretrain.precision=bf16", "--set", "pretrain.channels_last=true"]
BUNDLED = "quick, another digit's first run (empty cache: GAN from the bundle)"
# The runs target 2 (another digit's first run <= 90 s) is stated for.
TARGETED = (BUNDLED, "quick, cold GAN")


def cli_runs(digit: int) -> list[tuple[str, list[str]]]:
    """(label, arguments of `python -m xdd run`) of the command-line runs, in order.  The
    first is another digit's first run as a fresh clone makes it (its GAN comes from the
    bundle); the two next pretrain their GAN here (``--force``), as a GAN seed or a config
    the bundle does not hold would."""
    d = ["--ood-digit", str(digit)]
    return [(BUNDLED, [*d, "--preset", "quick"]),
            ("quick, cold GAN (fp32, the preset)", [*d, "--preset", "quick", "--force"]),
            ("quick, cold GAN, bf16 + channels_last", [*d, "--preset", "quick", "--force", *FAST]),
            ("quick, GAN cached (seed 1: another labeled draw)", [*d, "--preset", "quick",
                                                                 "--seed", "1"]),
            ("tiny, cold GAN", [*d, "--preset", "tiny", "--force"]),
            ("tiny, GAN cached (seed 1)", [*d, "--preset", "tiny", "--seed", "1"])]


def click_demo(page, jobs, timeout: float) -> dict[str, Any]:
    """The page's estimate, then the click on *Quick demo* until the Results page draws the
    AUPRC bars, and until the job (maps included) ends; seconds from the click."""
    out: dict[str, Any] = {}
    button = page.get_by_role("button", name=re.compile("Quick demo"))
    button.wait_for(timeout=60_000)
    panel = page.locator("p", has_text="To start").first.inner_text()
    out["estimate_text"] = " ".join(panel.split())[:400]
    out["estimate_s"] = _seconds(panel)
    t0 = time.time()
    button.click()
    job = None
    while job is None and time.time() - t0 < 120:
        listed = jobs.list_jobs(5)
        job = listed[0]["id"] if listed else None
        time.sleep(0.2)
    if job is None:
        raise RuntimeError("the demo button submitted no job")
    # The page follows the job (the demo button opens the Run page on it); as soon as the
    # scores are committed its card links to the Results page, before the maps are done.
    link = page.get_by_role("link", name="See results")
    link.wait_for(timeout=timeout * 1000)
    out["click_to_link_s"] = round(time.time() - t0, 1)
    link.click()
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    out["click_to_bars_s"] = round(time.time() - t0, 1)
    rec = jobs.status(job)
    while rec["status"] in ("queued", "running") and time.time() - t0 < timeout:
        time.sleep(0.5)
        rec = jobs.status(job)
    out["job_status"] = rec["status"]
    out["click_to_maps_s"] = round((rec.get("finished") or time.time()) - t0, 1)
    out["job_s"] = round(rec["finished"] - rec["started"], 1) if rec.get("finished") else None
    out["claim_s"] = round(rec["started"] - t0, 1) if rec.get("started") else None
    from xdd.storage import store

    res = store.load_results(rec["run_key"]) if rec.get("run_key") else None
    out["pretrain_source"] = (res or {}).get("pretrain_source")
    out["timings"] = {k: round(v, 1) for k, v in ((res or {}).get("timings") or {}).items()}
    return out


def demo(env: dict[str, str], work: Path, timeout: float) -> dict[str, Any]:
    """The app served on the fresh cache, one headless Chromium page clicking the demo."""
    from playwright.sync_api import sync_playwright

    from xdd.jobs import api as jobs

    log_path = work / "streamlit.log"
    app, url = serve_app(env, log_path)
    pw = sync_playwright().start()
    try:
        wait_http(f"{url}/_stcore/health", app, log_path)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(url)
        out = click_demo(page, jobs, timeout)
        browser.close()
        log(f"click -> bars {out['click_to_bars_s']} s (job {out['job_s']} s, estimate "
            f"{out['estimate_s']} s, GAN {out['pretrain_source']})")
        return out
    finally:
        pw.stop()
        stop({app.pid}, group=True)


def cli_run(label: str, extra: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One `python -m xdd run`, timed from its start and from its estimate line."""
    from xdd.storage import store

    t = time.time()
    # The estimate is printed once the interpreter and torch are loaded; it is of the run
    # from there on, so the clock for it starts when its line arrives.
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "xdd", "run", *extra], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        line, t_line = "", None
        for ln in proc.stdout:
            if ln.startswith("estimate:") and t_line is None:
                line, t_line = ln.strip(), time.time()
        rc = proc.wait()
        err.seek(0)
        stderr = err.read()
    end = time.time()
    run = {"label": label, "command": "python -m xdd run " + " ".join(extra),
           "seconds": round(end - t, 1), "rc": rc, "startup_s": round((t_line or end) - t, 1),
           "after_estimate_s": round(end - (t_line or t), 1), "estimate_line": line,
           "estimate_s": _seconds(line)}
    newest = max(store.list_runs(), key=lambda r: r.get("started") or 0, default={})
    run.update(pretrain_s=round((newest.get("timings") or {}).get("pretrain", 0.0), 1),
               device=newest.get("device"))
    log(f"CLI {label}: {run['seconds']} s, {line or 'no estimate line'} (rc {rc})")
    if rc:
        log(stderr[-2000:])
    return run


def cli_timings(digit: int, env: dict[str, str]) -> dict[str, Any]:
    """The command-line runs (cli_runs), each printing its own estimate first (from this
    machine's runs at the CLI's thread count, else its calibration).  The CLI runs with every
    core (the worker: one fewer)."""
    # The app's worker stays a while after the demo (it exits after 30 s without work) and
    # compiles UMAP's neighbour search meanwhile: the command lines are timed once it has
    # gone, on a machine running nothing else.
    from xdd.jobs.workerproc import worker_alive

    t = time.time()
    while worker_alive() and time.time() - t < 120:
        time.sleep(1.0)
    return {"worker_gone_after_s": round(time.time() - t, 1),
            "cli_runs": [cli_run(label, extra, env) for label, extra in cli_runs(digit)]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="xdd-first-demo-"))
    cache = work / "cache"
    cache.mkdir()
    os.environ["XDD_CACHE"] = str(cache)
    from xdd.storage.data import load_mnist

    load_mnist()  # the converted copy, shared through XDD_DATA_CACHE
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t = time.time()
    subprocess.run([sys.executable, "-m", "xdd", "calibrate", "--device", "cpu"], cwd=REPO,
                   env=env, check=True, capture_output=True)
    raw: dict[str, Any] = {"command": "python bench/first_demo.py " + " ".join(args.argv),
                           "machine": machine(), "load_before": loadavg(),
                           "calibration_s": round(time.time() - t, 1)}
    from xdd.estimate import load_calibration

    raw["calibration"] = load_calibration("cpu")  # the figures the page's estimate is built on
    raw.update(demo(env, work, args.timeout))
    if args.cli is not None:
        raw.update(cli_timings(args.cli, env))
    raw["load_after"] = loadavg()
    return raw


def render(raw: dict[str, Any]) -> str:
    est, got = raw.get("estimate_s"), raw.get("click_to_bars_s")
    whole = raw.get("click_to_maps_s")  # what the estimate is of: the whole job, maps included
    err = f"{100 * (est - whole) / whole:+.0f} %" if est and whole else "–"
    lines = [BEGIN, "", "## First demo (`bench/first_demo.py`)", "",
             f"`{raw['command']}` on {raw['machine']}; load average before "
             f"{raw['load_before']}, after {raw['load_after']}.", "",
             "| what | measured | target |", "|---|---|---|",
             f"| click on *Quick demo* (empty cache) → Results page showing the AUPRC bars | "
             f"{got} s (GAN: {raw.get('pretrain_source')}; the job, maps included, ended "
             f"{raw.get('click_to_maps_s')} s after the click) | "
             f"≤ {TARGET_DEMO_S:.0f} s: {'met' if got and got <= TARGET_DEMO_S else '**missed**'} |",
             f"| the page's estimate before the click, against the whole job (click to maps) "
             f"| {est} s (error {err}) | ±25 % |"]
    for c in raw.get("cli_runs") or []:
        targeted = c["label"].startswith(TARGETED)
        target = (f"≤ {TARGET_CLI_S:.0f} s: " + ("met" if c["seconds"] <= TARGET_CLI_S
                                                 else "**missed**")) if targeted else "–"
        e, after = c.get("estimate_s"), c.get("after_estimate_s") or c["seconds"]
        err = f"{100 * (e - after) / after:+.0f} %" if e else "no estimate"
        ok = "met" if e and abs(e - after) <= 0.25 * after else "**missed**"
        lines.append(f"| CLI, {c['label']}: `{c['command']}` | {c['seconds']} s (start-up to "
                     f"its estimate {c.get('startup_s')} s, then {after} s; pretraining "
                     f"{c.get('pretrain_s')} s, {c.get('device')}); its estimate "
                     f"{e if e else '–'} s against the {after} s after it ({err}) | {target}; "
                     f"estimate ±25 %: {ok} |")
    if raw.get("cli_runs"):
        lines += ["", "What each command line printed before it ran:", ""]
        lines += [f"- {c['label']}: `{c['estimate_line'] or '(none)'}`" for c in raw["cli_runs"]]
    lines += ["", f"Stage timings of the demo run (s): {raw.get('timings')}.", "", END]
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    write_section(DOC, BEGIN, END, section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", type=int, default=None, metavar="DIGIT")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    raw = measure(args)
    if args.json:
        write_json(Path(args.json), raw)
    if not args.no_doc:
        write_doc(render(raw))
    print(render(raw))


if __name__ == "__main__":
    main()

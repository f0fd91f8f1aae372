"""The app served to a class: what open Run pages cost the worker, and what an idle worker
holds.  Rewrites the "Classroom" section of docs/PERFORMANCE.md.

    python bench/app/classroom.py                    # quick, digit 8, 0/5/0/5 pages (~12 min)
    python bench/app/classroom.py --steps 300        # shorter pretraining (~7 min)
    python bench/app/classroom.py --preset tiny      # a smoke run of the script (~1 min)
    python bench/app/classroom.py --no-doc --json F  # figures only

What it does, on a fresh temporary ``XDD_CACHE`` with ``streamlit run app.py`` serving it:

1. **Start-up cost of the next job.**  A one-second job (raw-pixel KDE) is submitted with no
   worker alive, as the app does it (``jobs.submit`` + ``workerproc.ensure_worker``): the time from
   submit to the job's claim is the cost of starting a worker.  A second one is submitted to the
   now warm worker: the same time without the start.
2. **Open pages vs the worker.**  The same run (preset, digit; a new seed each time, so none is
   cached) ``2 * --pairs`` times, each on a freshly started worker, alternately with no page
   open and with ``--pages`` Run pages (Playwright, one Chromium, one context each) following
   the job; the pages are open before the worker starts.  The figure is the worker's wall time
   (job ``finished - started``), and the ratio of the sums (alternating spreads the machine's
   other load over both).
3. **Idle memory.**  After the first run, the worker's resident memory is sampled every 0.5 s
   until it exits (it was started by ``ensure_worker``, so it exits after
   ``XDD_WORKER_MAX_IDLE``, 30 s by default); later workers are stopped with SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._browser import CHROMIUM, LAUNCH_ARGS, serve_app, stop, wait_http  # noqa: E402
from bench._common import DOC, REPO, loadavg, log, machine, write_json, write_section  # noqa: E402

# The markers keep the script's old path (bench/_common.py says why).
BEGIN = "<!-- bench/app/classroom.py: begin (generated; edits between these markers are overwritten) -->"
END = "<!-- bench/app/classroom.py: end -->"
MIB = 1024 * 1024


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[1].split()[0] != "Z"


def wait_done(jobs, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = jobs.status(job_id)
        if rec["status"] not in ("queued", "running"):
            return rec
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} did not finish within {timeout} s")


def wait_started(jobs, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = jobs.status(job_id)
        if rec["started"] or rec["status"] not in ("queued", "running"):
            return rec
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} was not claimed within {timeout} s")


def worker_pid(jobs) -> int:
    from xdd.jobs import workerproc

    (w,) = workerproc.workers()
    return int(w["pid"])


def idle_memory(pid: int, limit_s: float = 120) -> dict[str, Any]:
    """RSS of an idle worker every 0.5 s until it exits."""
    t0 = time.monotonic()
    samples = []
    while alive(pid) and time.monotonic() - t0 < limit_s:
        r = rss_mib(pid)
        if r is not None:
            samples.append((round(time.monotonic() - t0, 1), round(r, 1)))
        time.sleep(0.5)
    return {"samples": samples, "exited_after_s": round(time.monotonic() - t0, 1)
            if not alive(pid) else None,
            "rss_first_mib": samples[0][1] if samples else None,
            "rss_max_mib": max(s[1] for s in samples) if samples else None}


def no_worker(jobs, timeout: float = 120) -> None:
    from xdd.jobs import workerproc

    deadline = time.monotonic() + timeout
    while workerproc.workers() and time.monotonic() < deadline:
        time.sleep(0.5)


def startup_cost(jobs, digit: int) -> dict[str, float]:
    """1. Submit to claim of a one-second job with no worker alive (the app starts one), then
    of a second one with that worker still alive."""
    from xdd.jobs import workerproc

    from xdd.core.config import preset

    fast = dict(shots=2, methods=("pixels",), **{"projection.n_samples": 0})
    t = time.time()
    a = jobs.submit(preset("tiny", ood_digit=digit, seed=900, **fast))
    workerproc.ensure_worker()
    cold = wait_started(jobs, a)["started"] - t
    wait_done(jobs, a, 300)
    t = time.time()
    b = jobs.submit(preset("tiny", ood_digit=digit, seed=901, **fast))
    warm = wait_started(jobs, b)["started"] - t
    wait_done(jobs, b, 300)
    log(f"claim after submit: cold worker {cold:.2f} s, warm {warm:.2f} s")
    no_worker(jobs)
    return {"cold_claim_s": round(cold, 2), "warm_claim_s": round(warm, 2)}


def open_pages(url: str, job: str, n_pages: int):
    """n_pages Run pages following job, in one Chromium (a context each), open and drawn;
    returns (playwright, browser) for the caller to close."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
    for _ in range(n_pages):
        browser.new_context().new_page().goto(f"{url}/?job={job}")
    for ctx in browser.contexts:
        ctx.pages[0].get_by_text(job).first.wait_for(timeout=120_000)
    time.sleep(3)
    return pw, browser


def one_run(jobs, args: argparse.Namespace, url: str, k: int) -> dict[str, Any]:
    """2. Run k of the alternation (even: no page, odd: --pages pages), on a fresh worker; the
    pages are open (and drawn) before the worker starts, so their own start-up is not in the
    figure.  The first run's worker is left idle and sampled until it exits (3.)."""
    from xdd.jobs import workerproc

    from xdd.core.config import preset

    over = {"pretrain.steps": args.steps} if args.steps else {}
    n_pages, seed = (0 if k % 2 == 0 else args.pages), k
    job = jobs.submit(preset(args.preset, ood_digit=args.digit, seed=seed, **over))
    pw, browser = open_pages(url, job, n_pages) if n_pages else (None, None)
    workerproc.ensure_worker()
    pid = worker_pid(jobs)
    log(f"run seed {seed}: {n_pages} pages following job {job}")
    rec = wait_done(jobs, job, args.timeout)
    rss_at_end = rss_mib(pid)
    if browser is not None:
        browser.close()
        pw.stop()
    wall = rec["finished"] - rec["started"]
    run = {"seed": seed, "pages": n_pages, "status": rec["status"],
           "worker_wall_s": round(wall, 1), "rss_at_end_mib": rss_at_end, "load": loadavg()[0]}
    if k == 0:  # an idle worker left to itself: sampled until it exits
        run["idle"] = idle_memory(pid)
        log(f"  idle RSS {run['idle']['rss_first_mib']} MiB, exited after "
            f"{run['idle']['exited_after_s']} s")
    else:  # the next run starts on a fresh worker too
        os.kill(pid, 15)
    no_worker(jobs)
    log(f"  {rec['status']} in {wall:.1f} s (load {run['load']:.1f})")
    return run


def ratios(runs: list[dict[str, Any]], pairs: int) -> dict[str, Any]:
    """Worker wall time with pages over without: the sums, and pair by pair."""
    w0 = sum(r["worker_wall_s"] for r in runs if r["pages"] == 0)
    wn = sum(r["worker_wall_s"] for r in runs if r["pages"])
    return {"ratio": round(wn / w0, 3),
            "pair_ratios": [round(runs[2 * i + 1]["worker_wall_s"] / runs[2 * i]["worker_wall_s"], 3)
                            for i in range(pairs)]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xdd-classroom-"))
    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["XDD_CACHE"] = str(cache)
    from xdd.jobs import api as jobs
    from xdd.jobs import workerproc
    from xdd.storage.data import load_mnist

    load_mnist()  # converted once, before any clock starts
    env = dict(os.environ, PYTHONPATH=str(REPO), XDD_ADMIN_TOKEN="bench")
    log_path = work / "streamlit.log"
    app, url = serve_app(env, log_path)
    raw: dict[str, Any] = {"command": "python bench/app/classroom.py " + " ".join(args.argv),
                           "machine": machine(), "preset": args.preset, "digit": args.digit,
                           "pages": args.pages, "load_before": loadavg(),
                           "max_idle_s": workerproc.auto_max_idle()}
    try:
        wait_http(f"{url}/_stcore/health", app, log_path)
        raw["startup"] = startup_cost(jobs, args.digit)
        raw["runs"] = [one_run(jobs, args, url, k) for k in range(2 * args.pairs)]
        raw.update(ratios(raw["runs"], args.pairs))
        raw["steps"] = args.steps
        raw["load_after"] = loadavg()
        log(f"ratio {args.pages} pages / 0 pages: {raw['ratio']:.3f} (pairs {raw['pair_ratios']})")
    finally:
        stop({app.pid}, group=True)
    return raw


def render(raw: dict[str, Any]) -> str:
    runs, n = raw["runs"], raw["pages"]
    ok = raw["ratio"] <= 1.15
    idle = runs[0]["idle"]
    m = raw["machine"]
    cfg = f"preset `{raw['preset']}`" + (f" with {raw['steps']} pretraining steps"
                                          if raw.get("steps") else "")
    rows = "\n".join(f"| {i + 1} | {r['pages']} | seed {r['seed']} | {r['worker_wall_s']:.1f} s | "
                     f"{r['load']:.1f} |" for i, r in enumerate(runs))
    rss_end = max(r["rss_at_end_mib"] or 0 for r in runs)
    return f"""{BEGIN}
Generated by `{raw['command'].strip()}` on {m['cpu']} ({m['affinity']} usable cores,
{m['ram_gib']} GiB). {cfg.capitalize()}, held-out digit {raw['digit']}; each run on a fresh
worker started by the app's `ensure_worker()` (default threads), runs without and with {n}
Run pages alternating; the pages (one Chromium, a context each, on this machine) were open
and drawn before the worker started. The load average is the machine's, other work included.

| run | pages following | config | worker wall time | load avg |
|---|---|---|---|---|
{rows}

| | target | measured |
|---|---|---|
| **worker wall time, {n} pages / none** (sum over the runs) | ≤ 1.15 | **{raw['ratio']:.3f}** {'(met)' if ok else '(not met)'} |
| the same, pair by pair | – | {', '.join(f'{x:.3f}' for x in raw['pair_ratios'])} |
| worker RSS when its job ends | – | up to {rss_end:.0f} MiB |
| idle worker RSS | < 400 MiB within 60 s | {idle['rss_max_mib']:.0f} MiB for {idle['exited_after_s']:.0f} s, then 0: it exits (`XDD_WORKER_MAX_IDLE` = {raw['max_idle_s']:.0f} s) |
| submit → claimed, no worker alive (the next job's start-up) | – | {raw['startup']['cold_claim_s']:.1f} s |
| submit → claimed, an idle worker alive | – | {raw['startup']['warm_claim_s']:.1f} s |

- **Memory.** A worker holds what its last run loaded (MNIST, the networks, the allocator's
  arenas: {rss_end / 1024:.1f} GiB here) for as long as it lives. The worker the app starts
  exits after {raw['max_idle_s']:.0f} s without work, so an idle app gives it all back within
  a minute; it unregisters before a last look at the queue, so a job submitted in that moment
  either keeps it or starts a new worker. The price is the next job's start:
  {raw['startup']['cold_claim_s'] - raw['startup']['warm_claim_s']:.1f} s more from submit to
  claim (a fresh interpreter imports torch), plus the UMAP compilation that a fresh worker
  runs in a background thread (about 25 s of CPU, section 2-3), which overlaps the job. A
  worker started by hand (`python -m xdd worker`, e.g. on a GPU box) keeps running unless
  given `--max-idle`.
- **Polling.** A Run page following a job reads the job store once per refresh (every 2 s;
  `jobs.board`: the newest 50 records and the followed ones in one SELECT) and never writes:
  job reads no longer run a recovery pass, which is now the worker's housekeeping. The status
  sidebar refreshes every 5 s. What remains per refresh is Streamlit's own rerun cost
  (~50 ms of server CPU, of which the page's code is ~3 ms) and the browser's repaint; here
  the browsers share the 2 cores with the worker, in a classroom they run elsewhere.
{END}
"""


def write_doc(section: str) -> None:
    write_section(DOC, BEGIN, END, section, "## 9. Classroom (`bench/app/classroom.py`)\n\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--digit", type=int, default=8)
    ap.add_argument("--pages", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=2, help="runs without / with pages, alternating")
    ap.add_argument("--steps", type=int, default=None,
                    help="pretraining steps (default: the preset's) -- a shorter run")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", default=None, help="re-render the section from saved figures")
    ap.add_argument("--no-doc", action="store_true")
    args, _ = ap.parse_known_args()
    args.argv = sys.argv[1:]
    raw = json.loads(Path(args.from_json).read_text()) if args.from_json else measure(args)
    write_json(args.json, raw) if args.json else None
    section = render(raw)
    if args.no_doc:
        print(section)
    else:
        write_doc(section)
        log(f"wrote the Classroom section of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()

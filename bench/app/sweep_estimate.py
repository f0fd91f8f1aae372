"""A sweep submitted from the browser: the time estimate the Run page shows for it against the
time its jobs really take.  Rewrites the "A sweep's estimate, from the browser" section of
docs/PERFORMANCE.md.

    python bench/app/sweep_estimate.py              # quick, digit 8, retrain.steps 100,200,400
    python bench/app/sweep_estimate.py --calibrate  # the machine timed first (not a first guess)
    python bench/app/sweep_estimate.py --values 100,200 --json out.json --no-doc
    python bench/app/sweep_estimate.py --preset tiny --values 50,100 --no-doc  # smoke run, ~1 min
    python bench/app/sweep_estimate.py --from-json out.json   # re-render the section from figures

What it does, once:

1. ``streamlit run app.py`` serves a fresh temporary ``XDD_CACHE`` (``XDD_DATA_CACHE`` points at
   ``--data-cache``, default ``cache/data``, so MNIST is not converted again) with
   ``XDD_ADMIN_TOKEN`` set to a random token: the page is opened as the admin
   (``?admin=<token>``), who has no job caps.  Nothing is cached, so nothing of the sweep is
   instant; the app's shipped GANs are there (digit 8's quick GAN among them: no pretraining).
2. One Chromium page (``/usr/bin/chromium``) sets the Run page's widgets as a person would:
   the preset (segmented control ``preset``), the held-out digit (pills ``digits``: that digit
   only), and in "Sweep one setting" the setting (selectbox ``sweep_field``) and its values
   (text input ``sweep_values``); repetitions and first seed stay at the page's defaults (1 and
   0, checked afterwards on the submitted configs).  It reads the estimate the page shows for
   exactly that submission, the line ``Runs on … · N jobs · about X in all`` (X as
   ``xdd.core.fmt.fmt_duration`` writes it: ``45 s``, ``2.5 min``, ``1.2 h``) and the basis
   sentence ``Estimate <basis>, for exactly these runs…``, and the number of jobs on the
   ``Submit N jobs`` button; then it clicks that button.  The page starts the worker itself
   (``pages/_jobs.py:submit_configs`` -> ``workerproc.ensure_worker``); where none is alive
   after the submission the script starts one the same way.  The page stays open, following
   the jobs, as it would for the person who submitted them.
3. The job store is polled (``xdd.jobs.api.status``, this process's ``XDD_CACHE`` set to the
   same folder) until every submitted job has finished, at most ``--timeout`` seconds.  A
   failed or cancelled job is reported and the script exits with status 1 (no doc written).
4. Measured: from the click on Submit to the last job's ``finished`` (the worker's start,
   the queue and every job, which is what the estimate is for), and the sum of the jobs' own
   ``finished - started``.  The ratio estimate / measured is within ±25 % when it lies in
   [0.75, 1.25].

Ctrl-C, SIGTERM or an error close the browser, stop the server (its process group) and the
processes started for the temporary cache (the worker, a calibration: found by their
``XDD_CACHE`` in /proc), and remove the temporary folder (``--keep`` leaves it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._browser import CHROMIUM, LAUNCH_ARGS, serve_app, stop, wait_http  # noqa: E402
from bench._common import DOC, REPO, loadavg, log, machine, write_json, write_section  # noqa: E402

BEGIN = ("<!-- bench/app/sweep_estimate.py: begin (generated; edits between these markers are "
         "overwritten) -->")
END = "<!-- bench/app/sweep_estimate.py: end -->"
TITLE = "A sweep's estimate, from the browser (`bench/app/sweep_estimate.py`)"
INTRO = textwrap.fill(
    "The time estimate the Run page shows for a sweep just before it is submitted from the "
    "browser, against the time from the click on Submit to the end of the sweep's last job "
    "(target: within ±25 %).", 95) + "\n\n"
TOLERANCE = 0.25
PRESET_LABEL = {"quick": "quick", "paper": "paper", "tiny": "tiny (test)"}  # pages/run.py
# The Run page's line for what is about to be submitted (pages/run.py:_estimate_line), as the
# browser renders it (the markdown's bold gone): "Runs on cpu · 3 jobs · about 3.4 min in all"
# and, in the caption below it, "Estimate <basis>, for exactly these runs: ...".
ESTIMATE_RE = re.compile(r"Runs on (?P<where>.+?) · (?P<n>\d+) jobs?(?P<cached>[^·\n]*?)"
                         r"(?: · about (?P<num>\d+(?:\.\d+)?)\s*(?P<unit>s|min|h) in all)?"
                         r"[ \t]*$", re.M)
BASIS_RE = re.compile(r"Estimate (?P<basis>.+?), for exactly these runs")
UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0}


# ---------------------------------------------------------------- processes


def cache_processes(cache: Path) -> set[int]:
    """Pids of this user's ``xdd`` / streamlit processes started with ``XDD_CACHE=cache`` (the
    server, the worker it spawned, a calibration): the temporary folder is this script's own,
    so every such process is one it started, directly or through the app."""
    want = f"XDD_CACHE={cache}".encode()
    pids = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if d.stat().st_uid != os.getuid():
                continue
            env = (d / "environ").read_bytes().split(b"\0")
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if want in env and (b"xdd" in cmd or b"streamlit" in cmd):
            pids.add(int(d.name))
    return pids


# ---------------------------------------------------------------- the page


def settle(page, quiet_s: float = 1.0, timeout: float = 120) -> None:
    """Wait until Streamlit has run no script for ``quiet_s`` (its status widget is gone)."""
    deadline = time.monotonic() + timeout
    status = page.locator("[data-testid=stStatusWidget]")
    time.sleep(0.3)
    quiet_since = None
    while time.monotonic() < deadline:
        if status.count() == 0 or not status.first.is_visible():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    raise RuntimeError(f"the page kept running for {timeout} s")


def pressed(button) -> bool:
    """A pill's or segment's state: Streamlit 1.67's react-aria buttons carry data-selected
    (and aria-pressed for pills, aria-checked for a segmented control)."""
    return "true" in (button.get_attribute("data-selected"), button.get_attribute("aria-pressed"),
                      button.get_attribute("aria-checked"))


def pick_preset(page, name: str) -> None:
    button = page.locator(".st-key-preset button").filter(
        has_text=re.compile(rf"^\s*{re.escape(PRESET_LABEL[name])}\s*$")).first
    if not pressed(button):
        button.click()
        settle(page)


def pick_digit(page, digit: int) -> None:
    """The digits pills: ``digit`` selected, every other one not."""
    for d in range(10):
        button = page.locator(".st-key-digits button").filter(
            has_text=re.compile(rf"^\s*{d}\s*$")).first
        if pressed(button) != (d == digit):
            button.click()
            settle(page)


def pick_sweep(page, field: str, values: str) -> None:
    """Open "Sweep one setting", choose the setting, type its values (Enter commits)."""
    box = page.locator(".st-key-sweep_field")
    if not box.is_visible():
        page.locator("[data-testid=stExpander] summary", has_text="Sweep one setting").click()
        box.wait_for(state="visible")
    combo = box.locator("input").first  # a react-aria ComboBox (Streamlit 1.67)
    combo.click()
    page.keyboard.type(field, delay=20)  # key by key: fill() does not open its list
    page.locator("[role=option]").filter(
        has_text=re.compile(rf"^\s*{re.escape(field)}( · .*)?\s*$")).first.click()
    settle(page)
    text = page.locator(".st-key-sweep_values input")
    page.wait_for_function(
        "() => { const i = document.querySelector('.st-key-sweep_values input');"
        " return i && !i.disabled; }")
    text.fill(values)
    text.press("Enter")
    settle(page)


def read_estimate(page) -> dict[str, Any]:
    """The estimate line and its basis as shown, the Submit button's job count."""
    body = page.inner_text("body")
    m = ESTIMATE_RE.search(body)
    if not m:
        raise RuntimeError("the Run page shows no 'Runs on … · N jobs' line:\n" + body[-3000:])
    b = BASIS_RE.search(body)
    label = page.locator(".st-key-submit button").first.inner_text().strip()
    jobs = re.fullmatch(r"Submit (\d+) jobs?", label)
    if not jobs:
        raise RuntimeError(f"unexpected Submit button label {label!r}")
    seconds = float(m["num"]) * UNIT_S[m["unit"]] if m["num"] else None
    return {"text": m[0].strip(), "seconds": seconds, "unit": m["unit"],
            "where": m["where"], "n_jobs_line": int(m["n"]), "cached": m["cached"].strip(),
            "basis": b["basis"] if b else None, "n_jobs_button": int(jobs[1]),
            "not_yet": "No estimate yet" in body}


def stable_estimate(page, url: str, token: str, timeout: float = 300) -> dict[str, Any]:
    """The estimate once two reads 2 s apart agree; while the page says the machine is being
    timed (no number), it is opened again (with the admin token: a new session) every 10 s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        est = read_estimate(page)
        if est["seconds"] is None and est["not_yet"]:
            log("no estimate yet (the machine is being timed); opening the page again in 10 s")
            time.sleep(10)
            query = urlsplit(page.url).query
            page.goto(f"{url}/?{query}&admin={token}" if query else f"{url}/?admin={token}")
            page.get_by_text("Admin: no job limits").first.wait_for()
            page.locator(".st-key-submit button").first.wait_for()
            settle(page)
            last = None
            continue
        if last is not None and est == last:
            return est
        last = est
        time.sleep(2)
        settle(page)
    raise RuntimeError(f"the page showed no stable estimate within {timeout} s")


# ---------------------------------------------------------------- the measurement


def wait_jobs(jobs, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    last_note = 0.0
    while True:
        recs = {i: jobs.status(i) for i in ids}
        active = [r for r in recs.values() if r["status"] in ("queued", "running")]
        if not active:
            return recs
        if time.monotonic() - last_note > 30:
            done = len(ids) - len(active)
            run = [r for r in active if r["status"] == "running"]
            stage = (run[0].get("progress") or {}).get("stage") if run else None
            log(f"  {done}/{len(ids)} finished" + (f", running: {stage}" if stage else ""))
            last_note = time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(active)} of {len(ids)} jobs not finished after "
                               f"{timeout:.0f} s")
        time.sleep(1.0)


def summary(recs: dict[str, dict[str, Any]], ids: list[str], field: str, t_click: float
            ) -> list[dict[str, Any]]:
    from xdd.core import fields
    from xdd.core.config import from_dict

    out = []
    for i in ids:
        r = recs[i]
        cfg = from_dict(r["config"])
        s, f = r.get("started"), r.get("finished")
        out.append({"id": i, "status": r["status"], "value": fields.value_of(cfg, field),
                    "digit": cfg.ood_digit, "seed": cfg.seed, "preset": cfg.preset,
                    "error": r.get("error"), "created": r.get("created"), "started": s,
                    "finished": f,
                    "wait_s": round(s - t_click, 2) if s else None,
                    "job_s": round(f - s, 2) if s and f else None,
                    "end_after_click_s": round(f - t_click, 2) if f else None})
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    work = Path(args.workdir or tempfile.mkdtemp(prefix="xdd-sweep-estimate-"))
    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["XDD_CACHE"] = str(cache)
    os.environ["XDD_DATA_CACHE"] = str(Path(args.data_cache).resolve())
    from xdd.core.device import worker_threads
    from xdd.jobs import api as jobs
    from xdd.jobs import workerproc

    values = [v.strip() for v in args.values.split(",") if v.strip()]
    token = secrets.token_urlsafe(16)
    env = dict(os.environ, PYTHONPATH=str(REPO), XDD_ADMIN_TOKEN=token)
    log_path = work / "streamlit.log"
    raw: dict[str, Any] = {"command": "python bench/app/sweep_estimate.py " + " ".join(args.argv),
                           "machine": machine(), "worker_threads": worker_threads(),
                           "preset": args.preset, "digit": args.digit, "field": args.field,
                           "values": values, "load_before": loadavg()}
    app = pw = browser = None
    try:
        if args.calibrate:  # the machine timed first: the page's estimate rests on that
            log(f"python -m xdd calibrate --presets {args.preset} on the temporary cache")
            t = time.monotonic()
            subprocess.run([sys.executable, "-m", "xdd", "calibrate", "--device", "auto",
                            "--presets", args.preset], cwd=REPO, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            raw["calibration_s"] = round(time.monotonic() - t, 1)
        app, url = serve_app(env, log_path)
        wait_http(f"{url}/_stcore/health", app, log_path)
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.set_default_timeout(90_000)
        try:
            page.goto(f"{url}/?admin={token}")
            page.get_by_role("heading", name="Run an experiment").wait_for()
            page.get_by_text("Admin: no job limits").first.wait_for()
            page.locator(".st-key-submit button").first.wait_for()
            settle(page)
            pick_preset(page, args.preset)
            pick_digit(page, args.digit)
            pick_sweep(page, args.field, ",".join(values))
            est = stable_estimate(page, url, token)
            log(f"page: {est['text']!r}; basis: {est['basis']!r}")
            if est["seconds"] is None:
                raise RuntimeError(f"the page shows no time estimate: {est['text']!r}")
            if est["n_jobs_button"] != len(values):
                raise RuntimeError(f"the Submit button is for {est['n_jobs_button']} jobs, "
                                   f"expected {len(values)} (one per value)")
            page.screenshot(path=str(work / "before-submit.png"), full_page=True)
            worker_before = workerproc.worker_alive()
            button = page.locator(".st-key-submit button").first
            t_click = time.time()
            button.click()
            page.wait_for_url("**job=*", timeout=120_000)
            t_url = time.time()
            ids = parse_qs(urlsplit(page.url).query).get("job", [])
        except BaseException:
            try:
                page.screenshot(path=str(work / "failure.png"), full_page=True)
            except Exception:  # noqa: BLE001 - the page may be gone
                pass
            raise
        if len(ids) != est["n_jobs_button"]:
            raise RuntimeError(f"{len(ids)} job ids in the URL after submitting, expected "
                               f"{est['n_jobs_button']}: {page.url}")
        started_by_page = workerproc.worker_alive()
        if not started_by_page:
            log("no worker alive after the submission: starting one as the app does")
            workerproc.ensure_worker()
        log(f"submitted {len(ids)} jobs ({t_url - t_click:.1f} s until the page followed them);"
            f" estimate {est['seconds']:.0f} s")
        recs = wait_jobs(jobs, ids, args.timeout)
        rows = summary(recs, ids, args.field, t_click)
        raw.update({"estimate": est, "worker_alive_before": worker_before,
                    "worker_started_by_page": started_by_page,
                    "t_click": t_click, "submit_to_followed_s": round(t_url - t_click, 2),
                    "jobs": rows, "load_after": loadavg()})
        bad = [r for r in rows if r["status"] != "done"]
        if bad:
            raw["failed"] = bad
            return raw
        measured = max(r["finished"] for r in rows) - t_click
        job_sum = sum(r["job_s"] for r in rows)
        ratio = est["seconds"] / measured
        raw.update({"measured_s": round(measured, 2), "jobs_sum_s": round(job_sum, 2),
                    "first_claim_s": round(min(r["started"] for r in rows) - t_click, 2),
                    "ratio": round(ratio, 3),
                    "ratio_to_jobs_sum": round(est["seconds"] / job_sum, 3),
                    "within": abs(ratio - 1) <= TOLERANCE})
        # what was submitted is what was asked for: one digit, seed 0, one job per value
        from xdd.core import fields

        asked = sorted(map(repr, fields.parse_list(args.field, ",".join(values))))
        checks = {"digits": sorted({r["digit"] for r in rows}),
                  "seeds": sorted({r["seed"] for r in rows}),
                  "presets": sorted({r["preset"] for r in rows}),
                  "values": sorted(repr(r["value"]) for r in rows)}
        checks["ok"] = (checks["digits"] == [args.digit] and checks["seeds"] == [0]
                        and checks["presets"] == [args.preset] and checks["values"] == asked)
        raw["checks"] = checks
        log(f"measured {measured:.1f} s (jobs' own {job_sum:.1f} s); estimate / measured = "
            f"{ratio:.3f}")
        return raw
    finally:  # each step on its own: a Ctrl-C in a terminal has killed Playwright's driver too
        for step in (browser and browser.close, pw and pw.stop,
                     app and (lambda: stop({app.pid}, group=True)),
                     lambda: stop(cache_processes(cache))):
            try:
                if step:
                    step()
            except Exception as exc:  # noqa: BLE001 - clean up the rest regardless
                log(f"cleanup: {type(exc).__name__}: {exc}")
        if args.keep or args.workdir:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- output


def table(raw: dict[str, Any]) -> str:
    est = raw["estimate"]
    rows = "\n".join(
        f"| {i + 1} | `{raw['field']}={r['value']}` | {r['status']} | "
        f"{r['wait_s']:.1f} s | {r['job_s']:.1f} s | {r['end_after_click_s']:.1f} s |"
        if r["job_s"] is not None else
        f"| {i + 1} | `{raw['field']}={r['value']}` | {r['status']} | – | – | – |"
        for i, r in enumerate(raw["jobs"]))
    jobs = f"""| job | setting | status | click → started | started → finished | \
click → finished |
|---|---|---|---|---|---|
{rows}
"""
    if raw.get("failed"):
        return jobs
    ok = "within ±25 %" if raw["within"] else "**not** within ±25 %"
    return f"""| | seconds |
|---|---|
| estimate shown (`{est['text']}`) | **{est['seconds']:.0f}** |
| measured: click on Submit → last job finished | **{raw['measured_s']:.1f}** |
| the jobs' own time (sum of `finished - started`) | {raw['jobs_sum_s']:.1f} |
| click on Submit → first job claimed (worker start) | {raw['first_claim_s']:.1f} |
| **estimate / measured** | **{raw['ratio']:.3f}** ({ok}) |
| estimate / the jobs' own time | {raw['ratio_to_jobs_sum']:.3f} |

{jobs}"""


def render(raw: dict[str, Any]) -> str:
    m, est = raw["machine"], raw["estimate"]
    vals = ", ".join(raw["values"])
    calibrated = (f"after `python -m xdd calibrate` ({raw['calibration_s']:.0f} s)"
                  if raw.get("calibration_s") is not None else "nothing calibrated")
    prose = textwrap.fill(
        f"Generated by `{raw['command'].strip()}` on {m['cpu']} ({m['affinity']} usable cores, "
        f"{m['ram_gib']} GiB; load average {raw['load_before'][0]:.1f} before and "
        f"{raw['load_after'][0]:.1f} after, other work included). A fresh cache ({calibrated}) "
        "served by `streamlit run app.py`; one Chromium page, as the admin, set the Run page "
        f"to preset `{raw['preset']}`, held-out digit {raw['digit']} and a sweep of "
        f"`{raw['field']}` over {vals} (1 repetition, seed 0), read the estimate shown for "
        f"that submission (its basis: \"{est['basis'] or 'not shown'}\") and clicked "
        f"**Submit {est['n_jobs_button']} jobs**; the worker the app started "
        f"({'one was alive before' if raw['worker_alive_before'] else 'none was alive before'};"
        f" default threads, {raw['worker_threads']} here) ran them while the page followed "
        "them.", 95)
    return f"{BEGIN}\n{prose}\n\n{table(raw)}{END}\n"


def section_heading(doc: Path) -> str:
    """The next free section number, 10 being reserved for bench/app/sessions.py's."""
    text = doc.read_text() if doc.exists() else ""
    nums = [int(n) for n in re.findall(r"^## (\d+)\.", text, re.M)]
    return f"## {max([*nums, 10]) + 1}. {TITLE}\n\n{INTRO}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick", choices=list(PRESET_LABEL))
    ap.add_argument("--digit", type=int, default=8, choices=range(10))
    ap.add_argument("--field", default="retrain.steps", help="the setting swept")
    ap.add_argument("--values", default="100,200,400", help="comma-separated, as typed")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds for all the jobs")
    ap.add_argument("--calibrate", action="store_true",
                    help="run `python -m xdd calibrate` on the fresh cache first, so the "
                         "estimate rests on this machine's calibration rather than the first "
                         "guess a fresh cache gets")
    ap.add_argument("--data-cache", default=str(REPO / "cache" / "data"),
                    help="XDD_DATA_CACHE: converted MNIST (default: cache/data)")
    ap.add_argument("--workdir", default=None,
                    help="a folder to use (kept) instead of a temporary one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", default=None, help="re-render the section from saved figures")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleans up as Ctrl-C does
    raw = json.loads(Path(args.from_json).read_text()) if args.from_json else measure(args)
    if args.json:
        write_json(args.json, raw)
    print(table(raw))
    if raw.get("failed"):
        for r in raw["failed"]:
            log(f"job {r['id']} ({args.field}={r['value']}) {r['status']}: {r['error']}")
        sys.exit(1)
    if not raw["checks"]["ok"]:
        log(f"the submitted jobs are not the ones asked for: {raw['checks']}")
        sys.exit(1)
    if not args.no_doc:
        write_section(DOC, BEGIN, END, render(raw), section_heading(DOC))
        log(f"wrote the sweep-estimate section of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()

"""A classroom: the app served with ``--server.address 0.0.0.0`` and ten browser sessions (one
Chromium, ten contexts, so ten visitors with cookies of their own) on its Run page at once.

Five sessions submit the same tiny config, five a different one each; all follow their jobs to
the end.  Checked: each distinct config runs exactly once (one job, one attempt, one "running"
line in the worker's log), the five identical submissions share one job that none of them may
cancel, every session sees its job finish, no session shows an exception, and the Run page
still renders while the jobs run (a reload, until the job's card is drawn; the median is
printed: the 3 s target is a figure of docs/PERFORMANCE.md section 9, measured on the
machine, not a pass mark of this test, whose 2 cores the ten pages share).  Also:
the per-visitor limit (one session asks for 4 more jobs and is told why only some were
queued, then cancels its own), and a second server on the same cache in read-only mode
(``XDD_READ_ONLY=1``) that shows the shared job's progress and result with no Submit or Cancel.

Timing figures are printed; the slowdown of the worker by open pages is a benchmark
(bench/app/classroom.py), not a test.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from test_browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, REPO, _stop, _wait_http, \
    _worker_pids, serve_app

pytestmark = pytest.mark.slow

N_SAME, DISTINCT_SHOTS = 5, (2, 3, 4, 5, 6)  # 5 sessions x (10 shots) + 5 x (shots 2..6)
ADMIN = "classroom-admin-token"
# A page that waits on the worker or on a lock takes tens of seconds; a page on a 2-core machine
# that also runs ten Chromium pages and the worker takes 1.5-8 s (median 2.4-3.1 s measured).
RENDER_LIMIT_S = 10.0


def _serve(cache: Path, data_cache: Path, log: Path, **env_extra: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, XDD_CACHE=str(cache), XDD_DATA_CACHE=str(data_cache),
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), XDD_ADMIN_TOKEN=ADMIN, **env_extra)
    return serve_app(env, log, address="0.0.0.0")


@pytest.fixture(scope="module")
def classroom(tmp_path_factory: pytest.TempPathFactory, data_cache: Path
              ) -> Iterator[dict[str, Any]]:
    """The teacher's app and a read-only twin on the same (empty) cache."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the classroom test needs Debian's chromium "
                    "(`make sysdeps` or `apt-get install chromium`)")
    root = tmp_path_factory.mktemp("classroom")
    cache = root / "cache"
    cache.mkdir()
    app, url = _serve(cache, data_cache, root / "app.log")
    ro, ro_url = _serve(cache, data_cache, root / "ro.log", XDD_READ_ONLY="1")
    try:
        _wait_http(f"{url}/_stcore/health", app, root / "app.log")
        _wait_http(f"{ro_url}/_stcore/health", ro, root / "ro.log")
        yield {"url": url, "ro_url": ro_url, "cache": cache}
    finally:
        _stop({app.pid, ro.pid}, group=True)
        _stop(_worker_pids(cache))


def _records(cache: Path) -> list[dict[str, Any]]:
    from xdd.jobs import api as jobs

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDD_CACHE", str(cache))
        return jobs.list_jobs(500)


def _job_ids(page) -> list[str]:
    return [p.split("=", 1)[1] for p in page.url.split("?", 1)[-1].split("&")
            if p.startswith("job=")]


def _no_exception(page, who: str) -> None:
    body = page.inner_text("body")
    assert page.locator("[data-testid=stException]").count() == 0, (who, body[-2000:])
    assert "Traceback" not in body, (who, body[-2000:])


def test_classroom(classroom) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    url, cache = classroom["url"], classroom["cache"]
    t0 = time.monotonic()

    def mark(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f} s  {what}", flush=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        pages = []
        try:
            for _ in range(10):
                ctx = browser.new_context(viewport={"width": 1300, "height": 1600})
                ctx.set_default_timeout(90_000)
                pages.append(ctx.new_page())
            _lesson(pages, browser, classroom, mark)
        except BaseException:
            for i, pg in enumerate(pages):
                try:
                    pg.screenshot(path=str(ARTIFACTS / f"classroom-failure-{i}.png"))
                except Exception:
                    pass
            raise
        finally:
            browser.close()


def _blocker(cache: Path) -> str:
    """A long job queued by the teacher (the CLI) before the class arrives: the worker that
    the first submission starts takes it first, so the class's jobs stay queued until the
    admin cancels it from a browser -- checks of queued jobs do not race the worker."""
    from xdd.jobs import api as jobs
    from xdd.core.config import preset

    cfg = preset("tiny", ood_digit=4, shots=2, methods=("before",),
                 **{"pretrain.steps": 1_000_000, "projection.n_samples": 0})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDD_CACHE", str(cache))
        return jobs.submit(cfg)


def _lesson(pages, browser, classroom, mark) -> None:
    url, cache = classroom["url"], classroom["cache"]
    blocker = _blocker(cache)
    # ---- the whole class opens the Run page at once
    for pg in pages:
        pg.goto(url, wait_until="commit")
    for pg in pages:
        pg.get_by_role("button", name="Submit 1 job").wait_for()
    mark("10 Run pages open")

    # ---- everyone picks the tiny preset; sessions 5-9 each a shot count of their own
    for pg in pages:
        pg.locator("button", has_text="tiny (test)").click()
    for pg, shots in zip(pages[N_SAME:], DISTINCT_SHOTS):
        box = pg.get_by_role("spinbutton", name="Shots per digit")
        box.fill(str(shots))
        box.press("Enter")
    for pg in pages:
        pg.wait_for_function("() => document.body.innerText.includes('tiny')")
    time.sleep(1.0)  # the reruns of the last changes reach the server before the clicks
    for pg in pages[N_SAME:] + pages[:N_SAME]:
        pg.get_by_role("button", name="Submit 1 job").click()
    for pg in pages:
        pg.wait_for_url("**job=*")
    mark("10 submissions")
    ids = [_job_ids(pg) for pg in pages]
    assert all(len(i) == 1 for i in ids), ids
    ids = [i[0] for i in ids]
    shared = ids[0]
    assert ids[:N_SAME] == [shared] * N_SAME  # five identical submissions, one job
    assert len(set(ids)) == 1 + len(DISTINCT_SHOTS)

    # ---- the shared job: no visitor may cancel it
    for pg in pages[:N_SAME]:
        btn = pg.locator(f".st-key-cancel-{shared}").get_by_role("button").first
        btn.wait_for()
        assert btn.inner_text().strip() == "Shared" and btn.is_disabled()
    recs = {r["id"]: r for r in _records(cache)}
    followers = recs[shared]["followers"]
    assert len(set(followers)) == N_SAME and all(f.startswith("v-") for f in followers)
    assert recs[blocker]["status"] == "running"  # the class's jobs wait behind it
    mark("shared job checked")

    # ---- renders while the jobs run: each session reloads once, the others keep polling
    renders = []
    for pg, job in zip(pages, ids):
        t = time.monotonic()
        pg.reload(wait_until="commit")
        pg.get_by_text(job).first.wait_for()
        renders.append(time.monotonic() - t)
    active = sum(r["status"] in ("queued", "running") for r in _records(cache))
    mark(f"renders {', '.join(f'{r:.2f}' for r in renders)} s; median "
         f"{statistics.median(renders):.2f} s; {active} jobs still active")

    # ---- one visitor asks for four more jobs: the per-visitor limit answers
    greedy = pages[-1]
    greedy.get_by_role("spinbutton", name="Repetitions").fill("4")
    greedy.get_by_role("spinbutton", name="Repetitions").press("Enter")
    greedy.get_by_role("spinbutton", name="First seed").fill("50")
    greedy.get_by_role("spinbutton", name="First seed").press("Enter")
    greedy.get_by_role("button", name="Submit 4 jobs").click()
    greedy.get_by_text("Limit reached: you have 3 jobs queued or running, the limit per "
                       "visitor is 3.").wait_for()
    extra = [j for j in _job_ids(greedy) if j != ids[-1]]
    assert len(extra) == 2 and ids[-1] in _job_ids(greedy)  # 1 queued + 2 new; still follows it
    for job in extra:  # its own, followed by no one else: it may cancel them
        greedy.locator(f".st-key-cancel-{job}").get_by_role("button").first.click()
        greedy.locator(f".st-key-cancel-{job}").wait_for(state="detached")
    mark("limit and own cancel checked")

    # ---- the read-only twin shows the shared job, with no Submit and no Cancel
    ro = browser.new_context(viewport={"width": 1300, "height": 1600}).new_page()
    ro.set_default_timeout(90_000)
    ro.goto(f"{classroom['ro_url']}/?job={shared}")
    ro.get_by_text("This app is read-only").wait_for()
    ro.get_by_text(shared).first.wait_for()

    # ---- the person who started the app cancels the teacher's long job from a browser
    admin = browser.new_context(viewport={"width": 1300, "height": 1600}).new_page()
    admin.set_default_timeout(90_000)
    admin.goto(f"{url}/?job={blocker}&admin={ADMIN}")
    admin.get_by_text("Admin: no job limits").wait_for()
    assert "admin=" not in admin.url
    admin.locator(f".st-key-cancel-{blocker}").get_by_role("button", name="Cancel").click()
    admin.get_by_text("Cancelled; nothing was written to the cache.").wait_for()
    mark("admin cancelled the long job")

    # ---- everyone sees their job finish
    # (a card links to the scores before the maps are done: "Scores ready; ... AUPRC before")
    finished = re.compile(r"^(Finished|Already computed).*AUPRC before")
    for i, (pg, job) in enumerate(zip(pages, ids)):
        pg.get_by_text(finished).first.wait_for(timeout=150_000)
    mark("every session saw its job finish")
    ro.get_by_text(finished).first.wait_for()
    assert ro.get_by_role("button", name="Submit 1 job").count() == 0
    assert ro.locator("[class*=st-key-cancel-]").count() == 0
    assert ro.get_by_role("button", name="Quick demo").count() == 0
    for i, pg in enumerate(pages + [ro, admin]):
        _no_exception(pg, f"session {i}")
    pages[0].screenshot(path=str(ARTIFACTS / "classroom-0.png"), full_page=True)

    # ---- each distinct config ran exactly once
    recs = _records(cache)
    done = [r for r in recs if r["status"] == "done"]
    assert sorted(r["id"] for r in done) == sorted(set(ids))
    assert all(r["attempts"] == 1 and not r["cached"] for r in done)
    assert sorted(r["config"]["shots"] for r in done) == sorted([10, *DISTINCT_SHOTS])
    assert len({r["run_key"] for r in done}) == len(done)
    cancelled = [r for r in recs if r["status"] == "cancelled" and r["id"] != blocker]
    assert sorted(r["id"] for r in cancelled) == sorted(extra)
    assert all(r["started"] is None for r in cancelled)  # cancelled while queued
    from xdd.storage import store

    with pytest.MonkeyPatch.context() as mp:  # a cancelled job leaves nothing in the cache
        mp.setenv("XDD_CACHE", str(cache))
        assert not any(store.run_dir(r["run_key"]).exists() for r in cancelled)
        assert not list(store.runs_dir().glob(".tmp-*"))
    log = (cache / "jobs" / "worker.log").read_text()
    ran = Counter(line.split("running ")[1].strip() for line in log.splitlines()
                  if ": running " in line)
    blocker_key = next(r["run_key"] for r in recs if r["id"] == blocker)
    assert ran == Counter({blocker_key: 1, **{r["run_key"]: 1 for r in done}}), ran
    assert statistics.median(renders) < RENDER_LIMIT_S, renders

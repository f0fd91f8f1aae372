"""The job queue and its worker, including the faults it must survive (issue: background
worker).  Workers are real processes on the tiny preset and the CPU; each test kills the
workers it started (also those started through ensure_worker) before it ends."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from xdd.jobs import queue as jobqueue
from xdd.jobs import api as jobs
from xdd.jobs import store as jobstore
from xdd.jobs import store_redis as jobstore_redis
from xdd.storage import store
from xdd.jobs import workerproc
from xdd.core.config import preset, run_key, to_dict
from xdd.pipeline.experiment import run_experiment

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def fast_cfg(seed: int = 0, digit: int = 3, **extra: Any):
    """A run of about a second: raw-pixel KDE only, no GAN, no projections."""
    return preset("tiny", ood_digit=digit, seed=seed, shots=2, methods=("pixels",),
                  **{"projection.n_samples": 0, **extra})


def gan_cfg(steps: int, seed: int = 0):
    """A run that spends its time in GAN pretraining (about 25 ms a step on one thread)."""
    return preset("tiny", ood_digit=4, seed=seed, shots=2, methods=("before",),
                  **{"pretrain.steps": steps, "projection.n_samples": 0})


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _log_tail() -> str:
    out = []
    for p in sorted(jobstore.jobs_dir().glob("*.log")):
        out.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:])
    return "\n".join(out)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            try:
                recs = json.dumps(jobs.list_jobs(), indent=1)[:4000]
            except Exception as exc:  # the store itself may be what broke
                recs = repr(exc)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\nrecords: {recs}"
                                 f"\n{_log_tail()}")
        time.sleep(poll)


def wait_status(job_id: str, statuses: tuple[str, ...], timeout: float = 90) -> dict:
    return wait_for(lambda: (r := jobs.status(job_id))["status"] in statuses and r,
                    timeout, f"job {job_id} to reach {statuses}")


def _is_our_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"xdd" in cmd and b"worker" in cmd


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(autouse=True)
def _sqlite_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default queue unless a test asks for Redis (the redis_url fixture)."""


@pytest.fixture
def workers(xdd_cache: Path):
    """start() launches a worker (cpu, one thread) like `python -m xdd worker`; teardown kills
    every worker of this test's queue, including ones started by ensure_worker()."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        jobstore.jobs_dir().mkdir(parents=True, exist_ok=True)
        with open(jobstore.jobs_dir() / "test-worker.log", "ab") as log:
            p = subprocess.Popen(workerproc.worker_command("cpu", 1), cwd=REPO, env=_env(),
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        wait_for(lambda: any(w["pid"] == p.pid for w in workerproc.workers()) or p.poll() is not None,
                 60, f"worker {p.pid} to register")
        assert p.poll() is None, _log_tail()
        return p

    yield start
    pids = {p.pid for p in procs}
    try:
        pids |= {w["pid"] for w in workerproc.workers(alive_only=False)
                 if w.get("pid_space") == workerproc.PID_SPACE}
    except Exception:
        pass
    spawned = store.read_json(jobstore.jobs_dir() / "spawned.json")
    if isinstance(spawned, dict) and isinstance(spawned.get("pid"), int):
        pids.add(spawned["pid"])
    for pid in pids:
        if store.pid_alive(pid) and _is_our_worker(pid):
            _kill(pid)
    for p in procs + workerproc._CHILDREN:
        p.wait(timeout=30)
    workerproc._CHILDREN.clear()
    for pid in pids:
        wait_for(lambda: not store.pid_alive(pid), 10, f"worker {pid} to exit")


def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xdd", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _py(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _tmp_runs() -> list[Path]:
    return sorted(store.runs_dir().glob(".tmp-*")) if store.runs_dir().is_dir() else []


# ---------------------------------------------------------------- no worker needed


@pytest.mark.parametrize("bad", ["", "abc", "../../etc/passwd", "/etc/passwd", "0" * 31,
                                 "0" * 33, "g" * 32, "A" * 32, "0" * 30 + "/x", "..", None, 17])
def test_malformed_job_ids_are_refused(bad):
    for fn in (jobs.status, jobs.cancel):
        with pytest.raises(jobs.JobError, match="malformed job id .*32 lowercase hexadecimal"):
            fn(bad)
    assert not (store.cache_root() / "jobs").exists()  # refused before touching the store


def test_unknown_job_id():
    jobs.submit(fast_cfg())  # a non-empty store
    for fn in (jobs.status, jobs.cancel):
        with pytest.raises(jobs.JobError, match="no job '0{32}'"):
            fn("0" * 32)


def test_submit_dedup_cancel_and_cached():
    cfg = fast_cfg(seed=0)
    a = jobs.submit(cfg)
    assert jobs.JOB_ID.fullmatch(a)
    assert jobs.submit(cfg) == a  # queued identical config -> the same job
    rec = jobs.status(a)
    assert rec["status"] == "queued" and rec["run_key"] == run_key(cfg)
    assert rec["config"] == to_dict(cfg)
    assert rec["started"] is None and rec["finished"] is None and rec["error"] is None
    assert rec["created"] <= time.time() and rec["enqueued"] is not None
    assert rec["progress"]["stage"] == "queued"

    b = jobs.submit(fast_cfg(seed=1))
    assert b != a
    assert [r["id"] for r in jobs.list_jobs()] == [b, a]  # newest first
    assert jobs.list_jobs(limit=1)[0]["id"] == b
    assert jobs.queue_counts() == {"queued": 2, "running": 0}
    assert jobqueue.get_huey().pending_count() == 2  # one message per job

    c = jobs.cancel(a)
    assert c["status"] == "cancelled" and c["finished"] is not None
    assert jobs.queue_counts() == {"queued": 1, "running": 0}
    a2 = jobs.submit(cfg)  # a cancelled job is not reused
    assert a2 not in (a, b) and jobs.status(a2)["status"] == "queued"

    # A cached config: a finished record at once, no message, the same id every time.
    cached_cfg = fast_cfg(seed=7)
    res = run_experiment(cached_cfg, device="cpu")
    d = jobs.submit(cached_cfg)
    rd = jobs.status(d)
    assert rd["status"] == "done" and rd["cached"] is True
    assert rd["run_key"] == res["run_key"] == run_key(cached_cfg)
    assert rd["finished"] is not None and rd["device"] == res["device"]
    assert jobs.submit(cached_cfg) == d
    assert jobqueue.get_huey().pending_count() == 3  # a, b, a2: none for the cached one
    assert jobs.cancel(d)["status"] == "done"  # nothing to cancel


def test_cli_submit_jobs_cancel():
    sub = _run_cli("submit", "--preset", "tiny", "--ood-digit", "5", "--shots", "2", "--seed", "3",
                   "--methods", "pixels", "--no-worker")
    assert sub.returncode == 0, sub.stderr
    words = sub.stdout.split()
    assert words[0] == "job" and words[2] == "queued"
    job_id = words[1]
    assert jobs.status(job_id)["config"]["ood_digit"] == 5

    table = _run_cli("jobs")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(job_id))
    assert row.split()[1:6] == ["queued", "tiny", "5", "2", "3"]
    assert "workers alive: 0" in table.stdout

    one = _run_cli("jobs", job_id)
    assert one.returncode == 0 and json.loads(one.stdout)["id"] == job_id

    can = _run_cli("cancel", job_id)
    assert can.returncode == 0 and f"job {job_id} cancelled" in can.stdout
    assert jobs.status(job_id)["status"] == "cancelled"

    for args, msg in [(("cancel", "../../etc/passwd"), "error: malformed job id"),
                      (("jobs", "f" * 32), "error: no job"),
                      (("submit", "--preset", "tiny", "--ood-digit", "12", "--no-worker"),
                       "error: OOD digit 12 is out of range")]:
        bad = _run_cli(*args)
        assert bad.returncode == 2 and bad.stderr.startswith(msg), bad.stderr
        assert "Traceback" not in bad.stderr


# ---------------------------------------------------------------- with workers


def test_failing_job_then_good_job(workers, tmp_path):
    start = workers
    bad = jobs.submit(fast_cfg(**{"data.root": str(tmp_path / "no-such-folder")}))
    good = jobs.submit(fast_cfg(seed=11))
    start()
    rb = wait_status(bad, ("failed", "done"))
    rg = wait_status(good, ("failed", "done"))
    assert rb["status"] == "failed"
    assert rb["error"].startswith("ConfigError: data folder") and "no-such-folder" in rb["error"]
    assert "\n" not in rb["error"]
    assert rg["status"] == "done", rg["error"]
    assert rg["started"] >= rb["finished"]  # the same worker went on with the next job
    assert rg["device"].startswith("cpu (1 thread") and rg["cached"] is False and rg["attempts"] == 1
    assert store.load_results(rg["run_key"]) is not None
    assert workerproc.worker_alive()
    assert _tmp_runs() == []

    # The CLI follows a job to its end and prints the results.
    out = _run_cli("submit", "--preset", "tiny", "--ood-digit", "3", "--shots", "2",
                   "--seed", "12", "--methods", "pixels", "--set", "projection.n_samples=0",
                   "--wait")
    assert out.returncode == 0, out.stderr
    assert "AUPRC" in out.stdout and "pixels" in out.stdout
    assert len([w for w in workerproc.workers()]) == 1  # it used the running worker


def test_cancel_running_job(workers):
    start = workers
    cfg = gan_cfg(steps=100_000)  # would take most of an hour
    job = jobs.submit(cfg)
    start()
    wait_for(lambda: (p := jobs.status(job)["progress"])["stage"] == "pretrain" and p["step"] >= 10,
             60, "pretraining to be under way")
    t0 = time.monotonic()
    rec = jobs.cancel(job)
    assert rec["status"] in ("running", "cancelled") and rec["cancel_requested"] is True
    again = jobs.submit(cfg)
    assert again != job  # a job being cancelled is not handed out again
    rec = wait_status(job, ("cancelled", "failed", "done"), timeout=30)
    took = time.monotonic() - t0
    assert rec["status"] == "cancelled" and took < 6, (rec, took)
    assert jobs.cancel(again)["cancel_requested"] is True
    assert wait_status(again, ("cancelled", "failed", "done"), timeout=30)["status"] == "cancelled"
    assert rec["progress"]["stage"] == "pretrain"  # where it was stopped
    assert not store.run_dir(run_key(cfg)).exists()
    assert _tmp_runs() == []
    assert not (store.cache_root() / "pretrain").exists() or not any(
        (store.cache_root() / "pretrain").rglob("checkpoint.pt"))
    assert workerproc.worker_alive()


def test_sigkill_mid_pretraining(workers):
    start = workers
    cfg = gan_cfg(steps=100)
    job = jobs.submit(cfg)
    w1 = start()
    wait_for(lambda: (p := jobs.status(job)["progress"])["stage"] == "pretrain" and p["step"] >= 10,
             60, "pretraining to be under way")
    assert len(_tmp_runs()) == 1  # the run folder being assembled
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait(timeout=10)
    assert not workerproc.worker_alive()  # noticed at once: the heartbeat's pid is gone

    rec = jobs.status(job)  # a status read only reads; recovery is the workers' business
    assert rec["status"] == "running" and rec["worker_gone"] is True, rec
    assert len(_tmp_runs()) == 1
    out = _run_cli("jobs", "--recover")  # what the next worker's start does, by hand
    assert out.returncode == 0 and f"recovered 1 job(s)\n  {job}" in out.stdout, out.stderr
    rec = jobs.status(job)
    assert rec["status"] == "queued" and rec["attempts"] == 1, rec
    assert "died during pretrain" in rec["note"]
    assert not store.run_dir(run_key(cfg)).exists()
    assert _tmp_runs() == []  # the half-assembled folder was removed
    assert not any(store.cache_root().rglob("checkpoint.pt"))

    start()  # the next worker finishes it
    rec = wait_status(job, ("done", "failed", "cancelled"), timeout=120)
    assert rec["status"] == "done" and rec["attempts"] == 2, rec
    res = store.load_results(run_key(cfg))  # verifies every file's hash
    assert res is not None and set(res["methods"]) == {"before"}
    assert jobs.submit(cfg) == job and jobs.status(job)["status"] == "done"  # resubmission


def test_ctrl_c_stops_worker_and_requeues_its_job(workers):
    start = workers
    job = jobs.submit(gan_cfg(steps=100_000))
    w = start()
    wait_for(lambda: (p := jobs.status(job)["progress"])["stage"] == "pretrain" and p["step"] >= 10,
             60, "pretraining to be under way")
    w.send_signal(signal.SIGINT)
    assert w.wait(timeout=15) == 0
    rec = jobs.status(job)
    assert rec["status"] == "queued" and rec["attempts"] == 0 and "stopped" in rec["note"]
    assert _tmp_runs() == [] and not workerproc.worker_alive()
    assert workerproc.workers(alive_only=False) == []  # it unregistered on the way out


def test_worker_exits_when_idle():
    out = _run_cli("worker", "--device", "cpu", "--threads", "1", "--max-idle", "0.5")
    assert out.returncode == 0, out.stderr
    assert "stopped after 0 job(s)" in out.stderr
    assert workerproc.workers(alive_only=False) == []


def _as_dead_running(job: str, attempts: int = 1) -> None:
    """Make a queued job look claimed by a worker on this host that has since died."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def upd(r: dict) -> dict:
        r.update(status="running", attempts=attempts, started=time.time(), heartbeat=time.time(),
                 worker={"id": "z" * 32, "pid": dead.pid, "host": workerproc.HOST,
                         "pid_space": workerproc.PID_SPACE},
                 progress={"stage": "pretrain", "step": 3, "total": 20, "eta_s": 1.0})
        return r

    jobs.records().update(job, upd)


def test_reads_only_read():
    """status / list_jobs / board / queue_counts never recover, re-send or clean: a Run tab
    polling every second must not write."""
    dead_job = jobs.submit(fast_cfg(seed=0))
    _as_dead_running(dead_job)
    orphan = jobs.submit(fast_cfg(seed=1))  # queued, its message "never sent", long ago
    jobs.records().update(orphan, lambda r: dict(r, enqueued=None, created=r["created"] - 60))
    tmp = store.runs_dir() / f".tmp-x-{workerproc.HOST}-999999999-abcd1234"  # a dead pid's folder
    tmp.mkdir(parents=True)
    files = [jobstore.jobs_dir() / n for n in ("jobs.db", "jobs.db-wal")]
    before_docs = {r["id"]: r for r in jobs.records().list(10)}
    pending = jobqueue.get_huey().pending_count()

    def stat() -> list:
        return [(f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else None for f in files]

    def boom(*a, **k):
        raise AssertionError("a read ran recover()")

    stamp = stat()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs, "recover", boom)
        mp.setattr(jobqueue, "send", boom)
        for _ in range(3):
            assert jobs.status(dead_job)["worker_gone"] is True
            assert [r["id"] for r in jobs.list_jobs()] == [dead_job, orphan]  # newest first
            listed, followed = jobs.board([orphan, "not-an-id", "f" * 32], limit=1)
            assert [r["id"] for r in listed] == [dead_job] and list(followed) == [orphan]
            assert jobs.queue_counts() == {"queued": 1, "running": 1}
            assert workerproc.workers() == [] and not workerproc.worker_alive()
    assert {r["id"]: r for r in jobs.records().list(10)} == before_docs
    assert jobqueue.get_huey().pending_count() == pending and tmp.is_dir()
    assert stat() == stamp  # not one write to the job store
    assert sorted(jobs.recover()) == sorted([dead_job, orphan])  # the housekeeping pass
    assert jobs.status(dead_job)["status"] == "queued" and not tmp.exists()


def test_board_is_one_read_of_newest_and_followed():
    ids = [jobs.submit(fast_cfg(seed=s)) for s in range(4)]
    listed, followed = jobs.board([ids[0], ids[0], ids[3]], limit=2)
    assert [r["id"] for r in listed] == [ids[3], ids[2]]
    assert list(followed) == [ids[0], ids[3]]  # a followed job older than the listing too
    assert jobs.board([], limit=0) == ([], {})


def test_visitor_caps_followers_and_cancel_rights():
    lim = (3, 5)
    mine = [jobs.submit(fast_cfg(seed=s), visitor="ann", limits=lim) for s in range(3)]
    with pytest.raises(jobs.QueueFull, match="you have 3 jobs queued or running, the limit "
                                             "per visitor is 3"):
        jobs.submit(fast_cfg(seed=3), visitor="ann", limits=lim)
    assert len(jobs.list_jobs()) == 3  # nothing was queued
    # Following a job that exists is never refused, and adds no job.
    assert jobs.submit(fast_cfg(seed=0), visitor="bob", limits=lim) == mine[0]
    assert jobs.submit(fast_cfg(seed=0), visitor="bob", limits=lim) == mine[0]
    assert jobs.status(mine[0])["followers"] == ["ann", "bob"]
    assert jobs.status(mine[0])["owner"] == "ann"
    jobs.submit(fast_cfg(seed=10), visitor="bob", limits=lim)
    jobs.submit(fast_cfg(seed=11), visitor="cy", limits=lim)
    with pytest.raises(jobs.QueueFull, match="the queue is full: 5 jobs are queued or running, "
                                             "the limit for this app is 5"):
        jobs.submit(fast_cfg(seed=12), visitor="dee", limits=lim)
    assert jobs.submit(fast_cfg(seed=13)) != mine[0]  # the CLI / admin: no limits

    # A shared job: no visitor may cancel it, the admin (visitor=None) may.
    for who in ("ann", "bob"):
        with pytest.raises(jobs.NotAllowed, match="followed by 1 other; only the person"):
            jobs.cancel(mine[0], visitor=who)
    assert jobs.status(mine[0])["status"] == "queued"
    assert jobs.cancel(mine[1], visitor="ann")["status"] == "cancelled"  # her own, unshared
    jobs.follow(mine[2], "eve")  # opened through its ?job= link
    jobs.follow(mine[2], "eve")  # twice: recorded once
    assert jobs.status(mine[2])["followers"] == ["ann", "eve"]
    with pytest.raises(jobs.NotAllowed):
        jobs.cancel(mine[2], visitor="ann")
    cli_job = jobs.submit(fast_cfg(seed=14))  # the CLI's (or the admin's) job
    jobs.follow(cli_job, "eve")
    with pytest.raises(jobs.NotAllowed, match="followed by 1 other"):
        jobs.cancel(cli_job, visitor="eve")  # its submitter counts as a follower
    assert jobs.cancel(mine[0])["status"] == "cancelled"
    with pytest.raises(jobs.JobError, match="no job"):
        jobs.follow("f" * 32, "eve")
    # The cap counts active jobs only: ann has one left, so two more fit.
    jobs.submit(fast_cfg(seed=20), visitor="ann", limits=(3, None))
    jobs.submit(fast_cfg(seed=21), visitor="ann", limits=(3, None))
    with pytest.raises(jobs.QueueFull):
        jobs.submit(fast_cfg(seed=22), visitor="ann", limits=(3, None))


def test_idle_exit_rechecks_the_queue(monkeypatch):
    """A worker about to exit idle unregisters, then looks at the queue: a job that arrived
    in between keeps it (its submitter saw a live worker and started none)."""
    from xdd.jobs import worker

    st = worker.WorkerState(device="cpu")
    st.registered.set()
    st.beat()
    assert [w["id"] for w in workerproc.workers()] == [st.id]

    class Huey:
        n = 1

        def pending_count(self):
            assert workerproc.workers() == []  # already unregistered when it looks
            return self.n

    assert worker._retire(st, Huey()) is False
    assert [w["id"] for w in workerproc.workers()] == [st.id]  # registered again
    Huey.n = 0
    assert worker._retire(st, Huey()) is True
    st.beat()  # a late heartbeat from its thread does not register it again
    assert workerproc.workers(alive_only=False) == []


def test_auto_worker_idle_setting(monkeypatch):
    assert workerproc.auto_max_idle() == workerproc.AUTO_WORKER_MAX_IDLE_S <= 60
    monkeypatch.setenv("XDD_WORKER_MAX_IDLE", "5")
    assert workerproc.auto_max_idle() == 5.0
    monkeypatch.setenv("XDD_WORKER_MAX_IDLE", "soon")
    with pytest.raises(jobs.JobError, match="XDD_WORKER_MAX_IDLE='soon' is not a number"):
        workerproc.auto_max_idle()


def test_next_worker_recovers_a_dead_workers_job(workers):
    job = jobs.submit(fast_cfg(seed=30))
    _as_dead_running(job)
    assert jobs.status(job)["status"] == "running"  # nobody reads it back to life
    workers()  # its start-up recovery pass re-queues the job, then it runs it
    rec = wait_status(job, ("done", "failed", "cancelled"), timeout=90)
    assert rec["status"] == "done" and rec["attempts"] == 2, rec
    assert "died during pretrain" in rec["note"]


def test_auto_started_worker_exits_when_idle_and_next_submit_restarts_it():
    """ensure_worker()'s worker gives its memory back by exiting after max_idle seconds; the
    next submit starts a fresh one, which finishes the next job."""
    try:
        a = jobs.submit(fast_cfg(seed=40))
        assert workerproc.ensure_worker(max_idle=1.0)
        (w1,) = workerproc.workers()
        assert wait_status(a, ("done", "failed"))["status"] == "done"
        wait_for(lambda: not store.pid_alive(w1["pid"]), 60, "the idle worker to exit")
        assert workerproc.workers(alive_only=False) == [] and not workerproc.worker_alive()
        b = jobs.submit(fast_cfg(seed=41))
        assert workerproc.ensure_worker(max_idle=1.0)
        (w2,) = workerproc.workers()
        assert w2["pid"] != w1["pid"]
        assert wait_status(b, ("done", "failed"))["status"] == "done"
        wait_for(lambda: not store.pid_alive(w2["pid"]), 60, "the second worker to exit")
    finally:
        for p in workerproc._CHILDREN:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        workerproc._CHILDREN.clear()


def test_dead_worker_job_fails_after_max_attempts():
    """A job that kills its worker every time is not re-queued forever."""
    job = jobs.submit(fast_cfg())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def as_running(r: dict) -> dict:
        r.update(status="running", attempts=jobs.MAX_ATTEMPTS, started=time.time(),
                 heartbeat=time.time(), worker={"id": "x" * 32, "pid": dead.pid, "host": workerproc.HOST,
                                      "pid_space": workerproc.PID_SPACE})
        return r

    jobs.records().update(job, as_running)
    rec = jobs.status(job)  # a read only reads: the dead holder is flagged, nothing changes
    assert rec["status"] == "running" and rec["worker_gone"] is True
    assert jobs.records().get(job)["status"] == "running"
    assert jobs.recover() == [job]  # what a worker's housekeeping does
    rec = jobs.status(job)
    assert rec["status"] == "failed" and f"died {jobs.MAX_ATTEMPTS} times" in rec["error"]
    assert rec["finished"] is not None

    # A pending cancel of a job whose worker died ends as cancelled, not re-queued.
    job2 = jobs.submit(fast_cfg(seed=1))
    jobs.records().update(job2, lambda r: dict(as_running(r), attempts=1, cancel_requested=True))
    assert jobs.recover() == [job2] and jobs.status(job2)["status"] == "cancelled"

    # A worker on another machine is judged by its heartbeat alone.
    job3 = jobs.submit(fast_cfg(seed=2))
    elsewhere = {"id": "y" * 32, "pid": 1, "host": "gpu-box", "pid_space": "gpu-box/0/pid:[1]"}
    jobs.records().update(job3, lambda r: dict(as_running(r), attempts=1, worker=elsewhere))
    assert jobs.recover() == [] and jobs.status(job3)["status"] == "running"  # fresh: left alone
    assert jobs.status(job3)["worker_gone"] is False
    assert jobs.recover(now=time.time() + jobs.STALE_REMOTE_S + 1) == [job3]
    rec = jobs.status(job3)
    assert rec["status"] == "queued" and "pid 1 on gpu-box" in rec["note"]


def test_client_restart_finds_running_job(workers):
    cfg = gan_cfg(steps=100_000, seed=1)
    # A client submits, starts a detached worker, sees the job running and dies (SIGKILL).
    client = _py(
        "import os, signal, sys, time\n"
        "from xdd.jobs import api as jobs, workerproc\nfrom xdd.core.config import preset\n"
        "cfg = preset('tiny', ood_digit=4, seed=1, shots=2, methods=('before',),"
        " **{'pretrain.steps': 100_000, 'projection.n_samples': 0})\n"
        "job = jobs.submit(cfg)\nassert workerproc.ensure_worker()\n"
        "while jobs.status(job)['status'] != 'running': time.sleep(0.1)\n"
        "print(job, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert client.returncode == -signal.SIGKILL, client.stderr
    job = client.stdout.strip()
    assert jobs.JOB_ID.fullmatch(job)

    # The worker outlived its parent (own session) and a new process finds the job.
    (w,) = workerproc.workers()
    assert os.getsid(w["pid"]) == w["pid"]
    reader = _py("import json, sys\nfrom xdd.jobs import api as jobs\n"
                 "print(json.dumps(jobs.status(sys.argv[1])))", job)
    assert reader.returncode == 0, reader.stderr
    seen = json.loads(reader.stdout)
    assert seen["status"] == "running" and seen["worker"]["pid"] == w["pid"]
    assert seen["progress"]["stage"] in ("starting", "data", "pretrain")
    assert jobs.submit(cfg) == job  # found again by config, too
    assert workerproc.ensure_worker() and len(workerproc.workers()) == 1  # no second worker
    # ... and it keeps running: its progress moves on.
    wait_for(lambda: (p := jobs.status(job)["progress"])["stage"] == "pretrain"
             and p["step"] > max(seen["progress"]["step"], 10), 60, "pretraining to advance")
    assert jobs.status(job)["status"] == "running"
    jobs.cancel(job)
    assert wait_status(job, ("cancelled", "failed", "done"), timeout=30)["status"] == "cancelled"


_SUBMITTER = """
import json, os, sys, time
from pathlib import Path
from xdd.jobs import api as jobs, workerproc
from xdd.core.config import preset
go, seeds = Path(sys.argv[1]), json.loads(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
out = []
for s in seeds:
    cfg = preset('tiny', ood_digit=3, seed=s, shots=2, methods=('pixels',),
                 **{'projection.n_samples': 0})
    out.append([s, jobs.submit(cfg)])
assert workerproc.ensure_worker()
print(json.dumps(out))
"""


def test_twenty_concurrent_submissions(workers, tmp_path):
    # 4 processes x 5 submissions, 6 distinct configs, every config from at least 2 processes.
    plan = [[0, 1, 2, 3, 4], [5, 0, 1, 2, 3], [4, 5, 0, 1, 2], [3, 4, 5, 0, 1]]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _SUBMITTER, str(go), json.dumps(seeds)],
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seeds in plan]
    time.sleep(1.0)  # let them import and wait at the gate
    go.touch()
    ids: dict[int, set[str]] = {}
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        for seed, job_id in json.loads(out):
            ids.setdefault(seed, set()).add(job_id)
    assert sum(len(s) for s in plan) == 20
    assert sorted(ids) == [0, 1, 2, 3, 4, 5]
    assert all(len(v) == 1 for v in ids.values()), ids  # one job per distinct config
    for seed, (job_id,) in ids.items():
        rec = wait_status(job_id, ("done", "failed", "cancelled"), timeout=120)
        assert rec["status"] == "done", rec
        assert rec["config"]["seed"] == seed
        assert rec["cached"] is False and rec["attempts"] == 1  # computed once, by a worker
        assert store.load_results(rec["run_key"]) is not None
    assert len(jobs.list_jobs()) == 6  # nothing lost, nothing doubled
    assert len(workerproc.workers()) == 1  # four racing ensure_worker() calls started one worker


# ---------------------------------------------------------------- Redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path, monkeypatch):
    """A private redis-server on a free loopback port, stopped at teardown."""
    exe = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                           if Path("/usr/bin/redis-server").exists() else None)
    if exe is None:
        pytest.fail("redis-server is not installed; the Redis-backed queue test needs it "
                    "(`make sysdeps`, or apt-get install redis-server)")
    port = _free_port()
    d = tmp_path / "redis"
    d.mkdir()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        wait_for(lambda: proc.poll() is not None or _ping(client), 20, "redis-server to answer")
        assert proc.poll() is None, "redis-server exited at start"
        monkeypatch.setenv("XDD_QUEUE", url)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        jobstore_redis._REDIS.pop(url, None)


def _ping(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_redis_queue_end_to_end(redis_url, workers, tmp_path):
    import redis

    start = workers
    assert jobs.queue_url() == redis_url
    a = jobs.submit(fast_cfg(seed=21))
    assert jobs.submit(fast_cfg(seed=21)) == a
    bad = jobs.submit(fast_cfg(seed=22, **{"data.root": str(tmp_path / "nope")}))
    assert jobs.queue_counts() == {"queued": 2, "running": 0}
    w = start()
    ra = wait_status(a, ("done", "failed", "cancelled"))
    rb = wait_status(bad, ("done", "failed", "cancelled"))
    assert ra["status"] == "done" and ra["device"].startswith("cpu (1 thread"), ra
    assert rb["status"] == "failed" and "data folder" in rb["error"]
    assert store.load_results(ra["run_key"]) is not None
    assert jobs.submit(fast_cfg(seed=21)) == a  # cached: the finished job

    # Records live in Redis (shared by every machine on the queue), not in the SQLite file.
    assert not (jobstore.jobs_dir() / "jobs.db").exists()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert json.loads(r.get(f"{jobstore.QUEUE_NAME}:job:{a}"))["status"] == "done"
    assert {x["id"] for x in jobs.list_jobs()} == {a, bad}
    reader = _py("import sys\nfrom xdd.jobs import api as jobs\nprint(jobs.status(sys.argv[1])['status'])", a)
    assert reader.stdout.strip() == "done", reader.stderr
    with pytest.raises(jobs.JobError, match="no job"):
        jobs.status("e" * 32)

    assert workerproc.worker_alive()
    os.kill(w.pid, signal.SIGKILL)
    w.wait(timeout=10)
    assert not workerproc.worker_alive()


def test_bad_queue_url(monkeypatch):
    monkeypatch.setenv("XDD_QUEUE", "http://example.org/queue")
    with pytest.raises(jobs.JobError, match="XDD_QUEUE=.*not a Redis URL"):
        jobs.submit(fast_cfg())
    monkeypatch.setenv("XDD_QUEUE", f"redis://127.0.0.1:{_free_port()}/0")  # nobody listens
    t0 = time.monotonic()
    with pytest.raises(jobs.JobError, match="Redis queue redis://127.0.0.1:.* unreachable"):
        jobs.submit(fast_cfg())
    with pytest.raises(jobs.JobError, match="unreachable"):
        workerproc.worker_alive()
    assert time.monotonic() - t0 < 20


def test_worker_started_for_a_job_runs_it_before_compiling_umap(monkeypatch) -> None:
    """UMAP's compilation (~25 s, mostly under the GIL) must not compete with the job a worker
    was started for: it begins the first time the queue is empty."""
    import xdd.core.projection
    from xdd.jobs import worker

    events: list[str] = []
    monkeypatch.setenv("XDD_WARMUP", "1")
    monkeypatch.setattr(xdd.core.projection, "warm_up", lambda: events.append("warm-up") or 0.0)
    monkeypatch.setattr(jobqueue, "_HANDLER", [lambda job_id: events.append(f"job {job_id}")])
    job_id = jobs.submit(preset("tiny", ood_digit=4))
    monkeypatch.setattr(worker, "IDLE_POLL_S", 0.05)
    assert worker.run_worker(device="cpu", threads=1, max_idle=0.5) == 1
    deadline = time.time() + 5
    while "warm-up" not in events and time.time() < deadline:
        time.sleep(0.05)
    assert events == [f"job {job_id}", "warm-up"]


def test_a_job_runs_with_the_workers_thread_count_for_blas_too(monkeypatch) -> None:
    """numpy's / scikit-learn's pools take every core by default; inside a job they get the
    worker's thread count, so the job's scoring threads do not oversubscribe the CPU."""
    import xdd.pipeline.experiment
    from threadpoolctl import threadpool_info, threadpool_limits

    from xdd.jobs import worker

    seen: list[list[int]] = []
    job_id = jobs.submit(preset("tiny", ood_digit=2))
    rk = jobs.status(job_id)["run_key"]

    def fake_run(cfg, device, progress, force=False):
        seen.append([p["num_threads"] for p in threadpool_info()])
        return {"run_key": rk}

    # the run's body is replaced; run_experiment itself (which sets the cap) still runs
    monkeypatch.setattr(xdd.pipeline.experiment, "_run", fake_run)
    monkeypatch.setattr(worker, "IDLE_POLL_S", 0.05)
    outer = threadpool_limits(limits=2)  # the libraries' default on a 2-core machine
    try:
        assert worker.run_worker(device="cpu", threads=1, once=True) == 1
    finally:
        outer.restore_original_limits()
    assert jobs.status(job_id)["status"] == "done"
    assert len(seen) == 1 and seen[0] and all(n == 1 for n in seen[0])


def test_a_job_run_in_this_process_after_a_worker_stopped_here_runs(monkeypatch) -> None:
    """run_worker leaves no stopped state behind: a run_job in the same process afterwards
    (as the app tests do) runs its job instead of reading the old worker's stop as a Ctrl-C
    and putting the job back on the queue."""
    import xdd.pipeline.experiment

    from xdd.jobs import worker

    def fake_run(cfg, device, progress, force=False):
        return {"run_key": run_key(cfg)}

    monkeypatch.setattr(xdd.pipeline.experiment, "_run", fake_run)
    monkeypatch.setattr(worker, "IDLE_POLL_S", 0.05)
    first = jobs.submit(preset("tiny", ood_digit=2))
    assert worker.run_worker(device="cpu", threads=1, once=True) == 1
    assert jobs.status(first)["status"] == "done"
    later = jobs.submit(preset("tiny", ood_digit=5))
    worker.run_job(later)
    assert jobs.status(later)["status"] == "done"

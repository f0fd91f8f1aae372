"""The job queue: runs go to a background worker process; any process can follow them.

A job is one :class:`~xdd.config.RunConfig` to compute with
:func:`xdd.experiment.run_experiment`.  Two things are stored for it:

* a **message** on a huey queue (``SqliteHuey`` in ``cache/jobs/queue.db`` by default, a
  ``RedisHuey`` when ``XDD_QUEUE=redis://host:port/db``) that wakes a worker up, and
* a **job record** (status, config, progress, timestamps, device, error, run key) that any
  process can read: a SQLite database ``cache/jobs/jobs.db`` (WAL, busy timeout) with the
  SQLite queue, or Redis keys next to the queue with ``XDD_QUEUE``, so that workers on other
  machines and the app share one view.

The record is the source of truth; the message only carries the job id.  A worker *claims*
a job by an atomic queued -> running transition, so a duplicate message is harmless, and
recovery may re-send messages freely.  Workers and running jobs write heartbeats; a job
whose worker died (SIGKILL, power loss) is re-queued by :func:`recover`, which runs at a
worker's start and in its housekeeping (and from ``python -m xdd jobs --recover``), or marked
failed after :data:`MAX_ATTEMPTS` deaths.  Reads (:func:`status`, :func:`list_jobs`,
:func:`board`, :func:`queue_counts`) only read.  docs/JOBS.md tells the whole story.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from . import store
from .config import RunConfig, run_key, to_dict, validate
from .fmt import one_line
from .jobrecord import ACTIVE
from .jobstore import (  # noqa: F401  (re-exported: the API's errors and settings)
    QUEUE_NAME, WORKER_STALE_S, JobError, NotAllowed, QueueFull, describe_queue, jobs_dir,
    queue_url, records, store_errors)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
JOB_ID = re.compile(r"[0-9a-f]{32}")
HOST = socket.gethostname()


def _pid_space() -> str:
    """Where a pid means this process table: the kernel's boot id and our pid namespace.
    Two machines (or containers) with the same hostname still differ here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return HOST
    return f"{HOST}/{boot}/{ns}"


PID_SPACE = _pid_space()

HEARTBEAT_S = 2.0  # how often a worker and its running job write a heartbeat
# A heartbeat older than this means the process is gone.  On this host a dead pid is
# noticed at once and the long limit only catches a hung process; a worker on another host
# can only be judged by its heartbeat.
STALE_LOCAL_S = 600.0
STALE_REMOTE_S = 60.0
MAX_ATTEMPTS = 3  # a job whose worker died this many times is marked failed, not re-queued
ORPHAN_S = 5.0  # a queued job with no message this old is sent again (see recover())
# A worker started by ensure_worker() exits after this long without work, so that an idle
# app holds no trained-model memory (~1.6 GiB RSS after a quick run); the next submit starts
# a fresh one (docs/PERFORMANCE.md, "Classroom").  XDD_WORKER_MAX_IDLE overrides it.
AUTO_WORKER_MAX_IDLE_S = 30.0
# Admission limits (submit(..., limits=...)): what one visitor may have queued or running, and
# the queue as a whole.  The app applies them to visitors; the CLI and the admin are exempt.
MAX_ACTIVE_PER_VISITOR = 3
MAX_ACTIVE_TOTAL = 20


# ---------------------------------------------------------------- small helpers


def check_id(job_id: Any) -> str:
    """Job ids are uuid4 hex; anything else (a path, '..', '') is refused before any lookup."""
    if not (isinstance(job_id, str) and JOB_ID.fullmatch(job_id)):
        raise JobError(f"malformed job id {job_id!r}: expected 32 lowercase hexadecimal "
                       "characters, as printed by `python -m xdd submit`")
    return job_id


pid_alive = store.pid_alive  # re-exported: tests and the worker use jobs.pid_alive


def _holder_dead(rec: dict[str, Any], now: float) -> bool:
    """Is the process that claimed this running job gone?"""
    w = rec.get("worker") or {}
    age = now - (rec.get("heartbeat") or rec.get("started") or now)
    if w.get("pid_space") == PID_SPACE:
        return not pid_alive(w.get("pid")) or age > STALE_LOCAL_S
    return age > STALE_REMOTE_S


# ---------------------------------------------------------------- the huey queue

_HUEY: dict[str, tuple[Any, Any]] = {}
# What the "run_job" task runs: set by xdd.worker when it is imported (a worker process), so
# that this module, which only sends messages, never imports the worker.
_HANDLER: list[Callable[[str], Any]] = []


def set_job_handler(fn: Callable[[str], Any]) -> None:
    """The function a consumed "run_job" message calls with its job id (xdd.worker.run_job)."""
    _HANDLER[:] = [fn]


def _run_job_task(job_id: str) -> Any:
    if not _HANDLER:
        raise JobError("this process is not a worker: no job handler is registered")
    return _HANDLER[0](job_id)


def _huey_and_task() -> tuple[Any, Any]:
    """The huey instance for the current settings and the registered ``run_job`` task.

    One instance per queue location, built on first use, because ``XDD_CACHE`` and
    ``XDD_QUEUE`` are read at call time (tests point them elsewhere per test).
    """
    from huey import RedisHuey, SqliteHuey

    url = queue_url()
    where = url or str(jobs_dir() / "queue.db")
    if where not in _HUEY:
        if url:
            h = RedisHuey(QUEUE_NAME, url=url, results=False, blocking=True, read_timeout=1)
        else:
            jobs_dir().mkdir(parents=True, exist_ok=True)
            h = SqliteHuey(QUEUE_NAME, filename=where, results=False, journal_mode="wal",
                           timeout=30, fsync=True)
        _HUEY[where] = (h, h.task(name="run_job")(_run_job_task))
    return _HUEY[where]


def get_huey():
    return _huey_and_task()[0]


def send(job_id: str) -> None:
    """Put a message for the job on the queue and note when; a duplicate is harmless."""
    _huey_and_task()[1](job_id)

    def mark(r: dict) -> dict | None:
        if r["status"] != "queued":
            return None
        r["enqueued"] = time.time()
        return r

    records().update(job_id, mark)


# ---------------------------------------------------------------- the API


def _new_record(cfg: RunConfig, rk: str, cached: bool, visitor: str | None = None
                ) -> dict[str, Any]:
    now = time.time()
    rec = {
        "id": uuid.uuid4().hex, "status": "queued", "config": to_dict(cfg), "run_key": rk,
        "created": now, "started": None, "finished": None,
        "progress": {"stage": "queued", "step": 0, "total": 0, "eta_s": None},
        "device": None, "error": None, "cancel_requested": False, "attempts": 0,
        "cached": False, "worker": None, "heartbeat": None, "enqueued": None, "note": None,
        # Who asked for it and who follows it (app visitors; None = the CLI or the admin):
        # a visitor may cancel a job only while no one else follows it.
        "owner": visitor, "followers": [visitor] if visitor else [],
    }
    if cached:  # the result is in the cache already: a finished job, no message
        res = store.read_json(store.run_dir(rk) / "results.json") or {}
        rec.update(status="done", started=now, finished=now, cached=True,
                   device=res.get("device"),
                   progress={"stage": "done", "step": 1, "total": 1, "eta_s": 0.0})
    return rec


def _admission(visitor: str | None, limits: tuple[int | None, int | None] | None
               ) -> Callable[[list[dict]], None] | None:
    """The check run (under the store's write lock) before a new job is queued."""
    if not limits:
        return None
    per_visitor, total = limits

    def admit(active: list[dict]) -> None:
        if total is not None and len(active) >= total:
            raise QueueFull(f"the queue is full: {len(active)} jobs are queued or running, "
                            f"the limit for this app is {total}. Try again when some have "
                            "finished.")
        if visitor is not None and per_visitor is not None:
            mine = sum(r.get("owner") == visitor for r in active)
            if mine >= per_visitor:
                raise QueueFull(f"you have {mine} jobs queued or running, the limit per "
                                f"visitor is {per_visitor}. Wait until one has finished "
                                "(or cancel one), then submit again.")
    return admit


@store_errors
def submit(cfg: RunConfig, visitor: str | None = None,
           limits: tuple[int | None, int | None] | None = None) -> str:
    """Queue a run and return its job id.

    A config whose result is cached gives a finished job at once (the same one on every
    call); a config already queued or running gives that job's id (and ``visitor``, when
    given, becomes one of its followers).  ``limits = (per_visitor, total)`` caps the active
    jobs a visitor owns and the active jobs in all; a new job over either raises
    :class:`QueueFull` and queues nothing.  Following an existing job is never refused.
    """
    from .experiment import cached_results

    validate(cfg)
    rk = run_key(cfg)
    rec, created = records().create_or_get(
        rk, lambda is_cached: _new_record(cfg, rk, is_cached, visitor),
        lambda: cached_results(cfg) is not None, _admission(visitor, limits))
    if created and rec["status"] == "queued":
        try:
            send(rec["id"])
        except Exception as exc:
            _finish_failed(rec["id"], f"could not put the job on the queue: {one_line(exc)}")
            raise JobError(f"could not put the job on the queue ({describe_queue()}): "
                           f"{one_line(exc)}") from exc
    elif not created and visitor and visitor not in (rec.get("followers") or []):
        rec = follow(rec["id"], visitor)
    return rec["id"]


def _finish_failed(job_id: str, error: str) -> None:
    def fail(r: dict) -> dict | None:
        if r["status"] not in ACTIVE:
            return None
        r.update(status="failed", finished=time.time(), error=error)
        return r

    records().update(job_id, fail)


def _unknown(job_id: str) -> JobError:
    return JobError(f"no job {job_id!r} in the queue at {describe_queue()} "
                    "(see `python -m xdd jobs`)")


def _annotate(rec: dict[str, Any], now: float) -> dict[str, Any]:
    """Mark a running job whose worker is gone (read-only: :func:`recover` settles it)."""
    if rec.get("status") == "running":
        rec["worker_gone"] = _holder_dead(rec, now)
    return rec


@store_errors
def status(job_id: str) -> dict[str, Any]:
    """The job's record (read only).  A running job whose worker is gone says
    ``worker_gone: True``; the next worker's recovery pass re-queues it."""
    check_id(job_id)
    rec = records().get(job_id)
    if rec is None:
        raise _unknown(job_id)
    return _annotate(rec, time.time())


@store_errors
def list_jobs(limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` job records, newest first (read only)."""
    now = time.time()
    return [_annotate(r, now) for r in records().list(max(0, int(limit)))]


@store_errors
def board(ids: list[str], limit: int = 50) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """What a Run tab shows on one refresh, in one read of the store: the newest ``limit``
    records and the records of the followed ``ids`` (malformed or unknown ids are absent
    from the second; check them with :func:`check_id` / :func:`status`)."""
    ok = [i for i in dict.fromkeys(ids) if isinstance(i, str) and JOB_ID.fullmatch(i)]
    listed, followed = records().board(ok, max(0, int(limit)))
    now = time.time()
    return [_annotate(r, now) for r in listed], {i: _annotate(r, now) for i, r in followed.items()}


@store_errors
def queue_counts() -> dict[str, int]:
    act = records().active()
    return {s: sum(r["status"] == s for r in act) for s in ACTIVE}


@store_errors
def follow(job_id: str, visitor: str) -> dict[str, Any]:
    """Record that ``visitor`` follows the job (one write, once per visitor and job)."""
    check_id(job_id)

    def add(r: dict) -> dict | None:
        fol = list(r.get("followers") or [])
        if visitor in fol:
            return None
        r["followers"] = fol + [visitor]
        return r

    rec, _ = records().update(job_id, add)
    if rec is None:
        raise _unknown(job_id)
    return rec


def others_following(rec: dict[str, Any], visitor: str | None) -> int:
    """How many followers of the job are not ``visitor``; a job submitted without a visitor
    (the CLI, the app's admin) counts its submitter as one."""
    others = sum(f != visitor for f in dict.fromkeys(rec.get("followers") or []))
    return others + (rec.get("owner") is None and visitor is not None)


@store_errors
def cancel(job_id: str, visitor: str | None = None) -> dict[str, Any]:
    """Cancel a job.  A queued job is cancelled at once; a running one keeps the status
    "running" with ``cancel_requested`` until its worker stops it (within seconds, at its
    next progress report), then says "cancelled".  A finished job is left as it is.

    ``visitor=None`` (the CLI, the app's admin) may cancel any job; a visitor only a job that
    no one else follows (checked in the same atomic update), else :class:`NotAllowed`.
    """
    check_id(job_id)
    refused: dict[str, int] = {}

    def req(r: dict) -> dict | None:
        if visitor is not None and r["status"] in ACTIVE:
            n = others_following(r, visitor)
            if n:
                refused["n"] = n
                return None
        if r["status"] == "queued":
            r.update(status="cancelled", cancel_requested=True, finished=time.time(),
                     progress=dict(r["progress"], stage="cancelled", eta_s=None))
            return r
        if r["status"] == "running" and not r["cancel_requested"]:
            r["cancel_requested"] = True
            return r
        return None

    rec, _ = records().update(job_id, req)
    if rec is None:
        raise _unknown(job_id)
    if refused:
        n = refused["n"]
        raise NotAllowed(f"job {job_id} is followed by {n} other{'s' if n > 1 else ''}; "
                         "only the person who started the app can cancel it")
    return _annotate(rec, time.time())


@store_errors
def recover(now: float | None = None) -> list[str]:
    """Settle jobs that no live process will finish; returns the ids it touched.

    Run by workers (at start and in their idle housekeeping) and by
    ``python -m xdd jobs --recover``; never by a read.

    * running, but its worker is dead (pid gone on this host, or heartbeat stale):
      re-queued and sent again, or failed after MAX_ATTEMPTS, or cancelled if a cancel
      was pending;
    * queued for more than ORPHAN_S with no message sent (the submitter died in between):
      the message is sent.
    Every transition is a conditional update, so several processes recovering at once
    re-queue a job once.
    """
    now = time.time() if now is None else now
    recs = records()
    touched: list[str] = []
    for rec in recs.active():
        if rec["status"] == "running" and _holder_dead(rec, now):
            holder = rec.get("worker")

            def settle(r: dict, holder=holder) -> dict | None:
                if r["status"] != "running" or r.get("worker") != holder:
                    return None
                w = holder or {}
                who = f"pid {w.get('pid')} on {w.get('host')}"
                if r.get("cancel_requested"):
                    r.update(status="cancelled", finished=now,
                             note=f"its worker ({who}) died while the cancel was pending")
                elif r.get("attempts", 0) >= MAX_ATTEMPTS:
                    r.update(status="failed", finished=now,
                             error=f"the worker running this job died {r['attempts']} times "
                                   f"(last: {who}); not retried")
                else:
                    r.update(status="queued", worker=None, heartbeat=None, enqueued=None,
                             started=None, device=None,
                             progress={"stage": "queued", "step": 0, "total": 0, "eta_s": None},
                             note=f"re-queued: its worker ({who}) died during "
                                  f"{r['progress'].get('stage')}")
                return r

            new, changed = recs.update(rec["id"], settle)
            if changed:
                touched.append(rec["id"])
                if new and new["status"] == "queued":
                    send(rec["id"])
        elif (rec["status"] == "queued" and rec.get("enqueued") is None
              and now - rec["created"] > ORPHAN_S):
            send(rec["id"])
            touched.append(rec["id"])
    if touched:
        clean_tmp()  # the dead worker's half-assembled run folder
    return touched


def clean_tmp() -> None:
    """Remove run folders half-written by dead processes -- with the local queue only.

    ``store.clean_tmp`` judges a folder by the pid in its name on *this* host; with a Redis
    queue the cache may be shared by several machines, where that pid means nothing, so the
    folders are left alone (they are never loaded or listed, only wasted space).
    """
    if queue_url() is None:
        store.clean_tmp()


def resend_lost(now: float | None = None) -> list[str]:
    """Called by an idle worker whose queue is empty: queued jobs sent long ago must have
    lost their message (e.g. a worker stopped between taking it and claiming the job)."""
    now = time.time() if now is None else now
    out = []
    for rec in records().active():
        if (rec["status"] == "queued" and rec.get("enqueued") is not None
                and now - rec["enqueued"] > ORPHAN_S):
            send(rec["id"])
            out.append(rec["id"])
    return out


# ---------------------------------------------------------------- workers


@store_errors
def workers(alive_only: bool = True) -> list[dict[str, Any]]:
    """Registered workers (id, pid, host, device, started, heartbeat, job), newest beat first."""
    now = time.time()
    out = []
    for w in records().workers():
        fresh = now - w.get("heartbeat", 0) < WORKER_STALE_S
        alive = fresh and (w.get("pid_space") != PID_SPACE or pid_alive(w.get("pid")))
        if alive or not alive_only:
            out.append(dict(w, alive=alive))
    return out


@store_errors
def worker_alive() -> bool:
    """Is some worker consuming this queue (on this host: its pid lives; anywhere: its
    heartbeat is fresh)?  Correct right after a SIGKILL on this host."""
    _reap_children()
    return bool(workers())


_CHILDREN: list[subprocess.Popen] = []


def _reap_children() -> None:
    # Workers we started are our children; wait for dead ones so they do not linger as zombies.
    for p in list(_CHILDREN):
        if p.poll() is not None:
            _CHILDREN.remove(p)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# The worker the app starts yields the CPU to the app and its pages (a class of browsers on
# a 2-core laptop): on an otherwise idle machine a lower priority costs it nothing.
AUTO_WORKER_NICE = 10


def worker_command(device: str = "auto", threads: int | None = None,
                   max_idle: float | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "xdd", "worker", "--device", device,
           "--nice", str(AUTO_WORKER_NICE)]
    if threads:
        cmd += ["--threads", str(threads)]
    if max_idle is not None:
        cmd += ["--max-idle", str(max_idle)]
    return cmd


def start_worker(device: str = "auto", threads: int | None = None,
                 max_idle: float | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start a detached worker process (its own session: it outlives the caller).

    A fresh interpreter is started (never a fork of this one, which may hold CUDA state);
    it inherits XDD_CACHE / XDD_QUEUE, and its output goes to ``cache/jobs/worker.log``.
    """
    log = log or jobs_dir() / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    root = str(store.REPO_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log, "ab") as out:
        proc = subprocess.Popen(worker_command(device, threads, max_idle), cwd=root, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    _CHILDREN.append(proc)
    return proc


def auto_max_idle() -> float:
    """Idle seconds after which a worker started by :func:`ensure_worker` exits."""
    raw = os.environ.get("XDD_WORKER_MAX_IDLE", "").strip()
    if not raw:
        return AUTO_WORKER_MAX_IDLE_S
    try:
        val = float(raw)
    except ValueError:
        raise JobError(f"XDD_WORKER_MAX_IDLE={raw!r} is not a number of seconds") from None
    if not val >= 0:
        raise JobError(f"XDD_WORKER_MAX_IDLE={raw!r} is out of range; accepted: seconds >= 0")
    return val


@store_errors
def ensure_worker(timeout: float = 60.0, device: str = "auto",
                  max_idle: float | None = None) -> bool:
    """Start a worker if none is alive; True if one is alive afterwards.

    Safe when many processes call it at once: a file lock lets one of them start the worker
    and wait for it to register, while the others wait and then find it alive.  A worker
    started here exits after ``max_idle`` seconds without work (default
    :func:`auto_max_idle`, 30 s), so an idle app holds no model memory; the next submit
    starts a new one.  A worker that is about to exit unregisters first and then looks at
    the queue once more, so a job submitted in that moment is never stranded.
    """
    if max_idle is None:
        max_idle = auto_max_idle()
    if worker_alive():
        return True
    with _file_lock(jobs_dir() / "ensure.lock"):
        if worker_alive():
            return True
        proc = start_worker(device, max_idle=max_idle)
        store.atomic_write_json(jobs_dir() / "spawned.json",
                                {"pid": proc.pid, "started": time.time(), "host": HOST})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker_alive():
                return True
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    return worker_alive()

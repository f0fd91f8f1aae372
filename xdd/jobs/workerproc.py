"""Worker processes seen from outside: which are alive, and starting one when none is.

A worker registers a heartbeat in the job store (:mod:`xdd.jobs.worker` writes it); here it is
read (:func:`workers`, :func:`worker_alive`) and a detached worker is started
(:func:`start_worker`, :func:`ensure_worker`).  Also here: what a pid means on this host
(:data:`HOST`, :data:`PID_SPACE`), by which running workers and jobs are judged.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from xdd.storage import store
from xdd.jobs.store import WORKER_STALE_S, JobError, jobs_dir, records, store_errors

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

# A worker started by ensure_worker() exits after this long without work, so that an idle
# app holds no trained-model memory (~1.6 GiB RSS after a quick run); the next submit starts
# a fresh one (docs/PERFORMANCE.md, "Classroom").  XDD_WORKER_MAX_IDLE overrides it.
AUTO_WORKER_MAX_IDLE_S = 30.0
# The worker the app starts yields the CPU to the app and its pages (a class of browsers on
# a 2-core laptop): on an otherwise idle machine a lower priority costs it nothing.
AUTO_WORKER_NICE = 10


@store_errors
def workers(alive_only: bool = True) -> list[dict[str, Any]]:
    """Registered workers (id, pid, host, device, started, heartbeat, job), newest beat first."""
    now = time.time()
    out = []
    for w in records().workers():
        fresh = now - w.get("heartbeat", 0) < WORKER_STALE_S
        alive = fresh and (w.get("pid_space") != PID_SPACE or store.pid_alive(w.get("pid")))
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

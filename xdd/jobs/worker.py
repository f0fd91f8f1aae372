"""The worker process: takes jobs off the huey queue one at a time and runs them.

Start it with ``python -m xdd worker`` (foreground; Ctrl-C stops it and puts its running job
back on the queue) or let :func:`xdd.jobs.workerproc.ensure_worker` start a detached one.  One
worker runs one job at a time on one device; run one worker per GPU (``CUDA_VISIBLE_DEVICES``).

The task code (:func:`run_job`) only needs a job id: the record holds the config.  It claims
the record atomically, so a duplicated message never runs a job twice.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from xdd.jobs import queue as jobqueue
from xdd.jobs import record as jobrecord
from xdd.jobs import api as jobs
from xdd.core.fmt import one_line
from xdd.jobs.record import JobRecord, Progress
from xdd.jobs.store import describe_queue, queue_url, records, transition
from xdd.jobs.workerproc import HOST, PID_SPACE

log = logging.getLogger("xdd.jobs.worker")

PROGRESS_EVERY_S = 0.5  # record writes (and cancel checks) at most this often
IDLE_POLL_S = 0.5  # SQLite queue: how often an idle worker looks for a message
HOUSEKEEPING_S = 5.0  # an idle worker's recovery pass


class JobCancelled(Exception):
    """Raised from the progress callback when the job's cancel was requested."""


class JobLost(Exception):
    """Raised from the progress callback when another process has taken the job over
    (this worker was judged dead, e.g. after the machine slept)."""


@dataclass
class WorkerState:
    """What this process is as a worker; shared by the loop, run_job and the heartbeat."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    device: str = "auto"
    device_desc: str | None = None
    threads: int | None = None  # torch CPU threads, re-applied before every job
    started: float = field(default_factory=time.time)
    job: str | None = None
    in_job: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    # Cleared while the worker is unregistered on its way out (idle exit); the heartbeat
    # thread then writes nothing.  The lock keeps a beat from landing after the removal.
    registered: threading.Event = field(default_factory=threading.Event)
    beat_lock: threading.Lock = field(default_factory=threading.Lock)

    def beat(self) -> None:
        with self.beat_lock:
            if self.registered.is_set():
                records().beat(self.info())

    def unregister(self) -> None:
        with self.beat_lock:
            self.registered.clear()
            records().remove_worker(self.id)

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "pid": os.getpid(), "host": HOST,
                "pid_space": PID_SPACE, "device": self.device_desc,
                "started": self.started, "heartbeat": time.time(), "job": self.job,
                "queue": describe_queue()}


_STATE: WorkerState | None = None


def _state() -> WorkerState:
    """The worker state; also when run_job runs under a plain huey consumer."""
    global _STATE
    if _STATE is None:
        _STATE = WorkerState()
    return _STATE


def default_threads() -> int:
    """CPU threads for torch (xdd.core.device.worker_threads: the usable cores less one, at most
    8); the time estimates assume the same count."""
    from xdd.core.device import worker_threads

    return worker_threads()


class JobProgress:
    """The progress callback handed to run_experiment: writes stage/step/total/ETA to the
    record (throttled) and raises JobCancelled / JobLost so that the run stops."""

    def __init__(self, job_id: str, worker_id: str, every: float = PROGRESS_EVERY_S):
        self.job_id, self.worker_id, self.every = job_id, worker_id, every
        self.stage: str | None = None
        self.t_stage = self.last = 0.0
        self.step0 = 0

    def __call__(self, stage: str, step: int, total: int, info: dict) -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.t_stage, self.step0 = stage, now, step
        elif now - self.last < self.every:
            return
        self.last = now
        done = step - self.step0
        # ETA of the current stage, from its own rate so far.
        eta = (total - step) * (now - self.t_stage) / done if done > 0 and total >= step else None
        prog = Progress(stage, int(step), int(total), None if eta is None else round(eta, 1))
        verdict = {}

        def write(r: JobRecord) -> JobRecord | None:
            new = jobrecord.set_progress(r, self.worker_id, prog, time.time())
            if new is None:
                verdict["lost"] = True
            elif new.cancel_requested:
                verdict["cancel"] = True
            return new

        rec, _ = transition(self.job_id, write)
        if rec is None or verdict.get("lost"):
            raise JobLost(f"job {self.job_id} was taken over by another process")
        if verdict.get("cancel"):
            raise JobCancelled(f"job {self.job_id} cancelled")


def _job_heartbeat(job_id: str, worker_id: str, done: threading.Event) -> None:
    """Keep the running job's heartbeat fresh between progress reports (long stages)."""
    while not done.wait(jobs.HEARTBEAT_S):
        try:
            transition(job_id, lambda r: jobrecord.heartbeat(r, worker_id, time.time()))
        except Exception:  # a locked or unreachable store must not kill the run
            log.exception("job heartbeat failed")


def _claim(job_id: str, st: WorkerState) -> dict | None:
    holder = {"id": st.id, "pid": os.getpid(), "host": HOST, "pid_space": PID_SPACE}
    rec, changed = transition(
        job_id, lambda r: jobrecord.claim(r, holder, st.device_desc, time.time()))
    return rec if changed else None


def _requeue(job_id: str, st: WorkerState) -> None:
    """This worker is stopping: give the job back (not counted as a failed attempt)."""
    rec, changed = transition(job_id, lambda r: jobrecord.requeue_stopped(r, st.id, time.time()))
    if changed and rec is not None and rec.get("status") == "queued":
        jobqueue.send(job_id)


def run_job(job_id: str) -> None:
    """The huey task: run one job and record how it ended.  Never raises for a bad run."""
    from xdd.core.config import from_dict
    from xdd.pipeline.experiment import cached_results, run_experiment

    st = _state()
    if st.device_desc is None:
        _resolve_device(st)
    rec = _claim(job_id, st)
    if rec is None:
        log.info("job %s: not queued any more (cancelled, done or taken); skipped", job_id)
        return
    log.info("job %s: running %s", job_id, rec["run_key"])
    st.job = job_id
    done = threading.Event()
    hb = threading.Thread(target=_job_heartbeat, args=(job_id, st.id, done), daemon=True)
    hb.start()
    try:
        st.in_job = True
        if st.stop.is_set():  # Ctrl-C arrived while the job was being claimed
            raise KeyboardInterrupt
        if st.threads:  # a library may have changed it during the previous job
            import torch

            torch.set_num_threads(st.threads)
        cfg = from_dict(rec["config"])
        was_cached = cached_results(cfg) is not None
        # (run_experiment caps numpy's and scikit-learn's pools at torch's count, set above)
        res = run_experiment(cfg, device=st.device, progress=JobProgress(job_id, st.id))
        st.in_job = False
        # The device that computed the result: this worker's, or the original run's if cached.
        device = res.get("device") if was_cached else st.device_desc
        transition(job_id, lambda r: jobrecord.finish(r, st.id, time.time(), res["run_key"],
                                                      was_cached, device))
        log.info("job %s: done", job_id)
    except JobCancelled:
        st.in_job = False
        transition(job_id, lambda r: jobrecord.cancelled(r, st.id, time.time()))
        log.info("job %s: cancelled", job_id)
    except JobLost as exc:
        st.in_job = False
        log.warning("%s; this worker stopped its copy", exc)
    except KeyboardInterrupt:
        st.in_job = False
        _requeue(job_id, st)
        log.info("job %s: worker stopping, job put back on the queue", job_id)
    except Exception as exc:
        st.in_job = False
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        error = one_line(exc)
        transition(job_id, lambda r: jobrecord.fail(r, error, time.time(), worker_id=st.id))
    finally:
        st.in_job = False
        st.job = None
        done.set()
        hb.join(timeout=5)


jobqueue.set_job_handler(run_job)  # what this process runs for a consumed "run_job" message


def _resolve_device(st: WorkerState) -> None:
    from xdd.core.device import describe, resolve_device

    st.device_desc = describe(resolve_device(st.device))


def _heartbeat_loop(st: WorkerState) -> None:
    while not st.stop.wait(jobs.HEARTBEAT_S):
        try:
            st.beat()
        except Exception:
            log.exception("worker heartbeat failed")


def _retire(st: WorkerState, h: Any) -> bool:
    """Idle exit: unregister, then look at the queue once more.  True: nothing is waiting,
    exit.  False: a message arrived in between (its submitter saw this worker alive and
    started no other), so register again and stay."""
    st.unregister()
    try:
        waiting = h.pending_count()
    except Exception:  # cannot tell: stay, the next idle check tries again
        log.exception("could not read the queue length")
        waiting = 1
    if waiting == 0:
        return True
    st.registered.set()
    st.beat()
    log.info("a job arrived while the worker was about to exit; staying")
    return False


def run_worker(device: str = "auto", threads: int | None = None, once: bool = False,
               max_idle: float | None = None) -> int:
    """Consume the queue until stopped (SIGINT/SIGTERM), ``once`` job, or ``max_idle`` seconds
    without work.  Returns the number of jobs taken.

    Housekeeping -- :func:`xdd.jobs.api.recover` (re-queue the jobs of dead workers, re-send lost
    messages), at start and every ``HOUSEKEEPING_S`` while idle -- happens here, not in the
    processes that read job records."""
    global _STATE
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    st = _STATE = WorkerState(device=device)
    # Register before importing torch, so ensure_worker() sees us within a second.
    st.registered.set()
    st.beat()
    # Rows of workers that vanished without saying goodbye: kept a day for the record.
    records().prune_workers(time.time() - 86400)
    beat = threading.Thread(target=_heartbeat_loop, args=(st,), daemon=True)
    beat.start()

    def on_signal(signum, frame) -> None:
        st.stop.set()
        if st.in_job:  # stop the run now; run_job puts the job back on the queue
            raise KeyboardInterrupt
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    taken = 0
    try:
        _start(st, threads)
        taken = _consume(st, once, max_idle)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        st.stop.set()
        try:
            st.unregister()
        except Exception:
            log.exception("could not unregister the worker")
        if _STATE is st:  # this process is no longer that worker: a later run_job here
            _STATE = None  # would read its stop flag as a Ctrl-C and put its job back
        log.info("worker %s stopped after %d job(s)", st.id, taken)
    return taken


def _start(st: WorkerState, threads: int | None) -> None:
    """Torch's thread count and the device, then the queue's housekeeping."""
    import torch

    st.threads = threads or default_threads()
    torch.set_num_threads(st.threads)
    _resolve_device(st)
    st.beat()
    log.info("worker %s (pid %d) on %s, queue %s", st.id, os.getpid(), st.device_desc,
             describe_queue())
    jobs.clean_tmp()  # run folders half-written by a killed worker
    jobs.recover()


def _consume(st: WorkerState, once: bool, max_idle: float | None) -> int:
    """Take jobs until stopped, ``once`` job, or ``max_idle`` seconds without work; returns
    how many were taken.

    UMAP's numba compilation (~25 s of CPU, holding the GIL much of the time) is paid once per
    worker, in a background thread started the first time the queue is empty: a worker started
    for a job (the app's demo click) runs that job first, undisturbed, and an idle worker is
    warm for the next job.  XDD_WARMUP=0 skips it (the test suite's workers never use UMAP)."""
    warm_pending = os.environ.get("XDD_WARMUP", "1") != "0"
    h = jobqueue.get_huey()
    redis = queue_url() is not None
    last_work = last_house = time.monotonic()
    taken = 0
    while not st.stop.is_set():
        task = h.dequeue()  # RedisHuey blocks up to 1 s here
        if task is not None:
            taken += 1
            h.execute(task)
            last_work = time.monotonic()
            if once:
                break
            continue
        if warm_pending:
            warm_pending = False
            from xdd.core.projection import warm_up

            threading.Thread(target=warm_up, name="umap-warm-up", daemon=True).start()
        now = time.monotonic()
        if now - last_house > HOUSEKEEPING_S:
            last_house = now
            jobs.recover()
            jobs.resend_lost()
        if max_idle is not None and now - last_work > max_idle:
            if _retire(st, h):
                break
            last_work = now
        if not redis:
            st.stop.wait(IDLE_POLL_S)
    return taken

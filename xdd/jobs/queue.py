"""The huey queue: the messages that wake a worker up, each carrying one job id.

``SqliteHuey`` in ``cache/jobs/queue.db`` by default, a ``RedisHuey`` when
``XDD_QUEUE=redis://host:port/db``.  The job record (:mod:`xdd.jobs.store`) is the source of
truth; a duplicate message is harmless, because a worker claims a job by an atomic
queued -> running transition.  This module only sends: the worker registers what a consumed
message runs (:func:`set_job_handler`), so nothing here imports the worker.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from xdd.jobs import record as jobrecord
from xdd.jobs.store import QUEUE_NAME, JobError, jobs_dir, queue_url, transition

_HUEY: dict[str, tuple[Any, Any]] = {}
# What the "run_job" task runs: set by xdd.jobs.worker when it is imported (a worker process).
_HANDLER: list[Callable[[str], Any]] = []


def set_job_handler(fn: Callable[[str], Any]) -> None:
    """The function a consumed "run_job" message calls with its job id (xdd.jobs.worker.run_job)."""
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
    transition(job_id, lambda r: jobrecord.mark_sent(r, time.time()))

"""The job queue's API: runs go to a background worker process; any process can follow them.

A job is one :class:`~xdd.core.config.RunConfig` to compute with
:func:`xdd.pipeline.experiment.run_experiment`.  Two things are stored for it:

* a **message** on a huey queue (:mod:`xdd.jobs.queue`: ``SqliteHuey`` in
  ``cache/jobs/queue.db`` by default, a ``RedisHuey`` when ``XDD_QUEUE=redis://host:port/db``)
  that wakes a worker up, and
* a **job record** (:class:`xdd.jobs.record.JobRecord`: status, config, progress, timestamps,
  device, error, run key) that any process can read (:mod:`xdd.jobs.store`): a SQLite database
  ``cache/jobs/jobs.db`` (WAL, busy timeout) with the SQLite queue, or Redis keys next to the
  queue with ``XDD_QUEUE``, so that workers on other machines and the app share one view.

The record is the source of truth; the message only carries the job id.  A worker *claims*
a job by an atomic queued -> running transition, so a duplicate message is harmless, and
recovery may re-send messages freely.  Workers and running jobs write heartbeats; a job
whose worker died (SIGKILL, power loss) is re-queued by :func:`recover`, which runs at a
worker's start and in its housekeeping (and from ``python -m xdd jobs --recover``), or marked
failed after :data:`MAX_ATTEMPTS` deaths.  Reads (:func:`status`, :func:`list_jobs`,
:func:`board`, :func:`queue_counts`) only read.  The API returns records as dicts
(``JobRecord.to_dict()``, plus ``worker_gone`` on a running job).  Starting and finding
workers is :mod:`xdd.jobs.workerproc`.  docs/JOBS.md tells the whole story.
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable

from xdd.jobs import queue as jobqueue
from xdd.jobs import record as jobrecord
from xdd.storage import store
from xdd.core.config import RunConfig, run_key, to_dict, validate
from xdd.core.fmt import one_line
from xdd.jobs.record import ACTIVE, JobRecord
from xdd.jobs.store import (
    JobError, NotAllowed, QueueFull, describe_queue, queue_url, records, store_errors,
    transition)
from xdd.jobs.workerproc import PID_SPACE

JOB_ID = re.compile(r"[0-9a-f]{32}")

HEARTBEAT_S = 2.0  # how often a worker and its running job write a heartbeat
# A heartbeat older than this means the process is gone.  On this host a dead pid is
# noticed at once and the long limit only catches a hung process; a worker on another host
# can only be judged by its heartbeat.
STALE_LOCAL_S = 600.0
STALE_REMOTE_S = 60.0
MAX_ATTEMPTS = 3  # a job whose worker died this many times is marked failed, not re-queued
ORPHAN_S = 5.0  # a queued job with no message this old is sent again (see recover())
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


def _holder_dead(rec: dict[str, Any], now: float) -> bool:
    """Is the process that claimed this running job gone?"""
    w = rec.get("worker") or {}
    age = now - (rec.get("heartbeat") or rec.get("started") or now)
    if w.get("pid_space") == PID_SPACE:
        return not store.pid_alive(w.get("pid")) or age > STALE_LOCAL_S
    return age > STALE_REMOTE_S


# ---------------------------------------------------------------- the API


def _new_record(cfg: RunConfig, rk: str, cached: bool, visitor: str | None = None
                ) -> dict[str, Any]:
    # Who asked for it and who follows it (app visitors; None = the CLI or the admin): a
    # visitor may cancel a job only while no one else follows it.
    now = time.time()
    rec = jobrecord.new_job(to_dict(cfg), rk, now, owner=visitor)
    if cached:  # the result is in the cache already: a finished job, no message
        res = store.read_json(store.run_dir(rk) / "results.json") or {}
        rec = jobrecord.finished_from_cache(rec, res.get("device"), now)
    return rec.to_dict()


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
    from xdd.pipeline.experiment import cached_results

    validate(cfg)
    rk = run_key(cfg)
    rec, created = records().create_or_get(
        rk, lambda is_cached: _new_record(cfg, rk, is_cached, visitor),
        lambda: cached_results(cfg) is not None, _admission(visitor, limits))
    if created and rec["status"] == "queued":
        try:
            jobqueue.send(rec["id"])
        except Exception as exc:
            _finish_failed(rec["id"], f"could not put the job on the queue: {one_line(exc)}")
            raise JobError(f"could not put the job on the queue ({describe_queue()}): "
                           f"{one_line(exc)}") from exc
    elif not created and visitor and visitor not in (rec.get("followers") or []):
        rec = follow(rec["id"], visitor)
    return rec["id"]


def _finish_failed(job_id: str, error: str) -> None:
    transition(job_id, lambda r: jobrecord.fail(r, error, time.time()))


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
    rec, _ = transition(job_id, lambda r: jobrecord.add_follower(r, visitor))
    if rec is None:
        raise _unknown(job_id)
    return rec


def others_following(rec: dict[str, Any], visitor: str | None) -> int:
    """How many followers of the job are not ``visitor``; a job submitted without a visitor
    (the CLI, the app's admin) counts its submitter as one."""
    return JobRecord.from_dict(rec).others_following(visitor)


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

    def req(r: JobRecord) -> JobRecord | None:
        if visitor is not None and r.status in ACTIVE:
            n = r.others_following(visitor)
            if n:
                refused["n"] = n
                return None
        return jobrecord.request_cancel(r, time.time())

    rec, _ = transition(job_id, req)
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
    touched: list[str] = []
    for rec in records().active():
        if rec["status"] == "running" and _holder_dead(rec, now):
            def settle(r: JobRecord, holder: dict | None = rec.get("worker")) -> JobRecord | None:
                return jobrecord.requeue_after_death(r, holder, now, MAX_ATTEMPTS)

            new, changed = transition(rec["id"], settle)
            if changed:
                touched.append(rec["id"])
                if new and new["status"] == "queued":
                    jobqueue.send(rec["id"])
        elif (rec["status"] == "queued" and rec.get("enqueued") is None
              and now - rec["created"] > ORPHAN_S):
            jobqueue.send(rec["id"])
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
            jobqueue.send(rec["id"])
            out.append(rec["id"])
    return out

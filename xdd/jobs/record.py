"""A job record as a typed value, and its state transitions as pure functions.

The job store (:mod:`xdd.jobs.store`) keeps one record per job as JSON: :meth:`JobRecord.to_dict`
writes it, :meth:`JobRecord.from_dict` reads what any version of this code wrote (a missing
key gets its default; a key this version does not know is kept and written back).

Each transition takes a record and returns a new one, or ``None`` where it does not apply to
the record's state: claiming a job that is not queued, finishing a job that this worker does
not hold, following a job twice.  ``None`` means "write nothing", which is what the stores'
atomic read-modify-write (``update``) does with it, so a transition is also the condition of
a compare-and-set.  Nothing here reads a clock, a process table or a database: the callers
pass ``now`` and say which worker they are.

    queued --claim--> running --finish--> done
      |                  |----fail------> failed
      |                  |----cancelled-> cancelled  (after request_cancel)
      |                  |----requeue_stopped / requeue_after_death--> queued
      |                  '----requeue_after_death--> failed | cancelled
      '--request_cancel--> cancelled;   queued or running --fail--> failed
"""
from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field, fields, replace
from typing import Any

STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
# Keys a read adds to the records it returns (xdd.jobs.api), never part of the stored record.
READ_ANNOTATIONS = ("worker_gone",)


@dataclass(frozen=True)
class Progress:
    """How far a job is: its stage, ``step`` of ``total`` in that stage, and the stage's
    estimated seconds left (``eta_s``, None when unknown)."""

    stage: str = "queued"
    step: int = 0
    total: int = 0
    eta_s: float | None = None

    @classmethod
    def queued(cls) -> Progress:
        return cls()

    @classmethod
    def starting(cls) -> Progress:
        return cls("starting")

    @classmethod
    def done(cls) -> Progress:
        return cls("done", 1, 1, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "step": self.step, "total": self.total, "eta_s": self.eta_s}

    @classmethod
    def from_dict(cls, d: Any) -> Progress:
        """Tolerant: a missing key gets its default, an unknown one is dropped."""
        if not isinstance(d, dict):
            return cls()
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class JobRecord:
    """One job: what to run (``config``, ``run_key``), where it stands (``status``,
    ``progress``, ``error``, ``note``), when (epoch seconds), who runs it (``worker``: id, pid,
    host, pid_space; ``device``) and who asked for it (``owner``, ``followers``: app visitors,
    None / empty for the CLI and the admin).  docs/JOBS.md describes every key."""

    id: str = ""
    status: str = "queued"
    config: dict[str, Any] = field(default_factory=dict)
    run_key: str = ""
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    progress: Progress = field(default_factory=Progress)
    device: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    cached: bool = False
    worker: dict[str, Any] | None = None
    heartbeat: float | None = None
    enqueued: float | None = None  # when its message was last put on the queue
    note: str | None = None  # why it was re-queued, for example
    owner: str | None = None
    followers: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    # ------------------------------------------------------------ the stored form

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(config=copy.deepcopy(self.config), progress=self.progress.to_dict(),
                   worker=copy.deepcopy(self.worker), followers=list(self.followers))
        for k, v in self.extra.items():
            out.setdefault(k, copy.deepcopy(v))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobRecord:
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: copy.deepcopy(v) for k, v in d.items() if k in names}
        kw.update(progress=Progress.from_dict(d.get("progress")),
                  cancel_requested=bool(d.get("cancel_requested")),
                  attempts=int(d.get("attempts") or 0), cached=bool(d.get("cached")),
                  followers=tuple(d.get("followers") or ()),
                  extra={k: copy.deepcopy(v) for k, v in d.items()
                         if k not in names and k not in READ_ANNOTATIONS})
        return cls(**kw)

    # ------------------------------------------------------------ questions

    @property
    def holder_id(self) -> str | None:
        """The id of the worker that claimed the job (None if none)."""
        return (self.worker or {}).get("id")

    def held_by(self, worker_id: str) -> bool:
        """Is the job running under this worker (and not taken over by another)?"""
        return self.status == "running" and self.holder_id == worker_id

    def others_following(self, visitor: str | None) -> int:
        """How many followers are not ``visitor``; a job submitted without a visitor (the CLI,
        the app's admin) counts its submitter as one."""
        others = sum(f != visitor for f in dict.fromkeys(self.followers))
        return others + (self.owner is None and visitor is not None)


# ---------------------------------------------------------------- transitions


def new_job(config: dict[str, Any], run_key: str, now: float, owner: str | None = None,
            job_id: str | None = None) -> JobRecord:
    """A queued job (its message is not sent yet: ``enqueued`` is None)."""
    return JobRecord(id=job_id or uuid.uuid4().hex, config=config, run_key=run_key,
                     created=now, owner=owner, followers=(owner,) if owner else ())


def finished_from_cache(rec: JobRecord, device: str | None, now: float) -> JobRecord | None:
    """A new job whose result is in the cache already: done at once, no message."""
    if rec.status != "queued" or rec.enqueued is not None:
        return None
    return replace(rec, status="done", started=now, finished=now, cached=True, device=device,
                   progress=Progress.done())


def mark_sent(rec: JobRecord, now: float) -> JobRecord | None:
    """A message for the queued job was put on the queue at ``now``."""
    if rec.status != "queued":
        return None
    return replace(rec, enqueued=now)


def add_follower(rec: JobRecord, visitor: str) -> JobRecord | None:
    if visitor in rec.followers:
        return None
    return replace(rec, followers=rec.followers + (visitor,))


def claim(rec: JobRecord, worker: dict[str, Any], device: str | None, now: float
          ) -> JobRecord | None:
    """queued -> running under ``worker`` (id, pid, host, pid_space); one more attempt."""
    if rec.status != "queued" or rec.cancel_requested:
        return None
    return replace(rec, status="running", started=now, heartbeat=now,
                   attempts=rec.attempts + 1, worker=dict(worker), device=device, error=None,
                   progress=Progress.starting())


def heartbeat(rec: JobRecord, worker_id: str, now: float) -> JobRecord | None:
    if not rec.held_by(worker_id):
        return None
    return replace(rec, heartbeat=now)


def set_progress(rec: JobRecord, worker_id: str, progress: Progress, now: float
                 ) -> JobRecord | None:
    """The holder's progress report (also a heartbeat).  None: the job is not this worker's
    any more (taken over, or ended), so its run should stop."""
    if not rec.held_by(worker_id):
        return None
    return replace(rec, progress=progress, heartbeat=now)


def finish(rec: JobRecord, worker_id: str, now: float, run_key: str, cached: bool,
           device: str | None) -> JobRecord | None:
    """running -> done: the run folder of ``run_key`` is in place; ``device`` computed it."""
    if not rec.held_by(worker_id):
        return None
    return replace(rec, status="done", finished=now, run_key=run_key, cached=cached,
                   device=device, progress=Progress.done())


def fail(rec: JobRecord, error: str, now: float, worker_id: str | None = None
         ) -> JobRecord | None:
    """-> failed with a one-line ``error``.  With ``worker_id``: the run of the worker that
    holds the job raised; without: an active job that cannot go on (e.g. its message could
    not be sent)."""
    allowed = rec.status in ACTIVE if worker_id is None else rec.held_by(worker_id)
    if not allowed:
        return None
    return replace(rec, status="failed", finished=now, error=error)


def request_cancel(rec: JobRecord, now: float) -> JobRecord | None:
    """A queued job is cancelled at once; a running one is marked ``cancel_requested`` (its
    worker stops it: :func:`cancelled`).  Anything else: nothing to do."""
    if rec.status == "queued":
        return replace(rec, status="cancelled", cancel_requested=True, finished=now,
                       progress=replace(rec.progress, stage="cancelled", eta_s=None))
    if rec.status == "running" and not rec.cancel_requested:
        return replace(rec, cancel_requested=True)
    return None


def cancelled(rec: JobRecord, worker_id: str, now: float) -> JobRecord | None:
    """running -> cancelled: the holder stopped the run after a cancel was requested; the
    progress stays where the run stopped."""
    if not rec.held_by(worker_id) or not rec.cancel_requested:
        return None
    return replace(rec, status="cancelled", finished=now,
                   progress=replace(rec.progress, eta_s=None))


def _back_in_queue(rec: JobRecord, attempts: int, note: str) -> JobRecord:
    return replace(rec, status="queued", worker=None, heartbeat=None, enqueued=None,
                   started=None, device=None, attempts=attempts, progress=Progress.queued(),
                   note=note)


def requeue_stopped(rec: JobRecord, worker_id: str, now: float) -> JobRecord | None:
    """running -> queued: its worker is stopping (Ctrl-C, SIGTERM) and gives the job back;
    not counted as an attempt.  A job whose cancel was pending is cancelled instead (queued
    with the cancel still requested, no worker would ever claim it)."""
    if not rec.held_by(worker_id):
        return None
    if rec.cancel_requested:
        return replace(cancelled(rec, worker_id, now),
                       note="its worker was stopped while the cancel was pending")
    return _back_in_queue(rec, max(0, rec.attempts - 1), "re-queued: its worker was stopped")


def requeue_after_death(rec: JobRecord, holder: dict[str, Any] | None, now: float,
                        max_attempts: int) -> JobRecord | None:
    """Settle a running job whose worker ``holder`` (as read when it was judged dead) died:
    cancelled if a cancel was pending, failed after ``max_attempts`` deaths, else re-queued.
    None if the job is no longer running under that holder (someone settled it already)."""
    if rec.status != "running" or rec.worker != holder:
        return None
    w = holder or {}
    who = f"pid {w.get('pid')} on {w.get('host')}"
    if rec.cancel_requested:
        return replace(rec, status="cancelled", finished=now,
                       note=f"its worker ({who}) died while the cancel was pending")
    if rec.attempts >= max_attempts:
        return replace(rec, status="failed", finished=now,
                       error=f"the worker running this job died {rec.attempts} times "
                             f"(last: {who}); not retried")
    return _back_in_queue(rec, rec.attempts,
                          f"re-queued: its worker ({who}) died during {rec.progress.stage}")

"""Where job records live, and the settings and errors of the job store.

One store per backend, each in its own module with the interface :class:`Records`: SQLite
beside the SQLite queue (:mod:`xdd.jobs.store_sqlite`), Redis keys next to a Redis queue
(:mod:`xdd.jobs.store_redis`).  :func:`records` picks the one the settings name, and
:func:`transition` applies a state transition of :mod:`xdd.jobs.record` to a stored record
atomically.  :mod:`xdd.jobs.api` builds the API on it; nothing here knows about workers or huey.
"""
from __future__ import annotations

import functools
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Protocol

from xdd.storage import store
from xdd.core.fmt import one_line
from xdd.jobs.record import JobRecord
from xdd.jobs.store_redis import RedisRecords
from xdd.jobs.store_sqlite import SqliteRecords

WORKER_STALE_S = 60.0  # worker_alive(): a worker is alive if it beat this recently
QUEUE_NAME = os.environ.get("XDD_QUEUE_NAME", "xdd")


class JobError(ValueError):
    """A bad job id or queue setting; the message says what was expected."""


class QueueFull(JobError):
    """A submission over the per-visitor or whole-queue limit; nothing was queued."""


class NotAllowed(JobError):
    """A visitor asked for something only the job's sole follower or the admin may do."""


def jobs_dir() -> Path:
    return store.cache_root() / "jobs"


def queue_url() -> str | None:
    """The Redis URL from ``XDD_QUEUE``, or None for the local SQLite queue."""
    url = os.environ.get("XDD_QUEUE", "").strip()
    if url in ("", "sqlite"):
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise JobError(f"XDD_QUEUE={url!r} is not a Redis URL; accepted: redis://host:port/db, "
                       "rediss://..., unix:///path.sock, or unset for the SQLite queue under cache/jobs")
    return url


def describe_queue() -> str:
    url = queue_url()
    return f"redis {url} (queue {QUEUE_NAME!r})" if url else f"sqlite {jobs_dir()}"


def store_errors(fn: Callable) -> Callable:
    """Store failures (SQLite errors, an unreachable Redis) reach callers as one JobError
    that names the store, not as a driver traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobError:
            raise
        except sqlite3.Error as exc:
            raise JobError(f"the job store under {jobs_dir()} failed: {one_line(exc)}") from exc
        except Exception as exc:
            if type(exc).__module__.split(".")[0] == "redis":
                raise JobError(f"the Redis queue {queue_url()} failed or is unreachable: "
                               f"{one_line(exc)}") from exc
            raise
    return wrapper


class Records(Protocol):
    """Where job records (stored as ``JobRecord.to_dict()``) and worker heartbeats live;
    every update is an atomic read-modify-write of one record (``update``), so concurrent
    writers never lose a field."""

    def create_or_get(self, rk: str, make: Callable[[bool], dict], cached: Callable[[], bool],
                      admit: Callable[[list[dict]], None] | None = None) -> tuple[dict, bool]:
        """The active job of run key ``rk``, or a new record from ``make``.  ``admit`` sees
        the active records before a new queued job is written and may raise to refuse it."""

    def get(self, job_id: str) -> dict | None: ...

    def board(self, ids: list[str], limit: int) -> tuple[list[dict], dict[str, dict]]:
        """The newest ``limit`` records and the records of ``ids``, in one read."""

    def list(self, limit: int) -> list[dict]: ...

    def active(self) -> list[dict]: ...

    def update(self, job_id: str, fn: Callable[[dict], dict | None]) -> tuple[dict | None, bool]:
        """Write ``fn(record)`` unless it is None; returns (the record now, whether written)."""

    def beat(self, worker: dict) -> None: ...

    def remove_worker(self, worker_id: str) -> None: ...

    def workers(self) -> list[dict]: ...

    def prune_workers(self, older_than: float) -> None:
        """Forget workers whose last heartbeat is older than ``older_than`` (epoch s)."""


def records() -> Records:
    url = queue_url()
    if url:
        return RedisRecords(url, prefix=f"{QUEUE_NAME}:", worker_ttl=int(WORKER_STALE_S * 2))
    return SqliteRecords(jobs_dir() / "jobs.db")


def transition(job_id: str, step: Callable[[JobRecord], JobRecord | None]
               ) -> tuple[dict | None, bool]:
    """Apply ``step`` (a transition of :mod:`xdd.jobs.record`) to the stored record in one
    atomic read-modify-write; returns (the record as stored now, whether it changed).  None
    from ``step`` writes nothing, so the transition's condition is the compare of the set."""
    def fn(doc: dict) -> dict | None:
        new = step(JobRecord.from_dict(doc))
        return None if new is None else new.to_dict()

    return records().update(job_id, fn)

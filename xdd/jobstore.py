"""Where job records live: one store per backend (SQLite beside the SQLite queue, Redis keys
next to a Redis queue), behind one small interface (:class:`_Records`), plus the settings the
stores need.  :mod:`xdd.jobs` builds the API on it; nothing here knows about workers or huey.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from . import store

ACTIVE = ("queued", "running")
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


# ---------------------------------------------------------------- record backends


class _Records:
    """Where job records and worker heartbeats live; every update is an atomic
    read-modify-write of one record (``update``), so concurrent writers never lose a field."""

    def create_or_get(self, rk: str, make: Callable[[bool], dict], cached: Callable[[], bool],
                      admit: Callable[[list[dict]], None] | None = None) -> tuple[dict, bool]:
        """The active job of run key ``rk``, or a new record from ``make``.  ``admit`` sees
        the active records before a new queued job is written and may raise to refuse it."""
        raise NotImplementedError

    def get(self, job_id: str) -> dict | None:
        raise NotImplementedError

    def board(self, ids: list[str], limit: int) -> tuple[list[dict], dict[str, dict]]:
        """The newest ``limit`` records and the records of ``ids``, in one read."""
        raise NotImplementedError

    def list(self, limit: int) -> list[dict]:
        raise NotImplementedError

    def active(self) -> list[dict]:
        raise NotImplementedError

    def update(self, job_id: str, fn: Callable[[dict], dict | None]) -> tuple[dict | None, bool]:
        raise NotImplementedError

    def beat(self, worker: dict) -> None:
        raise NotImplementedError

    def remove_worker(self, worker_id: str) -> None:
        raise NotImplementedError

    def workers(self) -> list[dict]:
        raise NotImplementedError

    def prune_workers(self, older_than: float) -> None:
        """Forget workers whose last heartbeat is older than ``older_than`` (epoch s)."""
        raise NotImplementedError


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, run_key TEXT NOT NULL, "
    "status TEXT NOT NULL, created REAL NOT NULL, doc TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_key ON jobs (run_key, status)",
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status)",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created)",
    "CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, heartbeat REAL NOT NULL, "
    "doc TEXT NOT NULL)",
]
_READY: set[str] = set()


class _SqliteRecords(_Records):
    """Records in ``cache/jobs/jobs.db``: WAL (readers never block the worker), a generous
    busy timeout, synchronous=FULL, and ``BEGIN IMMEDIATE`` around every read-modify-write."""

    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            key = str(self.path)
            if key not in _READY or not self.path.exists():
                self._init(conn)
                _READY.add(key)
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _init(conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs a write lock that a concurrent opener may hold
        # for a moment; the busy handler does not cover it, so retry.
        deadline = time.monotonic() + 30
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _put(conn: sqlite3.Connection, rec: dict) -> None:
        conn.execute("INSERT OR REPLACE INTO jobs (id, run_key, status, created, doc) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (rec["id"], rec["run_key"], rec["status"], rec["created"], json.dumps(rec)))

    def create_or_get(self, rk, make, cached, admit=None):
        with self._tx() as conn:
            rows = conn.execute("SELECT doc FROM jobs WHERE run_key = ? AND status IN "
                                "('queued', 'running') ORDER BY created DESC", (rk,)).fetchall()
            for (doc,) in rows:
                rec = json.loads(doc)
                if not rec.get("cancel_requested"):
                    return rec, False
            # Checked under the write lock: a worker marks a job done only after its run
            # folder is in place, so "not active and not cached" cannot be a finished race.
            is_cached = cached()
            if is_cached:
                row = conn.execute("SELECT doc FROM jobs WHERE run_key = ? AND status = 'done' "
                                   "ORDER BY created DESC LIMIT 1", (rk,)).fetchone()
                if row:
                    return json.loads(row[0]), False
            if admit is not None and not is_cached:  # under the write lock: no race past a cap
                act = conn.execute("SELECT doc FROM jobs WHERE status IN ('queued', 'running')"
                                   ).fetchall()
                admit([json.loads(d) for (d,) in act])
            rec = make(is_cached)
            self._put(conn, rec)
            return rec, True

    def get(self, job_id):
        with self._conn() as conn:
            row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def board(self, ids, limit):
        # One SELECT: the newest `limit` rows plus the followed ids (a tab's whole refresh).
        marks = ",".join("?" * len(ids))
        sql = ("SELECT doc, id IN (SELECT id FROM jobs ORDER BY created DESC, rowid DESC "
               "LIMIT ?) FROM jobs WHERE id IN (SELECT id FROM jobs ORDER BY created DESC, "
               "rowid DESC LIMIT ?)" + (f" OR id IN ({marks})" if ids else "")
               + " ORDER BY created DESC, rowid DESC")
        with self._conn() as conn:
            rows = conn.execute(sql, (int(limit), int(limit), *ids)).fetchall()
        listed, byid = [], {}
        for doc, newest in rows:
            rec = json.loads(doc)
            if newest:
                listed.append(rec)
            byid[rec["id"]] = rec
        return listed, {i: byid[i] for i in ids if i in byid}

    def list(self, limit):
        with self._conn() as conn:
            rows = conn.execute("SELECT doc FROM jobs ORDER BY created DESC, rowid DESC LIMIT ?",
                                (int(limit),)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def active(self):
        with self._conn() as conn:
            rows = conn.execute("SELECT doc FROM jobs WHERE status IN ('queued', 'running') "
                                "ORDER BY created").fetchall()
        return [json.loads(r[0]) for r in rows]

    def update(self, job_id, fn):
        with self._tx() as conn:
            row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None, False
            rec = json.loads(row[0])
            new = fn(copy.deepcopy(rec))
            if new is None:
                return rec, False
            self._put(conn, new)
            return new, True

    def beat(self, worker):
        with self._conn() as conn:
            conn.execute("INSERT OR REPLACE INTO workers (id, heartbeat, doc) VALUES (?, ?, ?)",
                         (worker["id"], worker["heartbeat"], json.dumps(worker)))

    def remove_worker(self, worker_id):
        with self._conn() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers(self):
        with self._conn() as conn:
            rows = conn.execute("SELECT doc FROM workers ORDER BY heartbeat DESC").fetchall()
        return [json.loads(r[0]) for r in rows]

    def prune_workers(self, older_than: float) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM workers WHERE heartbeat < ?", (older_than,))


class _RedisRecords(_Records):
    """Records as JSON strings in Redis, next to the huey queue, so that workers on several
    machines and the app share them.  Keys (prefix ``<XDD_QUEUE_NAME>:``): ``job:<id>``,
    ``jobs`` (sorted set by creation time), ``active`` (set of queued/running ids),
    ``key:<run_key>`` (the newest job for that run key), ``worker:<id>`` (expiring)."""

    def __init__(self, url: str):
        self.r = _redis_client(url)
        self.p = f"{QUEUE_NAME}:"

    def _jk(self, job_id: str) -> str:
        return f"{self.p}job:{job_id}"

    def _stage(self, pipe, rec: dict) -> None:
        pipe.set(self._jk(rec["id"]), json.dumps(rec))
        if rec["status"] in ACTIVE:
            pipe.sadd(self.p + "active", rec["id"])
        else:
            pipe.srem(self.p + "active", rec["id"])

    def create_or_get(self, rk, make, cached, admit=None):
        from redis.exceptions import WatchError

        # The cache is read before the transaction (it is files, not Redis); see JOBS.md for
        # the one harmless race this leaves.
        is_cached = cached()
        ptr = f"{self.p}key:{rk}"
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(ptr)
                    cur = None
                    jid = pipe.get(ptr)
                    if jid:
                        pipe.watch(self._jk(jid))
                        raw = pipe.get(self._jk(jid))
                        cur = json.loads(raw) if raw else None
                    if cur and cur["status"] in ACTIVE and not cur.get("cancel_requested"):
                        pipe.unwatch()
                        return cur, False
                    if is_cached and cur and cur["status"] == "done":
                        pipe.unwatch()
                        return cur, False
                    if admit is not None and not is_cached:
                        # Read outside the WATCH: with Redis a cap can be overshot by the
                        # submissions racing in the same moment (one per process at most).
                        admit(self.active())
                    rec = make(is_cached)
                    pipe.multi()
                    self._stage(pipe, rec)
                    pipe.zadd(self.p + "jobs", {rec["id"]: rec["created"]})
                    pipe.set(ptr, rec["id"])
                    pipe.execute()
                    return rec, True
                except WatchError:
                    continue

    def get(self, job_id):
        raw = self.r.get(self._jk(job_id))
        return json.loads(raw) if raw else None

    def _many(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        return [json.loads(raw) for raw in self.r.mget([self._jk(i) for i in ids]) if raw]

    def list(self, limit):
        if limit <= 0:  # ZREVRANGE 0 -1 would mean "all"
            return []
        return self._many(self.r.zrevrange(self.p + "jobs", 0, int(limit) - 1))

    def board(self, ids, limit):
        newest = self.r.zrevrange(self.p + "jobs", 0, int(limit) - 1) if limit > 0 else []
        recs = self._many(list(dict.fromkeys([*newest, *ids])))
        byid = {r["id"]: r for r in recs}
        return ([byid[i] for i in newest if i in byid], {i: byid[i] for i in ids if i in byid})

    def active(self):
        return sorted(self._many(sorted(self.r.smembers(self.p + "active"))),
                      key=lambda r: r["created"])

    def update(self, job_id, fn):
        from redis.exceptions import WatchError

        key = self._jk(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        return None, False
                    rec = json.loads(raw)
                    new = fn(copy.deepcopy(rec))
                    if new is None:
                        pipe.unwatch()
                        return rec, False
                    pipe.multi()
                    self._stage(pipe, new)
                    pipe.execute()
                    return new, True
                except WatchError:
                    continue

    def beat(self, worker):
        self.r.set(f"{self.p}worker:{worker['id']}", json.dumps(worker),
                   ex=int(WORKER_STALE_S * 2))

    def remove_worker(self, worker_id):
        self.r.delete(f"{self.p}worker:{worker_id}")

    def workers(self):
        keys = list(self.r.scan_iter(match=f"{self.p}worker:*", count=500))
        out = [json.loads(raw) for raw in (self.r.mget(keys) if keys else []) if raw]
        return sorted(out, key=lambda w: -w.get("heartbeat", 0))

    def prune_workers(self, older_than: float) -> None:
        pass  # worker keys expire by themselves


_REDIS: dict[str, Any] = {}


def _redis_client(url: str):
    import redis

    if url not in _REDIS:
        _REDIS[url] = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30,
                                           health_check_interval=30)
    return _REDIS[url]


def records() -> _Records:
    url = queue_url()
    return _RedisRecords(url) if url else _SqliteRecords(jobs_dir() / "jobs.db")

"""The SQLite job store: records and worker heartbeats in ``cache/jobs/jobs.db``, beside the
SQLite huey queue.  :func:`xdd.jobs.store.records` picks it when ``XDD_QUEUE`` is unset; it keeps
the interface that :class:`xdd.jobs.store.Records` describes."""
from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
import time
from pathlib import Path
from typing import Iterator

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


class SqliteRecords:
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

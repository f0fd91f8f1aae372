"""The Redis job store: records as JSON strings next to a Redis huey queue, so that workers on
several machines and the app share them.  :func:`xdd.jobs.store.records` picks it when
``XDD_QUEUE`` is a Redis URL; it keeps the interface that :class:`xdd.jobs.store.Records`
describes."""
from __future__ import annotations

import copy
import json
from typing import Any

from xdd.jobs.record import ACTIVE


class RedisRecords:
    """Records as JSON strings in Redis, next to the huey queue, so that workers on several
    machines and the app share them.  Keys (``prefix``: ``<XDD_QUEUE_NAME>:``): ``job:<id>``,
    ``jobs`` (sorted set by creation time), ``active`` (set of queued/running ids),
    ``key:<run_key>`` (the newest job for that run key), ``worker:<id>`` (expiring after
    ``worker_ttl`` seconds)."""

    def __init__(self, url: str, prefix: str, worker_ttl: int):
        self.r = _redis_client(url)
        self.p = prefix
        self.worker_ttl = worker_ttl

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
        self.r.set(f"{self.p}worker:{worker['id']}", json.dumps(worker), ex=self.worker_ttl)

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

"""The job record and its state transitions, without any store, queue or process."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from xdd.jobs import record as jr
from xdd.jobs.record import JobRecord, Progress

REPO = Path(__file__).resolve().parent.parent
W1 = {"id": "a" * 32, "pid": 101, "host": "here", "pid_space": "here/boot/pid:[1]"}
W2 = {"id": "b" * 32, "pid": 202, "host": "there", "pid_space": "there/boot/pid:[1]"}
CONFIG = {"preset": "tiny", "ood_digit": 3, "shots": 2, "seed": 0, "methods": ["pixels"]}
# The keys a record had when it was an untyped dict (xdd/jobs/api.py _new_record).
LEGACY_KEYS = {"id", "status", "config", "run_key", "created", "started", "finished",
               "progress", "device", "error", "cancel_requested", "attempts", "cached",
               "worker", "heartbeat", "enqueued", "note", "owner", "followers"}


def queued(**changes) -> JobRecord:
    return replace(jr.new_job(CONFIG, "k" * 16, now=100.0, owner="v1", job_id="c" * 32),
                   **changes)


def running(**changes) -> JobRecord:
    rec = jr.claim(queued(enqueued=100.5), W1, "cpu (1 threads)", now=110.0)
    assert rec is not None
    return replace(rec, **changes)


# ---------------------------------------------------------------- the stored form


def test_a_new_job_is_the_dict_the_code_wrote_before():
    d = queued().to_dict()
    assert set(d) == LEGACY_KEYS
    assert d == {"id": "c" * 32, "status": "queued", "config": CONFIG, "run_key": "k" * 16,
                 "created": 100.0, "started": None, "finished": None,
                 "progress": {"stage": "queued", "step": 0, "total": 0, "eta_s": None},
                 "device": None, "error": None, "cancel_requested": False, "attempts": 0,
                 "cached": False, "worker": None, "heartbeat": None, "enqueued": None,
                 "note": None, "owner": "v1", "followers": ["v1"]}
    json.dumps(d)  # what the stores write
    cli = jr.new_job(CONFIG, "k" * 16, now=1.0)  # the CLI or the admin: nobody follows
    assert cli.owner is None and cli.followers == () and len(cli.id) == 32
    assert cli.id != jr.new_job(CONFIG, "k" * 16, now=1.0).id


@pytest.mark.parametrize("rec", [queued(), running(), running(cancel_requested=True),
                                 replace(running(), status="done", finished=120.0)])
def test_round_trip(rec):
    d = rec.to_dict()
    assert JobRecord.from_dict(d) == rec
    assert JobRecord.from_dict(json.loads(json.dumps(d))) == rec
    assert JobRecord.from_dict(d).to_dict() == d


def test_an_old_record_without_the_newer_keys_loads():
    old = {"id": "d" * 32, "status": "running", "config": CONFIG, "run_key": "k" * 16,
           "created": 5.0, "started": 6.0, "finished": None,
           "progress": {"stage": "pretrain", "step": 3, "total": 20, "eta_s": 1.5},
           "device": "cpu", "error": None, "cancel_requested": False, "worker": W1}
    rec = JobRecord.from_dict(old)
    assert rec.attempts == 0 and rec.cached is False and rec.heartbeat is None
    assert rec.enqueued is None and rec.note is None
    assert rec.owner is None and rec.followers == () and rec.extra == {}
    assert rec.progress == Progress("pretrain", 3, 20, 1.5)
    assert rec.held_by(W1["id"]) and rec.others_following("v1") == 1  # the CLI's job
    d = rec.to_dict()
    assert set(d) == LEGACY_KEYS and {k: d[k] for k in old} == old
    # Transitions work on it (attempts missing = none yet).
    again = jr.requeue_stopped(rec, W1["id"], 150.0)
    assert again is not None and again.attempts == 0 and again.status == "queued"


def test_unknown_keys_are_kept_and_read_annotations_dropped():
    d = dict(queued().to_dict(), priority=7, tags=["x"], worker_gone=True)
    rec = JobRecord.from_dict(d)
    assert rec.extra == {"priority": 7, "tags": ["x"]}
    out = jr.mark_sent(rec, 101.0).to_dict()
    assert out["priority"] == 7 and out["tags"] == ["x"] and "worker_gone" not in out
    assert out["enqueued"] == 101.0


@pytest.mark.parametrize("progress", [None, "queued", 3, {}, {"stage": "retrain"},
                                      {"stage": "x", "step": 1, "total": 2, "eta_s": None,
                                       "future": 1}])
def test_progress_of_any_shape_loads(progress):
    d = dict(queued().to_dict(), progress=progress)
    if progress is None:
        del d["progress"]
    p = JobRecord.from_dict(d).progress
    assert isinstance(p, Progress)
    assert set(p.to_dict()) == {"stage", "step", "total", "eta_s"}
    if isinstance(progress, dict) and "stage" in progress:
        assert p.stage == progress["stage"]


def test_missing_counters_get_defaults():
    rec = JobRecord.from_dict({"id": "e" * 32, "attempts": None, "followers": None,
                               "cancel_requested": None})
    assert rec.status == "queued" and rec.attempts == 0 and rec.followers == ()
    assert rec.cancel_requested is False and rec.config == {} and rec.created == 0.0
    assert JobRecord.from_dict({}).to_dict()["progress"] == Progress.queued().to_dict()


def test_progress_shapes():
    assert Progress.queued().to_dict() == {"stage": "queued", "step": 0, "total": 0,
                                           "eta_s": None}
    assert Progress.starting() == Progress("starting", 0, 0, None)
    assert Progress.done().to_dict() == {"stage": "done", "step": 1, "total": 1, "eta_s": 0.0}


# ---------------------------------------------------------------- transitions


def test_claim():
    rec = jr.claim(queued(enqueued=100.5, error="old"), W1, "cpu (1 threads)", now=110.0)
    assert rec.status == "running" and rec.started == rec.heartbeat == 110.0
    assert rec.attempts == 1 and rec.worker == W1 and rec.device == "cpu (1 threads)"
    assert rec.error is None and rec.progress == Progress.starting()
    assert rec.held_by(W1["id"]) and not rec.held_by(W2["id"])
    # Illegal: not queued, or queued with a cancel pending.
    assert jr.claim(rec, W2, "cuda", now=111.0) is None
    assert jr.claim(queued(cancel_requested=True), W1, "cpu", now=1.0) is None
    for status in ("done", "failed", "cancelled"):
        assert jr.claim(queued(status=status), W1, "cpu", now=1.0) is None


def test_transitions_do_not_change_their_input():
    rec = running()
    before = rec.to_dict()
    for new in (jr.heartbeat(rec, W1["id"], 111.0),
                jr.set_progress(rec, W1["id"], Progress("pretrain", 1, 5, 2.0), 111.0),
                jr.finish(rec, W1["id"], 120.0, rec.run_key, False, "cpu"),
                jr.fail(rec, "boom", 120.0, worker_id=W1["id"]),
                jr.request_cancel(rec, 111.0), jr.requeue_stopped(rec, W1["id"], 111.0),
                jr.requeue_after_death(rec, W1, 200.0, max_attempts=3)):
        assert new is not None and new != rec
    assert rec.to_dict() == before
    with pytest.raises(AttributeError):
        rec.status = "done"  # frozen


def test_heartbeat_and_progress_only_from_the_holder():
    rec = running()
    assert jr.heartbeat(rec, W1["id"], 115.0).heartbeat == 115.0
    assert jr.heartbeat(rec, W2["id"], 115.0) is None
    p = Progress("retrain", 4, 10, 3.2)
    new = jr.set_progress(rec, W1["id"], p, 116.0)
    assert new.progress == p and new.heartbeat == 116.0 and new.status == "running"
    assert jr.set_progress(rec, W2["id"], p, 116.0) is None  # taken over: the run stops
    assert jr.set_progress(replace(rec, status="cancelled"), W1["id"], p, 116.0) is None
    # A pending cancel does not stop the report; the caller sees it on the new record.
    assert jr.set_progress(replace(rec, cancel_requested=True), W1["id"], p, 116.0
                           ).cancel_requested


def test_finish():
    rec = jr.finish(running(), W1["id"], 130.0, "k" * 16, cached=True, device="cuda (H200)")
    assert rec.status == "done" and rec.finished == 130.0 and rec.cached is True
    assert rec.device == "cuda (H200)" and rec.progress == Progress.done()
    assert jr.finish(running(), W2["id"], 130.0, "k" * 16, False, "cpu") is None
    assert jr.finish(queued(), W1["id"], 130.0, "k" * 16, False, "cpu") is None
    assert jr.finish(rec, W1["id"], 131.0, "k" * 16, False, "cpu") is None  # done already


def test_fail():
    rec = jr.fail(running(), "ConfigError: no data", 130.0, worker_id=W1["id"])
    assert rec.status == "failed" and rec.error == "ConfigError: no data"
    assert rec.finished == 130.0 and rec.progress == running().progress
    assert jr.fail(running(), "x", 130.0, worker_id=W2["id"]) is None
    assert jr.fail(queued(), "x", 130.0, worker_id=W1["id"]) is None
    # Without a worker: any active job (the submitter could not send its message).
    assert jr.fail(queued(), "no queue", 101.0).status == "failed"
    assert jr.fail(running(), "no queue", 101.0).status == "failed"
    for status in ("done", "failed", "cancelled"):
        assert jr.fail(queued(status=status), "x", 101.0) is None


def test_request_cancel_and_cancelled():
    q = jr.request_cancel(queued(), 105.0)  # a queued job: cancelled at once
    assert q.status == "cancelled" and q.cancel_requested and q.finished == 105.0
    assert q.progress == Progress("cancelled", 0, 0, None)
    assert jr.request_cancel(q, 106.0) is None

    mid = running(progress=Progress("pretrain", 7, 20, 4.0))
    r = jr.request_cancel(mid, 115.0)  # running: marked, its worker stops it
    assert r.status == "running" and r.cancel_requested and r.finished is None
    assert jr.request_cancel(r, 116.0) is None  # already requested
    for status in ("done", "failed"):
        assert jr.request_cancel(replace(mid, status=status), 115.0) is None

    assert jr.cancelled(mid, W1["id"], 117.0) is None  # no cancel was asked for
    assert jr.cancelled(r, W2["id"], 117.0) is None  # not this worker's
    c = jr.cancelled(r, W1["id"], 117.0)
    assert c.status == "cancelled" and c.finished == 117.0
    assert c.progress == Progress("pretrain", 7, 20, None)  # where the run stopped


def test_requeue_when_the_worker_stops():
    rec = jr.requeue_stopped(running(progress=Progress("retrain", 2, 9, 1.0)), W1["id"], 150.0)
    assert rec.status == "queued" and rec.attempts == 0  # not counted as an attempt
    assert rec.worker is None and rec.heartbeat is None and rec.enqueued is None
    assert rec.started is None and rec.device is None and rec.progress == Progress.queued()
    assert rec.note == "re-queued: its worker was stopped"
    assert jr.requeue_stopped(running(), W2["id"], 150.0) is None
    assert jr.requeue_stopped(queued(), W1["id"], 150.0) is None
    assert jr.claim(rec, W2, "cpu", 120.0).attempts == 1  # the next worker takes it


def test_a_worker_stopped_while_a_cancel_is_pending_cancels_the_job():
    """Re-queued with its cancel still requested, no worker would ever claim it."""
    pending = jr.request_cancel(running(progress=Progress("retrain", 2, 9, 1.0)), 111.0)
    rec = jr.requeue_stopped(pending, W1["id"], 150.0)
    assert rec.status == "cancelled" and rec.finished == 150.0
    assert rec.progress == Progress("retrain", 2, 9, None)
    assert jr.claim(rec, W2, "cpu", 160.0) is None


def test_requeue_after_death():
    mid = running(progress=Progress("pretrain", 7, 20, 4.0))
    rec = jr.requeue_after_death(mid, W1, 200.0, max_attempts=3)
    assert rec.status == "queued" and rec.attempts == 1 and rec.worker is None
    assert rec.progress == Progress.queued() and rec.enqueued is None
    assert rec.note == "re-queued: its worker (pid 101 on here) died during pretrain"

    last = jr.requeue_after_death(replace(mid, attempts=3), W1, 200.0, max_attempts=3)
    assert last.status == "failed" and last.finished == 200.0
    assert last.error == "the worker running this job died 3 times (last: pid 101 on here); " \
                         "not retried"

    pending = jr.requeue_after_death(replace(mid, cancel_requested=True), W1, 200.0, 3)
    assert pending.status == "cancelled" and pending.finished == 200.0
    assert pending.note == "its worker (pid 101 on here) died while the cancel was pending"

    # Someone settled it already, or another worker holds it now: nothing to do.
    assert jr.requeue_after_death(rec, W1, 201.0, 3) is None
    assert jr.requeue_after_death(replace(mid, worker=W2), W1, 201.0, 3) is None
    assert jr.requeue_after_death(replace(mid, status="done"), W1, 201.0, 3) is None


def test_mark_sent_followers_and_cache():
    assert jr.mark_sent(queued(), 101.0).enqueued == 101.0
    assert jr.mark_sent(running(), 101.0) is None
    rec = jr.add_follower(queued(), "v2")
    assert rec.followers == ("v1", "v2") and jr.add_follower(rec, "v2") is None
    assert rec.others_following("v1") == 1 and rec.others_following("v3") == 2
    assert rec.others_following(None) == 2
    assert jr.new_job(CONFIG, "k", 1.0).others_following("v1") == 1  # the CLI's submitter
    done = jr.finished_from_cache(queued(), "cuda (H200)", 100.0)
    assert done.status == "done" and done.cached and done.device == "cuda (H200)"
    assert done.started == done.finished == 100.0 and done.progress == Progress.done()
    assert jr.finished_from_cache(running(), "cpu", 100.0) is None


def test_a_whole_life():
    rec = jr.new_job(CONFIG, "k" * 16, now=1.0, owner="v1")
    rec = jr.mark_sent(rec, 1.1)
    rec = jr.claim(rec, W1, "cpu", 2.0)
    rec = jr.set_progress(rec, W1["id"], Progress("pretrain", 5, 10, 1.0), 3.0)
    rec = jr.requeue_after_death(rec, W1, 100.0, max_attempts=3)  # its worker died
    rec = jr.claim(jr.mark_sent(rec, 100.1), W2, "cuda", 101.0)
    assert rec.attempts == 2 and rec.holder_id == W2["id"]
    rec = jr.finish(rec, W2["id"], 150.0, "k" * 16, False, "cuda")
    assert rec.status == "done" and "died during pretrain" in rec.note
    assert JobRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_the_record_module_imports_no_store_queue_or_torch():
    code = ("import sys, xdd.jobs.record\n"
            "bad = [m for m in ('torch', 'huey', 'sqlite3', 'redis', 'streamlit') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

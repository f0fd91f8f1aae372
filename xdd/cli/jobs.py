"""The job commands of ``python -m xdd``: worker, submit, jobs, cancel (see docs/JOBS.md)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from xdd.cli.common import CLIError, check_device, config_from_args, format_results
from xdd.core import methods as _methods
from xdd.core.config import PRESETS, ConfigError
from xdd.core.fmt import fmt_duration


def add_job_commands(sub) -> None:
    w = sub.add_parser("worker", help="run a job worker in the foreground (Ctrl-C stops it)")
    w.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    w.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: usable cores - 1, at most 8)")
    w.add_argument("--once", action="store_true", help="exit after one job")
    w.add_argument("--max-idle", type=float, default=None, metavar="S",
                   help="exit after S seconds without work (default: run until stopped)")
    w.add_argument("--nice", type=int, default=0, metavar="N",
                   help="lower the worker's CPU priority by N (the app starts its worker with "
                        "10, so pages stay responsive while it trains)")
    s = sub.add_parser("submit", help="queue one run for the background worker")
    s.add_argument("--ood-digit", type=int, required=True)
    s.add_argument("--shots", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default quick)")
    s.add_argument("--methods", default=None,
                   help=f"comma-separated, from {', '.join(_methods.names())} (default: the preset's)")
    s.add_argument("--data-root", default=None, help="a torchvision MNIST folder (default: bundled)")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set retrain.lr=1e-4 (repeatable)")
    s.add_argument("--wait", action="store_true", help="follow the job until it ends")
    s.add_argument("--no-worker", action="store_true",
                   help="only queue the job; do not start a local worker when none is alive")
    j = sub.add_parser("jobs", help="list jobs (or show one job's record)")
    j.add_argument("id", nargs="?", help="a job id: print its record as JSON")
    j.add_argument("--limit", type=int, default=30)
    j.add_argument("--recover", action="store_true",
                   help="first re-queue (or fail) the jobs of dead workers and re-send lost "
                        "messages, as a worker's housekeeping does")
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id")


def _job_error(exc: Exception) -> CLIError:
    return CLIError(str(exc))


def cmd_worker(args: argparse.Namespace) -> int:
    from xdd.jobs import api as jobs
    from xdd.jobs.worker import run_worker

    check_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} is out of range; accepted: an integer >= 1")
    if not 0 <= args.nice <= 19:
        raise ConfigError(f"--nice {args.nice} is out of range; accepted: 0-19")
    if args.nice:
        os.nice(args.nice)
    try:
        jobs.queue_url()
    except jobs.JobError as exc:
        raise _job_error(exc)
    print(f"worker pid {os.getpid()}, queue {jobs.describe_queue()}; Ctrl-C stops it",
          file=sys.stderr)
    run_worker(device=args.device, threads=args.threads, once=args.once,
               max_idle=args.max_idle)
    return 0


def _fmt_progress(rec: dict[str, Any]) -> str:
    p = rec.get("progress") or {}
    text = str(p.get("stage", "-"))
    if p.get("total") and rec["status"] == "running":
        text += f" {p.get('step', 0)}/{p['total']}"
        if p.get("eta_s") is not None:
            text += f" eta {fmt_duration(p['eta_s'], compact=True)}"
    if rec.get("cancel_requested") and rec["status"] == "running":
        text += " (cancelling)"
    return text


def cmd_submit(args: argparse.Namespace) -> int:
    from xdd.jobs import api as jobs
    from xdd.jobs import workerproc
    from xdd.jobs import store as jobstore

    cfg = config_from_args(args, ood_digit=args.ood_digit, shots=args.shots, seed=args.seed)
    try:
        job_id = jobs.submit(cfg)
        rec = jobs.status(job_id)
        print(f"job {job_id} {rec['status']}  run {rec['run_key']}  preset={cfg.preset} "
              f"digit={cfg.ood_digit} shots={cfg.shots} seed={cfg.seed}")
        if rec["status"] in ("queued", "running") and not args.no_worker:
            if not workerproc.ensure_worker():
                raise CLIError(f"no worker could be started; see {jobstore.jobs_dir() / 'worker.log'}")
        if not args.wait:
            return 0
        shown = ""
        try:
            while rec["status"] in ("queued", "running"):
                time.sleep(0.5)
                rec = jobs.status(job_id)
                line = f"{rec['status']}: {_fmt_progress(rec)}"
                if line != shown:
                    print(line, file=sys.stderr)
                    shown = line
        except KeyboardInterrupt:
            print(f"stopped waiting; job {job_id} goes on in the background "
                  "(python -m xdd jobs)", file=sys.stderr)
            return 130
    except jobs.JobError as exc:
        raise _job_error(exc)
    if rec["status"] == "done":
        from xdd.storage import store

        res = store.load_results(rec["run_key"])
        if res is not None:
            print(format_results(res))
        return 0
    print(f"job {job_id} {rec['status']}" + (f": {rec['error']}" if rec.get("error") else ""),
          file=sys.stderr)
    return 1


def cmd_jobs(args: argparse.Namespace) -> int:
    import json

    from xdd.jobs import api as jobs
    from xdd.jobs import workerproc

    try:
        if args.recover:
            touched = jobs.recover()
            print(f"recovered {len(touched)} job(s)" + "".join(f"\n  {t}" for t in touched))
        if args.id:
            print(json.dumps(jobs.status(args.id), indent=2, sort_keys=True))
            return 0
        recs = jobs.list_jobs(limit=args.limit)
        alive = workerproc.workers()
    except jobs.JobError as exc:
        raise _job_error(exc)
    now = time.time()
    print(f"queue: {jobs.describe_queue()}; workers alive: {len(alive)}"
          + "".join(f"\n  worker pid {w['pid']} on {w['host']}: {w.get('device') or '?'}"
                    + (f", running {w['job']}" if w.get("job") else ", idle") for w in alive))
    if not recs:
        print("no jobs")
        return 0
    print(f"{'id':<32}  {'status':<9}  {'preset':<6} {'digit':>5} {'shots':>5} {'seed':>4}  "
          f"{'age':>5}  {'progress':<28}  device / error")
    for r in recs:
        c = r["config"]
        tail = r.get("error") or r.get("device") or ""
        print(f"{r['id']:<32}  {r['status']:<9}  {c.get('preset', '?'):<6} "
              f"{c.get('ood_digit', '?'):>5} {c.get('shots', '?'):>5} {c.get('seed', '?'):>4}  "
              f"{fmt_duration(now - r['created'], compact=True):>5}  {_fmt_progress(r)[:28]:<28}  {tail}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from xdd.jobs import api as jobs

    try:
        rec = jobs.cancel(args.id)
    except jobs.JobError as exc:
        raise _job_error(exc)
    if rec["status"] == "running":
        print(f"job {rec['id']} cancelling (its worker stops it within seconds)")
    elif rec["status"] == "cancelled":
        print(f"job {rec['id']} cancelled")
    else:
        print(f"job {rec['id']} already {rec['status']}; nothing to cancel")
    return 0

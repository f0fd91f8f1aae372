"""``python -m xdd``: run, sweep, show; worker, submit, jobs, cancel.

Bad input is reported as one line ``error: ...`` on stderr with exit code 2, before anything
is written to the cache.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .config import METHODS, PRESETS, ConfigError, RunConfig, preset
from .fmt import fmt_duration


class CLIError(Exception):
    pass


def _digit_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _int_list(text: str) -> list[int]:
    try:
        return _digit_list(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers (e.g. 0-9 or 1,5,10)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default quick)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from {', '.join(METHODS)} (default: the preset's)")
    p.add_argument("--data-root", default=None, help="a torchvision MNIST folder (default: bundled)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set retrain.lr=1e-4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m xdd", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one OOD digit end to end (cached)")
    r.add_argument("--ood-digit", type=int, required=True)
    r.add_argument("--shots", type=int, default=10)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--force", action="store_true",
                   help="recompute even if cached, and pretrain instead of using a shipped GAN")
    _add_common(r)
    s = sub.add_parser("sweep", help="digits x repetitions x shot counts; writes CSV + markdown")
    s.add_argument("--digits", type=_int_list, default=list(range(10)))
    s.add_argument("--reps", type=int, default=3, help="repetitions (seeds first-seed..)")
    s.add_argument("--first-seed", type=int, default=0)
    s.add_argument("--shots", type=_int_list, default=[10])
    s.add_argument("--gan-seed", type=int, default=None, metavar="N",
                   help="one GAN (pretraining seed N) for every repetition; default: each "
                        "repetition pretrains its own GAN with the repetition's seed")
    s.add_argument("--out", default=None, help="output stem (default cache/sweeps/<preset>)")
    s.add_argument("--title", default="Sweep", help="heading of the markdown report")
    _add_common(s)
    rp = sub.add_parser("report", help="write the results document from the cached runs")
    rp.add_argument("--preset", default="quick")
    rp.add_argument("--shots", type=int, default=10, help="shot count of the main table")
    rp.add_argument("--out", default="docs/RESULTS.md")
    rp.add_argument("--csv", default="docs/results.csv",
                    help="every run x reference x method of the preset, one row each")
    pt = sub.add_parser("pretrain", help="pretrain (or reuse) the GANs of digits x GAN seeds; "
                        "--bundle also writes them into the bundle shipped with the code")
    pt.add_argument("--digits", type=_int_list, default=list(range(10)))
    pt.add_argument("--gan-seeds", type=_int_list, default=[0], help="pretrain.seed values")
    pt.add_argument("--bundle", action="store_true",
                    help="write D and G's samples to xdd/pretrained/ (XDD_BUNDLE)")
    _add_common(pt)
    cal = sub.add_parser("calibrate", help="time each preset's networks on this machine "
                         "(a few seconds); the app's time estimates use the figures")
    cal.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    cal.add_argument("--presets", default="tiny,quick",
                     help="comma-separated presets to time (default tiny,quick; paper is slow "
                          "on a CPU)")
    sh = sub.add_parser("show", help="print a cached run's results")
    sh.add_argument("key", nargs="?", help="run key (default: list cached runs)")
    _add_job_commands(sub)
    return ap


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def config_from_args(args: argparse.Namespace, **fields: Any) -> RunConfig:
    overrides: dict[str, Any] = dict(fields)
    if args.methods:
        overrides["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.data_root:
        overrides["data.root"] = args.data_root
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        k, v = item.split("=", 1)
        overrides[k.strip()] = _parse_value(v.strip())
    return preset(args.preset, **overrides)


def _check_device(name: str) -> None:
    from .device import resolve_device

    resolve_device(name)


def _check_data(*configs: RunConfig) -> None:
    """Load MNIST and draw every config's splits now, so a bad folder or shot count fails
    before anything runs."""
    from .data import load_mnist, make_splits

    for cfg in configs:
        make_splits(cfg, load_mnist(cfg.data.root))


class TqdmProgress:
    """progress(stage, step, total, info) -> one tqdm bar per stage, with ETA."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, step: int, total: int, info: dict) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{self.prefix}{stage}", leave=False,
                            file=sys.stderr, dynamic_ncols=True)
        if self.bar is not None:
            self.bar.n = step
            shown = {k: f"{v:.3f}" for k, v in info.items() if isinstance(v, float)}
            if shown:
                self.bar.set_postfix(shown, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_results(res: dict[str, Any]) -> str:
    """A run's metrics under each scoring reference, the reference named beside every number."""
    from .methods import REFERENCES, display_key
    from .report import gan_seed, run_metrics
    from .bundle import gan_source

    lines = [f"run {res['run_key']}  preset={res['preset']}  OOD digit={res['ood_digit']}  "
             f"shots={res['shots']}  seed={res['seed']}  GAN seed={gan_seed(res)}  "
             f"device={res['device']}",
             f"test: {res['n_test']} images, {res['n_ood']} OOD (base rate {res['base_rate']:.3f});"
             f" wall {res['wall_time_s']:.1f} s; pretrained GAN "
             f"{gan_source(res)}",
             "AUPRC = average precision, OOD digit = positive"]
    by_ref = run_metrics(res)
    info = res.get("reference_info") or {}
    for ref in [r for r in REFERENCES if r in by_ref]:
        lines += ["", f"{ref} reference: {info.get(ref, '')}".rstrip(),
                  f"{'method':<10} {'reference':<10} {'AUPRC':>7} {'AUROC':>7} {'FPR@95':>7} "
                  f"{'AUPR-In':>8}"]
        for m in sorted(by_ref[ref], key=display_key):
            v = by_ref[ref][m]
            lines.append(f"{m:<10} {ref:<10} {v['auprc']:>7.4f} {v['auroc']:>7.4f} "
                         f"{v['fpr95']:>7.4f} {v['aupr_in']:>8.4f}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from .experiment import run_experiment

    cfg = config_from_args(args, ood_digit=args.ood_digit, shots=args.shots, seed=args.seed)
    _check_device(args.device)
    _check_data(cfg)
    from .experiment import cached_results

    cached = not args.force and cached_results(cfg) is not None
    bar = TqdmProgress()
    t = time.perf_counter()
    try:
        res = run_experiment(cfg, device=args.device, progress=bar, force=args.force)
    finally:
        bar.close()
    print(format_results(res))
    how = "answered from the cache" if cached else "computed"
    print(f"({how} in {time.perf_counter() - t:.1f} s)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiment import sweep_configs
    from .sweep import run_sweep

    if args.reps < 1:
        raise ConfigError(f"repetitions {args.reps} is out of range; accepted: an integer >= 1")
    base = config_from_args(args)
    seeds = list(range(args.first_seed, args.first_seed + args.reps))
    if args.gan_seed is not None and args.gan_seed < 0:
        raise ConfigError(f"--gan-seed {args.gan_seed} is out of range; accepted: an integer >= 0")
    gan_seeds = None if args.gan_seed is None else [args.gan_seed] * len(seeds)
    configs = sweep_configs(base, args.digits, seeds, args.shots, gan_seeds)  # validated as built
    _check_device(args.device)
    _check_data(*configs)
    import shlex

    run_sweep(configs, device=args.device, out=args.out, title=args.title,
              progress=lambda c: TqdmProgress(prefix=f"  d{c.ood_digit} k{c.shots} s{c.seed} "),
              command="python -m xdd " + shlex.join(sys.argv[1:]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from . import store
    from .report import cache_csv, cache_report

    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; accepted: {', '.join(PRESETS)}")
    try:
        md = cache_report(args.preset, command="python -m xdd " + shlex.join(sys.argv[1:]),
                          shots=args.shots)
    except ValueError as exc:
        raise CLIError(str(exc))
    store.atomic_write_bytes(Path(args.out), (md + "\n").encode())
    store.atomic_write_bytes(Path(args.csv), cache_csv(args.preset).encode())
    print(f"wrote {args.out} and {args.csv}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import dataclasses

    from . import bundle
    from .config import pretrain_key
    from .data import load_mnist, make_splits, to_tensor
    from .device import resolve_device
    from .experiment import ensure_pretrained

    base = config_from_args(args)
    cfgs = [dataclasses.replace(base, ood_digit=d,
                                pretrain=dataclasses.replace(base.pretrain, seed=s))
            for d in args.digits for s in args.gan_seeds]
    _check_device(args.device)
    _check_data(*cfgs)
    dev = resolve_device(args.device)
    data = load_mnist(base.data.root)
    for cfg in cfgs:
        x_pre = to_tensor(data.x_train[make_splits(cfg, data).pretrain])
        bar = TqdmProgress()
        try:
            # a bundle is made from this machine's own GANs, never from the bundle itself
            D, samples, losses, source, secs = ensure_pretrained(cfg, x_pre, dev, bar,
                                                                 use_bundle=not args.bundle)
        finally:
            bar.close()
        where = ""
        if args.bundle:
            where = f" -> {bundle.write(cfg, D, samples, losses)}"
        d_loss = (losses or {}).get("d_loss")
        print(f"digit {cfg.ood_digit} GAN seed {cfg.pretrain.seed}: {source} in {secs:.1f} s, "
              f"key {pretrain_key(cfg)}, D's final loss "
              f"{'?' if d_loss is None else f'{d_loss:.2f}'}{where}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from .device import resolve_device
    from .estimate import calibrate, calibration_path
    from .worker import default_threads

    dev = resolve_device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(default_threads())  # what the worker runs with
    names = [p.strip() for p in args.presets.split(",") if p.strip()]
    for name in names:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    cal = calibrate(str(dev), names)
    kind = "cuda" if dev.type == "cuda" else "cpu"
    for name, e in cal[kind]["presets"].items():
        print(f"{name:<6} pretrain {e['pretrain_step_s'] * 1e3:8.1f} ms/step  retrain "
              f"{e['retrain_step_s'] * 1e3:7.1f} ms/step  score {e['score_image_s'] * 1e6:6.1f} "
              "us/image")
    if "umap_compile_s" in cal[kind]:
        print(f"UMAP's compilation (first call in a process): {cal[kind]['umap_compile_s']:.1f} s")
    print(f"written to {calibration_path()}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import store

    if not args.key:
        runs = store.list_runs()
        if not runs:
            print("no cached runs")
        for r in runs:
            best = r["methods"].get("xdd", next(iter(r["methods"].values())))
            print(f"{r['run_key']}  {r['preset']:<6} digit={r['ood_digit']} shots={r['shots']:<3} "
                  f"seed={r['seed']:<3} AUPRC(first/xdd)={best['auprc']:.4f}")
        return 0
    try:
        res = store.load_results(args.key)
    except ValueError as exc:
        raise ConfigError(str(exc))
    if res is None:
        raise CLIError(f"no cached run with key {args.key!r} (see `python -m xdd show`)")
    print(format_results(res))
    return 0


# ---------------------------------------------------------------- jobs: worker, submit, jobs, cancel


def _add_job_commands(sub) -> None:
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
                   help=f"comma-separated, from {', '.join(METHODS)} (default: the preset's)")
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
    from . import jobs
    from .worker import run_worker

    _check_device(args.device)
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
    from . import jobs

    cfg = config_from_args(args, ood_digit=args.ood_digit, shots=args.shots, seed=args.seed)
    try:
        job_id = jobs.submit(cfg)
        rec = jobs.status(job_id)
        print(f"job {job_id} {rec['status']}  run {rec['run_key']}  preset={cfg.preset} "
              f"digit={cfg.ood_digit} shots={cfg.shots} seed={cfg.seed}")
        if rec["status"] in ("queued", "running") and not args.no_worker:
            if not jobs.ensure_worker():
                raise CLIError(f"no worker could be started; see {jobs.jobs_dir() / 'worker.log'}")
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
        from . import store

        res = store.load_results(rec["run_key"])
        if res is not None:
            print(format_results(res))
        return 0
    print(f"job {job_id} {rec['status']}" + (f": {rec['error']}" if rec.get("error") else ""),
          file=sys.stderr)
    return 1


def cmd_jobs(args: argparse.Namespace) -> int:
    import json

    from . import jobs

    try:
        if args.recover:
            touched = jobs.recover()
            print(f"recovered {len(touched)} job(s)" + "".join(f"\n  {t}" for t in touched))
        if args.id:
            print(json.dumps(jobs.status(args.id), indent=2, sort_keys=True))
            return 0
        recs = jobs.list_jobs(limit=args.limit)
        alive = jobs.workers()
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
    from . import jobs

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "sweep": cmd_sweep, "report": cmd_report,
                "pretrain": cmd_pretrain, "calibrate": cmd_calibrate, "show": cmd_show, "worker": cmd_worker,
                "submit": cmd_submit, "jobs": cmd_jobs, "cancel": cmd_cancel}
    try:
        return handlers[args.cmd](args)
    except (ConfigError, CLIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing partial was kept in the cache", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``python -m xdd``: run, sweep, show; worker, submit, jobs, cancel.

Bad input is reported as one line ``error: ...`` on stderr with exit code 2, before anything
is written to the cache.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from xdd.cli.common import CLIError, check_device, config_from_args, format_results
from xdd.cli.jobs import add_job_commands, cmd_cancel, cmd_jobs, cmd_submit, cmd_worker
from xdd.core import methods as _methods
from xdd.core.config import PRESETS, ConfigError, RunConfig


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
                   help=f"comma-separated, from {', '.join(_methods.names())} (default: the preset's)")
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
    s.add_argument("--shots", type=_int_list, default=None, help="shot counts (default 10)")
    s.add_argument("--vary", default=None, metavar="FIELD=V1,V2,...",
                   help="one more axis: every run once per value of a config field, values "
                        "parsed as --set's (e.g. --vary retrain.beta=0.5,1,2)")
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
    rp.add_argument("--split", default="test", choices=("test", "val"),
                    help="evaluation split of the runs reported (val: where settings are "
                         "chosen; default test)")
    pt = sub.add_parser("pretrain", help="pretrain (or reuse) the GANs of digits x GAN seeds; "
                        "--bundle also writes them into the bundle shipped with the code")
    pt.add_argument("--digits", type=_int_list, default=list(range(10)))
    pt.add_argument("--gan-seeds", type=_int_list, default=[0], help="pretrain.seed values")
    pt.add_argument("--bundle", action="store_true",
                    help="write D and G's samples to xdd/pretrained/ (XDD_BUNDLE)")
    _add_common(pt)
    sp = sub.add_parser("ship-scores", help="compute the reusable scores of each shipped GAN's "
                        "default run and ship them beside it (xdd/pretrained/reuse/)")
    sp.add_argument("--digits", type=_int_list, default=list(range(10)))
    sp.add_argument("--preset", default="quick")
    sp.add_argument("--methods", default="pixels,before",
                    help="the methods whose unlabeled scores ship (default pixels,before)")
    sp.add_argument("--threads", type=int, default=1,
                    help="torch threads they are computed at: the reading worker's (default 1, "
                         "a 2-core laptop's worker)")
    cal = sub.add_parser("calibrate", help="time each preset's networks on this machine "
                         "(~35 s on a 2-core CPU); the app's time estimates use the figures")
    cal.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    cal.add_argument("--reference", action="store_true",
                     help="also ship it as the reference a machine not timed yet scales by a "
                          "one-second probe (xdd/estimate/reference.json)")
    cal.add_argument("--presets", default="tiny,quick",
                     help="comma-separated presets to time (default tiny,quick; paper is slow "
                          "on a CPU)")
    sh = sub.add_parser("show", help="print a cached run's results")
    sh.add_argument("key", nargs="?", help="run key (default: list cached runs)")
    add_job_commands(sub)
    return ap


def _check_data(*configs: RunConfig) -> None:
    """Load MNIST and draw every config's splits now, so a bad folder or shot count fails
    before anything runs."""
    from xdd.storage.data import load_mnist, make_splits

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


def cmd_run(args: argparse.Namespace) -> int:
    from xdd.pipeline.experiment import run_experiment

    cfg = config_from_args(args, ood_digit=args.ood_digit, shots=args.shots, seed=args.seed)
    check_device(args.device)
    _check_data(cfg)
    from xdd.pipeline.experiment import cached_results

    cached = not args.force and cached_results(cfg) is not None
    if not cached:
        print(_run_estimate(cfg, args.device, args.force), flush=True)
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


def _run_estimate(cfg, device: str, force: bool, threads: int | None = None) -> str:
    """One line: how long this run should take here, from this machine's runs at the same
    thread count (default: torch's, what the run gets) or its calibration (xdd.estimate.model),
    and on what basis."""
    import torch

    from xdd.storage import store
    from xdd.core.device import resolve_device
    from xdd.estimate import estimate, gan_on_disk
    from xdd.core.fmt import fmt_duration

    threads = threads or torch.get_num_threads()
    kind = resolve_device(device).type
    est = estimate([cfg], store.list_runs(), kind, threads=threads, recompute=force,
                   gan_available=lambda c: gan_on_disk(c, use_bundle=not force))
    where = f"{kind}, {threads} thread{'s' * (threads != 1)}" if kind == "cpu" else kind
    if est.seconds is None:
        return (f"estimate: none yet for {where} (`python -m xdd calibrate` measures this "
                "machine in about half a minute)")
    return f"estimate: about {fmt_duration(est.seconds)} ({where}; {est.basis})"


def sweep_plan(args: argparse.Namespace) -> list[RunConfig]:
    """The configs a ``sweep`` command runs, validated, in order (digit, shots, seed, value);
    nothing is read or written."""
    from xdd.core import fields
    from xdd.pipeline.experiment import sweep_configs
    from xdd.cli.common import parse_vary, set_overrides

    if args.reps < 1:
        raise ConfigError(f"repetitions {args.reps} is out of range; accepted: an integer >= 1")
    field, values = parse_vary(args.vary) if args.vary else (None, [])
    if field is not None and field in set_overrides(args.set):
        raise ConfigError(f"--vary {field} and --set {field} both set {field}; keep one")
    if field == "shots" and args.shots is not None:
        raise ConfigError("--vary shots and --shots both give shot counts; keep one")
    base = config_from_args(args)
    seeds = list(range(args.first_seed, args.first_seed + args.reps))
    if args.gan_seed is not None and args.gan_seed < 0:
        raise ConfigError(f"--gan-seed {args.gan_seed} is out of range; accepted: an integer >= 0")
    gan_seeds = None if args.gan_seed is None else [args.gan_seed] * len(seeds)
    shots = args.shots if args.shots is not None else [base.shots]
    configs = sweep_configs(base, args.digits, seeds, shots, gan_seeds)  # validated as built
    return fields.vary(configs, field, values) if field is not None else configs


def cmd_sweep(args: argparse.Namespace) -> int:
    from xdd.pipeline.sweep import run_sweep

    configs = sweep_plan(args)
    check_device(args.device)
    _check_data(*configs)
    import shlex

    run_sweep(configs, device=args.device, out=args.out, title=args.title,
              progress=lambda c: TqdmProgress(prefix=f"  d{c.ood_digit} k{c.shots} s{c.seed} "),
              command="python -m xdd " + shlex.join(sys.argv[1:]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from xdd.storage import store
    from xdd.report.document import cache_csv, cache_report

    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; accepted: {', '.join(PRESETS)}")
    try:
        md = cache_report(args.preset, command="python -m xdd " + shlex.join(sys.argv[1:]),
                          shots=args.shots, split=args.split)
    except ValueError as exc:
        raise CLIError(str(exc))
    store.atomic_write_bytes(Path(args.out), (md + "\n").encode())
    store.atomic_write_bytes(Path(args.csv), cache_csv(args.preset, args.split).encode())
    print(f"wrote {args.out} and {args.csv}")
    return 0


def cmd_ship_scores(args: argparse.Namespace) -> int:
    from xdd.core.config import preset
    from xdd.pipeline.ship import ship

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    for d in args.digits:
        cfg = preset(args.preset, ood_digit=d, methods=methods, **{"projection.methods": ()})
        for path in ship(cfg, args.threads):
            print(f"digit {d}: {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import dataclasses

    from xdd.storage import bundle
    from xdd.core.config import pretrain_key
    from xdd.storage.data import load_mnist, make_splits, to_tensor
    from xdd.core.device import reproducible, resolve_device
    from xdd.pipeline.gan import ensure_pretrained

    base = config_from_args(args)
    cfgs = [dataclasses.replace(base, ood_digit=d,
                                pretrain=dataclasses.replace(base.pretrain, seed=s))
            for d in args.digits for s in args.gan_seeds]
    check_device(args.device)
    _check_data(*cfgs)
    dev = resolve_device(args.device)
    data = load_mnist(base.data.root)
    for cfg in cfgs:
        x_pre = to_tensor(data.x_train[make_splits(cfg, data).pretrain])
        bar = TqdmProgress()
        try:
            # a bundle is made from this machine's own GANs, never from the bundle itself
            with reproducible(dev):  # as inside a run
                D, samples, losses, source, secs = ensure_pretrained(
                    cfg, x_pre, dev, bar, use_bundle=not args.bundle)
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

    from xdd.core.device import resolve_device
    from xdd.estimate import calibrate, calibration_path
    from xdd.jobs.worker import default_threads

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
        print(f"UMAP's compilation (its first call ever here): {cal[kind]['umap_compile_s']:.1f} s")
    if "umap_load_s" in cal[kind]:
        print("UMAP's first call in a new process, compiled code loaded from numba's cache: "
              f"{cal[kind]['umap_load_s']:.1f} s")
    print(f"written to {calibration_path()}")
    if args.reference:
        from xdd.estimate.first_guess import write_reference

        print(f"and shipped as the first-guess reference: {write_reference(cal)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from xdd.core.methods import AFTER
    from xdd.storage import store

    if not args.key:
        runs = store.list_runs()
        if not runs:
            print("no cached runs")
        for r in runs:
            best = r["methods"].get(AFTER, next(iter(r["methods"].values())))
            print(f"{r['run_key']}  {r['preset']:<6} digit={r['ood_digit']} shots={r['shots']:<3} "
                  f"seed={r['seed']:<3} AUPRC(first/{AFTER})={best['auprc']:.4f}")
        return 0
    try:
        res = store.load_results(args.key)
    except ValueError as exc:
        raise ConfigError(str(exc))
    if res is None:
        raise CLIError(f"no cached run with key {args.key!r} (see `python -m xdd show`)")
    print(format_results(res))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "sweep": cmd_sweep, "report": cmd_report,
                "pretrain": cmd_pretrain, "ship-scores": cmd_ship_scores, "calibrate": cmd_calibrate, "show": cmd_show, "worker": cmd_worker,
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

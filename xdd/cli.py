"""``python -m xdd``: run, sweep, show.

Bad input is reported as one line ``error: ...`` on stderr with exit code 2, before anything
is written to the cache.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

from .config import METHODS, PRESETS, ConfigError, RunConfig, preset, validate


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
    r.add_argument("--force", action="store_true", help="recompute even if cached")
    _add_common(r)
    s = sub.add_parser("sweep", help="digits x repetitions x shot counts; writes CSV + markdown")
    s.add_argument("--digits", type=_int_list, default=list(range(10)))
    s.add_argument("--reps", type=int, default=3, help="repetitions (seeds first-seed..)")
    s.add_argument("--first-seed", type=int, default=0)
    s.add_argument("--shots", type=_int_list, default=[10])
    s.add_argument("--out", default=None, help="output stem (default cache/sweeps/<preset>)")
    _add_common(s)
    sh = sub.add_parser("show", help="print a cached run's results")
    sh.add_argument("key", nargs="?", help="run key (default: list cached runs)")
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


def _check_data(cfg: RunConfig) -> None:
    """Load MNIST and draw the splits now, so a bad folder or shot count fails up front."""
    from .data import load_mnist, make_splits

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
    lines = [f"run {res['run_key']}  preset={res['preset']}  OOD digit={res['ood_digit']}  "
             f"shots={res['shots']}  seed={res['seed']}  device={res['device']}",
             f"test: {res['n_test']} images, {res['n_ood']} OOD (base rate {res['base_rate']:.3f});"
             f" wall {res['wall_time_s']:.1f} s; pretrained GAN "
             f"{'reused' if res['pretrain_reused'] else 'trained'}",
             "AUPRC = average precision, OOD digit = positive",
             f"{'method':<10} {'AUPRC':>7} {'AUROC':>7} {'FPR@95':>7} {'AUPR-In':>8}"]
    for m, v in res["methods"].items():
        lines.append(f"{m:<10} {v['auprc']:>7.4f} {v['auroc']:>7.4f} {v['fpr95']:>7.4f} "
                     f"{v['aupr_in']:>8.4f}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from .experiment import run_experiment

    cfg = config_from_args(args, ood_digit=args.ood_digit, shots=args.shots, seed=args.seed)
    _check_device(args.device)
    _check_data(cfg)
    bar = TqdmProgress()
    t = time.perf_counter()
    try:
        res = run_experiment(cfg, device=args.device, progress=bar, force=args.force)
    finally:
        bar.close()
    print(format_results(res))
    print(f"(answered in {time.perf_counter() - t:.1f} s)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiment import sweep_configs
    from .sweep import run_sweep

    if args.reps < 1:
        raise ConfigError(f"repetitions {args.reps} is out of range; accepted: an integer >= 1")
    for d in args.digits:
        if not 0 <= d <= 9:
            raise ConfigError(f"OOD digit {d} is out of range; accepted: 0-9")
    base = config_from_args(args)
    seeds = list(range(args.first_seed, args.first_seed + args.reps))
    configs = [validate(c) for c in sweep_configs(base, args.digits, seeds, args.shots)]
    _check_device(args.device)
    _check_data(max(configs, key=lambda c: c.shots))
    run_sweep(configs, device=args.device, out=args.out)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "sweep": cmd_sweep, "show": cmd_show}
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

"""Benchmarks 2 and 3: the quick preset end to end for one OOD digit, then cache reuse.

A child process plays the job worker: it sets torch to the worker's thread count, calls
``xdd.core.projection.warm_up()`` once (what the worker does at start), runs the quick preset with
10 shots into a fresh ``XDD_CACHE`` (the converted MNIST in ``XDD_DATA_CACHE`` is shared),
records its peak resident memory, then runs the same digit with 5 shots, which reuses the
pretrained GAN.

    python bench/pipeline/e2e.py --json out.json [--digit 8] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._common import REPO, log, worker_threads, write_json  # noqa: E402


def vm_mib() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, MiB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from xdd.core.config import preset, run_key
    from xdd.pipeline.experiment import run_experiment
    from xdd.core.projection import warm_up

    out: dict = {"threads": torch.get_num_threads(), "runs": []}
    t = time.perf_counter()
    out["warm_up_s"] = warm_up()
    out["warm_up_total_s"] = time.perf_counter() - t  # with the imports
    out["rss_after_warm_up_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for shots in args.shots:
        cfg = preset(args.preset, ood_digit=args.digit, shots=shots, seed=args.seed)
        calls = [0]
        memory: list[dict] = []  # resident memory when each stage starts

        def progress(stage: str, step: int, total: int, info: dict) -> None:
            calls[0] += 1
            label = stage + (f" ({info['method']})" if "method" in info else "") + (
                f" ({info['embedding']})" if "embedding" in info else "")
            if not memory or memory[-1]["stage"] != label:
                memory.append({"stage": label, **vm_mib()})

        t, c = time.perf_counter(), time.process_time()
        res = run_experiment(cfg, device="cpu", progress=progress, force=True)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        out["runs"].append({
            "shots": shots, "run_key": run_key(cfg), "wall_s": wall, "cpu_s": cpu,
            "pretrain_steps": cfg.pretrain.steps, "n_projected": cfg.projection.n_samples,
            "wall_time_s": res["wall_time_s"], "timings": res["timings"],
            "pretrain_reused": res["pretrain_reused"], "progress_calls": calls[0],
            "auprc": {m: v["auprc"] for m, v in res["methods"].items()},
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "memory": memory + [{"stage": "end", **vm_mib()}],
        })
    print(json.dumps(out))


def stage_groups(timings: dict[str, float]) -> dict[str, float]:
    """Seconds per stage family: data, pretrain, retrain, score, project:<method>."""
    groups: dict[str, float] = {}
    for name, s in timings.items():
        head, _, rest = name.partition(":")
        key = f"project:{rest.rsplit(':', 1)[-1]}" if head == "project" else head
        groups[key] = groups.get(key, 0.0) + s
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digit", type=int, default=8)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", default="10,5", help="first run's shots, then the reuse run's")
    ap.add_argument("--threads", type=int, default=None, help="default: the worker's")
    ap.add_argument("--cache", default=None, help="XDD_CACHE for the runs (default: a fresh temp dir)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.shots = [int(s) for s in str(args.shots).split(",")]
    args.threads = args.threads or worker_threads()
    if args.child:
        child(args)
        return

    from xdd.storage import store
    from xdd.storage.data import load_mnist

    data_cache = str(store.data_dir())
    load_mnist()  # the shared converted copy exists before the clock starts
    cache = args.cache or tempfile.mkdtemp(prefix="xdd-bench-cache-")
    Path(cache).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDD_CACHE=cache, XDD_DATA_CACHE=data_cache)
    cmd = [sys.executable, __file__, "--child", "--digit", str(args.digit), "--preset",
           args.preset, "--seed", str(args.seed), "--shots", ",".join(map(str, args.shots)),
           "--threads", str(args.threads)]
    log(f"e2e: {args.preset} preset, digit {args.digit}, shots {args.shots}, "
        f"{args.threads} torch thread(s), cache {cache}")
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"e2e child failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    # The child's peak as its parent sees it (includes everything the child did).
    out["child_maxrss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out.update(cache=cache, data_cache=data_cache, digit=args.digit, preset=args.preset)
    for r in out["runs"]:
        r["stages"] = stage_groups(r["timings"])
    if len(out["runs"]) > 1:
        out["reuse_ratio"] = out["runs"][1]["wall_s"] / out["runs"][0]["wall_s"]
    write_json(args.json, out)


if __name__ == "__main__":
    main()

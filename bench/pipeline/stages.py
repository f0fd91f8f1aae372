"""The demo's job, stage by stage: each stage's time inside the job beside its time alone.

The job runs as the app runs it: submitted to a job worker (its default thread count and
niceness; the scoring of the methods that retrain nothing in a side thread beside the
retraining), on an empty cache.  "Alone" is the same config in a fresh process at the same
torch thread count with the side threads switched off, so that every stage runs by itself on
an otherwise idle machine.  The ratio says how much of a stage's time in the job is contention.
Runs alternate (job, alone, job, alone, ...) so that background load hits both alike.

    python bench/pipeline/stages.py [--reps 2] [--digit 8] [--json OUT] [--no-doc]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._common import DOC, log, machine, median, worker_threads, write_json, write_section  # noqa: E402

BEGIN = "<!-- bench/pipeline/stages.py: begin (generated; edits between these markers are overwritten) -->"
END = "<!-- bench/pipeline/stages.py: end -->"


def demo_config(digit: int, seed: int = 0):
    """The app's first demo (pages/_jobs.py): the paper's pair and the raw-pixel baseline;
    another ``seed`` keeps the shipped GAN (GAN seed 0) but draws another labeled set, so the
    shipped scores do not apply and every stage is computed."""
    from xdd.core.config import preset
    from xdd.core.methods import BY_NAME, is_main, names

    methods = tuple(m for m in names() if is_main(m) or BY_NAME[m].network is None)
    return preset("quick", ood_digit=digit, seed=seed, methods=methods)


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ, XDD_CACHE=cache, XDD_WORKER_MAX_IDLE="3", XDD_CALIBRATE="0")
    env.pop("OMP_NUM_THREADS", None)  # the worker sets its own pools, as in the app
    return env


def in_job(digit: int, seed: int) -> dict[str, Any]:
    """Submit the demo to a fresh worker on an empty cache; its results' timings."""
    with tempfile.TemporaryDirectory(prefix="xdd-stages-") as cache:
        code = ("import json, sys, time\n"
                "from bench.pipeline.stages import demo_config\n"
                "from xdd.jobs import api as jobs, workerproc\n"
                "from xdd.storage import store\n"
                f"cfg = demo_config({digit}, {seed})\n"
                "t0 = time.perf_counter()\n"
                "job = jobs.submit(cfg)\n"
                "assert workerproc.ensure_worker()\n"
                "while jobs.status(job)['status'] in ('queued', 'running'):\n"
                "    time.sleep(0.2)\n"
                "rec = jobs.status(job)\n"
                "res = store.load_results(rec['run_key'])\n"
                "print(json.dumps({'timings': res['timings'], 'scores_s': res.get('scores_s'),"
                " 'wall_s': time.perf_counter() - t0, 'device': res['device'],"
                " 'reused': res.get('scores_reused', [])}))\n"
                "while workerproc.workers():\n"
                "    time.sleep(0.5)\n")
        out = subprocess.run([sys.executable, "-c", code], env=_env(cache), cwd=DOC.parent.parent,
                             capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])


def alone(digit: int, seed: int, threads: int) -> dict[str, Any]:
    """The same config in a fresh process, at ``threads`` torch threads, no side threads."""
    with tempfile.TemporaryDirectory(prefix="xdd-stages-") as cache:
        out = subprocess.run([sys.executable, __file__, "--child", "--digit", str(digit),
                              "--seed", str(seed), "--threads", str(threads)], env=_env(cache),
                             cwd=DOC.parent.parent, capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])


def child(digit: int, seed: int, threads: int) -> None:
    import torch

    import xdd.pipeline.experiment as experiment
    from xdd.pipeline.experiment import run_experiment

    torch.set_num_threads(threads)
    experiment.side_threads = lambda dev: 0  # every stage by itself
    t0 = time.perf_counter()
    res = run_experiment(demo_config(digit, seed), device="cpu")
    print(json.dumps({"timings": res["timings"], "scores_s": res.get("scores_s"),
                      "wall_s": time.perf_counter() - t0, "device": res["device"],
                      "reused": res.get("scores_reused", [])}))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    threads = worker_threads()
    jobs, alones = [], []
    for i in range(args.reps):
        log(f"rep {i + 1}/{args.reps}: the demo job through a worker")
        jobs.append(in_job(args.digit, args.seed))
        log(f"rep {i + 1}/{args.reps}: the same stages alone at {threads} torch thread(s)")
        alones.append(alone(args.digit, args.seed, threads))
    return {"machine": machine(), "digit": args.digit, "seed": args.seed, "threads": threads,
            "job": jobs,
            "alone": alones, "when": time.strftime("%Y-%m-%d %H:%M")}


def rows(raw: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(stage, median seconds in the job, median seconds alone) for every timed stage."""
    from xdd.pipeline.plan import plan

    order = [s.name for s in plan(demo_config(raw["digit"]))]
    names = {k for r in raw["job"] + raw["alone"] for k in r["timings"]}
    key = {n: (order.index(n) if n in order else len(order), n) for n in names}
    return [(n, median([r["timings"][n] for r in raw["job"] if n in r["timings"]]),
             median([r["timings"][n] for r in raw["alone"] if n in r["timings"]]))
            for n in sorted(names, key=key.get)]


def render(raw: dict[str, Any]) -> str:
    m = raw["machine"]
    lines = [f"Demo job (digit {raw['digit']}, seed {raw.get('seed', 0)}, quick preset, "
             "pixels + before + XDD), "
             f"{raw['threads']} torch thread(s), median of {len(raw['job'])} alternating runs "
             f"each way; {m['cpu']}, {m['affinity']} cores; {raw['when']}. Command: "
             "`python bench/pipeline/stages.py`.", "",
             "| stage | in the job (s) | alone (s) | ratio |", "|---|---:|---:|---:|"]
    for name, job, solo in rows(raw):
        ratio = job / solo if solo and solo > 0.05 else float("nan")
        lines.append(f"| {name} | {job:.2f} | {solo:.2f} | "
                     f"{'' if ratio != ratio else f'{ratio:.2f}'} |")
    for what in ("scores_s", "wall_s"):
        j = median([r[what] for r in raw["job"] if r.get(what)])
        a = median([r[what] for r in raw["alone"] if r.get(what)])
        label = {"scores_s": "run clock to committed scores",
                 "wall_s": "submit to finished job (job) / process (alone)"}[what]
        lines.append(f"| *{label}* | {j:.2f} | {a:.2f} | {j / a:.2f} |")
    reused = sorted({m for r in raw["job"] for m in r.get("reused", [])})
    lines += ["", "Scores read, not computed (shipped beside the GAN): "
              f"{', '.join(reused) or 'none'}.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--digit", type=int, default=8)
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="run seeds, one table each (0: the shipped scores apply; 1: computed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", default=None, help="render a saved measurement")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.digit, args.seed[0], args.threads)
    if args.from_json:
        raws = json.loads(Path(args.from_json).read_text())
    else:
        raws = [measure(argparse.Namespace(**{**vars(args), "seed": s})) for s in args.seed]
    if args.json:
        write_json(args.json, raws)
    section = "\n".join([BEGIN, ""] + [render(r) for r in raws] + [END]) + "\n"
    print(section)
    if not args.no_doc:
        write_section(DOC, BEGIN, END, section, "## The demo's stages, in the job and alone\n\n")


if __name__ == "__main__":
    main()

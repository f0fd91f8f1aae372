"""What watching the retraining costs: the snapshots a retraining keeps, and the frames made
of them.

A quick run's XDD retraining (the shipped GAN of a digit, 10 shots, the worker's torch thread
count) with and without keeping the network's state at the snapshot steps, alternated; the
frames (each kept state embeds the maps' points after the scores are committed, one PCA of
the final embedding places them); and what the snapshots add to the first demo's click-to-bars time (they run inside the
retraining, which is on its critical path), against that time as bench/first_demo.py last
measured it (``--demo-s``).  Targets: snapshots <= 5 % of the retraining, frames <= 10 s,
the demo <= 5 % slower.

    python bench/pipeline/snapshots.py [--reps 3] [--digit 8] [--demo-s 30] [--no-doc]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._common import DOC, log, machine, median, worker_threads, write_section  # noqa: E402

BEGIN = "<!-- bench/pipeline/snapshots.py: begin (generated; edits between these markers are overwritten) -->"
END = "<!-- bench/pipeline/snapshots.py: end -->"


def _inputs(digit: int):
    import torch

    from xdd.core.config import preset
    from xdd.pipeline.experiment import _noop
    from xdd.pipeline.gan import ensure_pretrained
    from xdd.pipeline.inputs import prepare

    cfg = preset("quick", ood_digit=digit)
    data = prepare(cfg, torch.device("cpu"))
    D = ensure_pretrained(cfg, data.pretrain_images(), torch.device("cpu"), _noop)[0]
    return cfg, data, D


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from xdd.core.methods import AFTER
    from xdd.core.projection import pca_frames
    from xdd.train.retrain import retrain
    from xdd.train.snapshots import snapshot_steps

    threads = worker_threads()
    torch.set_num_threads(threads)
    cfg, data, D = _inputs(args.digit)
    x_map = data.map_images()
    plain, snap = [], []
    for i in range(args.reps):
        for keep, out in ((False, plain), (True, snap)):
            log(f"rep {i + 1}: retraining {'with' if keep else 'without'} snapshots")
            t = time.perf_counter()
            got = retrain(D, cfg.retrain, data.x_lab, data.y_lab_idx, AFTER, cfg.seed,
                          snapshots=keep)
            out.append(time.perf_counter() - t)
    from xdd.train.retrain import embed_all, embed_snapshots

    t = time.perf_counter()  # the frames stage: the snapshots embedded, then placed
    snaps = embed_snapshots(got.D, got.snapshots, x_map)
    earlier = [snaps[s].astype(np.float64) for s in sorted(snaps)]
    final = embed_all(got.D, x_map).numpy().astype(np.float64)  # what the run scores
    pca_frames(final, earlier, cfg.projection.seed, threads)
    frames_s = time.perf_counter() - t
    return {"machine": machine(), "threads": threads, "digit": args.digit,
            "points": int(len(x_map)), "steps": cfg.retrain.steps,
            "snapshot_steps": list(snapshot_steps(cfg.retrain.steps)), "plain_s": plain,
            "snapshots_s": snap, "frames_s": frames_s, "demo_s": args.demo_s,
            "when": time.strftime("%Y-%m-%d %H:%M")}


def render(raw: dict[str, Any]) -> str:
    plain, snap = median(raw["plain_s"]), median(raw["snapshots_s"])
    extra = snap - plain
    m = raw["machine"]
    rows = [("retraining, no snapshots (s)", f"{plain:.2f}", ""),
            ("retraining with snapshots (s)", f"{snap:.2f}",
             f"+{100 * extra / plain:.1f} % (target <= 5 %)"),
            ("frames: the snapshots embedded, one PCA, the others placed by it (s)",
             f"{raw['frames_s']:.2f}", "target <= 10 s")]
    if raw.get("demo_s"):
        rows.append(("first demo, click to bars (s): what the snapshots add",
                     f"+{extra:.2f} of {raw['demo_s']:.1f}",
                     f"+{100 * extra / raw['demo_s']:.1f} % (target <= 5 %)"))
    lines = [BEGIN, "", f"Quick preset, digit {raw['digit']}, 10 shots, {raw['steps']} steps, "
             f"snapshots of {raw['points']} points at steps {raw['snapshot_steps']}, "
             f"{raw['threads']} torch thread(s), median of {len(raw['plain_s'])} alternating "
             f"runs each way; {m['cpu']}; {raw['when']}. Command: "
             "`python bench/pipeline/snapshots.py`.", "", "| | measured | |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines + ["", END]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--digit", type=int, default=8)
    ap.add_argument("--demo-s", type=float, default=None,
                    help="the first demo's click-to-bars seconds (bench/first_demo.py)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    section = render(measure(args))
    print(section)
    if not args.no_doc:
        write_section(DOC, BEGIN, END, section, "## Watching the retraining: what it costs\n\n")


if __name__ == "__main__":
    main()

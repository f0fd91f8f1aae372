"""Pretraining precision and memory layout: what one pretraining step costs on this CPU in each
of the four modes (fp32, channels_last, bf16 autocast, both), at the job worker's thread count
and at every usable core, and (``--check``) whether the fast mode leaves the AUPRCs where fp32
puts them, from validation runs in a cache.  Rewrites its section of docs/PERFORMANCE.md.

    python bench/pipeline/precision.py                      # the step timings (~1-2 min)
    python bench/pipeline/precision.py --check /work/cache  # and the validation comparison

The step is pretrain_gan's own (``xdd.train.pretrain``), on fresh networks of the chosen preset;
the modes are alternated round by round so that background load lands on all of them.  The
validation comparison reads every cached run on the validation split (GAN seeds >= 100) and
pairs, per (digit, GAN seed), the fp32 run with the bf16 + channels_last run of the same
config: the difference of each method's AUPRC, against the spread between GAN seeds of the
same method on the test sweep (the seed noise a reader of the results already sees).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._common import DOC, loadavg, log, machine, median, worker_threads, write_section  # noqa: E402

BEGIN = "<!-- bench/pipeline/precision.py: begin (generated; edits between these markers are overwritten) -->"
END = "<!-- bench/pipeline/precision.py: end -->"
MODES = {"fp32": ("fp32", False), "channels_last": ("fp32", True), "bf16": ("bf16", False),
         "bf16 + channels_last": ("bf16", True)}


def step_times(preset_name: str, threads: int, steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per pretraining step of each mode (steps per call, rounds alternated)."""
    import torch

    from xdd.core.config import preset
    from xdd.storage.data import load_mnist, to_tensor
    from xdd.train.pretrain import pretrain_gan

    torch.set_num_threads(threads)
    p = preset(preset_name).pretrain
    x = to_tensor(load_mnist().x_train[:4096])
    dev = torch.device("cpu")
    per: dict[str, list[float]] = {m: [] for m in MODES}

    def call(mode: str, n: int) -> float:
        prec, cl = MODES[mode]
        cfg = dataclasses.replace(p, steps=n, precision=prec, channels_last=cl)
        t = time.perf_counter()
        pretrain_gan(cfg, x, dev)
        return time.perf_counter() - t

    for mode in MODES:
        call(mode, 2)  # warm-up: oneDNN picks and caches its kernels per layout and dtype
    for _ in range(rounds):
        for mode in MODES:
            # the set-up (networks, optimisers) is timed away: n + 1 steps minus 1 step
            per[mode].append((call(mode, steps + 1) - call(mode, 1)) / steps)
    return {m: median(v) for m, v in per.items()}


def _pretrained_s(run: dict[str, Any]) -> float | None:
    """Seconds the run spent pretraining its GAN, None when it took the GAN from a cache."""
    source = run.get("pretrain_source", "cache" if run.get("pretrain_reused") else "trained")
    return (run.get("timings") or {}).get("pretrain") if source == "trained" else None


def validation_pairs(cache: str) -> dict[str, Any]:
    """Per (digit, GAN seed, method, reference): fp32 vs bf16 + channels_last AUPRC, from the
    cached validation runs; and the GAN-seed spread of each method on the cached test runs."""
    import os

    import numpy as np

    os.environ["XDD_CACHE"] = cache
    from xdd.storage import store
    from xdd.core.variants import run_variant

    runs = store.list_runs()
    by: dict[tuple, dict[str, dict]] = {}
    spread: dict[tuple, list[float]] = {}
    for r in runs:
        cfg = r.get("config") or {}
        p = cfg.get("pretrain") or {}
        var = [v for v in run_variant(r) if not v.startswith(("pretrain.precision",
                                                              "pretrain.channels_last"))]
        if r.get("eval_split") == "val" and p.get("seed", 0) >= 100:
            mode = "fast" if (p.get("precision") == "bf16" and p.get("channels_last")) else (
                "fp32" if p.get("precision", "fp32") == "fp32" and not p.get("channels_last")
                else None)
            if mode:
                key = (r["ood_digit"], p["seed"], r.get("seed"), r.get("shots"), tuple(var))
                by.setdefault(key, {})[mode] = r
        elif r.get("eval_split") == "test" and not var and r.get("preset") == "quick":
            for ref, ms in (r.get("references") or {}).items():
                for m, v in ms.items():
                    spread.setdefault((r["ood_digit"], ref, m), []).append(v["auprc"])
    rows = []
    for (digit, gseed, seed, shots, var), modes in sorted(by.items()):
        if "fp32" not in modes or "fast" not in modes:
            continue
        a, b = modes["fp32"], modes["fast"]
        for ref, ms in (a.get("references") or {}).items():
            for m, v in ms.items():
                w = ((b.get("references") or {}).get(ref) or {}).get(m)
                if w:
                    rows.append({"digit": digit, "gan_seed": gseed, "reference": ref,
                                 "method": m, "fp32": v["auprc"], "fast": w["auprc"],
                                 "fp32_pretrain_s": _pretrained_s(a),
                                 "fast_pretrain_s": _pretrained_s(b)})
    noise = {}
    for (digit, ref, m), v in spread.items():
        if len(v) >= 2:
            noise.setdefault((ref, m), []).append(float(np.std(v, ddof=1)))
    return {"rows": rows, "seed_sd": {f"{ref}:{m}": float(np.mean(v))
                                      for (ref, m), v in noise.items()}}


def render(raw: dict[str, Any]) -> str:
    import numpy as np

    lines = [BEGIN, "", "## Pretraining precision and layout (`bench/pipeline/precision.py`)", "",
             f"`{raw['command']}` on {raw['machine']['cpu']} ({raw['machine']['affinity']} usable "
             f"cores); load average before {tuple(round(x, 2) for x in raw['load_before'])}, "
             f"after {tuple(round(x, 2) for x in raw['load_after'])}.  One {raw['preset']} "
             f"pretraining step (batch {raw['batch_size']}), median of {raw['rounds']} "
             f"alternated rounds of {raw['steps']} steps, fresh networks.", "",
             "| mode | " + " | ".join(f"{t} thread{'s' * (t > 1)}, ms/step" for t in raw["threads"])
             + " | " + " | ".join(f"vs fp32 ({t})" for t in raw["threads"]) + " |",
             "|---" * (1 + 2 * len(raw["threads"])) + "|"]
    for mode in MODES:
        ms = [raw["steps_s"][str(t)][mode] * 1e3 for t in raw["threads"]]
        rel = [raw["steps_s"][str(t)][mode] / raw["steps_s"][str(t)]["fp32"] for t in raw["threads"]]
        lines.append(f"| {mode} | " + " | ".join(f"{v:.1f}" for v in ms) + " | "
                     + " | ".join(f"{v:.2f}" for v in rel) + " |")
    steps = raw["preset_steps"]
    best = min((raw["steps_s"][str(t)][m], t, m) for t in raw["threads"] for m in MODES)
    lines += ["", f"The preset's {steps} steps at the fastest of these ({best[2]}, {best[1]} "
              f"thread{'s' * (best[1] > 1)}) take {steps * best[0]:.0f} s; at fp32 on the "
              f"worker's {raw['threads'][0]} thread{'s' * (raw['threads'][0] > 1)}, "
              f"{steps * raw['steps_s'][str(raw['threads'][0])]['fp32']:.0f} s."]
    chk = raw.get("check")
    if chk:
        rows = chk["rows"]
        lines += ["", "Validation split (GAN seeds >= 100): the same run pretrained in fp32 and in "
                  "bf16 + channels_last, AUPRC per method and reference, against the spread "
                  "between GAN seeds of that method on the test sweep (mean over digits of the "
                  "standard deviation across its 3 GANs):", "",
                  "| reference | method | digits | fp32 mean | bf16 + CL mean | mean difference "
                  "(± s.e.) | GAN-seed s.d. |", "|---|---|---|---|---|---|---|"]
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["reference"], r["method"]), []).append(r)
        for (ref, m), g in sorted(groups.items()):
            d = np.array([r["fast"] - r["fp32"] for r in g])
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            sd = chk["seed_sd"].get(f"{ref}:{m}")
            lines.append(f"| {ref} | {m} | {len(g)} | {np.mean([r['fp32'] for r in g]):.3f} | "
                         f"{np.mean([r['fast'] for r in g]):.3f} | {d.mean():+.3f} ± {se:.3f} | "
                         + (f"{sd:.3f}" if sd is not None else "–") + " |")
        first = [r for r in rows if r["method"] == "before" and r["reference"] == "labeled"]
        for mode, name in (("fp32", "fp32"), ("fast", "bf16 + channels_last")):
            got = [r[f"{mode}_pretrain_s"] for r in first if r[f"{mode}_pretrain_s"]]
            if got:
                lines += ["", f"Pretraining inside the {name} runs that trained their GAN "
                          f"({len(got)}; one torch thread, each beside another run on this "
                          f"machine): median {median(got):.0f} s for the preset's "
                          f"{raw['preset_steps']} steps."]
    lines += ["", END]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    write_section(DOC, BEGIN, END, section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed call")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--check", default=None, metavar="CACHE",
                    help="also compare fp32 and bf16 + channels_last validation runs cached here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    import os

    from xdd.core.config import preset

    cores = len(os.sched_getaffinity(0))
    threads = sorted({worker_threads(), min(8, cores)})
    p = preset(args.preset).pretrain
    raw: dict[str, Any] = {"command": "python bench/pipeline/precision.py " + " ".join(sys.argv[1:]),
                           "machine": machine(), "load_before": loadavg(), "preset": args.preset,
                           "batch_size": p.batch_size, "preset_steps": p.steps,
                           "steps": args.steps, "rounds": args.rounds, "threads": threads,
                           "steps_s": {}}
    for t in threads:
        raw["steps_s"][str(t)] = step_times(args.preset, t, args.steps, args.rounds)
        log(f"{t} thread(s): " + ", ".join(f"{m} {v * 1e3:.1f} ms" for m, v in
                                           raw["steps_s"][str(t)].items()))
    if args.check:
        raw["check"] = validation_pairs(args.check)
    raw["load_after"] = loadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")
    section = render(raw)
    print(section)
    if not args.no_doc:
        write_doc(section)


if __name__ == "__main__":
    main()

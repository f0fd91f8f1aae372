"""Benchmark 7 (GPU): the paper preset for one digit, and the projected full paper sweep.

One prepared script for a GPU machine with a fixed time budget (about 5-8 minutes on a
Hopper-class GPU):

1. the pretraining step of the paper's networks (batch 64) in several forms, ms/step:
   fp32; bf16 autocast; bf16 + channels_last; each + ``torch.compile`` (``--compile``);
   the dataset lives on the device in every form, as in ``xdd.train.pretrain``;
2. the ``paper`` preset for one OOD digit end to end through ``run_experiment`` on the GPU,
   after ``xdd.core.projection.warm_up()``, with its stage timings;
3. the projected time of the full paper sweep (10 digits x 10 repetitions, one pretrained GAN
   per digit since the pretraining key does not depend on the seed), with and without the
   CPU projections.

    python bench/gpu.py --json gpu.json [--digit 0] [--compile] [--write-doc]
    python bench/gpu.py --device cpu --preset tiny --steps 20   # check the script on a CPU

Nothing here changes the pipeline: the step variants are measured on a copy of the loop, and
only the fp32 form is what ``xdd.train.pretrain`` runs today.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench and xdd
from bench._common import DOC, log, machine, write_json  # noqa: E402

GPU_BEGIN = "<!-- bench/gpu.py: begin -->"
GPU_END = "<!-- bench/gpu.py: end -->"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_variant(pcfg, x, device, steps: int, bf16: bool, channels_last: bool,
                 compile_: bool) -> dict[str, Any]:
    """ms/step of the GAN step (same models, init, losses, Adam as xdd.train.pretrain)."""
    import torch
    import torch.nn.functional as F

    from xdd.core.models import Discriminator, Generator, init_weights

    torch.manual_seed(0)
    G, D = Generator(pcfg.z_dim, pcfg.g_width), Discriminator(pcfg.d_width)
    init_weights(G), init_weights(D)
    G.output_layer.bias.data.fill_(pcfg.g_out_bias)
    G.to(device).train(), D.to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    xd = x.to(device).contiguous(memory_format=fmt)
    opt_g = torch.optim.Adam(G.parameters(), lr=pcfg.g_lr, betas=(pcfg.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=pcfg.lr, betas=(pcfg.beta1, 0.999))
    b = pcfg.batch_size
    ones = torch.ones(b, device=device)
    zeros = torch.zeros(b, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> None:
        real = xd[torch.randint(0, len(xd), (b,), generator=gen, device=device)]
        noise = torch.randn(b, pcfg.z_dim, generator=gen, device=device)
        with amp():
            fake = G(noise)
            d_loss = (F.binary_cross_entropy_with_logits(D(real).float(), ones)
                      + F.binary_cross_entropy_with_logits(D(fake.detach()).float(), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with amp():
            g_loss = F.binary_cross_entropy_with_logits(D(fake).float(), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    t = time.perf_counter()
    if compile_:
        step = torch.compile(step)
    for _ in range(5):  # warm-up (and compilation)
        step()
    sync(device)
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    secs = time.perf_counter() - t
    return {"ms_per_step": 1000 * secs / steps, "warm_up_s": warm_s, "steps": steps}


def end_to_end(cfg, device_name: str) -> dict[str, Any]:
    from xdd.pipeline.experiment import run_experiment
    from xdd.core.projection import warm_up

    w = warm_up()
    t = time.perf_counter()
    res = run_experiment(cfg, device=device_name, force=True)
    wall = time.perf_counter() - t
    return {"warm_up_s": w, "wall_s": wall, "timings": res["timings"], "device": res["device"],
            "auprc": {m: v["auprc"] for m, v in res["methods"].items()}}


def sweep_projection(e2e: dict[str, Any], digits: int = 10, reps: int = 10) -> dict[str, float]:
    """Seconds of the full sweep from one run: pretraining once per digit, the rest per run."""
    t = e2e["timings"]
    pre = t.get("pretrain", 0.0)
    proj = sum(v for k, v in t.items() if k.startswith("project:"))
    per_run = sum(v for k, v in t.items() if k not in ("pretrain",) and not k.startswith("project:"))
    return {"pretrain_s": pre, "per_run_s": per_run, "projections_per_run_s": proj,
            "sweep_s": digits * pre + digits * reps * (per_run + proj),
            "sweep_without_projections_s": digits * pre + digits * reps * per_run}


def render(out: dict[str, Any]) -> str:
    L = [f"Measured by `python bench/gpu.py` on {out['started']}: {out['gpu']}, "
         f"torch {out['torch']}, {out['machine']['nproc']} CPU cores.", "",
         "| pretraining step (paper networks, batch 64) | ms/step | warm-up s |", "|---|---|---|"]
    for k, v in out["steps"].items():
        L.append(f"| {k} | {v['ms_per_step']:.2f} | {v['warm_up_s']:.1f} |")
    e, s = out["e2e"], out["sweep"]
    L += ["", f"`{out['preset']}` preset, digit {out['digit']}, end to end on {out['gpu']}: "
          f"{e['wall_s']:.0f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in e["timings"].items())
          + f" s); UMAP warm-up {e['warm_up_s']:.0f} s once per worker.", "",
          f"Projected full sweep (10 digits x 10 repetitions, one pretraining per digit): "
          f"**{s['sweep_s'] / 60:.1f} min**, of which projections "
          f"{10 * 10 * s['projections_per_run_s'] / 60:.1f} min (CPU); without projections "
          f"{s['sweep_without_projections_s'] / 60:.1f} min.  Target (moonshot): 15 min.", ""]
    return "\n".join(L)


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.is_file() else ""
    if GPU_BEGIN in text and GPU_END in text:
        head, rest = text.split(GPU_BEGIN, 1)
        _, tail = rest.split(GPU_END, 1)
        DOC.write_text(f"{head}{GPU_BEGIN}\n{section}{GPU_END}{tail}")
    else:
        DOC.write_text(text + f"\n## 7. GPU (`bench/gpu.py`)\n\n{GPU_BEGIN}\n{section}{GPU_END}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--digit", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300, help="timed steps per step variant")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--cache", default=None, help="XDD_CACHE (default: a fresh temp dir)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--write-doc", action="store_true", help="rewrite section 7 of the doc")
    args = ap.parse_args()

    import torch

    from xdd.core.config import preset
    from xdd.storage.data import load_mnist, make_splits, to_tensor
    from xdd.core.device import describe, resolve_device

    from xdd.core.config import ConfigError

    try:
        dev = resolve_device(args.device)
    except ConfigError as exc:  # CUDA asked for on a machine without a GPU
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    os.environ["XDD_CACHE"] = args.cache or tempfile.mkdtemp(prefix="xdd-bench-gpu-")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
                           "gpu": describe(dev), "torch": torch.__version__,
                           "digit": args.digit, "preset": args.preset, "steps": {}}
    cfg = preset(args.preset, ood_digit=args.digit)
    data = load_mnist()
    x = to_tensor(data.x_train[make_splits(cfg, data).pretrain])
    variants = {"fp32": (False, False), "bf16 autocast": (True, False),
                "bf16 + channels_last": (True, True)}
    for name, (bf16, cl) in variants.items():
        for comp in ((False, True) if args.compile else (False,)):
            key = name + (" + torch.compile" if comp else "")
            try:
                out["steps"][key] = step_variant(cfg.pretrain, x, dev, args.steps, bf16, cl, comp)
            except Exception as exc:  # e.g. a compiler missing on the machine: say so, go on
                out["steps"][key] = {"ms_per_step": float("nan"), "warm_up_s": float("nan"),
                                     "error": f"{type(exc).__name__}: {exc}"[:300]}
            log(f"{key}: {out['steps'][key]}")
    if not args.skip_e2e:
        out["e2e"] = end_to_end(cfg, args.device)
        out["sweep"] = sweep_projection(out["e2e"])
        log(f"e2e {out['e2e']['wall_s']:.1f} s; sweep {out['sweep']['sweep_s'] / 60:.1f} min")
        if args.write_doc:
            write_doc(render(out))
    if dev.type == "cuda":
        out["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    write_json(args.json, out)


if __name__ == "__main__":
    main()

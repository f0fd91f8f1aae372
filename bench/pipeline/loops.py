"""Benchmark 1: training-loop overhead against a minimal plain-PyTorch loop.

Pretraining: ``xdd.train.pretrain.pretrain_gan`` with the quick preset's PretrainConfig against the
shortest loop that trains the same Generator / Discriminator with the same batch, losses and
Adam settings (the practical limit of this architecture on this machine).  Retraining:
``xdd.train.retrain.retrain(..., "xdd")`` with the quick preset's RetrainConfig against a minimal
loop calling ``xdd.core.losses.xdd_loss`` on the same 90 labeled images.  The two sides run
alternately (A B A B ...) after one untimed warm-up each, and the medians are compared; the
process CPU time of each call is reported beside the wall time, since other work on the
machine inflates wall time but hardly CPU time.

    python bench/pipeline/loops.py --json out.json [--reps 5 --pretrain-steps 60 --retrain-steps 50]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench._common import log, median, worker_threads, write_json  # noqa: E402


def clocked(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def side_by_side(a: Callable[[], Any], b: Callable[[], Any], reps: int) -> dict[str, Any]:
    a(), b()  # warm-up: allocator, oneDNN primitive caches
    wa, ca, wb, cb = [], [], [], []
    for _ in range(reps):
        w, c = clocked(a)
        wa.append(w), ca.append(c)
        w, c = clocked(b)
        wb.append(w), cb.append(c)
    return {"ours_wall_s": wa, "plain_wall_s": wb, "ours_cpu_s": ca, "plain_cpu_s": cb,
            "ratio_wall": median(wa) / median(wb), "ratio_cpu": median(ca) / median(cb)}


def plain_pretrain(cfg, x):
    """The minimal GAN loop: same models, init, batch, losses and optimiser; nothing else."""
    import torch
    import torch.nn.functional as F

    from xdd.core.models import Discriminator, Generator, init_weights

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    G, D = Generator(cfg.z_dim, cfg.g_width), Discriminator(cfg.d_width)
    init_weights(G), init_weights(D)
    G.output_layer.bias.data.fill_(cfg.g_out_bias)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.g_lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    b = cfg.batch_size
    ones, zeros = torch.ones(b), torch.zeros(b)
    for _ in range(cfg.steps):
        real = x[torch.randint(0, len(x), (b,), generator=gen)]
        fake = G(torch.randn(b, cfg.z_dim, generator=gen))
        d_loss = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    return G, D


def plain_retrain(D0, cfg, x, y, seed: int):
    """The minimal XDD retraining loop: same trainable blocks, start of the class parameters,
    optimiser and loss function (xdd_loss, with every loss setting the config holds), without
    history or progress."""
    import inspect

    import torch
    import torch.nn.functional as F
    from torch import nn

    from xdd.core.losses import xdd_loss

    D = copy.deepcopy(D0)
    D.requires_grad_(False)
    trainable = [p for blk in D.blocks[4 - cfg.train_blocks:] for p in blk.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    D.eval()
    k = int(y.max()) + 1
    with torch.no_grad():
        z0 = F.normalize(D.embed(x), dim=1)
        mu = torch.stack([z0[y == c].mean(0) for c in range(k)])  # (K, d)
        if getattr(cfg, "sigma_init", "mle") == "unit":
            log_sigma0 = torch.zeros(k)
        else:
            var = torch.stack([((z0[y == c] - mu[c]) ** 2).sum(1).mean() for c in range(k)])
            log_sigma0 = 0.5 * torch.log(var.clamp_min(1e-6) / z0.shape[1])
    centers, log_sigma = nn.Parameter(mu), nn.Parameter(log_sigma0)
    bias = nn.Parameter(torch.zeros(k))
    opt = torch.optim.Adam(trainable + [centers, log_sigma, bias], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    # The loss settings of the config that xdd_loss takes (beta, pair_weight, pair_mode, ...).
    names = [n for n, p in inspect.signature(xdd_loss).parameters.items()
             if p.kind == p.KEYWORD_ONLY and hasattr(cfg, n)]
    kw = {n: getattr(cfg, n) for n in names}
    for _ in range(cfg.steps):
        loss, _ = xdd_loss(D.embed(x), y, centers, log_sigma, bias, **kw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-steps", type=int, default=60)
    ap.add_argument("--retrain-steps", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--digit", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="default: the worker's")
    ap.add_argument("--profile", action="store_true",
                    help="also print a torch.profiler table of 20 steps of each loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import dataclasses

    import torch

    torch.set_num_threads(args.threads or worker_threads())
    from xdd.core.config import preset
    from xdd.storage.data import load_mnist, make_splits, to_tensor
    from xdd.train.pretrain import pretrain_gan
    from xdd.train.retrain import retrain

    cfg = preset("quick", ood_digit=args.digit)
    pcfg = dataclasses.replace(cfg.pretrain, steps=args.pretrain_steps)
    rcfg = dataclasses.replace(cfg.retrain, steps=args.retrain_steps)
    data = load_mnist()
    splits = make_splits(cfg, data)
    x_pre = to_tensor(data.x_train[splits.pretrain])
    x_lab = to_tensor(data.x_train[splits.labeled])
    y_raw = data.y_train[splits.labeled]
    remap = {d: i for i, d in enumerate(k for k in range(10) if k != args.digit)}
    y_lab = torch.tensor([remap[int(v)] for v in y_raw], dtype=torch.long)
    cpu = torch.device("cpu")
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "reps": args.reps,
                           "pretrain_steps": pcfg.steps, "retrain_steps": rcfg.steps,
                           "batch_size": pcfg.batch_size, "n_labeled": len(x_lab),
                           "retrain_blocks": rcfg.train_blocks}

    log(f"loops: pretraining {pcfg.steps} steps x {args.reps} reps, each side")
    pre = side_by_side(lambda: pretrain_gan(pcfg, x_pre, cpu), lambda: plain_pretrain(pcfg, x_pre),
                       args.reps)
    pre["ours_ms_per_step"] = 1000 * median(pre["ours_wall_s"]) / pcfg.steps
    pre["plain_ms_per_step"] = 1000 * median(pre["plain_wall_s"]) / pcfg.steps
    out["pretrain"] = pre
    log(f"  ratio wall {pre['ratio_wall']:.3f} cpu {pre['ratio_cpu']:.3f}")

    _, D0, _ = pretrain_gan(dataclasses.replace(pcfg, steps=5), x_pre, cpu)
    log(f"loops: retraining {rcfg.steps} steps x {args.reps} reps, each side")
    ret = side_by_side(lambda: retrain(D0, rcfg, x_lab, y_lab, "xdd", 0),
                       lambda: plain_retrain(D0, rcfg, x_lab, y_lab, 0), args.reps)
    ret["ours_ms_per_step"] = 1000 * median(ret["ours_wall_s"]) / rcfg.steps
    ret["plain_ms_per_step"] = 1000 * median(ret["plain_wall_s"]) / rcfg.steps
    out["retrain"] = ret
    log(f"  ratio wall {ret['ratio_wall']:.3f} cpu {ret['ratio_cpu']:.3f}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, fn in (("pretrain", lambda: pretrain_gan(dataclasses.replace(pcfg, steps=20), x_pre, cpu)),
                         ("retrain", lambda: retrain(D0, dataclasses.replace(rcfg, steps=20), x_lab, y_lab, "xdd", 0))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            out[f"profile_{name}"] = table
            print(f"--- {name}\n{table}", file=sys.stderr)
    write_json(args.json, out)


if __name__ == "__main__":
    main()

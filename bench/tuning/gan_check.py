"""Is the GAN game balanced?  Variants of the pretraining loop on one digit's pretraining set.

Reproduces the table of docs/METHOD.md section 1: each variant trains the quick preset's G and
D (validation split, seed 0, no labels) for ``--steps`` steps and prints D's and G's losses
every 100 steps, then D's mean output on generated and real images in eval mode, and saves an
8x8 grid of G's samples as a PNG.  Usage::

    python bench/tuning/gan_check.py --digit 3 --steps 1500 --variants plain,glr,glr+gbias

Variants (joined with "+"): ``plain`` (DCGAN defaults: equal learning rates, zero output
bias), ``glr`` (G's lr 1e-3), ``dlr`` (D's lr 5e-5), ``gbias`` (G's output bias -1),
``joint`` (real and generated images in one D batch), ``nobn1`` (no BatchNorm in D's first
block).  The quick preset's own setting is ``glr+gbias``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd


def run_variant(variant: str, digit: int, steps: int, out_dir: Path) -> None:
    import torch
    from PIL import Image
    from torch import nn

    from xdd.core.config import preset
    from xdd.storage.data import load_mnist, make_splits, to_tensor
    from xdd.core.losses import gan_d_loss, gan_g_loss
    from xdd.core.models import Discriminator, Generator, init_weights
    from xdd.train.pretrain import sample_images

    opts = set(variant.split("+"))
    cfg = preset("quick", ood_digit=digit, **{"data.eval_split": "val"})
    p = cfg.pretrain
    data = load_mnist()
    x = to_tensor(data.x_train[make_splits(cfg, data).pretrain])
    # The same seeding and draw order as xdd.train.pretrain.pretrain_gan.
    gen = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    G, D = Generator(p.z_dim, p.g_width), Discriminator(p.d_width)
    init_weights(G)
    init_weights(D)
    if "gbias" in opts:
        nn.init.constant_(G.output_layer.bias, -1.0)
    if "nobn1" in opts:
        D.blocks[0][1] = nn.Identity()
    G.train()
    D.train()
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3 if "glr" in opts else 2e-4,
                             betas=(p.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=5e-5 if "dlr" in opts else 2e-4,
                             betas=(p.beta1, 0.999))
    b, t0 = p.batch_size, time.perf_counter()
    for step in range(1, steps + 1):
        real = x[torch.randint(0, len(x), (b,), generator=gen)]
        fake = G(torch.randn(b, p.z_dim, generator=gen))
        if "joint" in opts:
            logits = D(torch.cat([real, fake.detach()]))  # (2b,): one BatchNorm batch
            d_loss = gan_d_loss(logits[:b], logits[b:])
        else:
            d_loss = gan_d_loss(D(real), D(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_logits = D(torch.cat([real, fake]))[b:] if "joint" in opts else D(fake)
        g_loss = gan_g_loss(g_logits)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % 100 == 0 or step == steps:
            print(f"{variant:<16} step {step:>5}  D loss {float(d_loss):.3f}  "
                  f"G loss {float(g_loss):.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    G.eval()
    D.eval()
    imgs = sample_images(G, 64, seed=1)  # (64, 28, 28) uint8
    with torch.no_grad():
        d_fake = float(torch.sigmoid(D(to_tensor(imgs))).mean())
        d_real = float(torch.sigmoid(D(x[:256])).mean())
    print(f"{variant:<16} eval mode: mean D(G(z)) {d_fake:.3g}, mean D(real) {d_real:.3g}")
    grid = imgs.reshape(8, 8, 28, 28).transpose(0, 2, 1, 3).reshape(224, 224)
    path = out_dir / f"gan_{variant.replace('+', '_')}_digit{digit}.png"
    Image.fromarray(grid).resize((448, 448), Image.NEAREST).save(path)
    print(f"{variant:<16} samples: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digit", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--variants", default="plain,glr+gbias")
    ap.add_argument("--out", default="test-artifacts", help="folder for the sample grids")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for v in args.variants.split(","):
        run_variant(v.strip(), args.digit, args.steps, out)


if __name__ == "__main__":
    main()

"""GAN pretraining of the paper's DCGAN-style G and D on the unlabeled in-distribution images."""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from xdd.core.config import PretrainConfig
from xdd.core.losses import gan_d_loss, gan_g_loss
from xdd.core.models import Discriminator, Generator, init_weights

Progress = Callable[[str, int, int, dict], None]


def _noop(stage: str, step: int, total: int, info: dict) -> None:
    pass


def pretrain_gan(cfg: PretrainConfig, x: torch.Tensor, device: torch.device,
                 progress: Progress | None = None, report_every: int = 10
                 ) -> tuple[Generator, Discriminator, dict]:
    """Train G and D for ``cfg.steps`` steps on x: (N, 1, 28, 28) in [-1, 1] (unlabeled).

    Returns G, D (in eval mode, on ``device``, in the default memory format) and the last
    losses.  ``cfg.precision`` "bf16" runs the forward passes under bf16 autocast (the losses
    and the optimiser in fp32); ``cfg.channels_last`` trains both networks NHWC.
    """
    progress = progress or _noop
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # module initialisation draws from the global generator
    G = Generator(cfg.z_dim, cfg.g_width)
    D = Discriminator(cfg.d_width)
    init_weights(G)
    init_weights(D)
    with torch.no_grad():
        G.output_layer.bias.fill_(cfg.g_out_bias)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    G.to(device, memory_format=fmt).train()
    D.to(device, memory_format=fmt).train()
    x = x.to(device).contiguous(memory_format=fmt)

    def amp():
        if cfg.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.g_lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    n, b = x.shape[0], min(cfg.batch_size, x.shape[0])
    last = {"d_loss": float("nan"), "g_loss": float("nan")}
    progress("pretrain", 0, cfg.steps, last)
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, n, (b,), generator=gen).to(device)
        noise = torch.randn(b, cfg.z_dim, generator=gen).to(device)
        real = x[idx]
        with amp():
            fake = G(noise)
            # D step: the fake batch is detached so G's graph is built once and reused below.
            d_real, d_fake = D(real), D(fake.detach())
        d_loss = gan_d_loss(d_real.float(), d_fake.float())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with amp():
            d_gen = D(fake)
        g_loss = gan_g_loss(d_gen.float())
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % report_every == 0 or step == cfg.steps:
            last = {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())}
            progress("pretrain", step, cfg.steps, last)
    G.to(memory_format=torch.contiguous_format).eval()
    D.to(memory_format=torch.contiguous_format).eval()
    return G, D, last


@torch.no_grad()
def sample_images(G: Generator, n: int = 64, seed: int = 0) -> np.ndarray:
    """n images of G from seeded noise, as uint8 (n, 28, 28): what the GAN learned to draw."""
    G.eval()
    dev = next(G.parameters()).device
    noise = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    x = G(noise).squeeze(1).float().cpu().numpy()  # (n, 28, 28) in [-1, 1]
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)

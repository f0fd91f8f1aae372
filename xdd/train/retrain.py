"""Re-training the embedding layers of the pretrained D on the labeled set.

One loop serves every retraining method; they differ only in the loss:

- ``xdd``      pairwise (I(X;Z)) + beta * MCDD (-I(Z;Y)), the paper's loss
- ``mcdd``     MCDD term alone (pair_weight = 0), the first baseline
- ``pairwise`` pairwise term alone (beta = 0), an ablation
- ``svdd``     one-class Deep SVDD: pull every labeled embedding toward one center
- ``softmax``  a linear softmax classifier on the embedding, trained jointly (cross-entropy)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xdd.core.config import RetrainConfig
from xdd.core.losses import svdd_loss, xdd_loss
from xdd.core.models import Discriminator

RETRAIN_METHODS = ("xdd", "mcdd", "pairwise", "svdd", "softmax")
Progress = Callable[[str, int, int, dict], None]


@dataclass
class Retrained:
    D: Discriminator  # a retrained copy; the pretrained D is left untouched
    head: nn.Linear | None = None  # the softmax method's classifier
    history: list[dict] = field(default_factory=list)


def shift_images(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random integer translations of up to ``max_shift`` pixels, zero(-1)-padded.  (N,1,28,28)."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    pad = F.pad(x, [max_shift] * 4, value=-1.0)  # background is -1 in [-1, 1] scaling
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).tolist()
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).tolist()
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def _loss_weights(method: str, cfg: RetrainConfig) -> tuple[float, float]:
    """(beta, pair_weight) of the IB-family methods."""
    if method == "xdd":
        return cfg.beta, cfg.pair_weight
    if method == "mcdd":
        return 1.0, 0.0
    if method == "pairwise":
        return 0.0, cfg.pair_weight
    raise ValueError(method)


def retrain(D0: Discriminator, cfg: RetrainConfig, x: torch.Tensor, y: torch.Tensor,
            method: str, seed: int, progress: Progress | None = None,
            report_every: int = 5, x_unlabeled: torch.Tensor | None = None) -> Retrained:
    """Retrain a copy of D0's last ``cfg.train_blocks`` conv blocks on x: (N,1,28,28), y: (N,)
    with classes re-indexed 0..K-1.  ``x_unlabeled`` (U,1,28,28): unlabeled in-distribution
    images for the anchor term (used only when ``cfg.anchor_weight > 0``)."""
    if method not in RETRAIN_METHODS:
        raise ValueError(f"unknown retraining method {method!r}; accepted: {RETRAIN_METHODS}")
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    D = copy.deepcopy(D0).to(device)
    if cfg.anchor_weight > 0:
        D0.eval()  # the anchor's reference embedding uses the pretrained running statistics
    for p in D.parameters():
        p.requires_grad_(False)
    trainable = [p for blk in D.blocks[4 - cfg.train_blocks:] for p in blk.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    anchors = [p.detach().clone() for p in trainable]
    # BN in eval mode keeps the pretrained running statistics: 90 class-sorted images are too
    # few to re-estimate them, and train-mode BN would make z depend on the batch.
    D.train(not cfg.freeze_bn)

    k = int(y.max()) + 1
    sphere = cfg.pair_mode in ("sphere", "ratio")
    with torch.no_grad():
        z0 = D.embed(x)
        if sphere and method in ("xdd", "mcdd", "pairwise"):
            z0 = F.normalize(z0, dim=1)
        d = z0.shape[1]
        centers0 = torch.stack([z0[y == c].mean(0) for c in range(k)])  # (K, d)
        # Isotropic Gaussian MLE of each class's deviation: sigma^2 = E||z - mu||^2 / d.
        if cfg.sigma_init == "unit":
            # Deep MCDD's start (sigma_k = 1): on the sphere every squared distance is <= 4, so
            # the class posterior starts soft and the MAP term has gradients to follow.
            log_sigma0 = torch.zeros(k, device=device)
        else:
            # Isotropic maximum likelihood, sigma_k^2 = E||z - mu_k||^2 / d.  In d ~ 3000 this
            # saturates the softmax at once (the MAP term is then ~0 and teaches nothing).
            spread = torch.stack([((z0[y == c] - centers0[c]) ** 2).sum(1).mean() for c in range(k)])
            # One shot per class has no spread: fall back to the spread around the global mean.
            floor = ((z0 - z0.mean(0)) ** 2).sum(1).mean().clamp_min(1e-6) * 1e-2
            log_sigma0 = 0.5 * torch.log(torch.maximum(spread, floor) / d)

    extra: list[torch.Tensor] = []
    head = None
    centers = log_sigma = bias = None
    if method in ("xdd", "mcdd", "pairwise"):
        centers = nn.Parameter(centers0.clone())
        log_sigma = nn.Parameter(log_sigma0.clone())
        bias = nn.Parameter(torch.zeros(k, device=device))
        extra = [centers, log_sigma, bias]
    elif method == "svdd":
        svdd_center = z0.mean(0)
    elif method == "softmax":
        head = nn.Linear(d, k).to(device)
        with torch.no_grad():
            head.weight.copy_(0.01 * torch.randn(k, d, generator=gen))
            head.bias.zero_()
        extra = list(head.parameters())

    # With BN frozen and no augmentation, the blocks before the retrained ones see the same
    # input and weights at every step: run them once, not once per step.
    n_frozen = 4 - cfg.train_blocks
    if cfg.freeze_bn and cfg.augment_shift <= 0 and n_frozen > 0:
        with torch.no_grad():
            h0 = x
            for blk in D.blocks[:n_frozen]:
                h0 = blk(h0)  # (N, C, H, W), constant during retraining

        def embed(xb: torch.Tensor) -> torch.Tensor:
            h = h0
            for blk in D.blocks[n_frozen:]:
                h = blk(h)
            return h.flatten(1)
    else:
        embed = D.embed

    opt = torch.optim.Adam(trainable + extra, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Retrained(D=D, head=head)
    stage = f"retrain:{method}"
    if progress:
        progress(stage, 0, cfg.steps, {})
    for step in range(1, cfg.steps + 1):
        xb = shift_images(x, cfg.augment_shift, gen)
        z = embed(xb)
        if method in ("xdd", "mcdd", "pairwise"):
            beta, pw = _loss_weights(method, cfg)
            loss, parts = xdd_loss(z, y, centers, log_sigma, bias, beta=beta, pair_weight=pw,
                                   pair_mode=cfg.pair_mode, pull_weight=cfg.pull_weight)
        elif method == "svdd":
            loss = svdd_loss(z, svdd_center)
            parts = {"loss": float(loss.detach())}
        else:
            loss = F.cross_entropy(head(z), y)
            parts = {"loss": float(loss.detach())}
        if cfg.anchor_weight > 0 and x_unlabeled is not None and len(x_unlabeled):
            # Keep the unlabeled embedding where the pretrained D put it: the labels then only
            # move what they need to (docs/METHOD.md section 6).
            pick = torch.randint(0, len(x_unlabeled), (min(cfg.unlabeled_batch,
                                                          len(x_unlabeled)),), generator=gen)
            xu = x_unlabeled[pick].to(device)
            with torch.no_grad():
                zu0 = F.normalize(D0.embed(xu), dim=1)  # (B, d), the pretrained embedding
            zu = F.normalize(D.embed(xu), dim=1)
            anchor = ((zu - zu0) ** 2).sum(1).mean()
            loss = loss + cfg.anchor_weight * anchor
            parts = dict(parts, anchor=float(anchor.detach()))
        if cfg.l2sp > 0:
            reg = sum(((p - a) ** 2).sum() for p, a in zip(trainable, anchors))
            loss = loss + cfg.l2sp * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % report_every == 0 or step == cfg.steps:
            out.history.append({"step": step, **parts})
            if progress:
                progress(stage, step, cfg.steps, parts)
    D.eval()
    for p in D.parameters():
        p.requires_grad_(False)
    return out


# Images per forward pass when embedding many.  On a CPU, 256 keeps a block's activations
# (256 x 64 x 14 x 14 float32, 13 MB) in cache: one thread embeds 8,192 images in 0.73 s at 256
# against 1.5 s at 2,048, with identical values (docs/PERFORMANCE.md section 8).
EMBED_BATCH = {"cpu": 256, "cuda": 4096}


@torch.no_grad()
def embed_all(D: Discriminator, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """f(x) for a large x, in batches, as float32 on the CPU, BN folded into the convs (eval
    mode: the running statistics).  (N, d)."""
    D.eval()
    dev = next(D.parameters()).device
    batch_size = batch_size or EMBED_BATCH.get(dev.type, 1024)
    f = D.fused_embed()
    out = [f(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, D.embed_dim)


@torch.no_grad()
def max_softmax_score(D: Discriminator, head: nn.Linear, x: torch.Tensor,
                      batch_size: int | None = None) -> torch.Tensor:
    """OOD score of the softmax baseline: 1 - max_k softmax(head(f(x)))_k  (higher = more OOD)."""
    z = embed_all(D, x, batch_size).to(next(head.parameters()).device)
    return (1.0 - F.softmax(head(z), dim=1).max(1).values).cpu()

"""Losses as pure functions of tensors.  Training and evaluation call these, nothing else.

Shapes: ``z: (N, d)`` embeddings, ``y: (N,)`` int64 class indices in [0, K), ``centers:
(K, d)``, ``log_sigma: (K,)``, ``bias: (K,)``.  Classes are re-indexed 0..K-1 by the caller
(the OOD digit is not a class).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xdd.core.terms import PAIR_MODES, SPHERE_MODES


# ---------------------------------------------------------------- GAN


def gan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator BCE: real -> 1, fake -> 0.  Logits (N,), (M,)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def gan_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: -log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# ---------------------------------------------------------------- XDD / MCDD


def mcdd_logits(z: torch.Tensor, centers: torch.Tensor, log_sigma: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """Deep MCDD class scores  -||z - mu_k||^2 / (2 sigma_k^2) - d log sigma_k + b_k,  (N, K).

    The softmax over k of these is the posterior of an isotropic Gaussian mixture with
    centers mu_k, deviations sigma_k and log-priors b_k.
    """
    d = z.shape[1]
    sq = torch.cdist(z, centers).pow(2)  # (N, K)
    out = -sq / (2.0 * torch.exp(2.0 * log_sigma))[None, :] - d * log_sigma[None, :]
    if bias is not None:
        out = out + bias[None, :]
    return out


def mcdd_loss(z: torch.Tensor, y: torch.Tensor, centers: torch.Tensor, log_sigma: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """-(1/N) sum_i log softmax_k(mcdd_logits)[y_i]  =  -I(Z;Y) + const  (the MAP term)."""
    return F.cross_entropy(mcdd_logits(z, centers, log_sigma, bias), y)


def pairwise_term(z: torch.Tensor, y: torch.Tensor, sigma2: float = 1.0) -> torch.Tensor:
    """-(1 / |P|) sum_{(i,j) in P} ||z_i - z_j||^2 / (2 sigma^2), P = ordered inter-class pairs.

    The paper's estimate of I(X;Z) up to a constant, restricted to pairs of different classes
    so that lowering it pushes classes apart.  Zero when the batch holds a single class.
    """
    sq = torch.cdist(z, z).pow(2)  # (N, N)
    inter = (y[:, None] != y[None, :]).to(z.dtype)  # (N, N)
    n_pairs = inter.sum()
    if n_pairs == 0:
        return z.sum() * 0.0
    return -(sq * inter).sum() / n_pairs / (2.0 * sigma2)


RATIO_EPS = 1e-2  # bounds the "ratio" pairwise term below by -4 / (2 * RATIO_EPS) on the sphere


def within_class_spread(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i ||z_i - mean of z over y_i's class||^2: the pooled within-class spread."""
    classes, inv = torch.unique(y, return_inverse=True)
    sums = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, inv, z)
    counts = torch.bincount(inv, minlength=len(classes)).to(z.dtype)
    means = sums / counts[:, None]  # (C, d)
    return (z - means[inv]).pow(2).sum(1).mean()


def xdd_loss(z: torch.Tensor, y: torch.Tensor, centers: torch.Tensor, log_sigma: torch.Tensor,
             bias: torch.Tensor | None = None, *, beta: float = 1.0, pair_weight: float = 1.0,
             pair_mode: str = "sphere", pull_weight: float = 0.0
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """L = I(X;Z) - beta I(Z;Y)  ~  pair_weight * pairwise_term + beta * mcdd_loss.

    ``pair_mode="sphere"`` puts z on the unit sphere first, which bounds every squared distance
    by 4 and makes the pairwise term well posed; ``"ratio"`` also measures the inter-class
    distances relative to the pooled within-class spread (sigma^2 = spread + eps), so the same
    term pulls classes together while it pushes them apart; ``"raw"`` is the formula as
    written (scaling z up lowers it without bound).  ``beta=0`` is the pairwise-only ablation and
    ``pair_weight=0`` the MCDD-only baseline.  ``pull_weight`` adds Deep MCDD's center pull
    (scaled by beta, as part of the I(Z;Y) side).
    """
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"unknown pair_mode {pair_mode!r}")
    if pair_mode in SPHERE_MODES:
        z = F.normalize(z, dim=1)
    mc = mcdd_loss(z, y, centers, log_sigma, bias)
    sigma2 = within_class_spread(z, y) + RATIO_EPS if pair_mode == "ratio" else 1.0
    pw = pairwise_term(z, y, sigma2)
    loss = beta * mc + pair_weight * pw
    parts = {"mcdd": float(mc.detach()), "pairwise": float(pw.detach())}
    if pull_weight:
        pl = center_pull(z, y, centers)
        loss = loss + beta * pull_weight * pl
        parts["pull"] = float(pl.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


def center_pull(z: torch.Tensor, y: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i ||z_i - mu_{y_i}||^2: Deep MCDD's pull of each sample to its class center,
    which keeps pulling after the MAP cross-entropy has reached zero."""
    return (z - centers[y]).pow(2).sum(1).mean()


def svdd_loss(z: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """One-class Deep SVDD: mean squared distance to a single fixed center (d,)."""
    return (z - center[None, :]).pow(2).sum(1).mean()

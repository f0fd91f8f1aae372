"""Retraining objectives: what a retrained method optimises, as init + loss.

An objective is declared once on its method's row (:mod:`xdd.core.methods`); the one retraining
loop (:func:`xdd.train.retrain.retrain`) calls :meth:`Objective.start` with the labeled
embeddings before the first step and the returned :class:`Trainer`'s ``loss`` at every step.

- :class:`IB`: the information-bottleneck family, pairwise (inter-class) term + beta * MCDD term
  (XDD; with ``pair_weight = 0`` the MCDD term alone, with ``beta = 0`` the pairwise term alone).
- :class:`SVDD`: one-class Deep SVDD, every labeled embedding pulled toward one center.
- :class:`Softmax`: a linear softmax classifier trained jointly (cross-entropy); scored by
  1 - max softmax, so its trainer keeps the ``head``.

torch is imported inside the functions: the method table, and every page that reads it, import
this module without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Trainer:
    """One retraining's objective state: its extra parameters (optimised with the network's)
    and its loss. ``loss(z, y) -> (loss tensor, {term: float})``."""
    params: list
    loss: Any
    head: Any = None  # the softmax objective's classifier, kept for scoring
    names: tuple[str, ...] = ()  # what each of ``params`` is, for the run's checkpoint

    def state(self) -> dict:
        """The trained objective's named tensors (e.g. the IB objective's class centres), on
        the CPU: what a probe needs to compute the MCDD class posterior after retraining."""
        return {n: p.detach().cpu().clone() for n, p in zip(self.names, self.params)}


class Objective:
    describe = ""  # what retraining does, in words
    weights = ""  # the loss weights it uses, in words
    sphere = False  # its class statistics are taken on the unit sphere (cfg.pair_mode)

    def start(self, z0, y, k: int, cfg, gen) -> Trainer:
        """The trainer for one retraining: z0 (N, d) the labeled embeddings before the first
        step (on the sphere when ``self.sphere`` and the pair mode asks for it), y (N,) classes
        0..k-1, cfg the RetrainConfig, gen the retraining's torch.Generator."""
        raise NotImplementedError


@dataclass(frozen=True)
class IB(Objective):
    """pairwise + beta * MCDD; ``None`` takes the weight from the config (retrain.beta,
    retrain.pair_weight)."""
    beta: float | None = None
    pair_weight: float | None = None
    sphere = True

    @property
    def describe(self) -> str:
        if self.pair_weight == 0.0:
            return "Deep MCDD MAP term"
        if self.beta == 0.0:
            return "pairwise (inter-class) term"
        return "XDD loss: pairwise + beta * MCDD"

    @property
    def weights(self) -> str:
        def w(v, f):
            return f"retrain.{f}" if v is None else f"{v:g}"
        return f"beta = {w(self.beta, 'beta')}, pair_weight = {w(self.pair_weight, 'pair_weight')}"

    def weights_for(self, cfg) -> tuple[float, float]:
        """(beta, pair_weight) under a RetrainConfig."""
        return (cfg.beta if self.beta is None else self.beta,
                cfg.pair_weight if self.pair_weight is None else self.pair_weight)

    def start(self, z0, y, k, cfg, gen) -> Trainer:
        import torch
        from torch import nn

        from xdd.core.losses import xdd_loss

        centers0, log_sigma0 = class_statistics(z0, y, k, cfg.sigma_init)
        centers = nn.Parameter(centers0.clone())
        log_sigma = nn.Parameter(log_sigma0.clone())
        bias = nn.Parameter(torch.zeros(k, device=z0.device))
        beta, pw = self.weights_for(cfg)

        def loss(z, yb):
            out, parts = xdd_loss(z, yb, centers, log_sigma, bias, beta=beta, pair_weight=pw,
                                  pair_mode=cfg.pair_mode, pull_weight=cfg.pull_weight)
            # the two sides of L = I(X;Z) - beta I(Z;Y), each as the loss weighs it
            # (estimators: the pairwise term and the MCDD term with its centre pull)
            side_x = pw * parts["pairwise"]
            side_y = beta * (parts["mcdd"] + cfg.pull_weight * parts.get("pull", 0.0))
            return out, dict(parts, ixz=side_x, izy=side_y)
        return Trainer([centers, log_sigma, bias], loss, names=("centers", "log_sigma", "bias"))


def class_statistics(z0, y, k: int, sigma_init: str):
    """Each class's center (K, d) and log sigma (K,) in the labeled embedding z0 (N, d)."""
    import torch

    d = z0.shape[1]
    centers0 = torch.stack([z0[y == c].mean(0) for c in range(k)])  # (K, d)
    if sigma_init == "unit":
        # Deep MCDD's start (sigma_k = 1): on the sphere every squared distance is <= 4, so
        # the class posterior starts soft and the MAP term has gradients to follow.
        return centers0, torch.zeros(k, device=z0.device)
    # Isotropic maximum likelihood, sigma_k^2 = E||z - mu_k||^2 / d.  In d ~ 3000 this
    # saturates the softmax at once (the MAP term is then ~0 and teaches nothing).
    spread = torch.stack([((z0[y == c] - centers0[c]) ** 2).sum(1).mean() for c in range(k)])
    # One shot per class has no spread: fall back to the spread around the global mean.
    floor = ((z0 - z0.mean(0)) ** 2).sum(1).mean().clamp_min(1e-6) * 1e-2
    return centers0, 0.5 * torch.log(torch.maximum(spread, floor) / d)


@dataclass(frozen=True)
class SVDD(Objective):
    describe = "distance to one center"

    def start(self, z0, y, k, cfg, gen) -> Trainer:
        from xdd.core.losses import svdd_loss

        center = z0.mean(0)

        def loss(z, yb):
            out = svdd_loss(z, center)
            return out, {"loss": float(out.detach())}
        return Trainer([], loss)


@dataclass(frozen=True)
class Softmax(Objective):
    describe = "cross-entropy of a linear head"

    def start(self, z0, y, k, cfg, gen) -> Trainer:
        import torch
        import torch.nn.functional as F
        from torch import nn

        d = z0.shape[1]
        head = nn.Linear(d, k).to(z0.device)
        with torch.no_grad():
            head.weight.copy_(0.01 * torch.randn(k, d, generator=gen))
            head.bias.zero_()

        def loss(z, yb):
            out = F.cross_entropy(head(z), yb)
            return out, {"loss": float(out.detach())}
        return Trainer(list(head.parameters()), loss, head=head)

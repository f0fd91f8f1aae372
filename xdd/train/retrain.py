"""Re-training the embedding layers of the pretrained D on the labeled set.

One loop serves every retraining method; what differs is the method's objective (its init and
its loss), declared on the method's row (xdd.core.methods, xdd.core.objectives).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xdd.core.config import RetrainConfig
from xdd.core.methods import BY_NAME
from xdd.core.models import Discriminator
from xdd.core.objectives import Objective
from xdd.core.terms import SPHERE_MODES
from xdd.train.snapshots import snapshot_steps

Progress = Callable[[str, int, int, dict], None]


@dataclass
class Retrained:
    D: Discriminator  # a retrained copy; the pretrained D is left untouched
    head: nn.Linear | None = None  # the softmax objective's classifier
    history: list[dict] = field(default_factory=list)  # what progress reported, every few steps
    # every step: the loss and each of its terms as the loss weighs them, the labeled
    # embedding's within-class spread and mean inter-class distance, the learning rate
    curves: dict[str, list[float]] = field(default_factory=dict)
    # step -> the network's state at that step (0: before training; the last step's is left
    # out: it is the retrained network's own): embed_snapshots() embeds images with them
    snapshots: dict[int, dict] = field(default_factory=dict)
    objective: dict = field(default_factory=dict)  # the objective's trained tensors, by name


def _snapshot(out: "Retrained", D: Discriminator, step: int) -> None:
    """D's state at this step (a copy: a few hundred KB), embedded after the retraining, off
    its critical path (:func:`embed_snapshots`)."""
    out.snapshots[step] = {k: v.detach().clone() for k, v in D.state_dict().items()}


def embed_snapshots(D: Discriminator, snapshots: dict[int, dict], x: torch.Tensor
                    ) -> dict[int, np.ndarray]:
    """step -> (N, d) float32 embedding of x by the network as it was at that step, as
    embed_all computes it (D, the retrained network, is only a template: it is not changed)."""
    net = copy.deepcopy(D)
    out = {}
    for step, state in sorted(snapshots.items()):
        net.load_state_dict(state)
        out[step] = embed_all(net, x).numpy()
    return out


@torch.no_grad()
def class_geometry(z: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(within-class spread, mean squared distance between class centres) of embeddings z
    (N, d) on the unit sphere, classes y (N,): how tight the classes are and how far apart."""
    from xdd.core.losses import within_class_spread

    z = F.normalize(z.detach(), dim=1)
    classes, inv = torch.unique(y, return_inverse=True)
    means = torch.zeros(len(classes), z.shape[1], dtype=z.dtype).index_add_(0, inv, z)
    means /= torch.bincount(inv, minlength=len(classes)).to(z.dtype)[:, None]
    k = len(classes)
    between = (torch.cdist(means, means) ** 2).sum() / max(1, k * (k - 1))
    return float(within_class_spread(z, y)), float(between)


def _record(curves: dict[str, list[float]], step: int, parts: dict, z, y, lr: float) -> None:
    within, between = class_geometry(z, y)
    for name, value in dict(parts, step=step, within=within, between=between, lr=lr).items():
        curves.setdefault(name, []).append(float(value))


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


def objective_of(method: Objective | str) -> tuple[Objective, str]:
    """(objective, progress stage) of a method's row or of an objective given directly."""
    if isinstance(method, Objective):
        return method, "retrain"
    row = BY_NAME.get(method)
    if row is None or row.objective is None:
        accepted = ", ".join(m.name for m in BY_NAME.values() if m.objective)
        raise ValueError(f"unknown retraining method {method!r}; accepted: {accepted}")
    return row.objective, f"retrain:{method}"


def _trainable_copy(D0: Discriminator, cfg: RetrainConfig, device) -> tuple[Discriminator, list]:
    """A copy of D0 whose last ``cfg.train_blocks`` conv blocks alone are trainable."""
    D = copy.deepcopy(D0).to(device)
    if cfg.anchor_weight > 0:
        D0.eval()  # the anchor's reference embedding uses the pretrained running statistics
    for p in D.parameters():
        p.requires_grad_(False)
    trainable = [p for blk in D.blocks[4 - cfg.train_blocks:] for p in blk.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    # BN in eval mode keeps the pretrained running statistics: 90 class-sorted images are too
    # few to re-estimate them, and train-mode BN would make z depend on the batch.
    D.train(not cfg.freeze_bn)
    return D, trainable


def _embedder(D: Discriminator, cfg: RetrainConfig, x: torch.Tensor):
    """f(x) during retraining.  With BN frozen and no augmentation, the blocks before the
    retrained ones see the same input and weights at every step: they run once, not per step."""
    n_frozen = 4 - cfg.train_blocks
    if not (cfg.freeze_bn and cfg.augment_shift <= 0 and n_frozen > 0):
        return D.embed
    with torch.no_grad():
        h0 = x
        for blk in D.blocks[:n_frozen]:
            h0 = blk(h0)  # (N, C, H, W), constant during retraining

    def embed(xb: torch.Tensor) -> torch.Tensor:
        h = h0
        for blk in D.blocks[n_frozen:]:
            h = blk(h)
        return h.flatten(1)
    return embed


def _anchor(D: Discriminator, D0: Discriminator, cfg: RetrainConfig, x_unlabeled, gen, device):
    """The anchor term: keep the unlabeled embedding where the pretrained D put it, so that the
    labels only move what they need to (docs/METHOD.md section 6)."""
    pick = torch.randint(0, len(x_unlabeled), (min(cfg.unlabeled_batch, len(x_unlabeled)),),
                         generator=gen)
    xu = x_unlabeled[pick].to(device)
    with torch.no_grad():
        zu0 = F.normalize(D0.embed(xu), dim=1)  # (B, d), the pretrained embedding
    zu = F.normalize(D.embed(xu), dim=1)
    return ((zu - zu0) ** 2).sum(1).mean()


def retrain(D0: Discriminator, cfg: RetrainConfig, x: torch.Tensor, y: torch.Tensor,
            method: Objective | str, seed: int, progress: Progress | None = None,
            report_every: int = 5, x_unlabeled: torch.Tensor | None = None,
            snapshots: bool = False) -> Retrained:
    """Retrain a copy of D0's last ``cfg.train_blocks`` conv blocks on x: (N,1,28,28), y: (N,)
    with classes re-indexed 0..K-1, under ``method``'s objective (a method name or an
    Objective).  ``x_unlabeled`` (U,1,28,28): unlabeled in-distribution images for the anchor
    term (used only when ``cfg.anchor_weight > 0``).  ``x_snapshot`` (S,1,28,28): images whose
    embedding is kept at :func:`snapshot_steps` (``out.snapshots``)."""
    objective, stage = objective_of(method)
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    D, trainable = _trainable_copy(D0, cfg, device)
    anchors = [p.detach().clone() for p in trainable]
    with torch.no_grad():
        z0 = D.embed(x)
        if objective.sphere and cfg.pair_mode in SPHERE_MODES:
            z0 = F.normalize(z0, dim=1)
    trainer = objective.start(z0, y, int(y.max()) + 1, cfg, gen)
    embed = _embedder(D, cfg, x)
    opt = torch.optim.Adam(trainable + trainer.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Retrained(D=D, head=trainer.head)
    anchored = cfg.anchor_weight > 0 and x_unlabeled is not None and len(x_unlabeled)
    snaps = snapshot_steps(cfg.steps)[:-1] if snapshots else ()  # the last: out.D itself
    if 0 in snaps:
        _snapshot(out, D, 0)
    if progress:
        progress(stage, 0, cfg.steps, {})
    for step in range(1, cfg.steps + 1):
        z = embed(shift_images(x, cfg.augment_shift, gen))
        loss, parts = trainer.loss(z, y)
        if anchored:
            anchor = _anchor(D, D0, cfg, x_unlabeled, gen, device)
            loss = loss + cfg.anchor_weight * anchor
            parts = dict(parts, anchor=float(anchor.detach()))
        if cfg.l2sp > 0:
            loss = loss + cfg.l2sp * sum(((p - a) ** 2).sum() for p, a in zip(trainable, anchors))
        if cfg.l2sp > 0 or anchored:
            parts = dict(parts, loss=float(loss.detach()))
        _record(out.curves, step, parts, z, y, opt.param_groups[0]["lr"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in snaps:
            _snapshot(out, D, step)
        if step % report_every == 0 or step == cfg.steps:
            out.history.append({"step": step, **parts})
            if progress:
                progress(stage, step, cfg.steps, parts)
    D.eval()
    for p in D.parameters():
        p.requires_grad_(False)
    out.objective = trainer.state()
    return out


# Images per forward pass when embedding many.  On a CPU, 256 keeps a block's activations
# (256 x 64 x 14 x 14 float32, 13 MB) in cache, which halves the time of larger batches with
# identical values (docs/PERFORMANCE.md section 8).
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

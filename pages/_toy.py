"""The Method page's teaching toy: a tiny network trained for a second or two, MCDD-only vs XDD.

A pure function of its arguments with no Streamlit in it, so it could run as a job as well.
It uses ``xdd.losses.xdd_loss``, the same loss function as the real retraining.  torch is
imported inside the function: the page only pays for it when someone presses the button.
"""
from __future__ import annotations

from typing import Any

import numpy as np

N_CLASSES = 9
N_PER_CLASS = 10


def toy_data(seed: int, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """9 classes x 10 points in the plane: Gaussian blobs on a 3x3 grid, barely separable."""
    rng = np.random.default_rng([seed, 77])
    grid = np.array([(i, j) for i in range(3) for j in range(3)], dtype=np.float32) - 1.0
    y = np.repeat(np.arange(N_CLASSES), N_PER_CLASS)
    x = grid[y] + noise * rng.standard_normal((len(y), 2)).astype(np.float32)
    return x.astype(np.float32), y


def _spread_and_gap(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean squared distance to the class mean, mean squared distance of inter-class pairs)."""
    within = float(np.mean([((z[y == k] - z[y == k].mean(0)) ** 2).sum(1).mean()
                            for k in np.unique(y)]))
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)  # (N, N)
    inter = y[:, None] != y[None, :]
    return within, float(sq[inter].mean())


def train_toy(seed: int = 0, steps: int = 300, beta: float = 1.0, lr: float = 0.05, dim: int = 3,
              snapshot_every: int = 10, pair_mode: str = "sphere", pull_weight: float = 0.0
              ) -> dict[str, Any]:
    """Train the same small MLP (2 -> 64 -> 64 -> dim) twice from the same start: with the
    MCDD term only (pair_weight = 0) and with the full XDD loss (pair_weight = 1).

    Embeddings are put on the unit sphere, as the real loss does (``pair_mode`` "sphere" or
    "ratio"); with dim = 3 that is the ordinary sphere, which a 3-D plot shows as it is.
    Returns the inputs, labels and, per method, snapshots of the embedding (S, N, dim), the
    steps they were taken at, and the within-class spread / inter-class distance / loss terms
    at each snapshot.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from xdd.losses import xdd_loss

    x_np, y_np = toy_data(seed)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np).long()
    out: dict[str, Any] = {"x": x_np, "y": y_np, "steps": [], "methods": {}}
    for name, pair_weight in (("mcdd", 0.0), ("xdd", 1.0)):
        torch.manual_seed(seed)  # the same initial network for both methods
        net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                            nn.Linear(64, dim))
        with torch.no_grad():
            z0 = F.normalize(net(x), dim=1)
            centers0 = torch.stack([z0[y == k].mean(0) for k in range(N_CLASSES)])  # (K, 2)
            spread = torch.stack([((z0[y == k] - centers0[k]) ** 2).sum(1).mean()
                                  for k in range(N_CLASSES)])
            log_sigma0 = 0.5 * torch.log(spread.clamp_min(1e-4) / dim)
        centers = nn.Parameter(centers0.clone())
        log_sigma = nn.Parameter(log_sigma0.clone())
        bias = nn.Parameter(torch.zeros(N_CLASSES))
        opt = torch.optim.Adam(list(net.parameters()) + [centers, log_sigma, bias], lr=lr)
        snaps, stats, taken = [], [], []
        for step in range(steps + 1):
            z = net(x)
            loss, parts = xdd_loss(z, y, centers, log_sigma, bias, beta=beta,
                                   pair_weight=pair_weight, pair_mode=pair_mode,
                                   pull_weight=pull_weight)
            if step % snapshot_every == 0 or step == steps:
                zn = F.normalize(z.detach(), dim=1).numpy().copy()
                within, gap = _spread_and_gap(zn, y_np)
                snaps.append(zn)
                taken.append(step)
                stats.append({"step": step, "within": within, "between": gap,
                              "mcdd": parts["mcdd"], "pairwise": parts["pairwise"]})
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out["methods"][name] = {"snapshots": np.stack(snaps), "stats": stats}
        out["steps"] = taken
    return out

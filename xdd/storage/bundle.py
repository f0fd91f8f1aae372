"""Pretrained GANs shipped with the code, so a first run on a laptop needs no GAN pretraining.

One file per pretraining config, ``xdd/pretrained/<pretrain_key>.pt``: the discriminator's
state_dict (the embedding every method starts from), 64 of G's samples (what the Results page
shows) and the final GAN losses, with the config and code version they were made with.  G
itself is not shipped: nothing downstream of pretraining uses it.  ``index.json`` beside the
files records each file's SHA-256 (torch.load does not notice a flipped byte in a tensor).

A bundled D is used only when this machine has no pretrained GAN of its own for that config,
and never for a forced run (``run_experiment(force=True)``, ``python -m xdd run --force``),
which pretrains from scratch.  Results say where their GAN came from (``pretrain_source``).
The bundle is written by ``python -m xdd pretrain --digits 0-9 --preset quick --bundle``.
``XDD_BUNDLE`` points elsewhere (tests).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xdd.storage import store
from xdd.core.config import CODE_VERSION, RunConfig, pretrain_dict, pretrain_key, to_dict

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def bundle_dir() -> Path:
    return Path(os.environ.get("XDD_BUNDLE", DEFAULT_DIR))


def _index() -> dict[str, Any]:
    idx = store.read_json(bundle_dir() / "index.json")
    return idx if isinstance(idx, dict) else {}


def _meta(cfg: RunConfig) -> dict[str, Any]:
    """What a bundled file must have been made with to stand for cfg's pretraining."""
    return {"pretrain_key": pretrain_key(cfg), "code_version": CODE_VERSION,
            "ood_digit": cfg.ood_digit, "data": to_dict(cfg.data),
            "pretrain": pretrain_dict(cfg.pretrain)}


def load(cfg: RunConfig, device) -> tuple[Any, np.ndarray, dict | None] | None:
    """(D, G's samples (64, 28, 28) uint8, final GAN losses) from the bundle, or None when the
    bundle has no verified file for cfg's pretraining config."""
    from xdd.core.models import Discriminator

    key = pretrain_key(cfg)
    path = bundle_dir() / f"{key}.pt"
    entry = _index().get(key)
    if not isinstance(entry, dict) or not path.is_file() \
            or entry.get("sha256") != store.sha256_file(path):
        return None
    state = store.load_checkpoint(path)  # weights_only=True
    if state is None or state.get("meta") != _meta(cfg):
        return None
    D = Discriminator(cfg.pretrain.d_width)
    try:
        D.load_state_dict(state["D"])
        samples = np.asarray(state["samples"].numpy(), dtype=np.uint8)
    except (KeyError, RuntimeError, AttributeError):
        return None
    return D.to(device).eval(), samples, state.get("losses")


def write(cfg: RunConfig, D, samples: np.ndarray, losses: dict | None) -> Path:
    """Add (or replace) cfg's pretrained D in the bundle; returns the file written."""
    import torch

    key = pretrain_key(cfg)
    path = bundle_dir() / f"{key}.pt"
    state = {k: v.detach().cpu().clone() for k, v in D.state_dict().items()}
    store.save_checkpoint(path, {"D": state, "samples": torch.from_numpy(np.ascontiguousarray(samples)),
                                 "losses": losses, "meta": _meta(cfg)})
    idx = _index()
    idx[key] = {"sha256": store.sha256_file(path), "ood_digit": cfg.ood_digit,
                "preset": cfg.preset, "gan_seed": cfg.pretrain.seed,
                "code_version": CODE_VERSION}
    store.atomic_write_json(bundle_dir() / "index.json", idx)
    return path


def entries() -> dict[str, dict[str, Any]]:
    """key -> index entry of every bundled file."""
    return _index()


GAN_SOURCE = {"cache": "reused", "bundle": "shipped with the code (xdd/pretrained)",
              "trained": "trained"}


def gan_source(res: dict[str, Any]) -> str:
    """Where a run's pretrained GAN came from, in words (older runs record only reused)."""
    fallback = "reused" if res.get("pretrain_reused") else "trained"
    return GAN_SOURCE.get(res.get("pretrain_source"), fallback)

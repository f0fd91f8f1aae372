"""The "get the GAN" stage: a pretrained (G, D) from this machine's cache, else the one shipped
with the code, else pretrained now and cached."""
from __future__ import annotations

import time
from typing import Callable

from xdd.core.config import CODE_VERSION, RunConfig, pretrain_key, to_dict
from xdd.storage import store

Progress = Callable[[str, int, int, dict], None]


def load_pretrained(cfg: RunConfig, device):
    """(G, D) from the cache, or None when absent or unreadable."""
    from xdd.core.models import Discriminator, Generator

    pdir = store.pretrain_dir(pretrain_key(cfg))
    meta = store.read_json(pdir / "config.json")
    ckpt = pdir / "checkpoint.pt"
    # torch.load does not notice a flipped byte inside a tensor: check the recorded hash first.
    if not isinstance(meta, dict) or not ckpt.is_file() \
            or meta.get("checkpoint_sha256") != store.sha256_file(ckpt):
        return None
    state = store.load_checkpoint(ckpt)
    if state is None or state.get("code_version") != CODE_VERSION:
        return None
    p = cfg.pretrain
    G, D = Generator(p.z_dim, p.g_width), Discriminator(p.d_width)
    try:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
    except (KeyError, RuntimeError):
        return None
    return G.to(device).eval(), D.to(device).eval()


def _save_pretrained(cfg: RunConfig, G, D, last) -> None:
    pdir = store.pretrain_dir(pretrain_key(cfg))
    store.save_checkpoint(pdir / "checkpoint.pt", {
        "G": G.state_dict(), "D": D.state_dict(), "step": cfg.pretrain.steps,
        "code_version": CODE_VERSION, "losses": last,
    })
    store.atomic_write_json(pdir / "config.json", {
        "ood_digit": cfg.ood_digit, "data": to_dict(cfg.data), "pretrain": to_dict(cfg.pretrain),
        "code_version": CODE_VERSION, "losses": last,
        "checkpoint_sha256": store.sha256_file(pdir / "checkpoint.pt")})


def ensure_pretrained(cfg: RunConfig, x_pre, device, progress: Progress, use_bundle: bool = True):
    """The pretrained D for cfg's pretraining config, with what its G draws and how the game
    ended: from this machine's cache, else from the bundle shipped with the code (unless
    ``use_bundle`` is False), else trained now and cached.

    Returns (D, samples (64, 28, 28) uint8, final losses, source, seconds); source is
    "cache", "bundle" or "trained".
    """
    from xdd.storage import bundle
    from xdd.train.pretrain import pretrain_gan, sample_images

    t0 = time.perf_counter()
    got = load_pretrained(cfg, device)
    if got is not None:
        progress("pretrain", cfg.pretrain.steps, cfg.pretrain.steps, {"reused": True})
        meta = store.read_json(store.pretrain_dir(pretrain_key(cfg)) / "config.json")
        losses = meta.get("losses") if isinstance(meta, dict) else None
        return got[1], sample_images(got[0]), losses, "cache", time.perf_counter() - t0
    shipped = bundle.load(cfg, device) if use_bundle else None
    if shipped is not None:
        progress("pretrain", cfg.pretrain.steps, cfg.pretrain.steps,
                 {"reused": True, "source": "bundle"})
        D, samples, losses = shipped
        return D, samples, losses, "bundle", time.perf_counter() - t0
    G, D, last = pretrain_gan(cfg.pretrain, x_pre, device, progress)
    _save_pretrained(cfg, G, D, last)
    return D, sample_images(G), last, "trained", time.perf_counter() - t0


def gan_identity(cfg: RunConfig, source: str | None = None, use_bundle: bool = True
                 ) -> str | None:
    """What identifies the pretrained D a run of cfg uses, without loading it: the recorded
    SHA-256 of the file it comes from (this machine's GAN cache, else the shipped bundle).
    ``source``: where the run took it from ("cache", "trained", "bundle"); None: where a run
    would take it now (the estimate's question).  None when there is no such file."""
    from xdd.storage import bundle

    key = pretrain_key(cfg)
    pdir = store.pretrain_dir(key)
    meta = store.read_json(pdir / "config.json")
    if source in (None, "cache", "trained") and isinstance(meta, dict) \
            and (pdir / "checkpoint.pt").is_file():
        return meta.get("checkpoint_sha256")
    if source in (None, "bundle") and use_bundle:
        entry = bundle.entries().get(key)
        if isinstance(entry, dict) and (bundle.bundle_dir() / f"{key}.pt").is_file():
            return entry.get("sha256")
    return None

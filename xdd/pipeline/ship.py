"""Ship the reusable scores of the shipped GANs' default runs beside them (``python -m xdd
ship-scores``): what a first demo on a laptop reads instead of computing (xdd.pipeline.reuse)."""
from __future__ import annotations

from pathlib import Path

from xdd.core.config import RunConfig
from xdd.pipeline.reuse import shipped_path
from xdd.storage import store


def ship(cfg: RunConfig, threads: int) -> list[Path]:
    """Compute, with the GAN shipped for cfg, the reusable scores of cfg's methods at
    ``threads`` torch threads on the CPU (the thread count of the worker that will read them:
    one on a 2-core laptop) and put them beside the shipped GANs.  Runs in a temporary cache,
    so the GAN is the bundle's and nothing of this machine's cache is read or written."""
    import os
    import shutil
    import tempfile

    import torch

    from xdd.pipeline.experiment import run_experiment

    old_env, old_threads = dict(os.environ), torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="xdd-ship-") as tmp:
        os.environ["XDD_DATA_CACHE"] = str(store.data_dir())  # MNIST converted once
        os.environ["XDD_CACHE"] = tmp
        torch.set_num_threads(threads)
        try:
            res = run_experiment(cfg, device="cpu")
            if res["pretrain_source"] != "bundle":
                raise RuntimeError(f"digit {cfg.ood_digit}: no shipped GAN for this config")
            out = []
            for f in sorted((Path(tmp) / "reuse").glob("*.npz")):
                dest = shipped_path(f.stem)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
                out.append(dest)
            return out
        finally:
            torch.set_num_threads(old_threads)
            for name in ("XDD_CACHE", "XDD_DATA_CACHE"):
                if name in old_env:
                    os.environ[name] = old_env[name]
                else:
                    os.environ.pop(name, None)

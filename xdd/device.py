"""Device choice: the GPU when there is one, else the CPU; and the CPU cores this process may
use.  torch is imported inside the functions, so asking for the cores stays cheap."""
from __future__ import annotations

import os

from .config import DEVICES, ConfigError


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def resolve_device(name: str = "auto"):
    """"auto" | "cpu" | "cuda" -> torch.device; ConfigError for cuda without a GPU."""
    import torch

    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; accepted: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; accepted: auto, cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def describe(device) -> str:
    """'cpu (2 threads)' or the GPU's name."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"

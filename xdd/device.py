"""Device choice: the GPU when there is one, else the CPU."""
from __future__ import annotations

import torch

from .config import DEVICES, ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; accepted: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; accepted: auto, cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def describe(device: torch.device) -> str:
    """'cpu (2 threads)' or the GPU's name."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"

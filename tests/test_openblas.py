"""numpy's OpenBLAS kernels chosen from the CPU's instruction sets (xdd.openblas)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from xdd import openblas

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu sse
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n"
AVX512 = "avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl"


def test_cpu_flags_reads_the_first_cpus_flags_line():
    flags = openblas.cpu_flags(X86.format(extra="avx2 fma"))
    assert {"sse", "avx", "avx2", "fma"} <= flags
    assert "spectre_v1" not in flags  # the "bugs" line is not a flags line
    assert openblas.cpu_flags(ARM) == frozenset()
    assert openblas.cpu_flags("") == frozenset()


@pytest.mark.parametrize("extra, expected", [
    (AVX512, "SkylakeX"),
    ("avx2 fma", "Haswell"),
    ("avx2 fma avx512f", "Haswell"),  # AVX-512 foundation alone is not the SkylakeX set
    ("avx2", None),  # no FMA: OpenBLAS's own choice
    ("", None),
])
def test_coretype_for_needs_every_instruction_set_of_the_kernels(extra, expected):
    assert openblas.coretype_for(openblas.cpu_flags(X86.format(extra=extra))) == expected


def test_configure_sets_the_variable_and_an_explicit_setting_wins(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    env: dict[str, str] = {}
    assert openblas.configure(env, X86.format(extra=AVX512)) == "SkylakeX"
    assert env == {"OPENBLAS_CORETYPE": "SkylakeX"}
    env = {"OPENBLAS_CORETYPE": "Haswell"}
    assert openblas.configure(env, X86.format(extra=AVX512)) == "Haswell"
    assert env == {"OPENBLAS_CORETYPE": "Haswell"}
    env = {}
    assert openblas.configure(env, ARM) is None and env == {}
    monkeypatch.setattr(sys, "platform", "darwin")
    assert openblas.configure(env, X86.format(extra=AVX512)) is None and env == {}


def test_importing_xdd_first_gives_numpy_the_kernels_for_this_cpu():
    """In a fresh process with no setting, `import xdd` before numpy makes numpy's OpenBLAS
    run the kernels chosen for this machine's CPU (without it, numpy 1.26's OpenBLAS falls
    back to SSE3 kernels on CPUs it does not know)."""
    expected = openblas.coretype_for(openblas.cpu_flags()) if sys.platform == "linux" else None
    if expected is None:
        pytest.skip("no kernel family is chosen on this CPU: OpenBLAS's own detection stands")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = ("import os, xdd; from xdd.openblas import numpy_kernels; "
            "print(os.environ['OPENBLAS_CORETYPE'], numpy_kernels())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out[0] == expected
    if out[1] == "None":
        pytest.skip("numpy here is not linked against OpenBLAS")
    assert out[1].lower() == expected.lower()

"""xdd.core.device.device_info: the device a job would run on, found without importing torch."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from xdd.core import device

SMI_OUTPUT = ("GPU 0: NVIDIA H200 (UUID: GPU-0f3a)\n"
              "GPU 1: Tesla T4 (UUID: GPU-77c1)\n")


def _fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    """An nvidia-smi on PATH, and nothing else there."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n[ \"$1\" = -L ] && printf '%s' '" + output + "'\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)


def test_no_nvidia_smi_is_the_cpu(tmp_path, monkeypatch, no_torch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no nvidia-smi
    monkeypatch.setattr(device, "_torch_has_cuda", lambda: True)
    assert device._nvidia_gpus() == []
    cores = os.cpu_count() or 1
    assert device.device_info() == {"kind": "cpu", "name": f"CPU ({cores} cores)", "note": ""}


def test_nvidia_smi_lists_the_gpus(tmp_path, monkeypatch, no_torch):
    _fake_smi(tmp_path, monkeypatch, SMI_OUTPUT)
    assert device._nvidia_gpus() == ["NVIDIA H200", "Tesla T4"]
    monkeypatch.setattr(device, "_torch_has_cuda", lambda: True)
    assert device.device_info() == {"kind": "cuda", "name": "GPU: NVIDIA H200", "note": ""}
    monkeypatch.setattr(device, "_torch_has_cuda", lambda: False)
    info = device.device_info()
    assert info["kind"] == "cpu" and info["name"].startswith("CPU (")
    assert info["note"] == "NVIDIA H200 found, but this PyTorch build has no CUDA."


def test_nvidia_smi_without_gpus(tmp_path, monkeypatch, no_torch):
    _fake_smi(tmp_path, monkeypatch, "No devices were found\n")
    monkeypatch.setattr(device, "_torch_has_cuda", lambda: True)
    assert device._nvidia_gpus() == []
    assert device.device_info()["kind"] == "cpu"


def test_an_imported_torch_is_asked(monkeypatch, tmp_path):
    _fake_smi(tmp_path, monkeypatch, SMI_OUTPUT)  # not asked: torch knows better
    cuda = SimpleNamespace(is_available=lambda: True, get_device_name=lambda i: "Fake GPU")
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    assert device.device_info() == {"kind": "cuda", "name": "GPU: Fake GPU", "note": ""}

    def broken() -> bool:
        raise RuntimeError("driver")

    monkeypatch.setattr(cuda, "is_available", broken)
    assert device.device_info()["kind"] == "cpu"
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    assert device.device_info() == {"kind": "cpu", "name": f"CPU ({os.cpu_count() or 1} cores)",
                                    "note": ""}


def test_torch_has_cuda_looks_for_its_cuda_library(tmp_path, monkeypatch):
    origin = tmp_path / "torch" / "__init__.py"
    (origin.parent / "lib").mkdir(parents=True)
    origin.write_text("")

    def finds(spec):
        return SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: spec))

    monkeypatch.setattr(device, "importlib", finds(None))
    assert device._torch_has_cuda() is False
    monkeypatch.setattr(device, "importlib", finds(SimpleNamespace(origin=str(origin))))
    assert device._torch_has_cuda() is False  # a CPU build: no libtorch_cuda
    (origin.parent / "lib" / "libtorch_cuda.so").write_bytes(b"")
    assert device._torch_has_cuda() is True

"""Shared fixtures: an isolated cache per test, MNIST converted once per session, and one
tiny pretrained run shared (by copying) by every test that needs a populated cache."""
from __future__ import annotations

import os

# One OpenMP/BLAS thread per process.  On a small, busy machine the spinning worker threads of
# torch's and scikit-learn's OpenMP pools fight over the cores and make t-SNE and training
# tens of times slower; one thread keeps the suite's timings stable.  CLI subprocesses inherit
# it.  Must be set before torch or sklearn is imported; an explicit setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Workers started by tests skip the background UMAP compilation (~25 s of CPU each).
os.environ.setdefault("XDD_WARMUP", "0")
# Pages with nothing measured yet start a background calibration; tests write their own.
os.environ.setdefault("XDD_CALIBRATE", "0")
# No first guess from the shipped reference calibration: estimates come from what each test
# measures (the tests of the first guess point it at a reference of their own).
os.environ.setdefault("XDD_ESTIMATE_REFERENCE", "")

import xdd  # noqa: E402,F401  (picks numpy's BLAS kernels for this CPU before numpy loads)

import gc
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _unfreeze_heap():
    """A page render freezes what is alive (pages/_heap.py); in the test process that would keep
    one test's garbage cycles from being collected in the next, so every test ends unfrozen."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted-MNIST folder for the whole session (the conversion takes seconds)."""
    return tmp_path_factory.mktemp("xdd-data")


@pytest.fixture(autouse=True)
def xdd_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_cache: Path) -> Path:
    """Every test gets an empty cache of its own; nothing is ever written to the repo's cache/."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("XDD_CACHE", str(cache))
    monkeypatch.setenv("XDD_DATA_CACHE", str(data_cache))
    return cache


@pytest.fixture(scope="session")
def mnist(data_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """The bundled MNIST (60k train, 10k test), loaded once per session."""
    from xdd.storage.data import load_mnist

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDD_DATA_CACHE", str(data_cache))
        mp.setenv("XDD_CACHE", str(tmp_path_factory.mktemp("xdd-mnist-cache")))
        return load_mnist()


@dataclass(frozen=True)
class TinyRun:
    cfg: Any  # RunConfig: preset("tiny", ood_digit=8)
    results: dict  # what run_experiment returned when it computed the run
    key: str  # run key
    cache: Path  # the cache folder the run was copied into (this test's XDD_CACHE)


@pytest.fixture(scope="session")
def _tiny_run_master(data_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Computes preset("tiny", ood_digit=8) once per session into a private cache."""
    from xdd.core.config import preset, run_key
    from xdd.pipeline.experiment import run_experiment

    cache = tmp_path_factory.mktemp("xdd-tiny-run") / "cache"
    cache.mkdir()
    cfg = preset("tiny", ood_digit=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDD_CACHE", str(cache))
        mp.setenv("XDD_DATA_CACHE", str(data_cache))
        results = run_experiment(cfg, device="cpu")
    return cfg, results, run_key(cfg), cache


@pytest.fixture
def tiny_run(xdd_cache: Path, _tiny_run_master) -> TinyRun:
    """The shared tiny run (pretrained GAN + run folder), copied into this test's cache."""
    cfg, results, key, master = _tiny_run_master
    shutil.copytree(master, xdd_cache, dirs_exist_ok=True)
    return TinyRun(cfg=cfg, results=results, key=key, cache=xdd_cache)


@pytest.fixture
def beta_two():
    """A throw-away method, registered by the test that asks for it and nowhere else: the XDD
    loss at beta = 2 (an existing objective and scorer kind, so the row is all it needs)."""
    from xdd.core import methods
    from xdd.core.methods import Method
    from xdd.core.objectives import IB

    row = methods.register(Method(
        "beta2", "XDD at beta = 2 (test)", "beta 2", "#123456", "a test's method",
        "embedding", {"labeled": "KDE", "unlabeled": "k-NN"}, objective=IB(beta=2.0)))
    try:
        yield row
    finally:
        methods.unregister(row.name)

"""Cached reads of the run cache: the complete runs, one run's verified results, arrays and
retraining curves, and the MNIST images their indices point into.

Nothing here trains, projects or imports torch: pages read what the worker wrote.  Reads of
the cache go through ``st.cache_resource`` keyed by a signature of the cache folder (run names
and results.json modification times), so a new or recomputed run is picked up on the next rerun
without re-reading everything else.  What they return is shared by every session as the same
object (no copy per render, which a class of thirty would pay thirty times): callers never
modify it, and its arrays are read-only, so a slip raises instead of changing another
visitor's view.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import streamlit as st

from xdd.storage import store


def cache_signature() -> tuple[str, str]:
    """(cache root, digest of the run names and their results.json modification times):
    changes whenever a run is added, removed or rewritten; cheap (a listdir and stats), and
    short, so that the shared computations keyed by it hash it fast."""
    root = store.runs_dir()
    h = hashlib.blake2b(digest_size=16)
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.name.startswith("."):
                continue
            try:
                h.update(f"{d.name}:{(d / 'results.json').stat().st_mtime_ns};".encode())
            except OSError:
                continue
    return (str(store.cache_root().resolve()), h.hexdigest())


def _read_only(arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    if arrays is not None:
        for a in arrays.values():
            if isinstance(a, np.ndarray):
                a.setflags(write=False)
    return arrays


@st.cache_resource(show_spinner=False, max_entries=16)
def _runs_for(signature: tuple) -> list[dict[str, Any]]:
    return store.list_runs()


def cached_runs() -> list[dict[str, Any]]:
    """results.json of every complete run (newest signature only is re-read)."""
    return _runs_for(cache_signature())


@st.cache_resource(show_spinner=False, max_entries=64)
def _verified(root: str, key: str, mtime: int) -> dict[str, Any] | None:
    return store.load_results(key)


@st.cache_resource(show_spinner=False, max_entries=64)
def _npz(root: str, key: str, name: str, mtime: int) -> dict[str, np.ndarray] | None:
    return _read_only(store.load_npz(key, name))


def run_mtime(key: str) -> int:
    try:
        return (store.run_dir(key) / "results.json").stat().st_mtime_ns
    except OSError:
        return 0


def verified_results(key: str) -> dict[str, Any] | None:
    """A run's results after checking every file's hash (None for a corrupt run, which is
    left in place: pages only read; see pages._jobs.bad_run_panel)."""
    return _verified(str(store.cache_root().resolve()), key, run_mtime(key))


def run_arrays(key: str, name: str) -> dict[str, np.ndarray] | None:
    """scores.npz / projections.npz of a verified run, or None."""
    if verified_results(key) is None:
        return None
    return _npz(str(store.cache_root().resolve()), key, name, run_mtime(key))


@st.cache_resource(show_spinner=False, max_entries=32)
def _curves(root: str, key: str, mtime: int) -> dict[str, dict[str, np.ndarray]] | None:
    from xdd.pipeline.curves import load_curves

    curves = load_curves(key)
    for fields in (curves or {}).values():
        _read_only(fields)
    return curves


def run_curves(key: str) -> dict[str, dict[str, np.ndarray]] | None:
    """A verified run's retraining curves by method (xdd.pipeline.curves.load_curves), or
    None: a run made before runs kept curves, or one that fails its integrity check."""
    return _curves(str(store.cache_root().resolve()), key, run_mtime(key))


@st.cache_resource(show_spinner="Loading MNIST images…", max_entries=2)
def eval_images(root: str | None, eval_split: str, data_dir: str) -> np.ndarray:
    """The images of a run's evaluation set (the 10k test set, or the validation split), which
    its scores' and projections' indices point into: (10000, 28, 28) uint8; loaded only when
    images are shown."""
    from xdd.storage.data import eval_arrays, load_mnist

    return eval_arrays(load_mnist(root), eval_split)[0]


def run_images(res: dict[str, Any], index: np.ndarray) -> np.ndarray:
    """The images at ``index`` (indices into the run's evaluation set, as scores.npz and
    projections.npz store them) from that run's data root and evaluation split.  (n, 28, 28)"""
    data_root = (res.get("config") or {}).get("data", {}).get("root")
    split = str(res.get("eval_split", "test"))
    return eval_images(data_root, split, str(store.data_dir()))[np.asarray(index, dtype=np.int64)]


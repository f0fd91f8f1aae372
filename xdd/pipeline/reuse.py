"""Scores that do not change between runs, computed once and reused.

The unlabeled reference's scores of a method that retrains nothing (the raw-pixel baseline,
the pretrained D's) depend on the data, the held-out digit, the GAN's pretraining split, the
run seed, the scoring settings and, for a network, its weights: not on the shots, the loss or
the maps.  They are the slow part of those methods (each of the ~54,000 reference images
embedded, a PCA, a k-NN search of the 10,000 test images), so a run keeps them, one file per
method, and a later run with the same inputs (another shot count, another loss setting, the
first demo of a digit whose GAN ships with the code) reads them instead.

Each file holds the scores and a SHA-256 over them, the key and the test indices they belong
to; one that does not verify is recomputed, never trusted.  The scores of the shipped
GANs' default runs ship beside them (``xdd/pretrained/reuse/``), read-only.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from xdd.core.config import CODE_VERSION, RunConfig, pretrain_key, to_dict
from xdd.storage import bundle, store

FORMAT = 1
REFERENCE = "unlabeled"  # the reference whose scores are reused (the labeled one is cheap)


def reuse_key(cfg: RunConfig, method, network: str, device: str) -> str:
    """Everything a reusable score depends on: ``network`` identifies the scored network (its
    file's SHA-256; "" for raw pixels); ``device`` is where it is computed, as results record
    it ("cpu (1 thread)"): another thread count may round differently (docs/DESIGN.md §6),
    so a score is reused only where it would have been computed the same."""
    blob = json.dumps({"v": CODE_VERSION, "format": FORMAT, "method": method.name,
                       "scorer": method.scorer, "reference": REFERENCE,
                       "gan_split": pretrain_key(cfg), "seed": cfg.seed,
                       "score": to_dict(cfg.score), "network": network, "device": device},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def where(described: str) -> str:
    """Where a score is computed, as far as its last bits go: the device as results describe it
    ("cpu (1 thread)") and, on a CPU, the SIMD family its kernels use (an AVX-512 CPU and an
    AVX2 one round differently, like two thread counts)."""
    if not described.startswith("cpu"):
        return described
    from xdd.openblas import coretype_for, cpu_flags

    return f"{described}; {coretype_for(cpu_flags()) or 'generic'}"


def cache_path(key: str) -> Path:
    return store.cache_root() / "reuse" / f"{key}.npz"


def shipped_path(key: str) -> Path:
    return bundle.bundle_dir() / "reuse" / f"{key}.npz"


def _digest(key: str, scores: np.ndarray, test_index: np.ndarray, extra: str) -> str:
    """Over the key, the scores, the test images they belong to (not stored: the run knows
    them) and the extra metrics."""
    h = hashlib.sha256(key.encode())
    h.update(np.ascontiguousarray(scores).tobytes())
    h.update(np.ascontiguousarray(test_index, dtype=np.int64).tobytes())
    h.update(extra.encode())
    return h.hexdigest()


def _compact(scores: np.ndarray) -> np.ndarray:
    """float32 where that loses nothing (k-NN distances are float32 values), else as is."""
    small = scores.astype(np.float32)
    return small if np.array_equal(small.astype(scores.dtype), scores) else scores


def save(path: Path, key: str, scores: np.ndarray, test_index: np.ndarray,
         extra: dict) -> bool:
    """Keep a method's reusable scores (atomically); False where the cache cannot take them
    (full, read-only): the run goes on without the shortcut."""
    small, blob = _compact(np.asarray(scores)), json.dumps(extra, sort_keys=True)
    try:
        store.atomic_save_npz(path, scores=small, dtype=np.array(str(scores.dtype)),
                              extra=np.array(blob),
                              sha256=np.array(_digest(key, small, test_index, blob)))
    except OSError:
        return False
    return True


def load(key: str, test_index: np.ndarray) -> tuple[np.ndarray, dict] | None:
    """(scores, extra metrics) kept for ``key`` on this machine or shipped with the code, or
    None when absent, unreadable, altered, or made for other test images."""
    for path in (cache_path(key), shipped_path(key)):
        got = _read(path, key, test_index)
        if got is not None:
            return got
    return None


def _read(path: Path, key: str, test_index: np.ndarray) -> tuple[np.ndarray, dict] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            small, dtype = z["scores"], str(z["dtype"])
            blob, digest = str(z["extra"]), str(z["sha256"])
        if len(small) != len(test_index) or digest != _digest(key, small, test_index, blob):
            return None
        return small.astype(dtype), json.loads(blob)
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
        return None


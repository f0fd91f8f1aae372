"""The unlabeled scoring reference: the in-distribution training images the GAN was pretrained
on, without their labels, as the features a k-NN or KDE scorer searches (docs/DESIGN.md §2).

The reference is embedded once per network, a batch at a time; the PCA is fitted on a seeded
subset of those same embeddings (not on a second pass over the images), then every row is
projected.  Only the (n_reference, k) float32 features are kept.

The pretrained D's features depend on the GAN, the run seed and the scoring settings, not on
the shots or the methods: they are kept on disk beside the GAN (:func:`cached_path`), so a
rerun of a digit with other shots or methods does not embed its 54,000 images again.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from xdd.storage import store
from xdd.core.config import CODE_VERSION, RunConfig, pretrain_key

if TYPE_CHECKING:  # the pages ask cached_path() without loading the scorers
    from xdd.core.scoring import FeatureReducer

SCORE_BATCH = 2048  # images embedded and scored at a time (bounds the peak memory)
# The retrained ("after") network's unlabeled-reference features, kept in its run's folder
# (n_reference x knn_pca float32, ~14 MB for the quick preset) with the PCA that made them.
REFERENCE_FILE = "reference_after.npz"


def reference_indices(cfg: RunConfig, splits) -> np.ndarray:
    """Training-set indices of the unlabeled reference: the GAN's pretraining images (all, or
    a seeded subsample of ``score.n_reference``).  They exclude the OOD digit and, with
    ``eval_split="val"``, the validation images, by construction of ``splits.pretrain``."""
    idx = np.asarray(splits.pretrain)
    n = cfg.score.n_reference
    if n is not None and n < len(idx):
        idx = np.sort(np.random.default_rng([cfg.seed, 4003]).choice(idx, size=n, replace=False))
    return idx


def pca_fit_rows(cfg: RunConfig, n_reference: int) -> np.ndarray:
    """Rows of the reference (positions in :func:`reference_indices`) the PCA is fitted on:
    ``score.knn_pca_fit`` of them, seeded by the run seed, sorted."""
    return np.sort(np.random.default_rng([cfg.seed, 4001]).choice(
        n_reference, size=min(cfg.score.knn_pca_fit, n_reference), replace=False))


def reference_info(cfg: RunConfig, n_labeled: int, n_reference: int) -> dict[str, str]:
    """One sentence per reference saying what the scores were computed against."""
    sc = cfg.score
    how = (f"{sc.knn_k}-NN distance" if sc.unlabeled_scorer == "knn" else "Gaussian KDE")
    pca = f", PCA-{sc.knn_pca}" if sc.knn_pca else ""
    norm = "L2-normalised" if sc.normalize else "raw"
    return {"labeled": f"KDE over the {n_labeled} labeled embeddings (the paper)",
            "unlabeled": f"{how} to {n_reference} unlabeled in-distribution training images "
                         f"({norm} embeddings{pca}; pixels: PCA-{sc.pixel_knn_pca})"}


def reference_features(embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                       ref_index: np.ndarray, fit_rows: np.ndarray, reducer: FeatureReducer,
                       batch: int = SCORE_BATCH) -> tuple[FeatureReducer, np.ndarray]:
    """Fit ``reducer`` on the embeddings of the ``fit_rows`` of the reference and return it with
    the reduced features of every reference image, in ``ref_index`` order.

    embed: uint8 images (n, 28, 28) -> (n, d) float array; images: the whole training set
    (uint8); ref_index: training-set indices of the reference; fit_rows: positions in
    ``ref_index``.  Each image is embedded exactly once.  Returns (reducer, (n_ref, k) float32).
    """
    fit_rows = np.asarray(fit_rows)
    raw = np.concatenate([embed(images[ref_index[fit_rows[i:i + batch]]])
                          for i in range(0, len(fit_rows), batch)])  # (n_fit, d)
    reducer.fit(raw)
    first = reducer.transform(raw)
    del raw
    feats = np.empty((len(ref_index), first.shape[1]), dtype=np.float32)
    feats[fit_rows] = first
    rest = np.setdiff1d(np.arange(len(ref_index)), fit_rows)
    for i in range(0, len(rest), batch):
        rows = rest[i:i + batch]
        feats[rows] = reducer.transform(embed(images[ref_index[rows]]))
    return reducer, feats


# Bump when what the cached features are changes without CODE_VERSION changing.
CACHE_FORMAT = 1


def cached_path(cfg: RunConfig) -> Path:
    """Where the pretrained D's reference features for cfg are kept: in its GAN's folder of
    the cache, one file per run seed and reference settings (everything they depend on)."""
    sc = cfg.score
    blob = json.dumps({"v": CODE_VERSION, "format": CACHE_FORMAT, "seed": cfg.seed,
                       "n_reference": sc.n_reference, "fit": sc.knn_pca_fit, "pca": sc.knn_pca,
                       "normalize": sc.normalize}, sort_keys=True)
    tag = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return store.pretrain_dir(pretrain_key(cfg)) / f"reference-{tag}.npz"


def _digest(feats: np.ndarray, ref_index: np.ndarray, network: str) -> str:
    h = hashlib.sha256(np.ascontiguousarray(feats).tobytes())
    h.update(np.ascontiguousarray(ref_index, dtype=np.int64).tobytes())
    h.update(network.encode())
    return h.hexdigest()


def save_cached(cfg: RunConfig, reducer: FeatureReducer, feats: np.ndarray,
                ref_index: np.ndarray, network: str) -> bool:
    """Keep the pretrained D's reference (atomically: a crash leaves no half-written file).
    ``network``: the digest of the D that embedded it (xdd.core.models.weights_digest).  Returns
    whether it was kept: a cache that cannot take the file (full, read-only) only loses the
    shortcut, never the run."""
    try:
        store.atomic_save_npz(cached_path(cfg), feats=feats,
                              ref_index=np.asarray(ref_index, dtype=np.int64),
                              network=np.array(network),
                              sha256=np.array(_digest(feats, ref_index, network)),
                              **{f"reducer_{k}": v for k, v in reducer.state().items()})
    except OSError:
        return False
    return True


def load_cached(cfg: RunConfig, ref_index: np.ndarray, network: str
                ) -> tuple[FeatureReducer, np.ndarray] | None:
    """(reducer, features) kept for cfg, or None when absent, unreadable, altered, or made for
    another set of reference images or by another network (a GAN pretrained here with
    ``--force`` shares its key with the shipped one, not its weights)."""
    path = cached_path(cfg)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        feats, kept = arrays["feats"], arrays["ref_index"]
        if feats.dtype != np.float32 or feats.ndim != 2 or len(feats) != len(ref_index) \
                or not np.array_equal(kept, ref_index) or str(arrays["network"]) != network \
                or str(arrays["sha256"]) != _digest(feats, kept, network):
            return None
        from xdd.core.scoring import FeatureReducer

        reducer = FeatureReducer.from_state(
            {k[len("reducer_"):]: v for k, v in arrays.items() if k.startswith("reducer_")})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return reducer, feats


class ReferenceStore:
    """Each network's unlabeled-reference features, computed once per run and shared by the
    scorers that search them (the pretrained D's: by its own scores and pyod's).  The
    pretrained D's are read from disk when an earlier run of its GAN and seed kept them, and
    kept otherwise; a retrained network's are new to every run.  Safe to call from the side
    threads: a network's features are computed by the first caller while the others wait."""

    def __init__(self, cfg: RunConfig, images: np.ndarray, ref_index: np.ndarray,
                 fit_rows: np.ndarray, timings) -> None:
        import threading

        self.cfg, self.images, self.ref_index, self.fit_rows = cfg, images, ref_index, fit_rows
        self.timings = timings
        self.loaded: list[str] = []  # the methods whose reference came from disk
        self._got: dict[str, tuple] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _lock_for(self, network: str):
        import threading

        with self._lock:
            return self._locks.setdefault(network, threading.Lock())

    def features(self, network: str, name: str, model, keep: bool) -> tuple:
        """(reducer, (n_ref, k) float32 features) of ``model`` (``network``: what identifies
        it in this run; ``name``: the method asking, which names the timing)."""
        with self._lock_for(network):
            if network not in self._got:
                with self.timings.stage(f"reference:{name}"):
                    self._got[network] = self._compute(name, model, keep)
            return self._got[network]

    def _compute(self, name: str, model, keep: bool) -> tuple:
        from xdd.core.models import weights_digest
        from xdd.core.scoring import FeatureReducer
        from xdd.storage.data import to_tensor
        from xdd.train.retrain import embed_all

        cfg, sc = self.cfg, self.cfg.score
        digest = weights_digest(model) if keep else ""
        got = load_cached(cfg, self.ref_index, digest) if keep else None
        if got is not None:
            self.loaded.append(name)
            return got
        got = reference_features(
            lambda u8: embed_all(model, to_tensor(u8)).numpy(), self.images, self.ref_index,
            self.fit_rows, FeatureReducer(sc.knn_pca, sc.normalize, seed=cfg.seed),
            batch=SCORE_BATCH)
        if keep:
            save_cached(cfg, *got, self.ref_index, digest)
        return got

    def pixels(self) -> tuple:
        """(reducer, features) of the raw pixels in [0, 1], not normalised: distances between
        images as such."""
        from xdd.core.scoring import FeatureReducer

        return reference_features(
            lambda u8: u8.reshape(len(u8), -1) / 255.0, self.images, self.ref_index,
            self.fit_rows, FeatureReducer(self.cfg.score.pixel_knn_pca, normalize=False,
                                          seed=self.cfg.seed), batch=SCORE_BATCH)

    def computed(self, network: str) -> tuple | None:
        """A network's (reducer, features) if a stage computed them already, else None."""
        with self._lock_for(network):
            return self._got.get(network)

    def clear(self) -> None:
        self._got.clear()

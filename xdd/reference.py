"""The unlabeled scoring reference: the in-distribution training images the GAN was pretrained
on, without their labels, as the features a k-NN or KDE scorer searches (DESIGN.md section 2).

The reference is embedded once per network, a batch at a time; the PCA is fitted on a seeded
subset of those same embeddings (not on a second pass over the images), then every row is
projected.  Only the (n_reference, k) float32 features are kept.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .config import RunConfig
from .scoring import FeatureReducer

SCORE_BATCH = 2048  # images embedded and scored at a time (bounds the peak memory)


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

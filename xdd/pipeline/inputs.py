"""The "prepare the data" stage: every array a run reads, made once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xdd.core.config import RunConfig
from xdd.pipeline.reference import pca_fit_rows, reference_indices
from xdd.storage.data import eval_arrays, load_mnist, make_splits, to_tensor


@dataclass
class RunData:
    data: Any  # the MNIST arrays (xdd.storage.data)
    splits: Any  # the protocol's splits
    x_lab_u8: np.ndarray  # (L, 28, 28) uint8, the labeled images
    y_lab: np.ndarray  # (L,) their digits
    y_lab_idx: Any  # (L,) long tensor on the device, classes re-indexed 0..8
    x_lab: Any  # (L, 1, 28, 28) tensor on the device
    x_test_u8: np.ndarray  # (T, 28, 28) uint8
    x_test: Any  # (T, 1, 28, 28) tensor on the CPU
    y_test: np.ndarray  # (T,)
    is_ood: np.ndarray  # (T,) int8, 1 for the held-out digit
    ref_index: np.ndarray  # training-set indices of the unlabeled reference
    fit_rows: np.ndarray  # positions in ref_index the reference's PCA is fitted on
    sub: np.ndarray  # positions in the test set that are projected to 2-D

    def pretrain_images(self):
        return to_tensor(self.data.x_train[self.splits.pretrain])

    def map_images(self):
        """The images the maps place, in the maps' row order: the projected test subsample,
        then the labeled images.  (M + L, 1, 28, 28) on the CPU."""
        import torch

        return torch.cat([self.x_test[self.sub], self.x_lab.cpu()])

    def fit_images(self):
        """The unlabeled images the anchor term reads (the PCA-fit rows of the reference)."""
        return to_tensor(self.data.x_train[self.ref_index[self.fit_rows]])


def prepare(cfg: RunConfig, dev) -> RunData:
    """Load MNIST and draw the splits; raises ConfigError for too many shots."""
    import torch

    from xdd.core.projection import subsample

    data = load_mnist(cfg.data.root)
    splits = make_splits(cfg, data)
    x_lab_u8, y_lab = data.x_train[splits.labeled], data.y_train[splits.labeled]
    x_eval, y_eval = eval_arrays(data, cfg.data.eval_split)
    x_test_u8, y_test = x_eval[splits.test], y_eval[splits.test]
    remap = {d: i for i, d in enumerate(k for k in range(10) if k != cfg.ood_digit)}
    # The unlabeled reference: the GAN's own pretraining images (training set, label != OOD
    # digit; in "val" mode from the first 50k only), never a test image.
    ref_index = reference_indices(cfg, splits)
    sub = (subsample(len(y_test), cfg.projection.n_samples, cfg.projection.seed)
           if cfg.projection.methods else np.arange(0))
    return RunData(
        data=data, splits=splits, x_lab_u8=x_lab_u8, y_lab=y_lab,
        y_lab_idx=torch.tensor([remap[int(v)] for v in y_lab], dtype=torch.long, device=dev),
        x_lab=to_tensor(x_lab_u8).to(dev), x_test_u8=x_test_u8, x_test=to_tensor(x_test_u8),
        y_test=y_test, is_ood=(y_test == cfg.ood_digit).astype(np.int8), ref_index=ref_index,
        fit_rows=pca_fit_rows(cfg, len(ref_index)), sub=sub)

"""Training curves of a run's retrainings, stored with the run (curves.npz) and read back.

Every retraining records, at every step, its loss and each term as the loss weighs it (for the
IB objectives ``ixz`` = pair_weight x pairwise term, the estimator standing in for I(X;Z), and
``izy`` = beta x (MCDD term + pull_weight x centre pull), the side standing in for -beta
I(Z;Y); the raw ``pairwise``, ``mcdd`` and ``pull`` terms beside them), the labeled embedding's
within-class spread and mean squared distance between class centres (on the unit sphere), and
the learning rate.  These are the estimators the loss uses, not true mutual information.
"""
from __future__ import annotations

import numpy as np

from xdd.storage import store

CURVES_FILE = "curves.npz"


def curve_arrays(curves: dict[str, dict[str, list[float]]]) -> dict[str, np.ndarray]:
    """{method: {field: per-step values}} -> npz arrays named "<method>.<field>"."""
    return {f"{m}.{k}": np.asarray(v, dtype=np.float64)
            for m, fields in curves.items() for k, v in fields.items()}


def load_curves(key: str) -> dict[str, dict[str, np.ndarray]] | None:
    """A verified run's curves by method, or None: a run made before runs kept curves, or one
    whose files do not verify (its results do not load)."""
    res = store.load_results(key)
    if res is None or CURVES_FILE not in (res.get("files") or {}):
        return None
    arrays = store.load_npz(key, CURVES_FILE) or {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, values in arrays.items():
        method, _, field = name.partition(".")
        out.setdefault(method, {})[field] = values
    return out

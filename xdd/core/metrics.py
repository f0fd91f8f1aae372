"""OOD metrics in plain numpy.  Convention: label 1 = OOD (positive), higher score = more OOD.

``auprc`` is average precision, the same step-wise sum as
``sklearn.metrics.average_precision_score`` (no interpolation); tests check equality.
"""
from __future__ import annotations

import numpy as np


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if not labels.any() or labels.all():
        raise ValueError("metrics need both positive (OOD) and negative samples")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    return labels, scores


def _curve(labels: np.ndarray, scores: np.ndarray):
    """Cumulative true/false positives at each distinct threshold, highest score first."""
    order = np.argsort(-scores, kind="mergesort")
    s, l = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # index of the last of each tie group
    tps = np.cumsum(l)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    return tps, fps, s[last]


def pr_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds), thresholds descending; recall starts at 0."""
    labels, scores = _check(labels, scores)
    tps, fps, thr = _curve(labels, scores)
    precision = tps / (tps + fps)
    recall = tps / labels.sum()
    return np.r_[1.0, precision], np.r_[0.0, recall], thr


def auprc(labels, scores) -> float:
    """Average precision: sum_n (R_n - R_{n-1}) P_n."""
    precision, recall, _ = pr_curve(labels, scores)
    # Summed from the lowest threshold up, in sklearn's order, so the float result is identical.
    return float(max(0.0, -np.sum(np.diff(recall[::-1]) * precision[::-1][:-1])))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _check(labels, scores)
    tps, fps, _ = _curve(labels, scores)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def auroc(labels, scores) -> float:
    fpr, tpr = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))  # trapezoid rule


def fpr_at_tpr(labels, scores, tpr_level: float = 0.95) -> float:
    """False-positive rate at the first threshold whose true-positive rate reaches tpr_level."""
    fpr, tpr = roc_curve(labels, scores)
    return float(fpr[np.searchsorted(tpr, tpr_level - 1e-12)])


def aupr_in(labels, scores) -> float:
    """Average precision with the in-distribution class as positive (scores negated)."""
    return auprc(1 - np.asarray(labels).astype(int), -np.asarray(scores, dtype=np.float64))


def all_metrics(labels, scores) -> dict[str, float]:
    return {"auprc": auprc(labels, scores), "auroc": auroc(labels, scores),
            "fpr95": fpr_at_tpr(labels, scores), "aupr_in": aupr_in(labels, scores)}

"""OOD metrics against scikit-learn (label 1 = OOD, higher score = more OOD)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from xdd.core import metrics


def _data(seed: int, n: int = 500, rate: float = 0.1, decimals: int = 1):
    """Scores rounded so that many tie (ties are where curve code usually goes wrong)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    y[0], y[1] = 1, 0
    s = np.round(rng.normal(size=n) + 1.2 * y, decimals)
    return y, s


CASES = [(seed, n, rate, dec) for seed, (n, rate, dec) in enumerate(
    [(500, 0.1, 1), (500, 0.1, 3), (37, 0.3, 0), (2000, 0.05, 2), (200, 0.5, 1), (1000, 0.1, 8)])]


@pytest.mark.parametrize("seed,n,rate,dec", CASES)
def test_auprc_is_bit_identical_to_sklearn(seed, n, rate, dec):
    """DESIGN: 'AUPRC = average precision (sklearn.metrics.average_precision_score)' and the
    saved scores must reproduce the reported AUPRC with sklearn *exactly*.  The step sum has
    to run in sklearn's order (lowest threshold first) for the last bit to agree."""
    y, s = _data(seed, n, rate, dec)
    ours, ref = metrics.auprc(y, s), skm.average_precision_score(y, s)
    assert ours == ref, (f"auprc {ours!r} != sklearn {ref!r}: xdd/core/metrics.py auprc sums "
                         "diff(recall) * precision in the opposite order to sklearn")


@pytest.mark.parametrize("seed,n,rate,dec", CASES)
def test_auroc_equals_roc_auc_score(seed, n, rate, dec):
    y, s = _data(seed, n, rate, dec)
    assert metrics.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed,n,rate,dec", CASES)
def test_roc_curve_equals_sklearn(seed, n, rate, dec):
    y, s = _data(seed, n, rate, dec)
    fpr, tpr = metrics.roc_curve(y, s)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr, atol=1e-15) and np.allclose(tpr, sk_tpr, atol=1e-15)


@pytest.mark.parametrize("seed,n,rate,dec", CASES)
@pytest.mark.parametrize("level", [0.95, 0.5, 0.8])
def test_fpr_at_tpr_against_sklearn_roc_curve(seed, n, rate, dec, level):
    y, s = _data(seed, n, rate, dec)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    expected = fpr[np.flatnonzero(tpr >= level)[0]]  # first threshold reaching the TPR level
    assert metrics.fpr_at_tpr(y, s, level) == pytest.approx(expected, abs=1e-15)


def test_fpr95_when_tpr_hits_exactly_095():
    # 20 positives: TPR = 19/20 = 0.95 exactly after 19 positives, with 2 negatives above them.
    y = np.array([1] * 10 + [0, 0] + [1] * 9 + [0] * 5 + [1] + [0] * 3)
    s = -np.arange(len(y), dtype=float)
    assert metrics.fpr_at_tpr(y, s) == pytest.approx(2 / 10)


@pytest.mark.parametrize("seed,n,rate,dec", CASES)
def test_aupr_in_is_average_precision_of_inliers(seed, n, rate, dec):
    y, s = _data(seed, n, rate, dec)
    assert metrics.aupr_in(y, s) == pytest.approx(skm.average_precision_score(1 - y, -s), abs=1e-12)


@pytest.mark.parametrize("seed,n,rate,dec", CASES[:3])
def test_pr_curve_matches_sklearn(seed, n, rate, dec):
    y, s = _data(seed, n, rate, dec)
    p, r, thr = metrics.pr_curve(y, s)
    sp, sr, sthr = skm.precision_recall_curve(y, s)
    # sklearn: ascending thresholds, ending in (precision 1, recall 0); ours: descending,
    # starting at it.  Compare over sklearn's thresholds.
    sp, sr, sthr = sp[::-1], sr[::-1], sthr[::-1]
    m = len(sthr)
    assert np.allclose(thr[:m], sthr)
    assert np.allclose(p[: m + 1], sp) and np.allclose(r[: m + 1], sr)
    assert np.all(np.diff(thr) < 0) and r[0] == 0.0 and r[-1] == 1.0


def test_perfect_and_worst_rankings():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert metrics.auprc(y, s) == 1.0 and metrics.auroc(y, s) == 1.0
    assert metrics.fpr_at_tpr(y, s) == 0.0 and metrics.aupr_in(y, s) == 1.0
    assert metrics.auroc(y, -s) == 0.0 and metrics.fpr_at_tpr(y, -s) == 1.0


def test_constant_scores_give_the_base_rate():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    s = np.zeros(10)
    assert metrics.auprc(y, s) == pytest.approx(0.2)
    assert metrics.auroc(y, s) == pytest.approx(0.5)
    assert metrics.fpr_at_tpr(y, s) == 1.0


def test_all_metrics_keys_and_values():
    y, s = _data(3)
    out = metrics.all_metrics(y, s)
    assert set(out) == {"auprc", "auroc", "fpr95", "aupr_in"}
    assert out["auprc"] == metrics.auprc(y, s) and out["fpr95"] == metrics.fpr_at_tpr(y, s, 0.95)


def test_accepts_bool_and_int8_labels():
    y, s = _data(4)
    ref = skm.average_precision_score(y, s)
    assert metrics.auprc(y.astype(bool), s) == pytest.approx(ref, abs=1e-12)
    assert metrics.auprc(y.astype(np.int8), s.astype(np.float32)) == pytest.approx(
        skm.average_precision_score(y, s.astype(np.float32)), abs=1e-12)


@pytest.mark.parametrize("fn", [metrics.auprc, metrics.auroc, metrics.fpr_at_tpr, metrics.aupr_in,
                                metrics.pr_curve, metrics.roc_curve, metrics.all_metrics])
def test_single_class_labels_are_refused(fn):
    s = np.linspace(0, 1, 6)
    with pytest.raises(ValueError, match="positive"):
        fn(np.zeros(6), s)
    with pytest.raises(ValueError, match="positive"):
        fn(np.ones(6), s)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [metrics.auprc, metrics.auroc, metrics.fpr_at_tpr, metrics.aupr_in])
def test_non_finite_scores_are_refused(fn, bad):
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="NaN"):
        fn(y, np.array([0.1, bad, 0.3, 0.4]))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        metrics.auprc(np.array([0, 1, 1]), np.array([0.1, 0.2]))

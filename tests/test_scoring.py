"""KDE scorer against scikit-learn's KernelDensity and a brute-force leave-one-out."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from sklearn.decomposition import PCA
from sklearn.neighbors import KernelDensity

from xdd.core.scoring import (KDEScorer, NotFittedError, PixelKDE, gaussian_kde_logpdf,
                         loo_log_likelihood)


def _points(seed: int, n: int = 40, d: int = 5, m: int = 30):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1))  # a few clusters
    test = rng.normal(scale=1.5, size=(m, d))
    return train, test


@pytest.mark.parametrize("h", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_kde_log_density_equals_sklearn(h, seed):
    train, test = _points(seed)
    ref = KernelDensity(kernel="gaussian", bandwidth=h).fit(train).score_samples(test)
    assert np.allclose(gaussian_kde_logpdf(test, train, h), ref, rtol=0, atol=1e-8)
    kde = KDEScorer(bandwidth=h).fit(train)
    assert kde.bandwidth_ == h
    assert np.allclose(kde.log_density(test), ref, rtol=0, atol=1e-8)
    assert np.allclose(kde.score(test), -ref, rtol=0, atol=1e-8)


def test_kde_far_points_do_not_underflow():
    """Points far from every training point: the log density stays finite and exact."""
    train, _ = _points(2, d=3)
    far = np.full((4, 3), 40.0)
    ref = KernelDensity(bandwidth=0.5).fit(train).score_samples(far)
    got = KDEScorer(0.5).fit(train).log_density(far)
    assert np.all(np.isfinite(got)) and np.allclose(got, ref, rtol=1e-10)


def test_kde_batched_equals_unbatched():
    train, test = _points(3, m=50)
    kde = KDEScorer(0.7).fit(train)
    assert np.allclose(kde.log_density(test, batch=7), kde.log_density(test), rtol=0, atol=1e-12)
    assert kde.log_density(test[:0]).shape == (0,)


def _brute_loo(train: np.ndarray, h: float) -> float:
    """Mean over i of log p_{-i}(x_i), p_{-i} = sklearn's KDE fitted without point i."""
    vals = [KernelDensity(bandwidth=h).fit(np.delete(train, i, axis=0)).score_samples(train[i:i + 1])[0]
            for i in range(len(train))]
    return float(np.mean(vals))


def test_loo_log_likelihood_equals_brute_force():
    train, _ = _points(4, n=15, d=3)
    for h in (0.2, 0.8, 3.0):
        assert loo_log_likelihood(train, h) == pytest.approx(_brute_loo(train, h), abs=1e-8)


@pytest.mark.parametrize("seed", [0, 5])
def test_loo_bandwidth_is_the_argmax_of_the_leave_one_out_likelihood(seed):
    """The documented grid: the median pairwise distance times 2**linspace(-3, 1, 41)."""
    train, _ = _points(seed, n=14, d=3)
    kde = KDEScorer("loo").fit(train)
    grid = float(np.median(pdist(train))) * 2.0 ** np.linspace(-3, 1, 41)
    lls = np.array([_brute_loo(train, h) for h in grid])
    best = grid[int(np.argmax(lls))]
    assert kde.bandwidth_ == pytest.approx(best, rel=1e-9)
    # ... and it is an interior optimum for these clustered points, not a grid edge.
    assert grid[0] < kde.bandwidth_ < grid[-1]


def test_loo_bandwidth_scales_with_the_data():
    train, _ = _points(6, n=20, d=4)
    h1 = KDEScorer("loo").fit(train).bandwidth_
    h2 = KDEScorer("loo").fit(train * 10.0).bandwidth_
    assert h2 == pytest.approx(10.0 * h1, rel=1e-9)


def test_loo_degenerate_inputs_give_finite_bandwidths():
    one = KDEScorer("loo").fit(np.ones((1, 3)))
    assert one.bandwidth_ == 1.0 and np.isfinite(one.score(np.zeros((2, 3)))).all()
    same = KDEScorer("loo").fit(np.ones((5, 3)))  # zero median distance
    assert same.bandwidth_ > 0 and np.isfinite(same.score(np.zeros((2, 3)))).all()


def test_scorer_is_sklearn_style():
    kde = KDEScorer(bandwidth=0.5)
    assert not [a for a in vars(kde) if a.endswith("_")], "__init__ must not set fitted attributes"
    train, _ = _points(0)
    assert kde.fit(train) is kde
    assert hasattr(kde, "train_") and hasattr(kde, "bandwidth_")


def test_unfitted_scorers_refuse_to_score():
    with pytest.raises(NotFittedError):
        KDEScorer().score(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        KDEScorer().log_density(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        PixelKDE().score(np.zeros((2, 28, 28)))


def test_fit_rejects_bad_shapes():
    with pytest.raises(ValueError):
        KDEScorer(1.0).fit(np.zeros(5))
    with pytest.raises(ValueError):
        KDEScorer(1.0).fit(np.zeros((0, 3)))


def test_pixel_kde_equals_pca_then_kde():
    rng = np.random.default_rng(0)
    x = rng.random((25, 28, 28))
    test = rng.random((6, 28, 28))
    pk = PixelKDE(n_components=8, bandwidth=0.9).fit(x)
    pca = PCA(n_components=8, random_state=0).fit(x.reshape(25, -1))
    ref = KernelDensity(bandwidth=0.9).fit(pca.transform(x.reshape(25, -1))).score_samples(
        pca.transform(test.reshape(6, -1)))
    assert np.allclose(pk.score(test), -ref, rtol=0, atol=1e-8)


def test_pixel_kde_caps_components_and_separates_digits(mnist):
    """Fitted on 10 zeros and 10 ones: other zeros and ones score lower (less OOD) than eights."""
    y = mnist.y_train
    fit_idx = np.r_[np.flatnonzero(y == 0)[:10], np.flatnonzero(y == 1)[:10]]
    pk = PixelKDE(n_components=30).fit(mnist.x_train[fit_idx] / 255.0)
    assert pk.pca_.n_components_ == 19  # min(30, n - 1)
    yt = mnist.y_test
    inl = np.r_[np.flatnonzero(yt == 0)[:50], np.flatnonzero(yt == 1)[:50]]
    ood = np.flatnonzero(yt == 8)[:100]
    s_in, s_ood = pk.score(mnist.x_test[inl] / 255.0), pk.score(mnist.x_test[ood] / 255.0)
    assert np.isfinite(s_in).all() and np.isfinite(s_ood).all()
    assert np.median(s_ood) > np.median(s_in)
    assert math.isfinite(pk.kde_.bandwidth_) and pk.kde_.bandwidth_ > 0


# ---------------------------------------------------------------- k-NN on a reference set


def _brute_knn(ref: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest row of ref, by a plain double loop."""
    out = np.empty(len(x))
    for i in range(len(x)):
        d = [math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(x[i], r))) for r in ref]
        out[i] = sorted(d)[k - 1]
    return out


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_scorer_equals_brute_force_loop(backend, k):
    from xdd.core.scoring import KNNScorer

    rng = np.random.default_rng(k)
    ref = rng.normal(size=(60, 6)).astype(np.float32)
    x = rng.normal(scale=1.3, size=(25, 6)).astype(np.float32)
    got = KNNScorer(k=k, backend=backend).fit(ref).score(x)
    assert got.shape == (25,) and got.dtype == np.float64
    assert np.allclose(got, _brute_knn(ref, x, k), rtol=0, atol=1e-4)
    # a reference point scores 0 at k = 1 (it is its own nearest neighbour)
    assert np.allclose(KNNScorer(1, backend).fit(ref).score(ref[:5]), 0.0, atol=1e-3)


def test_knn_scorer_k_larger_than_reference_and_unfitted():
    from xdd.core.scoring import KNNScorer

    ref = np.eye(3, dtype=np.float32)
    s = KNNScorer(k=10).fit(ref)
    assert s.k_ == 3
    assert np.allclose(s.score(np.zeros((1, 3))), 1.0)  # all three at distance 1
    with pytest.raises(NotFittedError):
        KNNScorer().score(ref)
    with pytest.raises(ValueError):
        KNNScorer(backend="annoy").fit(ref)
    assert KNNScorer().fit(ref).score(ref[:0]).shape == (0,)


def test_feature_reducer_normalises_and_keeps_distances():
    from xdd.core.scoring import FeatureReducer, l2_normalize

    rng = np.random.default_rng(5)
    basis = rng.normal(size=(4, 40))
    z = rng.normal(size=(200, 4)) @ basis * rng.uniform(1, 5, size=(200, 1))  # rank 4, scaled
    red = FeatureReducer(n_components=8, normalize=True).fit(z[:100])
    r = red.transform(z)
    assert r.shape == (200, 8) and r.dtype == np.float32
    # the normalised data lie (up to the centring) in a 4-dim subspace: PCA keeps distances
    zn = l2_normalize(z)
    assert np.allclose(np.linalg.norm(r[:1] - r[1:50], axis=1),
                       np.linalg.norm(zn[:1] - zn[1:50], axis=1), atol=1e-4)
    raw = FeatureReducer(n_components=0, normalize=False).fit(z)
    assert np.allclose(raw.transform(z), z.astype(np.float32))
    with pytest.raises(NotFittedError):
        FeatureReducer().transform(z)


def test_kde_bandwidth_on_a_subsample_is_that_subsample_s_loo_choice():
    train, test = _points(6, n=300)
    full = KDEScorer().fit(train)
    sub = KDEScorer(loo_sample=80, seed=3).fit(train)
    pick = np.sort(np.random.default_rng(3).choice(300, 80, replace=False))
    assert sub.bandwidth_ == KDEScorer().fit(train[pick]).bandwidth_
    assert sub.train_.shape == (300, 5)  # the density uses every point
    assert np.isfinite(sub.score(test)).all() and full.bandwidth_ > 0


def test_pyod_knn_is_the_fifth_neighbour_distance():
    from xdd.core.scoring import KNNScorer, PyodKNN

    rng = np.random.default_rng(9)
    ref, x = rng.normal(size=(80, 4)), rng.normal(size=(20, 4))
    assert np.allclose(PyodKNN().fit(ref).score(x), KNNScorer(5).fit(ref).score(x), atol=1e-5)
    with pytest.raises(NotFittedError):
        PyodKNN().score(x)


def test_scorers_refuse_an_empty_or_flat_fit_set_with_a_message():
    from xdd.core.scoring import KDEScorer, KNNScorer

    with pytest.raises(ValueError, match=r"KDE needs a \(n, d\) array with n >= 1, got shape \(0, 3\)"):
        KDEScorer().fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"k-NN needs a \(n, d\) array with n >= 1, got shape \(5,\)"):
        KNNScorer().fit(np.zeros(5))


# float32: sums of 3,136 squares are rounded in SIMD lanes whose width differs between CPUs
# (5e-7 at most here over 20 seeds with AVX-512); 1e-5 holds for any lane count
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-14)])
def test_l2_normalize_puts_rows_on_the_sphere_and_keeps_zero_rows(dtype, rtol):
    from xdd.core.scoring import l2_normalize

    rng = np.random.default_rng(11)
    z = (rng.normal(size=(300, 3136)) * rng.uniform(0.1, 50, size=(300, 1))).astype(dtype)
    z[7] = 0.0
    want = z / np.maximum(np.linalg.norm(z.astype(np.float64), axis=1, keepdims=True), 1e-12)
    got = l2_normalize(z)
    assert got.dtype == dtype and got is not z
    assert np.allclose(got, want, rtol=rtol, atol=rtol * 1e-2)
    assert np.all(got[7] == 0.0)
    assert np.allclose(np.linalg.norm(np.delete(got, 7, axis=0), axis=1), 1.0, rtol=10 * rtol)
    strided = l2_normalize(z[::2, ::3])  # a non-contiguous view
    assert np.allclose(strided, l2_normalize(np.ascontiguousarray(z[::2, ::3])), rtol=rtol)
    y = z.copy()
    assert l2_normalize(y, inplace=True) is y and np.allclose(y, want, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("normalize", [True, False])
def test_feature_reducer_fit_leaves_its_input_alone(normalize):
    """fit() lets the PCA centre its own normalised copy in place, never the caller's array."""
    from xdd.core.scoring import FeatureReducer

    rng = np.random.default_rng(2)
    z = rng.normal(3.0, 1.0, size=(120, 30)).astype(np.float32)
    before = z.copy()
    red = FeatureReducer(n_components=5, normalize=normalize, seed=0).fit(z)
    assert np.array_equal(z, before)
    again = FeatureReducer(n_components=5, normalize=normalize, seed=0).fit(z.copy())
    assert np.array_equal(red.transform(z), again.transform(z))


@pytest.mark.parametrize("n_components, normalize", [(64, True), (8, False), (0, True)])
def test_feature_reducer_rebuilt_from_its_state_projects_to_the_same_bits(n_components, normalize):
    from xdd.core.scoring import FeatureReducer

    rng = np.random.default_rng(4)
    z = (rng.normal(size=(512, 40)) @ rng.normal(size=(40, 1568))).astype(np.float32)
    red = FeatureReducer(n_components, normalize, seed=2).fit(z)
    state = red.state()
    assert all(isinstance(v, np.ndarray) or np.isscalar(v) for v in state.values())
    again = FeatureReducer.from_state(state)
    x = rng.normal(size=(300, 1568)).astype(np.float32)
    assert np.array_equal(red.transform(x), again.transform(x))
    assert red.transform(x).shape == (300, n_components or 1568)
    if n_components:
        with pytest.raises(ValueError, match="mismatched"):
            FeatureReducer.from_state(dict(state, mean=state["mean"][:-1]))
    with pytest.raises(NotFittedError):
        FeatureReducer().state()

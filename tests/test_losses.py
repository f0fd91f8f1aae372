"""Losses against slow numpy references: values, gradients, degenerate batches."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xdd.core import losses


# ---------------------------------------------------------------- numpy references (slow, plain)


def pairwise_ref(z: np.ndarray, y: np.ndarray, sigma2: float = 1.0) -> float:
    """-(1/|P|) sum over ordered inter-class pairs of ||z_i - z_j||^2 / (2 sigma^2)."""
    total, pairs = 0.0, 0
    for i in range(len(z)):
        for j in range(len(z)):
            if y[i] != y[j]:
                total += float(np.sum((z[i] - z[j]) ** 2))
                pairs += 1
    return 0.0 if pairs == 0 else -total / pairs / (2.0 * sigma2)


def mcdd_logits_ref(z, centers, log_sigma, bias=None) -> np.ndarray:
    n, d = z.shape
    out = np.zeros((n, len(centers)))
    for i in range(n):
        for k in range(len(centers)):
            sigma = math.exp(log_sigma[k])
            out[i, k] = (-float(np.sum((z[i] - centers[k]) ** 2)) / (2.0 * sigma ** 2)
                         - d * log_sigma[k] + (0.0 if bias is None else bias[k]))
    return out


def mcdd_loss_ref(z, y, centers, log_sigma, bias=None) -> float:
    logits = mcdd_logits_ref(z, centers, log_sigma, bias)
    total = 0.0
    for i in range(len(z)):
        row = logits[i]
        m = row.max()
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        total += row[y[i]] - lse
    return -total / len(z)


def numgrad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar numpy function."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def _batch(seed: int, n: int = 12, d: int = 5, k: int = 3):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    centers = rng.normal(size=(k, d))
    log_sigma = rng.normal(scale=0.3, size=k)
    bias = rng.normal(scale=0.5, size=k)
    return z, y, centers, log_sigma, bias


def t(a, grad: bool = False) -> torch.Tensor:
    x = torch.tensor(a, dtype=torch.float64)
    return x.requires_grad_(grad) if grad else x


# ---------------------------------------------------------------- pairwise term


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sigma2", [1.0, 2.5])
def test_pairwise_term_matches_double_loop(seed, sigma2):
    z, y, *_ = _batch(seed, n=14, d=4, k=4)
    got = losses.pairwise_term(t(z), torch.tensor(y), sigma2).item()
    assert got == pytest.approx(pairwise_ref(z, y, sigma2), rel=1e-10, abs=1e-12)


def test_pairwise_term_larger_batch_matches_double_loop():
    """> 25 rows: torch.cdist switches to its matrix-product path; the value must not drift."""
    z, y, *_ = _batch(7, n=40, d=6, k=5)
    got = losses.pairwise_term(t(z), torch.tensor(y)).item()
    assert got == pytest.approx(pairwise_ref(z, y), rel=1e-9)


def test_pairwise_term_ignores_intra_class_pairs():
    # Two classes: moving points within a class apart must not change the term.
    z = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    y = np.array([0, 0, 1])
    base = losses.pairwise_term(t(z), torch.tensor(y)).item()
    assert base == pytest.approx(-9.0 / 2.0)  # every inter-class pair has ||.||^2 = 9
    z2 = z.copy()
    z2[1] = [0.0, 5.0]  # same class as row 0, now far from it
    assert losses.pairwise_term(t(z2), torch.tensor(y)).item() == pytest.approx(
        pairwise_ref(z2, y))


def test_pairwise_term_gradient_matches_finite_differences():
    z, y, *_ = _batch(11, n=9, d=3, k=3)
    zt = t(z, grad=True)
    losses.pairwise_term(zt, torch.tensor(y)).backward()
    expected = numgrad(lambda a: pairwise_ref(a, y), z)
    assert np.allclose(zt.grad.numpy(), expected, atol=1e-7)


def test_pairwise_term_gradcheck():
    z, y, *_ = _batch(12, n=8, d=3, k=3)
    yt = torch.tensor(y)
    assert torch.autograd.gradcheck(lambda a: losses.pairwise_term(a, yt, 1.7), (t(z, grad=True),))


def test_pairwise_term_single_class_is_zero_with_finite_gradient():
    z = t(np.random.default_rng(0).normal(size=(6, 4)), grad=True)
    out = losses.pairwise_term(z, torch.zeros(6, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and (z.grad == 0).all()


def test_pairwise_term_one_shot_per_class():
    """K = 1: every pair is inter-class; coincident points must not give NaN gradients."""
    z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    y = np.array([0, 1, 2])
    zt = t(z, grad=True)
    out = losses.pairwise_term(zt, torch.tensor(y))
    assert out.item() == pytest.approx(pairwise_ref(z, y))
    out.backward()
    assert torch.isfinite(zt.grad).all()
    assert np.allclose(zt.grad.numpy(), numgrad(lambda a: pairwise_ref(a, y), z), atol=1e-7)


# ---------------------------------------------------------------- MCDD term


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_bias", [True, False])
def test_mcdd_logits_and_loss_match_double_loop(seed, with_bias):
    z, y, c, ls, b = _batch(seed)
    b = b if with_bias else None
    got = losses.mcdd_logits(t(z), t(c), t(ls), None if b is None else t(b)).numpy()
    assert np.allclose(got, mcdd_logits_ref(z, c, ls, b), rtol=1e-10, atol=1e-10)
    loss = losses.mcdd_loss(t(z), torch.tensor(y), t(c), t(ls), None if b is None else t(b)).item()
    assert loss == pytest.approx(mcdd_loss_ref(z, y, c, ls, b), rel=1e-10)


def test_mcdd_loss_larger_batch_matches_double_loop():
    z, y, c, ls, b = _batch(5, n=40, d=6, k=9)
    loss = losses.mcdd_loss(t(z), torch.tensor(y), t(c), t(ls), t(b)).item()
    assert loss == pytest.approx(mcdd_loss_ref(z, y, c, ls, b), rel=1e-9)


def test_mcdd_loss_gradients_match_finite_differences():
    z, y, c, ls, b = _batch(21, n=7, d=3, k=3)
    zt, ct, lt, bt = (t(a, grad=True) for a in (z, c, ls, b))
    losses.mcdd_loss(zt, torch.tensor(y), ct, lt, bt).backward()
    assert np.allclose(zt.grad.numpy(), numgrad(lambda a: mcdd_loss_ref(a, y, c, ls, b), z), atol=1e-7)
    assert np.allclose(ct.grad.numpy(), numgrad(lambda a: mcdd_loss_ref(z, y, a, ls, b), c), atol=1e-7)
    assert np.allclose(lt.grad.numpy(), numgrad(lambda a: mcdd_loss_ref(z, y, c, a, b), ls), atol=1e-7)
    assert np.allclose(bt.grad.numpy(), numgrad(lambda a: mcdd_loss_ref(z, y, c, ls, a), b), atol=1e-7)


def test_mcdd_loss_gradcheck():
    z, y, c, ls, b = _batch(22, n=6, d=3, k=3)
    yt = torch.tensor(y)
    inputs = tuple(t(a, grad=True) for a in (z, c, ls, b))
    assert torch.autograd.gradcheck(lambda *a: losses.mcdd_loss(a[0], yt, *a[1:]), inputs)


def test_mcdd_one_shot_per_class_at_the_centers():
    """K = 1 as retraining starts it: each center is its class's only embedding (distance 0)."""
    z, _, _, ls, b = _batch(3, n=3, d=4, k=3)
    y = np.array([0, 1, 2])
    zt, ct, lt = t(z, grad=True), t(z.copy(), grad=True), t(ls, grad=True)
    loss = losses.mcdd_loss(zt, torch.tensor(y), ct, lt, t(b))
    assert loss.item() == pytest.approx(mcdd_loss_ref(z, y, z, ls, b), rel=1e-10)
    loss.backward()
    for g in (zt.grad, ct.grad, lt.grad):
        assert torch.isfinite(g).all()
    assert np.allclose(zt.grad.numpy(), numgrad(lambda a: mcdd_loss_ref(a, y, z, ls, b), z), atol=1e-7)
    assert torch.autograd.gradcheck(
        lambda a, c: losses.mcdd_loss(a, torch.tensor(y), c, t(ls), t(b)),
        (t(z, grad=True), t(z.copy(), grad=True)))


def test_mcdd_single_class_batch():
    z, _, c, ls, b = _batch(4, n=5, d=3, k=3)
    y = np.zeros(5, dtype=np.int64)  # every sample in class 0, three components
    loss = losses.mcdd_loss(t(z), torch.tensor(y), t(c), t(ls), t(b)).item()
    assert loss == pytest.approx(mcdd_loss_ref(z, y, c, ls, b), rel=1e-10)


# ---------------------------------------------------------------- xdd_loss


def _xdd(z, y, c, ls, b, **kw):
    return losses.xdd_loss(t(z), torch.tensor(y), t(c), t(ls), t(b), **kw)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def spread_ref(z: np.ndarray, y: np.ndarray) -> float:
    """(1/N) sum_i ||z_i - mean of its class||^2, by loops."""
    total = 0.0
    for i in range(len(z)):
        mu = np.mean([z[j] for j in range(len(z)) if y[j] == y[i]], axis=0)
        total += float(np.sum((z[i] - mu) ** 2))
    return total / len(z)


def test_within_class_spread_matches_loops():
    z, y, *_ = _batch(30, n=11, d=4, k=3)
    assert losses.within_class_spread(t(z), torch.tensor(y)).item() == pytest.approx(
        spread_ref(z, y), rel=1e-12)
    # Labels need not be 0..K-1 (torch.unique re-indexes them).
    assert losses.within_class_spread(t(z), torch.tensor(y * 3 + 5)).item() == pytest.approx(
        spread_ref(z, y), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_xdd_ratio_mode_matches_reference(seed):
    z, y, c, ls, b = _batch(seed)
    zz = _unit(z)
    sigma2 = spread_ref(zz, y) + losses.RATIO_EPS
    loss, parts = _xdd(z, y, c, ls, b, beta=0.6, pair_weight=1.4, pair_mode="ratio")
    assert parts["pairwise"] == pytest.approx(pairwise_ref(zz, y, sigma2), rel=1e-10)
    assert loss.item() == pytest.approx(
        0.6 * mcdd_loss_ref(zz, y, c, ls, b) + 1.4 * pairwise_ref(zz, y, sigma2), rel=1e-10)


def test_xdd_ratio_mode_rewards_tight_classes_and_is_bounded():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 4)
    base = np.eye(3)[y]  # three orthogonal class directions
    noise = rng.normal(size=(12, 3))
    cs = _batch(0, d=3)[2:]
    _, loose = _xdd(base + 0.3 * noise, y, *cs, pair_mode="ratio")
    _, tight = _xdd(base + 0.03 * noise, y, *cs, pair_mode="ratio")
    assert tight["pairwise"] < loose["pairwise"] < 0.0
    # Collapsed classes: spread 0, bounded by -4 / (2 eps).
    _, collapsed = _xdd(base, y, *cs, pair_mode="ratio")
    assert -4.0 / (2 * losses.RATIO_EPS) <= collapsed["pairwise"] < tight["pairwise"]
    # On the sphere: scaling z changes nothing.
    _, scaled = _xdd(10.0 * (base + 0.3 * noise), y, *cs, pair_mode="ratio")
    assert scaled["pairwise"] == pytest.approx(loose["pairwise"], rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_xdd_loss_is_the_weighted_sum_of_the_references(seed):
    z, y, c, ls, b = _batch(seed)
    for mode, zz in (("sphere", _unit(z)), ("raw", z)):
        loss, parts = _xdd(z, y, c, ls, b, beta=0.7, pair_weight=1.3, pair_mode=mode)
        mc, pw = mcdd_loss_ref(zz, y, c, ls, b), pairwise_ref(zz, y)
        assert loss.item() == pytest.approx(0.7 * mc + 1.3 * pw, rel=1e-10)
        assert parts["mcdd"] == pytest.approx(mc, rel=1e-10)
        assert parts["pairwise"] == pytest.approx(pw, rel=1e-10)
        assert parts["loss"] == pytest.approx(loss.item(), rel=1e-12)


def test_xdd_sphere_pairwise_is_bounded():
    rng = np.random.default_rng(0)
    for _ in range(20):
        z, y = rng.normal(scale=rng.uniform(0.01, 100), size=(10, 4)), rng.integers(0, 3, 10)
        if len(set(y)) < 2:
            continue
        _, parts = _xdd(z, y, *_batch(0, d=4)[2:], pair_mode="sphere")
        assert -2.0 - 1e-12 <= parts["pairwise"] <= 0.0
    # Antipodal classes reach the bound: every inter-class squared distance is 4.
    z = np.array([[1.0, 0.0], [2.0, 0.0], [-3.0, 0.0]])
    _, parts = _xdd(z, np.array([0, 0, 1]), *_batch(0, d=2, k=2)[2:], pair_mode="sphere")
    assert parts["pairwise"] == pytest.approx(-2.0)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e3])
def test_xdd_sphere_is_invariant_to_scaling_z(scale):
    z, y, c, ls, b = _batch(8)
    loss1, parts1 = _xdd(z, y, c, ls, b, pair_mode="sphere")
    loss2, parts2 = _xdd(z * scale, y, c, ls, b, pair_mode="sphere")
    assert loss2.item() == pytest.approx(loss1.item(), rel=1e-10)
    assert parts2["pairwise"] == pytest.approx(parts1["pairwise"], rel=1e-10)


@pytest.mark.parametrize("scale", [0.5, 3.0, 10.0])
def test_xdd_none_mode_pairwise_scales_quadratically(scale):
    z, y, c, ls, b = _batch(9)
    _, p1 = _xdd(z, y, c, ls, b, pair_mode="raw")
    _, p2 = _xdd(z * scale, y, c, ls, b, pair_mode="raw")
    assert p2["pairwise"] == pytest.approx(scale ** 2 * p1["pairwise"], rel=1e-10)


def test_xdd_ablations_equal_the_single_terms():
    z, y, c, ls, b = _batch(10)
    zs = F.normalize(t(z), dim=1)
    only_pair, _ = _xdd(z, y, c, ls, b, beta=0.0, pair_weight=1.0)
    assert only_pair.item() == pytest.approx(losses.pairwise_term(zs, torch.tensor(y)).item(), rel=1e-12)
    only_mcdd, _ = _xdd(z, y, c, ls, b, beta=1.0, pair_weight=0.0)
    assert only_mcdd.item() == pytest.approx(
        losses.mcdd_loss(zs, torch.tensor(y), t(c), t(ls), t(b)).item(), rel=1e-12)


def test_xdd_beta_zero_gives_no_gradient_to_mcdd_parameters():
    z, y, c, ls, b = _batch(13)
    ct, lt, bt = t(c, grad=True), t(ls, grad=True), t(b, grad=True)
    loss, _ = losses.xdd_loss(t(z, grad=True), torch.tensor(y), ct, lt, bt, beta=0.0)
    loss.backward()
    for g in (ct.grad, lt.grad, bt.grad):
        assert g is None or torch.count_nonzero(g) == 0


@pytest.mark.parametrize("mode", ["sphere", "ratio", "raw"])
def test_xdd_loss_gradcheck(mode):
    z, y, c, ls, b = _batch(14, n=6, d=3, k=3)
    yt = torch.tensor(y)
    inputs = tuple(t(a, grad=True) for a in (z, c, ls, b))
    assert torch.autograd.gradcheck(
        lambda *a: losses.xdd_loss(a[0], yt, *a[1:], beta=0.8, pair_weight=1.2, pair_mode=mode)[0],
        inputs)


@pytest.mark.parametrize("mode", ["sphere", "ratio", "raw"])
def test_xdd_loss_one_class_batch_has_finite_gradients(mode):
    z, _, c, ls, b = _batch(15, n=5, d=3, k=3)
    zt = t(z, grad=True)
    loss, parts = losses.xdd_loss(zt, torch.zeros(5, dtype=torch.long), t(c), t(ls), t(b),
                                  pair_mode=mode)
    assert parts["pairwise"] == 0.0
    loss.backward()
    assert torch.isfinite(zt.grad).all()


@pytest.mark.parametrize("mode", ["sphere", "ratio", "raw"])
def test_xdd_loss_one_shot_per_class_has_finite_gradients(mode):
    """K = 1: every class has one sample, so the within-class spread is exactly 0."""
    z, _, _, ls, b = _batch(16, n=3, d=4, k=3)
    y = np.array([0, 1, 2])
    zt = t(z, grad=True)
    loss, parts = losses.xdd_loss(zt, torch.tensor(y), t(_unit(z)), t(ls), t(b), pair_mode=mode)
    assert np.isfinite(parts["loss"])
    loss.backward()
    assert torch.isfinite(zt.grad).all()


def test_center_pull_and_its_weight_in_xdd_loss():
    """Deep MCDD's pull (1/N) sum_i ||z_i - mu_{y_i}||^2, added to xdd_loss as beta * w * pull."""
    z, y, c, ls, b = _batch(17)
    ref = np.mean([np.sum((z[i] - c[y[i]]) ** 2) for i in range(len(z))])
    assert losses.center_pull(t(z), torch.tensor(y), t(c)).item() == pytest.approx(ref, rel=1e-12)
    zz = _unit(z)
    pull = np.mean([np.sum((zz[i] - c[y[i]]) ** 2) for i in range(len(z))])
    base, _ = _xdd(z, y, c, ls, b, beta=0.5, pair_weight=1.0)
    loss, parts = _xdd(z, y, c, ls, b, beta=0.5, pair_weight=1.0, pull_weight=2.0)
    assert parts["pull"] == pytest.approx(pull, rel=1e-12)
    assert loss.item() == pytest.approx(base.item() + 0.5 * 2.0 * pull, rel=1e-12)


def test_xdd_loss_rejects_unknown_mode():
    z, y, c, ls, b = _batch(0)
    with pytest.raises(ValueError, match="cube"):
        _xdd(z, y, c, ls, b, pair_mode="cube")


# ---------------------------------------------------------------- GAN and SVDD


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def test_gan_losses_match_manual_bce():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(scale=3, size=13), rng.normal(scale=3, size=7)
    d = losses.gan_d_loss(t(real), t(fake)).item()
    # -mean log D(x) - mean log(1 - D(G(z))), D = sigmoid(logit)
    expected_d = -np.mean(np.log(1 / (1 + np.exp(-real)))) - np.mean(np.log(1 - 1 / (1 + np.exp(-fake))))
    assert d == pytest.approx(expected_d, rel=1e-10)
    g = losses.gan_g_loss(t(fake)).item()
    assert g == pytest.approx(-np.mean(np.log(1 / (1 + np.exp(-fake)))), rel=1e-10)


def test_gan_losses_are_stable_at_extreme_logits():
    real, fake = np.array([-200.0, 0.0, 200.0]), np.array([200.0, -200.0])
    d = losses.gan_d_loss(t(real), t(fake)).item()
    expected = -np.mean(_log_sigmoid(real)) - np.mean(_log_sigmoid(-fake))
    assert math.isfinite(d) and d == pytest.approx(expected, rel=1e-10)
    g = losses.gan_g_loss(t(fake)).item()
    assert math.isfinite(g) and g == pytest.approx(-np.mean(_log_sigmoid(fake)), rel=1e-10)


def test_gan_loss_gradients():
    rng = np.random.default_rng(1)
    r, f = t(rng.normal(size=5), grad=True), t(rng.normal(size=4), grad=True)
    losses.gan_d_loss(r, f).backward()
    # d/dr of -log sigmoid(r) / N = (sigmoid(r) - 1) / N;  d/df of -log(1 - sigmoid(f)) / M = sigmoid(f) / M
    assert np.allclose(r.grad.numpy(), (torch.sigmoid(r.detach()).numpy() - 1) / 5)
    assert np.allclose(f.grad.numpy(), torch.sigmoid(f.detach()).numpy() / 4)


def test_svdd_loss_matches_numpy():
    rng = np.random.default_rng(2)
    z, c = rng.normal(size=(9, 4)), rng.normal(size=4)
    expected = np.mean([np.sum((z[i] - c) ** 2) for i in range(9)])
    assert losses.svdd_loss(t(z), t(c)).item() == pytest.approx(expected, rel=1e-12)

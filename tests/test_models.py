"""Generator and discriminator of the paper's Table 1, with the width multiplier."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xdd.core.models import Discriminator, Generator, init_weights


def _convs(module: nn.Module, kind: type) -> list:
    return [m for m in module.modules() if isinstance(m, kind)]


def test_generator_table1_shapes_and_range():
    torch.manual_seed(0)
    G = Generator(z_dim=100, width=1.0)
    init_weights(G)
    assert G.fc[0].in_features == 100 and G.fc[0].out_features == 7 * 7 * 512
    channels = [(c.in_channels, c.out_channels) for c in _convs(G, nn.ConvTranspose2d)]
    assert channels == [(512, 256), (256, 128), (128, 64), (64, 1)]
    assert all(c.kernel_size == (3, 3) for c in _convs(G, nn.ConvTranspose2d))
    for mode in (G.train, G.eval):
        mode()
        x = G(torch.randn(5, 100) * 3)
        assert x.shape == (5, 1, 28, 28)
        assert x.min().item() >= -1.0 and x.max().item() <= 1.0
    assert isinstance(G.net[-1], nn.Tanh)


def test_discriminator_table1_embedding_is_3136():
    torch.manual_seed(0)
    D = Discriminator(width=1.0).eval()
    assert D.embed_dim == 64 * 7 * 7 == 3136
    channels = [(c.in_channels, c.out_channels) for c in _convs(D, nn.Conv2d)]
    assert channels == [(1, 8), (8, 16), (16, 32), (32, 64)]
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    sizes = []
    h = x
    for block in D.blocks:
        h = block(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(8, 28, 28), (16, 14, 14), (32, 14, 14), (64, 7, 7)]
    z = D.embed(x)
    assert z.shape == (3, 3136)
    logits = D(x)
    assert logits.shape == (3,)
    assert torch.allclose(logits, D.head(z).squeeze(1))
    assert D.head.in_features == 3136 and D.head.out_features == 1


@pytest.mark.parametrize("width,expected", [(0.5, [4, 8, 16, 32]), (0.25, [2, 4, 8, 16]),
                                            (2.0, [16, 32, 64, 128])])
def test_discriminator_width_multiplier(width, expected):
    D = Discriminator(width=width).eval()
    assert [c.out_channels for c in _convs(D, nn.Conv2d)] == expected
    assert D.embed_dim == expected[-1] * 49
    assert D.embed(torch.zeros(2, 1, 28, 28)).shape == (2, expected[-1] * 49)
    assert D(torch.zeros(2, 1, 28, 28)).shape == (2,)


@pytest.mark.parametrize("width,expected", [(0.125, [64, 32, 16, 8]), (0.25, [128, 64, 32, 16])])
def test_generator_width_multiplier(width, expected):
    G = Generator(z_dim=16, width=width).eval()
    assert G.fc[0].out_features == 49 * expected[0]
    assert [c.out_channels for c in _convs(G, nn.ConvTranspose2d)] == expected[1:] + [1]
    assert G(torch.randn(3, 16)).shape == (3, 1, 28, 28)


def test_tiny_width_never_drops_to_zero_channels():
    D = Discriminator(width=0.01)
    assert min(c.out_channels for c in _convs(D, nn.Conv2d)) >= 1
    assert D.embed(torch.zeros(1, 1, 28, 28)).shape == (1, D.embed_dim)


def test_init_weights_is_dcgan():
    torch.manual_seed(0)
    D = Discriminator(width=2.0)
    init_weights(D)
    w = torch.cat([c.weight.flatten() for c in _convs(D, nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.004 and abs(w.mean().item()) < 0.004
    bn = torch.cat([m.weight for m in D.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01
    assert all((c.bias == 0).all() for c in _convs(D, nn.Conv2d))


@pytest.mark.parametrize("frozen", ["G", "D"])
def test_pretrain_uses_separate_learning_rates_for_g_and_d(frozen):
    """pretrain.lr drives D's optimiser and pretrain.g_lr G's: a (practically) zero rate for one
    of them leaves that network's weights where they started while the other one moves."""
    import copy

    from xdd.core.config import PretrainConfig
    from xdd.train.pretrain import pretrain_gan

    tiny, normal = 1e-12, 1e-3
    cfg = PretrainConfig(g_width=0.125, d_width=0.5, steps=3, batch_size=8,
                         lr=tiny if frozen == "D" else normal,
                         g_lr=tiny if frozen == "G" else normal)
    torch.manual_seed(cfg.seed)
    G0, D0 = Generator(cfg.z_dim, cfg.g_width), Discriminator(cfg.d_width)
    init_weights(G0)
    init_weights(D0)
    G0.output_layer.bias.data.fill_(cfg.g_out_bias)
    x = torch.rand(32, 1, 28, 28) * 2 - 1
    G, D, _ = pretrain_gan(cfg, x, torch.device("cpu"))

    def moved(net, net0):
        return max(float((p - p0).detach().abs().max()) for p, p0 in
                   zip(net.parameters(), copy.deepcopy(net0).parameters()))

    # pretrain_gan seeds the same way before building G and D, so G0/D0 are its starting point.
    if frozen == "G":
        assert moved(G, G0) < 1e-8 and moved(D, D0) > 1e-4
    else:
        assert moved(D, D0) < 1e-8 and moved(G, G0) > 1e-4


@pytest.mark.parametrize("precision,channels_last", [("bf16", False), ("fp32", True),
                                                     ("bf16", True)])
def test_pretraining_modes_train_the_same_networks_another_way(precision, channels_last):
    """bf16 autocast and channels_last change how the steps run, not what comes out: fp32
    weights in the default layout, finite losses, an embedding of the same shape; and the
    trajectory really differs from fp32's (the mode is applied), while fp32 repeats itself."""
    import dataclasses

    from xdd.core.config import PretrainConfig
    from xdd.train.pretrain import pretrain_gan

    x = torch.rand(64, 1, 28, 28) * 2 - 1
    cfg = PretrainConfig(g_width=0.125, d_width=0.5, steps=4, batch_size=16)
    cpu = torch.device("cpu")
    _, D_ref, _ = pretrain_gan(cfg, x, cpu)
    _, D_again, _ = pretrain_gan(cfg, x, cpu)
    G, D, last = pretrain_gan(dataclasses.replace(cfg, precision=precision,
                                                  channels_last=channels_last), x, cpu)
    for net in (G, D):
        for p in net.parameters():
            assert p.dtype == torch.float32 and p.is_contiguous()
    assert all(math.isfinite(v) for v in last.values())
    with torch.no_grad():
        z, z_ref = D.embed(x[:8]), D_ref.embed(x[:8])
    assert z.dtype == torch.float32 and z.shape == z_ref.shape
    diff = lambda a, b: max(float((p - q).detach().abs().max()) for p, q in  # noqa: E731
                            zip(a.parameters(), b.parameters()))
    assert diff(D_ref, D_again) == 0.0
    if precision == "bf16":  # bf16 rounds every product: the weights move apart
        assert diff(D, D_ref) > 1e-6
    # channels_last alone may reorder sums (or not): only the output contract is asserted


def test_pretraining_starts_g_from_a_dark_background():
    """G's output bias starts at pretrain.g_out_bias, so a fresh G's images are dark like MNIST
    (mean pixel about -0.75 in [-1, 1]) instead of grey."""
    from xdd.core.config import PretrainConfig
    from xdd.train.pretrain import pretrain_gan

    x = torch.rand(16, 1, 28, 28) * 2 - 1
    for bias, lo, hi in ((-1.0, -0.9, -0.6), (0.0, -0.15, 0.15)):
        G, _, _ = pretrain_gan(PretrainConfig(g_width=0.125, d_width=0.5, steps=0, g_out_bias=bias),
                               x, torch.device("cpu"))
        assert torch.all(G.output_layer.bias == bias)
        with torch.no_grad():
            mean = float(G(torch.randn(64, 100, generator=torch.Generator().manual_seed(0))).mean())
        assert lo < mean < hi, (bias, mean)


@pytest.mark.parametrize("width", [1.0, 0.25])
def test_fused_embed_is_f_in_eval_mode_with_bn_folded(width):
    """The inference embedding (embed_all's) equals D.embed in eval mode to float rounding,
    with BN's running statistics far from the identity, and is refused in train mode."""
    from xdd.train.retrain import embed_all

    torch.manual_seed(0)
    D = Discriminator(width)
    init_weights(D)
    with torch.no_grad():
        for m in D.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 2)
                m.running_var.uniform_(0.2, 5)
                m.bias.normal_(0, 1)
    x = torch.rand(37, 1, 28, 28) * 2 - 1
    with pytest.raises(RuntimeError, match="eval"):
        D.fused_embed()
    D.eval()
    with torch.no_grad():
        want = D.embed(x)
        got = D.fused_embed()(x)
    assert got.shape == want.shape == (37, D.embed_dim)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    assert torch.allclose(embed_all(D, x, batch_size=8), want, rtol=1e-4,
                          atol=1e-5 * want.abs().max().item())


def test_weights_digest_follows_every_weight_and_running_statistic():
    import copy

    from xdd.core.models import weights_digest

    torch.manual_seed(1)
    D = Discriminator(0.25)
    same = copy.deepcopy(D)
    assert weights_digest(D) == weights_digest(same) and len(weights_digest(D)) == 64
    with torch.no_grad():
        same.blocks[2][0].weight[0, 0, 0, 0] += 1e-6
    assert weights_digest(D) != weights_digest(same)
    stats = copy.deepcopy(D)
    stats.blocks[1][1].running_var[0] += 1e-3  # a buffer, not a parameter
    assert weights_digest(D) != weights_digest(stats)
